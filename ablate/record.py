"""The on-disk record of a trial: documented, versioned, and independent of Ray's own files.

A results folder (``results/<sweep>/``) holds ``trials/<trial id>/`` per trial::

    trial.json        the planned Trial (Trial.to_dict(): id, sweep, arm, varied, config, ...)
    state.json        {"schema", "state", "attempt", "updated", "error"?: {"type", "message",
                       "traceback", "kind"}}; state in STATES
    metrics.jsonl     one JSON object per finished epoch: {"epoch": 1.., "train/loss", "val/top1",
                       ...}; keys are ``split/name``; appended after each epoch
    result.json       {"schema", "final": {...last epoch...}, "best": {... "epoch"}, "epochs",
                       "wall_time_s", ...}; written once, when the trial is done (or diverged)
    provenance.json   {"schema", "git_commit", "git_dirty", "python", "torch", "timm", "ray",
                       "ablate", "ablate_source" (a digest of ablate's code), "device", "host",
                       "data_fingerprint", "seed", "params", "flops", ...}
    checkpoints/      epoch_NNNN.pt (the last few) and best.pt; written atomically

Beside ``trials/``, ``sweep.json`` holds the plan (ablate.bookkeeping) and ``.driver.lock`` is
held by the driver running the folder.

Every JSON record is written whole, atomically (:func:`ablate.files.atomic_file`), so a crash
never leaves a half-written one. ``metrics.jsonl`` is appended line by line. A truncated last line is a
crash mid-append and is ignored; an unreadable line anywhere else means an epoch is lost, and
the trial's state is then "damaged" (see :func:`trial_state`). When epochs repeat (a resumed
trial re-running an epoch) the last record wins.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate.config import Trial
from ablate.errors import RecordError
from ablate.files import atomic_file, unreadable, write_json_atomic

RECORD_SCHEMA = 1

RUNNING, DONE, FAILED, DIVERGED = "running", "done", "failed", "diverged"
STATES = (RUNNING, DONE, FAILED, DIVERGED)
# Derived states, never written: no record yet, "running" with nobody running it, a record
# file that cannot be read, or a metrics.jsonl that lost an epoch to an unreadable line.
NEW, INTERRUPTED, CORRUPT, DAMAGED = "new", "interrupted", "corrupt", "damaged"
FINISHED = (DONE, DIVERGED)  # never recomputed
LOCK = ".driver.lock"
# The metrics of every epoch row besides "epoch" (ablate.train writes exactly these; plugins
# add mixers and models, not metrics): what a sweep's ``expected`` entries may name.
METRICS = ("train/loss", "train/lr", "train/img_per_s", "train/data_wait_frac", "val/loss",
           "val/top1", "val/top5", "time/epoch_s", "mem/peak_mb")
STALE_S = 10.0  # a "running" record older than this with no driver holding the lock is stale


def trials_root(results_dir: str | Path) -> Path:
    return Path(results_dir) / "trials"


def trial_dir(results_dir: str | Path, trial_id: str) -> Path:
    return trials_root(results_dir) / trial_id


def legacy_dir(results_dir: str | Path, trial: Trial) -> Path | None:
    """The folder ablate 0.1 gave ``trial`` (its id then hashed every field), if there is one
    and none under the current id."""
    old = trial.config.legacy_id()
    if old is None or old == trial.id or trial_dir(results_dir, trial.id).exists():
        return None
    path = trial_dir(results_dir, old)
    return path if path.is_dir() else None


def trial_folder(results_dir: str | Path, trial: Trial) -> Path:
    """Where ``trial``'s record is: its id's folder, or a not yet renamed 0.1 folder."""
    return legacy_dir(results_dir, trial) or trial_dir(results_dir, trial.id)


def read_sweep_json(results_dir: str | Path) -> dict[str, Any] | None:
    """A results folder's ``sweep.json`` as JSON (None when absent); RecordError naming the
    command that rewrites it when it cannot be read (deleting it, as a trial's file, would
    lose the plan that 'ablate resume' runs)."""
    path = Path(results_dir) / "sweep.json"
    try:
        return read_json(path)
    except RecordError as e:
        raise RecordError(e.what, file=path, hint=manifest_hint(results_dir)) from None


def folder_hint(path: str | Path) -> str:
    """What to pass instead of ``path`` where a results folder belongs; a sweep file (the
    common mix-up: 'ablate status sweeps/x.yaml') is named as one."""
    p = Path(path)
    if p.is_file() and p.suffix in (".yaml", ".yml"):
        return (f"that is a sweep file: pass the results folder it ran into (results/{p.stem} "
                "unless the sweep sets name: or the run was given --results)")
    return "pass the folder 'ablate run' wrote, e.g. results/<sweep name>"


def manifest_hint(results_dir: str | Path) -> str:
    """How to mend an unreadable sweep.json: write it anew from the sweep file."""
    rewrite = (f"rewrite it from the sweep file with 'ablate run SWEEP.yaml --results "
               f"{results_dir} --yes' (the trials' records are kept)")
    folder = (Path(results_dir) / "sweep.json").is_dir()
    return f"delete or move it, then {rewrite}" if folder else rewrite


def check_trials_root(results_dir: str | Path) -> None:
    """RecordError when ``results_dir/trials`` exists but is not a folder."""
    root = trials_root(results_dir)
    if root.exists() and not root.is_dir():
        raise RecordError("is a file, not the folder of the trial records", file=root,
                          hint="move it away (the trials' records are lost if it replaced "
                          "them), then run the command again")


def folder_problem(tdir: Path) -> RecordError | None:
    """Why ``tdir`` cannot hold a trial's record (a file in its place), else None."""
    if tdir.exists() and not tdir.is_dir():
        return RecordError("is a file, not a trial folder", file=tdir,
                           hint="delete it or move it away; the next run trains the trial "
                           "afresh")
    return None


def read_json(path: Path) -> dict[str, Any] | None:
    """Read a record JSON file; None if absent; RecordError if corrupt or of a newer schema."""
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text())
    except OSError as e:  # a folder where the file should be, or a file the system refuses
        raise unreadable(path, e) from None
    except ValueError as e:  # bad JSON or UTF-8, or an integer past Python's 4300 digits
        raise RecordError(f"corrupt JSON ({e.msg if hasattr(e, 'msg') else e})", file=path,
                          hint=RECOMPUTE) from None
    if not isinstance(obj, dict):
        raise RecordError("expected a JSON object", file=path)
    schema = obj.get("schema", RECORD_SCHEMA)
    if schema != RECORD_SCHEMA:
        raise RecordError(f"unknown record schema {schema!r} (this ablate reads {RECORD_SCHEMA})",
                          file=path, hint="collect it with the ablate version that wrote it")
    return obj


RECOMPUTE = "delete the file or the trial folder to recompute it"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _shape_problem(obj: dict[str, Any], mappings: tuple[str, ...],
                   bounds: dict[str, tuple[float, float]]) -> str | None:
    """What is wrong with a record JSON edited by hand: a key that must hold a mapping, or a
    number within bounds (absent or null is fine), holds something else; None when nothing."""
    for key in mappings:
        if obj.get(key) is not None and not isinstance(obj[key], dict):
            return f"'{key}' is {_json(obj[key])}, not a mapping"
    for key, (low, high) in bounds.items():
        value = obj.get(key)
        if value is not None and not (_number(value) and low <= value <= high):
            return f"'{key}' is {_json(value)}, not a number from {low:g} to {high:g}"
    return None


def _json(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


_STATE_SHAPE = (("error",), {"updated": (0, 1e11), "attempt": (0, 1e9)})  # 1e11 s: year 5138
_RESULT_SHAPE = (("final", "best"), {"epochs": (0, 1e9), "wall_time_s": (0, 1e11),
                                     "params": (0, 1e15), "flops": (0, 1e21)})


def _checked(path: Path, shape: tuple) -> dict[str, Any] | None:
    """read_json, and RecordError when the record's shape is not what ablate writes."""
    obj = read_json(path)
    if obj is not None and (why := _shape_problem(obj, *shape)) is not None:
        raise RecordError(why, file=path, hint=RECOMPUTE)
    return obj


def check_record(tdir: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Raise RecordError naming the first JSON file of the trial folder that cannot be read.

    Run before launching anything: a corrupt record must stop a run, not be taken for a new
    trial. A truncated last line of metrics.jsonl is not corruption (a crash mid-append).
    Returns the parsed state.json and result.json (None where absent), so callers read each
    only once.
    """
    if (tdir / "trial.json").exists():  # absent: restored from sweep.json by the run
        read_trial(tdir)
    state = read_state_checked(tdir)
    result = read_result(tdir)
    read_json(tdir / "provenance.json")
    return state, result


def read_state_checked(tdir: Path) -> dict[str, Any] | None:
    """state.json parsed (None if absent); RecordError if corrupt, newer, or of no known state."""
    state = _checked(tdir / "state.json", _STATE_SHAPE)
    if state is not None and state.get("state") not in STATES:
        raise RecordError(f"unknown state {state.get('state')!r} (expected one of "
                          f"{', '.join(STATES)})", file=tdir / "state.json", hint=RECOMPUTE)
    return state


def write_trial(tdir: Path, trial: Trial) -> None:
    write_json_atomic(tdir / "trial.json", {"schema": RECORD_SCHEMA, **trial.to_dict()})


def read_trial(tdir: Path) -> Trial:
    obj = read_json(tdir / "trial.json")
    if obj is None:
        raise RecordError("no trial.json", file=tdir, hint="if it was deleted, 'ablate resume' "
                          "of the results folder restores it from sweep.json; else delete the "
                          "folder")
    hint = ("delete trial.json: 'ablate resume' of the results folder restores it from "
            "sweep.json")
    try:
        trial = Trial.from_dict(obj)
    except KeyError as e:
        raise RecordError(f"malformed trial record (no key {e})", file=tdir / "trial.json",
                          hint=hint) from None
    except (TypeError, ValueError, AttributeError) as e:
        raise RecordError(f"malformed trial record ({e})", file=tdir / "trial.json",
                          hint=hint) from None
    if (why := trial.config.value_problem()) is not None:
        raise RecordError(f"malformed trial record ({why})", file=tdir / "trial.json",
                          hint=hint)
    return trial


def write_state(tdir: Path, state: str, **extra: Any) -> None:
    assert state in STATES, state
    prev = read_state_raw(tdir) or {}
    obj = {"schema": RECORD_SCHEMA, "state": state, "updated": time.time(),
           "attempt": extra.pop("attempt", prev.get("attempt", 0)), **extra}
    write_json_atomic(tdir / "state.json", obj)


def read_state_raw(tdir: Path) -> dict[str, Any] | None:
    """state.json parsed, or None where it is absent or cannot be used."""
    try:
        return _checked(tdir / "state.json", _STATE_SHAPE)
    except RecordError:
        return None


def state_of(raw: dict[str, Any] | None) -> str:
    """The state a parsed state.json holds, or NEW when there is none (or none valid)."""
    return raw["state"] if raw and raw.get("state") in STATES else NEW


def read_state(tdir: Path) -> str:
    """The written state, or NEW when the trial has no (readable) state yet."""
    return state_of(read_state_raw(tdir))


def append_metrics(tdir: Path, row: dict[str, Any]) -> None:
    """Append one epoch's metrics as a JSON line and flush it to disk."""
    with open(tdir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row, sort_keys=True, default=float) + "\n")
        f.flush()
        os.fsync(f.fileno())


@dataclass(frozen=True)
class Metrics:
    """metrics.jsonl as read: one record per epoch, and what was lost reading it."""

    rows: list[dict[str, Any]]  # epoch order, one per epoch (the last written wins)
    damage: RecordError | None  # names the first unreadable line that was not a torn end


def _epoch_row(line: bytes) -> tuple[dict[str, Any] | None, str]:
    """(the record, "") for a line holding an epoch's record, else (None, why not)."""
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return None, f"not JSON: {getattr(e, 'msg', e)}"
    try:
        row["epoch"] = int(row["epoch"])
        return row, ""
    except (KeyError, TypeError, ValueError, OverflowError):
        return None, "no epoch number"


def scan_metrics(tdir: Path) -> Metrics:
    """Read metrics.jsonl, telling a torn last line (a crash mid-append: ignored) from an
    unreadable line anywhere else (an epoch lost: ``damage``)."""
    path = tdir / "metrics.jsonl"
    try:
        lines = path.read_bytes().split(b"\n")
    except FileNotFoundError:
        return Metrics([], None)
    except OSError as e:  # a folder named metrics.jsonl, or a file where the trial folder is
        return Metrics([], unreadable(path, e))
    by_epoch: dict[int, dict[str, Any]] = {}
    bad: list[tuple[int, str]] = []
    torn = len(lines)  # the last piece has no newline after it: its write may have been cut
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        row, why = _epoch_row(line)
        if row is not None:
            by_epoch[row["epoch"]] = row
        elif n != torn:
            bad.append((n, why))
    damage = None
    if bad:
        (n, why), more = bad[0], len(bad) - 1
        damage = RecordError(
            f"unreadable epoch record ({why})" + (f", and {more} more after it" if more else "")
            + "; the trial's results would miss that epoch", file=path, line=n,
            hint="repair the line, or delete the trial folder to rerun the trial")
    return Metrics([by_epoch[e] for e in sorted(by_epoch)], damage)


def read_metrics(tdir: Path, *, strict: bool = False) -> list[dict[str, Any]]:
    """Epoch records in epoch order, one per epoch (the last written wins).

    A torn last line is ignored; other unreadable lines are skipped, or with ``strict`` raise
    the RecordError that names the first of them.
    """
    metrics = scan_metrics(tdir)
    if strict and metrics.damage is not None:
        raise metrics.damage
    return metrics.rows


def truncate_metrics(tdir: Path, last_epoch: int) -> None:
    """Drop records after ``last_epoch`` (used when resuming from that epoch's checkpoint).

    RecordError when an epoch to keep may be lost to an unreadable line: rewriting the file
    would drop it in silence.
    """
    rows = [r for r in read_metrics(tdir, strict=last_epoch > 0) if r["epoch"] <= last_epoch]
    with atomic_file(tdir / "metrics.jsonl") as f:
        f.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def write_result(tdir: Path, result: dict[str, Any]) -> None:
    write_json_atomic(tdir / "result.json", {"schema": RECORD_SCHEMA, **result})


def read_result(tdir: Path) -> dict[str, Any] | None:
    return _checked(tdir / "result.json", _RESULT_SHAPE)


def write_provenance(tdir: Path, prov: dict[str, Any]) -> None:
    write_json_atomic(tdir / "provenance.json", {"schema": RECORD_SCHEMA, **prov})


def read_provenance(tdir: Path) -> dict[str, Any] | None:
    return read_json(tdir / "provenance.json")


CHECKPOINTS = "checkpoints"
_EPOCH_RE = re.compile(r"^epoch_(\d+)\.pt$")


def epoch_checkpoints(ckpt_dir: Path) -> list[Path]:
    """The epoch checkpoints in ``ckpt_dir`` (``epoch_NNNN.pt``), newest first."""
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _EPOCH_RE.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def check_checkpoints(tdir: Path) -> list[str]:
    """What resuming ``tdir`` will meet in its checkpoints, read without loading any.

    RecordError for what would fail the trial after launch: a ``checkpoints`` that is not a
    folder, a checkpoint that is not a file. Returns a warning for each newest checkpoint that
    cannot be a whole one (empty, or cut short: a torch checkpoint is a zip archive, whose
    directory is at its end), which resuming skips, falling back to an older one or the start.
    """
    ckpt = tdir / CHECKPOINTS
    reset = f"'ablate reset {tdir.parent.parent} --trial {tdir.name}' to start the trial afresh"
    if ckpt.exists() and not ckpt.is_dir():
        raise RecordError("is a file, not the trial's checkpoints folder", file=ckpt,
                          hint=f"delete it (the trial then trains from its first epoch), or "
                          f"{reset}")
    if not ckpt.is_dir():
        return []
    for path in sorted(ckpt.iterdir()):
        if (_EPOCH_RE.match(path.name) or path.name == "best.pt") and not path.is_file():
            raise RecordError("is not a checkpoint file", file=path,
                              hint=f"delete it (the trial resumes from an older checkpoint or "
                              f"its first epoch), or {reset}")
    warnings = []
    newest = epoch_checkpoints(ckpt)
    whole = recorded_epochs(tdir)
    for i, path in enumerate(newest):
        after = int(_EPOCH_RE.match(path.name).group(1)) > whole
        if not after and zipfile.is_zipfile(path):
            break
        then = f"from {newest[i + 1].name}" if i + 1 < len(newest) else "from its first epoch"
        why = f"metrics.jsonl records epochs 1-{whole} only" if after else \
            "not a whole checkpoint (" + ("empty" if path.stat().st_size == 0 else
                                         "cut short?") + ")"
        warnings.append(f"{path}: {why}; trial {tdir.name} skips it and resumes {then}")
    return warnings


def recorded_epochs(tdir: Path) -> int:
    """How many epochs, from the first, metrics.jsonl holds whole: a resume starts from no
    later checkpoint, or the epochs after would never be recorded."""
    recorded = {r["epoch"] for r in read_metrics(tdir)}
    return next(e for e in range(len(recorded) + 1) if e + 1 not in recorded)


def list_trial_dirs(results_dir: str | Path) -> list[Path]:
    """The trial folders of ``results_dir``; RecordError when ``trials`` is not a folder."""
    check_trials_root(results_dir)
    root = trials_root(results_dir)
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []


# ---------------------------------------------------------------------------- derived state


def driver_running(results_dir: str | Path) -> bool:
    """Whether a driver holds the lock of this results folder right now."""
    path = Path(results_dir) / LOCK
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


@dataclass(frozen=True)
class TrialState:
    """A trial's state as its record shows it, with what it was derived from."""

    state: str  # STATES, or NEW / INTERRUPTED / CORRUPT / DAMAGED
    raw: dict[str, Any]  # state.json ({} when there is none, or it cannot be read)
    rows: list[dict[str, Any]]  # the epoch records that could be read
    updated: float | None  # unix time of the last write to the record
    problem: RecordError | None = None  # why the state is CORRUPT or DAMAGED


def lost_epochs(tdir: Path, recorded: int, epochs: Any) -> RecordError | None:
    """A finished trial's metrics.jsonl holding fewer epochs (``recorded``) than its
    result.json counts (``epochs``; emptied or cut by hand, restored from an old copy): its
    curves and tables would be short, under a state that says done."""
    if isinstance(epochs, int) and not isinstance(epochs, bool) and recorded < epochs:
        return RecordError(f"holds {recorded} of the {epochs} epochs result.json counts",
                           file=tdir / "metrics.jsonl", hint="restore it, or 'ablate reset "
                           f"{tdir.parent.parent} --trial {tdir.name}' to train the trial again")
    return None


def trial_state(results_dir: str | Path, trial: Trial, *, driver_alive: bool | None = None,
                now: float | None = None) -> TrialState:
    """The one derivation of a trial's state, shown by ``plan`` and ``status`` and used by ``run``.

    CORRUPT: a JSON record cannot be read (or is of a newer schema); DAMAGED: metrics.jsonl
    lost an epoch to an unreadable line, or holds fewer epochs than a finished trial's
    result.json counts; INTERRUPTED: "running", but no driver holds the lock
    (``driver_alive``; None: look) and nothing was written for STALE_S seconds; NEW: no
    state.json; else the written state.
    """
    check_trials_root(results_dir)
    tdir = trial_folder(results_dir, trial)
    if (err := folder_problem(tdir)) is not None:
        return TrialState(CORRUPT, {}, [], None, err)
    try:
        raw, result = check_record(tdir)
    except RecordError as err:
        return TrialState(CORRUPT, {}, read_metrics(tdir), None, err)
    raw = raw or {}
    metrics = scan_metrics(tdir)
    mtimes = [p.stat().st_mtime for p in (tdir / "metrics.jsonl", tdir / "state.json")
              if p.exists()]
    written = raw.get("updated")
    updated = max([written if isinstance(written, (int, float)) else 0.0, *mtimes]) \
        if raw else None
    state = state_of(raw)
    if metrics.damage is not None:
        return TrialState(DAMAGED, raw, metrics.rows, updated, metrics.damage)
    if state in FINISHED and (lost := lost_epochs(tdir, len(metrics.rows),
                                                  (result or {}).get("epochs"))) is not None:
        return TrialState(DAMAGED, raw, metrics.rows, updated, lost)
    if state == RUNNING:
        alive = driver_running(results_dir) if driver_alive is None else driver_alive
        now = time.time() if now is None else now
        if not alive and (updated or 0.0) < now - STALE_S:
            state = INTERRUPTED
    return TrialState(state, raw, metrics.rows, updated)
