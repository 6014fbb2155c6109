"""The results folder's bookkeeping, without Ray: ``sweep.json``, the driver lock, status rows.

``sweep.json`` holds the plan, so ``ablate resume`` needs no YAML, and a trial folder that
lost its trial.json gets it back from there; the driver lock lets ``ablate status`` tell a
running trial from an interrupted one; the status rows are each trial's state as
``ablate.record.trial_state`` derives it, with any problem of its record. The runner
(``ablate.runner``) keeps these up to date while it runs; ``ablate status`` and
``ablate resume`` read them with no Ray at all.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate import files, record
from ablate.config import Trial, TrialConfig
from ablate.errors import RecordError, TrialError
from ablate.failures import Failure, classify_record

# STALE_S is not used here; the runner's tests read it from this module
from ablate.record import LOCK, STALE_S, driver_running  # noqa: F401

MANIFEST = "sweep.json"
log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- sweep.json


def write_manifest(results_dir: Path, *, name: str, source: str | None, trials: list[Trial],
                   max_concurrent: int | None, description: str | None = None,
                   overrides: list[str] | None = None) -> None:
    """Write ``sweep.json`` for this plan (what ``ablate resume`` runs).

    ``overrides``: the command-line flags that changed or cut the sweep file's plan
    (``--set``, ``--only``, ``--seeds``), kept under ``"overrides"``; None keeps the earlier ones.

    Trials of an earlier plan that this one no longer has stay listed under ``"retired"``: their
    records are kept and shown by ``ablate status``, but they are not run.
    """
    try:
        old = read_manifest(results_dir) if (results_dir / MANIFEST).exists() else None
    except RecordError:  # unreadable: 'ablate run --yes' was told to write it anew
        old = None
    ids = {t.id for t in trials}
    retired: dict[str, Trial] = {}
    if old is not None:
        for t in old["trials"] + old["retired"]:
            if t.id not in ids:
                retired[t.id] = t
    if overrides is None:
        overrides = old.get("overrides", []) if old is not None else []
    files.write_json_atomic(results_dir / MANIFEST, {
        "schema": record.RECORD_SCHEMA, "name": name, "source": source,
        "description": description, "max_concurrent": max_concurrent,
        "overrides": list(overrides),
        "trials": [t.to_dict() for t in trials],
        "retired": [t.to_dict() for t in retired.values()],
    })


def read_manifest(results_dir: Path) -> dict[str, Any]:
    """``sweep.json`` with its trials as :class:`Trial` objects; RecordError if absent/bad."""
    path = Path(results_dir) / MANIFEST
    if Path(results_dir).is_file():
        raise RecordError("is a file, not a results folder", file=results_dir,
                          hint=record.folder_hint(results_dir))
    rewrite = record.manifest_hint(results_dir)
    obj = record.read_sweep_json(results_dir)
    if obj is None:
        if Path(results_dir).is_dir() and [p.name for p in Path(results_dir).iterdir()] == [LOCK]:
            raise RecordError("no sweep.json: the 'ablate run' that made this folder stopped "
                              "before it wrote its plan (nothing ran)", file=path,
                              hint="run 'ablate run SWEEP.yaml' again")
        raise RecordError("no sweep.json: not a results folder of 'ablate run'", file=path,
                          hint=record.folder_hint(results_dir))
    try:
        trials = [Trial.from_dict(d) for d in obj["trials"]]
        for i, t in enumerate(trials):
            if (why := t.config.value_problem()) is not None:  # edited by hand
                raise RecordError(f"trials[{i}] is malformed ({why})", file=path, hint=rewrite)
        return {**obj, "trials": trials,
                "retired": [Trial.from_dict(d) for d in obj.get("retired", [])]}
    except KeyError as e:
        raise RecordError(f"malformed sweep.json (no {e} in it or in one of its trials)",
                          file=path, hint=rewrite) from None
    except (TypeError, ValueError, AttributeError) as e:
        raise RecordError(f"malformed sweep.json ({e})", file=path, hint=rewrite) from None


def other_sweep(results_dir: Path, name: str) -> str | None:
    """The sweep whose sweep.json the results folder holds, when it is not ``name`` (None
    without a sweep.json); RecordError when it cannot be read."""
    if not (Path(results_dir) / MANIFEST).exists():
        return None
    other = read_manifest(results_dir)["name"]
    return other if other != name else None


# ---------------------------------------------------------------------------- driver lock


@contextmanager
def driver_lock(results_dir: Path) -> Iterator[None]:
    """Hold the results folder's driver lock; TrialError if another driver holds it."""
    path = Path(results_dir) / LOCK
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:  # a file system that refuses (read-only, /proc, a full disk)
        raise TrialError(f"cannot write in the results folder ({e.strerror or e})",
                         file=results_dir, hint="pass a results folder on a writable file "
                         "system") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrialError("another 'ablate run' is already running this results folder",
                             file=results_dir, hint="wait for it, or watch it with "
                             f"'ablate status {results_dir}'") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()} {time.time():.0f}\n".encode())
        yield
    finally:
        os.close(fd)  # closing releases the lock; a killed driver releases it too


# ---------------------------------------------------------------------------- status


@dataclass(frozen=True)
class TrialStatus:
    """One row of ``ablate status``: a trial's state as its record shows it."""

    id: str
    arm: str
    state: str  # record.STATES, or new / interrupted / corrupt / damaged
    epochs_done: int
    epochs: int
    best_top1: float | None
    updated: float | None  # unix time of the last write to the record
    error: Failure | None = None
    problem: str | None = None  # what is wrong with the record, and what to do


def _missing_trial_json(tdir: Path) -> str | None:
    """The problem of a trial folder that has a record but no trial.json, else None."""
    if (tdir / "trial.json").exists() or not tdir.is_dir() or not any(tdir.iterdir()):
        return None
    results = tdir.parent.parent
    return (f"{tdir / 'trial.json'}: missing; 'ablate resume {results}' restores it from "
            f"sweep.json")


def trial_status(trial: Trial, results_dir: Path, *, driver_alive: bool,
                 now: float | None = None) -> TrialStatus:
    """Read one trial's record (record.trial_state); a problem is set for a corrupt or damaged
    record and for one that lost its trial.json."""
    derived = record.trial_state(results_dir, trial, driver_alive=driver_alive, now=now)
    raw, rows = derived.raw, derived.rows
    tops = [r["val/top1"] for r in rows if isinstance(r.get("val/top1"), (int, float))]
    error = classify_record(raw["error"]) \
        if derived.state == record.FAILED and raw.get("error") else None
    problem = str(derived.problem) if derived.problem else \
        _missing_trial_json(record.trial_folder(results_dir, trial))
    return TrialStatus(id=trial.id, arm=trial.arm, state=derived.state, epochs_done=len(rows),
                       epochs=trial.config.train.epochs, best_top1=max(tops) if tops else None,
                       updated=derived.updated, error=error, problem=problem)


def _unknown_folder(tdir: Path) -> TrialStatus:
    """The row of a trial folder no plan names and whose trial.json cannot be read."""
    try:
        record.read_trial(tdir)
        problem = None
    except RecordError as err:
        problem = str(err) if (tdir / "trial.json").exists() else (
            f"{tdir / 'trial.json'}: missing, and sweep.json does not list this trial; restore "
            "the file, or delete the folder")
    return TrialStatus(id=tdir.name, arm="?", state=record.CORRUPT,
                       epochs_done=len(record.read_metrics(tdir)), epochs=0, best_top1=None,
                       updated=None, problem=problem)


def sweep_status(results_dir: Path) -> list[TrialStatus]:
    """Every trial of the results folder (planned, retired, or only on disk), plan order.

    Works on a folder of trial records without ``sweep.json`` too (trials run one by one). A
    folder that is no listed trial's and has no readable trial.json is a "corrupt" row.
    """
    results_dir = Path(results_dir)
    trials: dict[str, Trial] = {}
    if (results_dir / MANIFEST).exists() or not record.list_trial_dirs(results_dir):
        manifest = read_manifest(results_dir)  # no trial folders either: not a results folder
        trials = {t.id: t for t in manifest["trials"] + manifest["retired"]}
    claimed = {record.trial_folder(results_dir, t).name for t in trials.values()}
    unknown = []
    for tdir in record.list_trial_dirs(results_dir):
        if tdir.name in claimed:
            continue
        try:
            trials[tdir.name] = record.read_trial(tdir)
        except RecordError:
            unknown.append(_unknown_folder(tdir))
    alive = driver_running(results_dir)
    return [trial_status(t, results_dir, driver_alive=alive) for t in trials.values()] + unknown


def _listed_trials(results_dir: Path) -> dict[str, Trial]:
    """Trial id -> Trial of every trial sweep.json lists; empty when it cannot be read."""
    try:
        manifest = read_manifest(results_dir)
    except RecordError:
        return {}
    return {t.id: t for t in manifest["trials"] + manifest["retired"]}


def restore_trial_json(results_dir: Path, trial: Trial,
                       listed: dict[str, Trial] | None = None) -> bool:
    """Write back the trial.json of ``trial``'s folder if it has a record without one.

    The trial comes from sweep.json when it lists it (``listed``: its trials, read once by
    the caller), else ``trial`` itself (the plan's, of the same id). True when restored.
    """
    tdir = record.trial_folder(results_dir, trial)
    if _missing_trial_json(tdir) is None:
        return False
    listed = _listed_trials(results_dir) if listed is None else listed
    record.write_trial(tdir, listed.get(trial.id, trial))
    log.warning("restored %s from %s", tdir / "trial.json",
                MANIFEST if trial.id in listed else "the plan")
    return True


def split_finished(trials: list[Trial], results_dir: Path) -> tuple[list[Trial], list[Trial]]:
    """(finished, to run): done and diverged trials are never run again.

    A trial folder that lost its trial.json gets it back (from sweep.json, else the plan).
    Raises RecordError on a trial whose record is corrupt or damaged (record.trial_state),
    before anything runs: a corrupt record is no new trial, and resuming a damaged one would
    drop its lost epoch in silence.
    """
    finished, todo = [], []
    listed = _listed_trials(results_dir) if (Path(results_dir) / MANIFEST).exists() else {}
    for t in trials:
        restore_trial_json(results_dir, t, listed)
        derived = record.trial_state(results_dir, t, driver_alive=True)
        if derived.problem is not None:
            raise derived.problem
        (finished if derived.state in record.FINISHED else todo).append(t)
    return finished, todo


def held_failures(todo: list[Trial], results_dir: Path) -> list[Trial]:
    """The trials of ``todo`` whose last attempt failed in a way that will recur (bad code,
    configuration or data: ``failures.RECURRING``): a run does not start them again until
    they are reset (``ablate reset``) or the run is told ``--retry-failed``."""
    from ablate.failures import RECURRING, classify_record

    held = []
    for t in todo:
        raw = record.read_state_raw(record.trial_dir(results_dir, t.id)) or {}
        if raw.get("state") == record.FAILED and isinstance(raw.get("error"), dict) \
                and classify_record(raw["error"]).kind in RECURRING:
            held.append(t)
    return held


# ---------------------------------------------------------------------------- changes


def migrate_legacy(results_dir: Path, trials: list[Trial]) -> list[tuple[str, str]]:
    """Rename the 0.1-era folders of ``trials`` to their current ids; (old, new) pairs.

    Call with the driver lock held. The record is kept whole; trial.json is rewritten with the
    current id (the configuration is the same: the old id hashed all of it).
    """
    moved = []
    for t in trials:
        old = record.legacy_dir(results_dir, t)
        if old is not None:
            new = record.trial_dir(results_dir, t.id)
            os.replace(old, new)
            record.write_trial(new, t)
            moved.append((old.name, t.id))
    return moved


def config_changes(results_dir: Path, trial: Trial) -> dict[str, tuple[Any, Any]]:
    """Result fields where the configuration stored with ``trial``'s record differs from the
    one the plan resolves now: dotted key -> (stored, planned). Empty when the record agrees,
    or has no readable trial.json.

    The id leaves out fields at their defaults, so a default changed in the code keeps the id
    while the experiment is no longer the same; this is how it shows.
    """
    try:
        stored = record.read_trial(record.trial_folder(results_dir, trial))
    except RecordError:
        return {}
    return config_diff(stored.config, trial.config)


def config_diff(stored: TrialConfig, planned: TrialConfig) -> dict[str, tuple[Any, Any]]:
    """The result fields where two configurations differ: dotted key -> (stored, planned)."""
    old, new = stored.result_fields(), planned.result_fields()
    return {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}


def begun_changes(results_dir: Path, trial: Trial) -> dict[str, tuple[Any, Any]]:
    """``config_changes`` of an unfinished trial that has epoch checkpoints: resuming it would
    continue weights trained under the stored configuration with the planned one. Empty when
    there is no checkpoint (a restart then trains under the plan alone) or nothing changed."""
    tdir = record.trial_folder(results_dir, trial)
    if not record.epoch_checkpoints(tdir / record.CHECKPOINTS):
        return {}
    return config_changes(results_dir, trial)


def describe_changes(changes: dict[str, tuple[Any, Any]]) -> str:
    """One trial's field changes, e.g. 'train.lr 0.001 -> 0.0005; train.epochs ...'."""
    return "; ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items())


LABELS = ("sweep", "arm", "varied", "role", "expected")  # what the sweep file calls a trial


def relabel(results_dir: Path, trials: list[Trial]) -> list[Trial]:
    """Give the stored records of ``trials`` the plan's names for them; the relabelled ones.

    Call with the driver lock held. A trial's id leaves out its labels (``LABELS``), so a
    renamed arm or sweep, or an edited ``expected``, keeps its finished trials; their
    trial.json (which the tables read) and TensorBoard run then take the new names. The stored
    configuration and resources are kept as they ran.
    """
    from ablate import curves

    done = []
    for t in trials:
        tdir = record.trial_folder(results_dir, t)
        if not (tdir / "trial.json").exists():
            continue
        try:
            stored = record.read_trial(tdir)
        except RecordError:
            continue  # triage has reported it, or a rerun rewrites it
        planned = {k: getattr(t, k) for k in LABELS}
        if {k: getattr(stored, k) for k in LABELS} != planned:
            record.write_trial(tdir, dataclasses.replace(stored, **planned))
            curves.follow_label(tdir, t)
            done.append(t)
    return done


def set_aside(results_dir: Path, trial: Trial) -> Path:
    """Move a trial's record to ``replaced/`` (kept, never collected) so it runs afresh."""
    src = record.trial_folder(results_dir, trial)
    dest = Path(results_dir) / "replaced" / f"{src.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dest)
    return dest
