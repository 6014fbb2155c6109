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
                       "device", "host", "data_fingerprint", "seed", "params", "flops", ...}
    checkpoints/      epoch_NNNN.pt (the last few) and best.pt; written atomically

Every file ablate writes whole (JSON records, checkpoints, tables, figures, reports) goes
through :func:`atomic_file`: a temporary file beside it, then a rename, so a crash never leaves
a half-written one. ``metrics.jsonl`` is appended line by line; a reader ignores a truncated last
line, and when epochs repeat (a resumed trial re-running an epoch) the last record wins.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ablate.config import Trial
from ablate.errors import RecordError

RECORD_SCHEMA = 1

RUNNING, DONE, FAILED, DIVERGED = "running", "done", "failed", "diverged"
STATES = (RUNNING, DONE, FAILED, DIVERGED)
# Derived states, never written: no record yet, "running" with nobody running it, or a record
# file that cannot be read.
NEW, INTERRUPTED, CORRUPT = "new", "interrupted", "corrupt"
FINISHED = (DONE, DIVERGED)  # never recomputed


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


def _create_new(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_EXCL, 0o666)


def _open_temp(path: Path, mode: str) -> tuple[Path, IO[Any]]:
    """A new file beside ``path``, named for this process and a random token.

    Two writers of the same path (two processes, or two threads) never share a temporary
    file. Created with mode 0o666 less the umask, as ``open`` would make it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            return tmp, open(tmp, mode, opener=_create_new)
        except FileExistsError:
            continue


@contextmanager
def atomic_files(paths: list[Path], mode: str = "w") -> Iterator[list[IO[Any]]]:
    """Open a temporary file beside each of ``paths``; they replace them, in order, only if the
    block succeeds.

    Readers see the old file or the new one, never a part: the data is fsynced before the
    renames, and on any error every temporary file is removed and ``paths`` left as they were.
    Several files are renamed only once all of them are written (tables that belong together).
    """
    temps: list[tuple[Path, IO[Any]]] = []
    try:
        for path in paths:
            temps.append(_open_temp(path, mode))
        yield [f for _, f in temps]
        for _, f in temps:
            f.flush()
            os.fsync(f.fileno())
            f.close()
        for (tmp, _), path in zip(temps, paths):
            os.replace(tmp, path)
    finally:
        for tmp, f in temps:
            f.close()
            tmp.unlink(missing_ok=True)  # gone already once renamed


@contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` that replaces it only if the block succeeds
    (see :func:`atomic_files`); the one writer of every whole file ablate writes."""
    with atomic_files([path], mode) as (f,):
        yield f


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as f:
        json.dump(obj, f, indent=1, sort_keys=True, default=str)


def read_json(path: Path) -> dict[str, Any] | None:
    """Read a record JSON file; None if absent; RecordError if corrupt or of a newer schema."""
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RecordError(f"corrupt JSON ({e.msg if hasattr(e, 'msg') else e})", file=path,
                          hint="delete the file or the trial folder to recompute it") from None
    if not isinstance(obj, dict):
        raise RecordError("expected a JSON object", file=path)
    schema = obj.get("schema", RECORD_SCHEMA)
    if schema != RECORD_SCHEMA:
        raise RecordError(f"unknown record schema {schema!r} (this ablate reads {RECORD_SCHEMA})",
                          file=path, hint="collect it with the ablate version that wrote it")
    return obj


def check_record(tdir: Path) -> dict[str, Any] | None:
    """Raise RecordError naming the first JSON file of the trial folder that cannot be read.

    Run before launching anything: a corrupt record must stop a run, not be taken for a new
    trial. A truncated last line of metrics.jsonl is not corruption (a crash mid-append).
    Returns the parsed state.json (None when there is none), so callers read it only once.
    """
    files = {name: read_json(tdir / name)
             for name in ("trial.json", "state.json", "result.json", "provenance.json")}
    return files["state.json"]


def write_trial(tdir: Path, trial: Trial) -> None:
    write_json_atomic(tdir / "trial.json", {"schema": RECORD_SCHEMA, **trial.to_dict()})


def read_trial(tdir: Path) -> Trial:
    obj = read_json(tdir / "trial.json")
    if obj is None:
        raise RecordError("no trial.json", file=tdir, hint="not a trial folder")
    try:
        return Trial.from_dict(obj)
    except (KeyError, TypeError, ValueError) as e:
        raise RecordError(f"malformed trial record ({e})", file=tdir / "trial.json") from None


def write_state(tdir: Path, state: str, **extra: Any) -> None:
    assert state in STATES, state
    prev = read_state_raw(tdir) or {}
    obj = {"schema": RECORD_SCHEMA, "state": state, "updated": time.time(),
           "attempt": extra.pop("attempt", prev.get("attempt", 0)), **extra}
    write_json_atomic(tdir / "state.json", obj)


def read_state_raw(tdir: Path) -> dict[str, Any] | None:
    try:
        return read_json(tdir / "state.json")
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


def read_metrics(tdir: Path) -> list[dict[str, Any]]:
    """Epoch records in epoch order, one per epoch (the last written wins); bad lines skipped."""
    path = tdir / "metrics.jsonl"
    if not path.exists():
        return []
    by_epoch: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
            by_epoch[int(row["epoch"])] = row
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # a truncated last line from a crash mid-write
    return [by_epoch[e] for e in sorted(by_epoch)]


def truncate_metrics(tdir: Path, last_epoch: int) -> None:
    """Drop records after ``last_epoch`` (used when resuming from that epoch's checkpoint)."""
    rows = [r for r in read_metrics(tdir) if r["epoch"] <= last_epoch]
    with atomic_file(tdir / "metrics.jsonl") as f:
        f.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def write_result(tdir: Path, result: dict[str, Any]) -> None:
    write_json_atomic(tdir / "result.json", {"schema": RECORD_SCHEMA, **result})


def read_result(tdir: Path) -> dict[str, Any] | None:
    return read_json(tdir / "result.json")


def write_provenance(tdir: Path, prov: dict[str, Any]) -> None:
    write_json_atomic(tdir / "provenance.json", {"schema": RECORD_SCHEMA, **prov})


def read_provenance(tdir: Path) -> dict[str, Any] | None:
    return read_json(tdir / "provenance.json")


def list_trial_dirs(results_dir: str | Path) -> list[Path]:
    root = trials_root(results_dir)
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []
