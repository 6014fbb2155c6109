"""``ablate train``: run one trial in this process, through the runner's own code path.

Either a trial configuration file (YAML or JSON: a TrialConfig dict ``{model, data, train,
seed}`` or a Trial dict ``{config, sweep, arm, ...}`` as in a trial's ``trial.json``), or a
sweep file and one trial id from its plan. A trial folder that already has checkpoints resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from ablate.errors import SpecError, TrialError, closest, unknown_name_hint

_SECTIONS = ("model", "data", "train")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train one trial in-process (to debug one arm)",
        description="Train and evaluate one trial here, with the same code the runner uses; "
                    "prints one line per epoch. A trial folder with checkpoints resumes.",
        epilog="examples: ablate train trial.yaml --out /tmp/t1 | "
               "ablate train --sweep sweeps/smoke.yaml --trial 3f2a9c")
    p.add_argument("config", nargs="?", type=Path,
                   help="trial config file (YAML/JSON): a TrialConfig or a trial.json")
    p.add_argument("--out", type=Path, help="trial folder (default: results/manual/trials/ID)")
    p.add_argument("--sweep", type=Path, help="sweep file to take the trial from")
    p.add_argument("--trial", help="trial id (or a unique prefix) in the sweep's plan")
    p.add_argument("--results", type=Path,
                   help="results folder of the sweep (default: the sweep's results_dir)")
    p.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default: cuda if any)")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from ablate import record
    from ablate.train import train_trial

    trial, tdir = _resolve(args)
    epochs = trial.config.train.epochs
    print(f"trial {trial.id} ({trial.config.model.arch}, {trial.config.data.name}) -> {tdir}")
    result = train_trial(trial, tdir, device=args.device,
                         report=lambda row: print(_progress(row, epochs), flush=True))
    best = result.get("best") or {}
    print(f"{result['state']}: {result['epochs']} epochs, best val/top1 "
          f"{_num(best.get('val/top1'))} at epoch {best.get('epoch')}, "
          f"{result['wall_time_s']:.1f}s; record in {tdir}")
    if result.get("diverged"):
        d = result["diverged"]
        print(f"the loss became {d.get('loss')} at epoch {d.get('epoch')}, step {d.get('step')}")
    return 0 if result["state"] == record.DONE else 1


def _resolve(args: argparse.Namespace):
    """The Trial and its folder, from a config file or from a sweep and a trial id."""
    from ablate import record

    if args.sweep is not None or args.trial is not None:
        if args.config is not None or args.sweep is None or args.trial is None:
            raise TrialError("give either CONFIG or both --sweep and --trial",
                             hint="e.g. ablate train --sweep sweeps/X.yaml --trial ID")
        if args.out is not None:
            raise TrialError("--out is for a config file; with --sweep, give --results",
                             key="--out", hint="the trial folder is RESULTS/trials/ID")
        trial, results = _from_sweep(args.sweep, args.trial)
        return trial, record.trial_dir(args.results or results, trial.id)
    if args.config is None:
        raise TrialError("no trial given", hint="ablate train CONFIG.yaml, or --sweep and --trial")
    import dataclasses

    from ablate.datafiles import data_fingerprint

    trial = load_trial_file(args.config)
    _validate(trial, args.config)
    # the id hashes the data folder's content, as in a planned sweep
    trial = dataclasses.replace(trial, data_fingerprint=data_fingerprint(trial.config.data))
    return trial, args.out or record.trial_dir(Path("results") / trial.sweep, trial.id)


def _validate(trial, path: Path) -> None:
    """Check model axes and data before any record is written (as planning does for sweeps)."""
    from ablate.data import validate_data
    from ablate.errors import AblateError
    from ablate.models import validate_model

    m = trial.config.model
    try:
        validate_model(m.arch, **m.axes())
        validate_data(trial.config.data)
    except AblateError as e:
        key = e.key if (e.key or "").startswith("data") else f"model.{e.key or 'arch'}"
        what = f"{e.what} ({e.file})" if e.file else e.what
        raise SpecError(what, file=path, key=key, hint=e.hint) from None


def _from_sweep(path: Path, trial_id: str):
    from ablate.plan import load_plan

    sweep, trials = load_plan(path)
    ids = [t.id for t in trials]
    matches = [t for t in trials if t.id.startswith(trial_id)]
    if len(matches) != 1:
        what = "ambiguous" if matches else "unknown"
        raise TrialError(f"{what} trial id {trial_id!r} in the plan of {sweep.name}", file=path,
                         key="--trial", hint=("run 'ablate plan' to list the ids; "
                                              + (f"did you mean '{closest(trial_id, ids)}'?"
                                                 if closest(trial_id, ids) else "")))
    return matches[0], sweep.results_dir


def load_trial_file(path: Path):
    """A Trial from a YAML/JSON file holding a TrialConfig or a Trial; SpecError if malformed."""
    from ablate.config import Trial, TrialConfig

    raw = _read_mapping(path)
    if "config" in raw:  # a Trial (e.g. a copied trial.json)
        cfg = _trial_config(raw["config"], path, prefix="config.")
        return Trial(config=cfg, sweep=str(raw.get("sweep", "manual")),
                     arm=str(raw.get("arm", "manual")), varied=dict(raw.get("varied") or {}),
                     role=str(raw.get("role", "arm")))
    cfg: TrialConfig = _trial_config(raw, path)
    return Trial(config=cfg, sweep="manual", arm=path.stem)


def _read_mapping(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise TrialError("trial config file not found", file=path,
                         hint="give a YAML or JSON trial config, or --sweep and --trial")
    text = path.read_text()
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise SpecError(f"not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({e})",
                        file=path) from None
    if not isinstance(raw, dict):
        raise SpecError("expected a mapping with model, data, train, seed", file=path)
    return raw


def _trial_config(raw: Any, path: Path, prefix: str = ""):
    """TrialConfig from a dict, naming the file and dotted key of any unknown or bad entry."""
    from ablate.config import DataConfig, ModelConfig, RecipeConfig, TrialConfig

    classes = {"model": ModelConfig, "data": DataConfig, "train": RecipeConfig}
    allowed = (*_SECTIONS, "seed")
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
        raise SpecError("needs a 'model' mapping with at least 'arch'", file=path,
                        key=f"{prefix}model")
    for key in raw:
        if key not in allowed:
            raise SpecError(f"unknown key {key!r}", file=path, key=f"{prefix}{key}",
                            hint=unknown_name_hint(key, allowed))
    parts = {}
    for section, cls in classes.items():
        values = raw.get(section) or {}
        if not isinstance(values, dict):
            raise SpecError("expected a mapping", file=path, key=f"{prefix}{section}")
        fields = [f.name for f in dataclasses.fields(cls)]
        for key, value in values.items():
            if key not in fields:
                raise SpecError(f"unknown key {key!r}", file=path, key=f"{prefix}{section}.{key}",
                                hint=unknown_name_hint(key, fields))
            _check_type(cls, key, value, path, f"{prefix}{section}.{key}")
        parts[section] = cls(**values)
    if "arch" not in raw["model"]:
        raise SpecError("missing 'arch'", file=path, key=f"{prefix}model.arch")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise SpecError(f"seed must be an integer, got {seed!r}", file=path, key=f"{prefix}seed")
    return TrialConfig(model=parts["model"], data=parts["data"], train=parts["train"], seed=seed)


_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,),
          "None": (type(None),)}


def _check_type(cls: type, name: str, value: Any, path: Path, key: str) -> None:
    """The value's type against the dataclass field's annotation (e.g. "int | None")."""
    annotation = next(f.type for f in dataclasses.fields(cls) if f.name == name)
    names = [t.strip() for t in str(annotation).split("|")]
    allowed = tuple(t for n in names for t in _TYPES.get(n, (object,)))
    if isinstance(value, bool) and bool not in allowed:
        allowed = ()
    if not isinstance(value, allowed):
        raise SpecError(f"expected {annotation}, got {value!r}", file=path, key=key)


def _num(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, (int, float)) else "-"


def _progress(row: dict[str, Any], epochs: int) -> str:
    return (f"epoch {row['epoch']}/{epochs}  loss {row['train/loss']:.4f}  "
            f"lr {row['train/lr']:.2e}  val/loss {row['val/loss']:.4f}  "
            f"val/top1 {row['val/top1']:.2f}  val/top5 {row['val/top5']:.2f}  "
            f"{row['train/img_per_s']:.0f} img/s  "
            f"data wait {100 * row['train/data_wait_frac']:.1f}%  "
            f"{row['time/epoch_s']:.1f}s  {row['mem/peak_mb']:.0f} MB")
