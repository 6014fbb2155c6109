"""A sweep's trials before any check: arms x grid x paired x seeds, minus the excluded ones.

Each :class:`Candidate` keeps the key path in the sweep file that set each of its varied axes,
so a check that fails on it can name that key.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

from ablate.config import DataConfig, ModelConfig, RecipeConfig, TrialConfig
from ablate.spec import Sweep, _same


@dataclass(frozen=True)
class Candidate:
    """A trial before checks, with the key path that set each varied axis (for errors)."""

    order: tuple[int, int, int]  # (seed index, 0 baseline / 1 arm, position in the file)
    label: str
    role: str
    varied: dict[str, Any]
    config: TrialConfig
    sources: dict[str, tuple]  # dotted axis -> key path in the sweep file



def expand(sweep: Sweep):
    """Every (seed, arm, grid point, paired index) as a candidate, in file order per seed."""
    arms = [(sweep.baseline, ())] + list(sweep.arms) if sweep.arms else [(None, ())]
    grid = list(itertools.product(*(list(enumerate(v)) for _, v in sweep.grid)))
    paired = range(len(sweep.paired[0][1]) if sweep.paired else 1)
    points = list(itertools.product(enumerate(arms), enumerate(grid), paired))
    axis_keys = [k for k, _ in sweep.grid] + [k for k, _ in sweep.paired]
    leaves = [k.split(".", 1)[1] for k in axis_keys]
    names = dict(zip(axis_keys, leaves if len(set(leaves)) == len(leaves) else axis_keys))
    varied = list(dict.fromkeys(k for _, ov in sweep.arms for k, _ in ov)) + axis_keys
    base = dataclasses.asdict(sweep.base)
    for s_index, seed in enumerate(sweep.seeds):
        for position, ((a, (arm, overrides)), (g, point), p) in enumerate(points):
            sources = {k: ("arms", arm, k) for k, _ in overrides}
            values = dict(overrides)
            for (key, _), (i, v) in zip(sweep.grid, point):
                values[key], sources[key] = v, ("grid", key, i)
            for key, vs in sweep.paired:
                values[key], sources[key] = vs[p], ("paired", key, p)
            config = _resolve(base, values, seed)
            flat = _flat(config)
            parts = ([arm] if arm is not None else []) + [
                f"{names[k]}={_fmt(values[k])}" for k in axis_keys]
            first = a == 0 and (bool(sweep.arms) or (g == 0 and p == 0))
            yield Candidate(order=(s_index, 0 if first else 1, position),
                             label=", ".join(parts) or sweep.baseline,
                             role="baseline" if first else "arm",
                             varied={k: flat[k] for k in varied}, config=config, sources=sources)


def _resolve(base: dict[str, Any], values: dict[str, Any], seed: int) -> TrialConfig:
    d = {s: dict(base[s]) for s in ("model", "data", "train")}
    for key, value in values.items():
        section, name = key.split(".", 1)
        d[section][name] = value
    return TrialConfig(model=ModelConfig(**d["model"]), data=DataConfig(**d["data"]),
                       train=RecipeConfig(**d["train"]), seed=seed)


def _flat(config: TrialConfig) -> dict[str, Any]:
    out = {"seed": config.seed}
    for section in ("model", "data", "train"):
        for k, v in dataclasses.asdict(getattr(config, section)).items():
            out[f"{section}.{k}"] = v
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return repr(value) if isinstance(value, float) else str(value)


def apply_exclude(sweep: Sweep, candidates: list[Candidate]) -> list[Candidate]:
    used = [False] * len(sweep.exclude)
    kept = []
    for c in candidates:
        flat = _flat(c.config)
        hits = [all(any(_same(flat[k], v) for v in vs) for k, vs in cond)
                for cond in sweep.exclude]
        used = [u or h for u, h in zip(used, hits)]
        if not any(hits):
            kept.append(c)
    for i, u in enumerate(used):
        if not u:
            raise sweep.error("this condition matches no trial", "exclude", i,
                              hint="check its values against the grid, arms and base")
    return kept
