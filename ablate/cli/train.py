"""``ablate train``: run one trial in this process, through the runner's in-process backend.

Either a trial configuration file (YAML or JSON: a TrialConfig dict ``{model, data, train,
seed}`` or a Trial dict ``{config, sweep, arm, ...}`` as in a trial's ``trial.json``), or a
sweep file and one trial id from its plan. A trial folder that already has checkpoints resumes.
A trial of a sweep is trained holding its results folder's driver lock, the one ``ablate run``
holds, so the same trial is never trained by both at once. A failure is recorded as a run
records it (``ablate.inprocess.train_here``), then raised with its traceback, since this
command is for debugging one trial; a held failure is trained again here, and sweep.json is
not touched (it is the plan of ``ablate run``, not of one trial).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from ablate.cli import add_override_options, add_plugin_option
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
    p.add_argument("--trial", help="trial id (or a unique prefix) in the sweep's plan (with "
                   "--set: the plan it makes)")
    p.add_argument("--results", type=Path,
                   help="results folder of the sweep (default: the sweep's results_dir)")
    p.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default: cuda if any)")
    add_plugin_option(p)
    add_override_options(p, select=False)
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from ablate import record
    from ablate.bookkeeping import driver_lock
    from ablate.cli.run import check_results_folder
    from ablate.devices import local_device
    from ablate.inprocess import train_here
    from ablate.train import check_folder

    trial, tdir = _resolve(args)
    if trial.resources.workers > 1:  # before the folder or the sweep's lock is made
        raise TrialError(f"trial {trial.id} runs on {trial.resources.workers} data-parallel "
                         "workers, which only 'ablate run' starts", key="resources.workers",
                         hint="run it with 'ablate run', or train one worker here with "
                         "resources.workers: 1 (train.accum_steps keeps the global batch)")
    if args.device is not None:
        local_device(args.device)  # one line now, not a traceback from the first tensor
    epochs = trial.config.train.epochs
    from_sweep, results = args.sweep is not None, tdir.parent.parent  # RESULTS/trials/ID
    if from_sweep:  # a sweep's results folder: the same lock as 'ablate run' holds
        check_results_folder(results, "--results" if args.results else "results_dir")
    else:
        check_results_folder(tdir, "--out" if args.out else "results_dir")
    check_folder(tdir, trial)  # refused before anything is written (its warnings: in training)
    if not from_sweep:
        try:
            tdir.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a file system that refuses (read-only, /proc, a full disk)
            raise TrialError(f"cannot create the trial folder ({e.strerror or e})", file=tdir,
                             key="--out", hint="pass a folder on a writable file system"
                             ) from None
    print(f"trial {trial.id} ({trial.config.model.arch}, {trial.config.data.name}) -> {tdir}")
    with driver_lock(results) if from_sweep else nullcontext():
        try:
            result = train_here(trial, tdir, device=args.device, propagate=True,
                                report=lambda row: print(_progress(row, epochs), flush=True))
        except Exception as e:
            return _failed(e, tdir)
    best = result.get("best") or {}
    print(f"{result['state']}: {result['epochs']} epochs, best val/top1 "
          f"{_num(best.get('val/top1'))} at epoch {best.get('epoch')}, "
          f"{result['wall_time_s']:.1f}s; record in {tdir}")
    if result.get("diverged"):
        d = result["diverged"]
        print(f"the loss became {d.get('loss')} at epoch {d.get('epoch')}, step {d.get('step')}")
    return 0 if result["state"] == record.DONE else 1


def _failed(e: Exception, tdir: Path) -> int:
    """A full disk is the machine's state, not a bug: one line and exit 1; anything else
    keeps its traceback (this command is for debugging a trial). The record says failed."""
    import sys

    from ablate.failures import DISK, classify_exception

    failure = classify_exception(e)
    if failure.kind != DISK:
        raise e
    print(f"ablate: error: {tdir}: trial failed ({failure.kind}): {failure.first_line}; "
          f"{failure.hint}", file=sys.stderr)
    return 1


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
        trial, results = _from_sweep(args.sweep, args.trial, tuple(args.plugin),
                                     tuple(args.overrides))
        return trial, record.trial_dir(args.results or results, trial.id)
    if args.config is None:
        raise TrialError("no trial given", hint="ablate train CONFIG.yaml, or --sweep and --trial")
    trial = load_trial_file(args.config, plugins=tuple(args.plugin),
                            overrides=tuple(args.overrides))
    return trial, args.out or record.trial_dir(Path("results") / trial.sweep, trial.id)


def _from_sweep(path: Path, trial_id: str, plugins: tuple[str, ...] = (),
                overrides: tuple[str, ...] = ()):
    from ablate.plan import load_plan

    sweep, trials = load_plan(path, plugins=plugins, overrides=overrides)
    ids = [t.id for t in trials]
    matches = [t for t in trials if t.id.startswith(trial_id)]
    if len(matches) != 1:
        what = "ambiguous" if matches else "unknown"
        raise TrialError(f"{what} trial id {trial_id!r} in the plan of {sweep.name}", file=path,
                         key="--trial", hint=("run 'ablate plan' to list the ids; "
                                              + (f"did you mean '{closest(trial_id, ids)}'?"
                                                 if closest(trial_id, ids) else "")))
    return matches[0], sweep.results_dir


def load_trial_file(path: Path, plugins: tuple[str, ...] = (), overrides: tuple[str, ...] = ()):
    """A Trial from a YAML/JSON file holding a TrialConfig or a Trial (a copied trial.json).

    It is checked exactly as a sweep file's ``base`` is, by the same schema and the planner's
    checks (models, data, recipe), so ``epochs: 0`` or an unknown mixer fails here too, with
    the file, line and key. ``overrides`` (``--set train.epochs=1``) are set on it first.
    """
    from ablate.plan import plan_trials
    from ablate.spec import sweep_from_tree
    from ablate.sweepfile import _read_yaml, apply_overrides

    if not path.is_file():
        raise TrialError("trial config file not found", file=path,
                         hint="give a YAML or JSON trial config, or --sweep and --trial")
    raw, locs = _read_yaml(path)
    if not isinstance(raw, dict):
        raise SpecError("expected a mapping with model, data, train, seed", file=path, line=1)
    prefix: tuple = ("config",) if "config" in raw else ()
    body = raw.get("config") if prefix else raw
    if not isinstance(body, dict):
        raise SpecError("expected a mapping with model, data, train, seed", file=path,
                        key="config")
    unknown = [k for k in body if k not in (*_SECTIONS, "seed")]
    if unknown:
        raise SpecError(f"unknown key {unknown[0]!r}", file=path,
                        key=".".join((*prefix, str(unknown[0]))),
                        hint=unknown_name_hint(str(unknown[0]), (*_SECTIONS, "seed")))
    seed = body.get("seed", 0)
    tree = {"name": _sweep_name(raw, path), "description": f"trial config {path.name}",
            "plugins": list(plugins),
            "base": {k: body[k] for k in _SECTIONS if k in body}, "seeds": [seed]}
    n = len(prefix)
    sweep_locs = {("base", *k[n:]): v for k, v in locs.items() if tuple(k[:n]) == prefix}
    if (*prefix, "seed") in locs:
        sweep_locs[("seeds", 0)] = locs[(*prefix, "seed")]
    if overrides:
        tree, sweep_locs = apply_overrides(tree, sweep_locs, overrides, single_trial=True)
    try:
        [trial] = plan_trials(sweep_from_tree(tree, sweep_locs, path))
    except SpecError as e:
        raise _as_trial_key(e, prefix) from None
    if prefix:
        trial = dataclasses.replace(trial, arm=str(raw.get("arm", "manual")),
                                    varied=dict(raw.get("varied") or {}),
                                    role=str(raw.get("role", "arm")))
    else:
        trial = dataclasses.replace(trial, sweep="manual", arm=path.stem, role="arm")
    return trial


def _sweep_name(raw: dict[str, Any], path: Path) -> str:
    name = raw.get("sweep", "manual") if "config" in raw else "manual"
    return str(name)


def _as_trial_key(e: SpecError, prefix: tuple) -> SpecError:
    """A sweep-shaped error's key in the trial file's terms: base.train.x -> train.x."""
    key = e.key or ""
    if key.startswith("base."):
        key = ".".join((*prefix, key[len("base."):]))
    elif key.startswith("seeds"):
        key = ".".join((*prefix, "seed"))
    return SpecError(e.what, file=e.file, line=e.line, key=key or None, hint=e.hint)


def _num(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, (int, float)) else "-"


def _progress(row: dict[str, Any], epochs: int) -> str:
    return (f"epoch {row['epoch']}/{epochs}  loss {row['train/loss']:.4f}  "
            f"lr {row['train/lr']:.2e}  val/loss {row['val/loss']:.4f}  "
            f"val/top1 {row['val/top1']:.2f}  val/top5 {row['val/top5']:.2f}  "
            f"{row['train/img_per_s']:.0f} img/s  "
            f"data wait {100 * row['train/data_wait_frac']:.1f}%  "
            f"{row['time/epoch_s']:.1f}s  {row['mem/peak_mb']:.0f} MB")
