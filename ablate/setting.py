"""What a report says before its numbers: the sweep, its setting, and the trials that failed.

Read from a results folder without Ray or torch: ``sweep.json`` (the plan, in order, and the
sweep file it came from, for the description), trials.parquet (the configuration and provenance
columns) and, for the few trials that need it, their records (finish times, failure reasons).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from ablate import record

# The recipe's main knobs, in the order a paper states them: (column, label).
KNOBS = (("train.lr", "learning rate (per 512 images)"), ("train.weight_decay", "weight decay"),
         ("train.warmup_epochs", "warm-up epochs"), ("train.label_smoothing",
                                                     "label smoothing"),
         ("train.mixup", "mixup"), ("train.cutmix", "cutmix"),
         ("train.randaugment", "RandAugment"), ("train.reprob", "random erasing"),
         ("model.drop_path_rate", "drop path"), ("train.amp", "mixed precision"))


@dataclass(frozen=True)
class SweepInfo:
    """The sweep behind a results folder, as far as the folder tells."""

    name: str | None
    description: str | None
    order: tuple[str, ...]  # arm labels in the plan's order


def sweep_info(results_dir: Path) -> SweepInfo:
    """Name, description and arm order from sweep.json, as the last run recorded them.

    Every part is optional: a folder without sweep.json (or of an older ablate, which did not
    record the description) gives what is left, and a report is still written.
    """
    raw = record.read_sweep_json(results_dir)
    if not isinstance(raw, dict):
        return SweepInfo(None, None, ())
    order = tuple(dict.fromkeys(t.get("arm") for t in raw.get("trials", [])
                                if isinstance(t, dict) and t.get("arm")))
    description = raw.get("description") if isinstance(raw.get("description"), str) else None
    return SweepInfo(raw.get("name"), description, order)


def _values(trials: pd.DataFrame, column: str) -> str:
    if column not in trials:
        return "–"
    vals = [v for v in trials[column].tolist() if not pd.isna(v)]
    shown = list(dict.fromkeys(_show(v) for v in vals)) or ["default"]
    return ", ".join(shown) if len(shown) <= 4 else f"{', '.join(shown[:4])}, ..."


def _show(v) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def setting_rows(trials: pd.DataFrame, results_dir: Path) -> list[list[str]]:
    """(setting, value) rows for one sweep's trials: data, schedule, recipe, seeds, code, dates.

    A value that differs between trials lists each one (it is an axis of the sweep).
    """
    data = _values(trials, "data.name")
    size = _values(trials, "data.img_size")
    rows = [["data set", data], ["image size", f"{size} px"],
            ["epochs", _values(trials, "train.epochs")],
            ["global batch", _values(trials, "train.batch_size")]]
    rows += [[name, _values(trials, col)] for col, name in KNOBS if col in trials]
    seeds = sorted({int(s) for s in trials["seed"].dropna()}) if "seed" in trials else []
    per_arm = trials.groupby("arm")["seed"].nunique() if "seed" in trials else pd.Series()
    rows.append(["seeds", f"{', '.join(map(str, seeds))} ({per_arm.min()} to {per_arm.max()} "
                 "per arm)" if len(per_arm) and per_arm.min() != per_arm.max() else
                 f"{', '.join(map(str, seeds))} ({len(seeds)} per arm)"])
    rows.append(["code (git commit)", _commits(trials)])
    rows.append(["trials finished", _date_range(trials, results_dir)])
    return rows


def _commits(trials: pd.DataFrame) -> str:
    if "provenance.git_commit" not in trials:
        return "unknown"
    done = trials[trials["state"].isin(record.FINISHED)]
    out = []
    for commit, part in done.groupby("provenance.git_commit", sort=True):
        dirty = "provenance.git_dirty" in part and part["provenance.git_dirty"].fillna(
            False).astype(bool).any()
        out.append(f"{str(commit)[:10]}{' (uncommitted changes)' if dirty else ''}")
    return ", ".join(out) or "unknown"


def _date_range(trials: pd.DataFrame, results_dir: Path) -> str:
    """First and last finish time (UTC) of the finished trials, from their state.json."""
    times = []
    for tid in trials.loc[trials["state"].isin(record.FINISHED), "id"]:
        raw = record.read_state_raw(record.trial_dir(results_dir, tid)) or {}
        if isinstance(raw.get("updated"), (int, float)):
            times.append(raw["updated"])
    if not times:
        return "–"
    first, last = (datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
                   for t in (min(times), max(times)))
    return first if first == last else f"{first} to {last}"


def unfinished_rows(trials: pd.DataFrame, results_dir: Path) -> list[list[str]]:
    """(trial, arm, seed, state, reason) of every failed or diverged trial, by arm and seed."""
    bad = trials[trials["state"].isin((record.FAILED, record.DIVERGED))]
    bad = bad.sort_values(["arm", "seed", "id"], kind="stable")
    rows = []
    for r in bad.itertuples():
        if r.state == record.DIVERGED:
            result = record.read_result(record.trial_dir(results_dir, r.id)) or {}
            reason = str(result.get("diverged") or "non-finite loss")
        else:
            reason = ": ".join(str(x) for x in (r.error_type, r.error_message)
                               if isinstance(x, str) and x) or "no error recorded"
        rows.append([r.id, r.arm, str(r.seed), r.state, " ".join(reason.split())[:200]])
    return rows


def figure_links(results_dir: Path) -> list[str]:
    """Markdown links (relative to tables/) to the PNG figures already drawn."""
    return [f"- [{p.stem.replace('_', ' ')}](../figures/{p.name})"
            for p in sorted((results_dir / "figures").glob("*.png"))]
