"""Generated trial records for the results tests and benchmarks/collect.py.

Everything is written through ablate.record (the same writers train_trial uses), so the folders
are what a real run leaves behind. Accuracies are given, not trained: a test states the numbers it
then checks. ``fast_writes()`` turns fsync off while generating; durability is not under test.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
from pathlib import Path
from typing import Any

from ablate import record
from ablate.config import DataConfig, ModelConfig, RecipeConfig, Trial, TrialConfig

PROVENANCE = {"git_commit": "0123abc", "git_dirty": False, "python": "3.11.7",
              "torch": "2.14.1", "timm": "1.0.31", "ray": "2.60.0", "ablate": "0.1.0",
              "ablate_source": "4b1d0e5c9a2f",
              "device": "cpu", "host": "testhost", "data_fingerprint": "digits-5f3e"}


@contextlib.contextmanager
def fast_writes():
    """Skip fsync while generating records (thousands of fsyncs would dominate the time)."""
    real = os.fsync
    os.fsync = lambda fd: None
    try:
        yield
    finally:
        os.fsync = real


def make_trial(arm: str, *, seed: int = 0, sweep: str = "demo", role: str = "arm",
               expected: dict | None = None, epochs: int = 5, **axes: Any) -> Trial:
    """A planned trial of ``arch`` (default dwnet_nano) with the given model axes and seed."""
    varied = {f"model.{k}": v for k, v in axes.items()}
    axes.setdefault("arch", "dwnet_nano")
    config = TrialConfig(model=ModelConfig(**axes), data=DataConfig(name="digits"),
                         train=RecipeConfig(epochs=epochs), seed=seed)
    return Trial(config=config, sweep=sweep, arm=arm, varied=varied, role=role, expected=expected)


def curve(top1: float, epoch: int, epochs: int) -> dict[str, float]:
    """One epoch's metrics on a curve that reaches ``top1`` at the last epoch."""
    frac = epoch / epochs
    return {"epoch": epoch, "train/loss": 2.3 * (1 - 0.8 * frac), "train/lr": 1e-3 * (1 - frac),
            "train/img_per_s": 1000.0 + epoch, "train/data_wait_frac": 0.05,
            "val/loss": 2.0 * (1 - 0.7 * frac), "val/top1": top1 * frac ** 0.5,
            "val/top5": min(100.0, top1 * frac ** 0.5 + 10), "time/epoch_s": 3.0,
            "mem/peak_mb": 512.0}


def write_record(results_dir: Path, trial: Trial, *, top1: float, state: str = record.DONE,
                 epochs: int | None = None, params: int = 1_000_000,
                 flops: int = 50_000_000) -> Path:
    """Write a trial's full record as train_trial would: trial, provenance, metrics, result."""
    tdir = record.trial_dir(results_dir, trial.id)
    n = trial.config.train.epochs if epochs is None else epochs
    record.write_trial(tdir, trial)
    record.write_provenance(tdir, {**PROVENANCE, "seed": trial.config.seed, "params": params,
                                   "flops": flops})
    record.write_state(tdir, record.RUNNING, attempt=1)
    rows = [curve(top1, e, trial.config.train.epochs) for e in range(1, n + 1)]
    for row in rows:
        record.append_metrics(tdir, row)
    if state in record.FINISHED:
        best = max(rows, key=lambda r: r["val/top1"])
        record.write_result(tdir, {"state": state, "final": rows[-1], "epochs": n,
                                   "best": {"val/top1": best["val/top1"], "epoch": best["epoch"]},
                                   "wall_time_s": 3.0 * n, "params": params, "flops": flops})
        record.write_provenance(tdir, {**record.read_provenance(tdir), "wall_time_s": 3.0 * n})
    if state != record.RUNNING:
        extra = {"error": {"type": "RuntimeError", "message": "boom", "traceback": ""}} \
            if state == record.FAILED else {}
        record.write_state(tdir, state, **extra)
    return tdir


GRID = {"arch": ("local_mlp_nano", "ablate_swin_nano", "dwnet_nano", "idynamic_dwnet_nano"),
        "group_size": (1, 2, 4, 8, 16),
        "weight_source": ("static", "dot_product", "center_linear", "pooled_linear"),
        "window": ("shifted", "sliding")}


def grid_arms(grid: dict[str, tuple]) -> list[dict[str, Any]]:
    """Every combination of the grid's axis values, in a fixed order."""
    return [dict(zip(grid, c)) for c in itertools.product(*grid.values())]


def write_grid(results_dir: Path, n_trials: int, *, epochs: int = 100,
               axes: tuple[str, ...] = tuple(GRID), first_seed: int = 0,
               sweep: str = "bench") -> list[Trial]:
    """``n_trials`` finished trials cycling over the arms of GRID's ``axes`` (the first arm is
    the baseline); unlisted axes keep GRID's first value.

    Trial i is arm ``i % n_arms`` with seed ``first_seed + i // n_arms``; call again with another
    ``first_seed`` to add trials that do not collide with the first ones.
    """
    arms = [{k: v[0] for k, v in GRID.items()} | arm
            for arm in grid_arms({a: GRID[a] for a in axes})]
    trials = []
    for i in range(n_trials):
        axis = arms[i % len(arms)]
        label = ", ".join(f"{k}={axis[k]}" for k in axes) or "baseline"
        trial = make_trial(label, seed=first_seed + i // len(arms), sweep=sweep, epochs=epochs,
                           role="baseline" if i % len(arms) == 0 else "arm", **axis)
        top1 = 60 + axis["group_size"] + 2 * GRID["weight_source"].index(axis["weight_source"])
        write_record(results_dir, trial, top1=top1 + random.Random(trial.id).gauss(0, 0.5),
                     params=1_000_000 * (1 + GRID["arch"].index(axis["arch"])),
                     flops=40_000_000 + 1_000_000 * axis["group_size"])
        trials.append(trial)
    return trials
