"""Managing a results folder's trials: reset chosen trials, prune finished trials' checkpoints.

Reset deletes a trial's whole folder (records and checkpoints), so the next ``ablate run`` or
``ablate resume`` sees a new trial and runs it from its first epoch. Prune deletes the epoch
checkpoints of finished trials, which nothing reads again: a finished trial is never resumed.
It keeps ``best.pt`` (written at the epoch of the highest val/top1; without one, that epoch's
checkpoint) and, if asked, the newest epoch checkpoint. No Ray; the CLI (``ablate.cli.manage``)
holds the folder's driver lock around these calls, so nothing is deleted under a running sweep.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from ablate import bookkeeping, record
from ablate.errors import RecordError, TrialError, closest
from ablate.plan import select_trials

CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class TrialFolder:
    """A trial chosen for reset: its folder and what deleting it frees."""

    id: str
    arm: str
    state: str
    folder: Path
    files: int  # record files, checkpoints included
    checkpoints: int
    bytes: int


@dataclass(frozen=True)
class Prunable:
    """The checkpoints of one finished trial that prune deletes, and those it keeps."""

    id: str
    arm: str
    delete: tuple[Path, ...]
    keep: tuple[str, ...]  # file names
    bytes: int


def check_results_dir(results_dir: Path) -> None:
    """RecordError unless ``results_dir`` is a results folder of 'ablate run' with a readable
    plan: checked before the command takes the folder's lock, which would write a lock file
    into any folder (a sweeps/ folder, an empty one)."""
    if not Path(results_dir).exists():
        raise RecordError("no such results folder", file=results_dir,
                          hint=record.folder_hint(results_dir))
    bookkeeping.read_manifest(results_dir)


def check_filters(ids: tuple[str, ...], arms: tuple[str, ...], failed: bool) -> None:
    """TrialError unless reset is told which trials to delete."""
    if not (ids or arms or failed):
        raise TrialError("say which trials to reset", key="reset",
                         hint="give --trial ID, --arm LABEL or --failed (they combine)")


def choose_trials(results_dir: Path, *, ids: tuple[str, ...] = (), arms: tuple[str, ...] = (),
                  failed: bool = False) -> list[TrialFolder]:
    """The trials of the folder matching every filter given, that have a folder to delete.

    ``ids``: ids or unique prefixes (``--trial``); ``arms``: labels or label parts, as
    ``--only`` takes them (``--arm``); ``failed``: state failed. TrialError when no filter is
    given or an id or label matches no trial of the folder.
    """
    check_filters(ids, arms, failed)
    rows = bookkeeping.sweep_status(Path(results_dir))
    if ids:
        wanted = {_match_id(i, [r.id for r in rows]) for i in ids}
        rows = [r for r in rows if r.id in wanted]
    if arms and rows:
        rows = select_trials(rows, arms, (), label=lambda r: r.arm, seed=lambda r: 0,
                             flag="--arm")
    if failed:
        rows = [r for r in rows if r.state == record.FAILED]
    out = []
    for r in rows:
        folder = record.trial_dir(results_dir, r.id)
        if folder.is_dir():
            files = [p for p in folder.rglob("*") if p.is_file()]
            out.append(TrialFolder(r.id, r.arm, r.state, folder, len(files),
                                   sum(p.parent.name == CHECKPOINTS for p in files),
                                   sum(p.stat().st_size for p in files)))
    return out


def _match_id(prefix: str, ids: list[str]) -> str:
    matches = [i for i in ids if i.startswith(prefix)]
    if len(matches) == 1:
        return matches[0]
    near = closest(prefix, ids)
    raise TrialError(f"{'ambiguous' if matches else 'unknown'} trial id {prefix!r} in this "
                     "results folder", key=f"--trial {prefix}",
                     hint=(f"did you mean '{near}'? " if near and not matches else "")
                     + "'ablate status DIR' lists the ids")


def reset_trials(results_dir: Path, chosen: list[TrialFolder]) -> int:
    """Delete the chosen trials' folders; the bytes freed.

    Each folder is first renamed out of ``trials/`` (one atomic step), so an interruption never
    leaves half a record that a run would read; the rename's leftover is then removed.
    """
    freed = 0
    for t in chosen:
        gone = Path(results_dir) / f".reset-{t.id}-{secrets.token_hex(4)}"
        os.replace(t.folder, gone)
        shutil.rmtree(gone)
        freed += t.bytes
    return freed


def prunable(results_dir: Path, *, keep_last: bool = False) -> tuple[list[Prunable], int]:
    """(what to delete per finished trial, the number of unfinished trials left alone)."""
    from ablate.checkpoint import BEST, epoch_checkpoints  # imports torch

    out, unfinished = [], 0
    for tdir in record.list_trial_dirs(results_dir):
        ckpt = tdir / CHECKPOINTS
        if not ckpt.is_dir():
            continue
        if record.read_state(tdir) not in record.FINISHED:
            unfinished += 1
            continue
        epochs = epoch_checkpoints(ckpt)
        keep = {ckpt / BEST} if (ckpt / BEST).exists() else {ckpt / f"epoch_{e:04d}.pt"
                                                          for e in _best_epoch(tdir)}
        if keep_last and epochs:
            keep.add(epochs[0])
        delete = [p for p in epochs if p not in keep]
        delete += [p for p in ckpt.iterdir() if p.name.startswith(".") and p.suffix == ".tmp"]
        if delete:
            out.append(Prunable(tdir.name, _arm(tdir), tuple(delete),
                                tuple(sorted(p.name for p in keep if p.exists())),
                                sum(p.stat().st_size for p in delete)))
    return out, unfinished


def _best_epoch(tdir: Path) -> list[int]:
    """The epoch of the highest val/top1 in metrics.jsonl (the first of equals), if any."""
    rows = [r for r in record.read_metrics(tdir) if isinstance(r.get("val/top1"), (int, float))]
    return [max(rows, key=lambda r: r["val/top1"])["epoch"]] if rows else []


def _arm(tdir: Path) -> str:
    try:
        return record.read_trial(tdir).arm
    except RecordError:
        return "?"


def prune_checkpoints(found: list[Prunable]) -> int:
    """Delete what :func:`prunable` found; the bytes freed."""
    for p in found:
        for path in p.delete:
            path.unlink(missing_ok=True)
    return sum(p.bytes for p in found)
