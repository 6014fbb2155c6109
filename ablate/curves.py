"""A trial's learning curves as TensorBoard event files, so ``tensorboard --logdir RESULTS``
shows every arm of a sweep side by side.

Each trial writes into ``TRIAL_DIR/tensorboard/ARM.seedN/`` (the innermost folder is the run's
name in TensorBoard, so its run list reads as arms and seeds rather than trial ids); every
numeric key of an epoch's row (``train/loss``, ``train/lr``, ``val/top1``, ``time/epoch_s``,
...) is a scalar at step = epoch, and a text summary at step 0 names the trial.

The folder always mirrors ``metrics.jsonl``, which is the truth: the first epoch an attempt
records (a new process, or a resume from an earlier checkpoint than the last epoch written)
deletes the folder's old event files and writes a new one replaying every row of the record,
after its truncation on resume, so an epoch re-run after a crash appears once. That file
starts with a purge at step 1, which tells a TensorBoard already showing the old file to
forget its points. Later epochs of the attempt are appended to the open file.

Curves are a view: a failure to write them is logged and never fails the trial.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate import record
from ablate.config import Trial

log = logging.getLogger(__name__)

FOLDER = "tensorboard"


@dataclass
class _Open:
    """The one event file this process has open: whose it is and the last epoch in it."""

    folder: Path
    writer: Any  # tensorboardX.SummaryWriter
    last_epoch: int


_open: _Open | None = None


def curves_dir(tdir: Path, trial: Trial) -> Path:
    """The folder (a TensorBoard run) that holds ``trial``'s event files."""
    label = re.sub(r"[^A-Za-z0-9._=+,-]+", "_", trial.arm)[:100] or "arm"
    return Path(tdir) / FOLDER / f"{label}.seed{trial.config.seed}"


def follow_label(tdir: Path, trial: Trial) -> None:
    """Rename a trial's TensorBoard run to its current label, after its arm was renamed (the
    id stays, so a finished trial is not run again and would keep showing the old name)."""
    want = curves_dir(tdir, trial)
    try:
        runs = [d for d in want.parent.iterdir() if d.is_dir()] if want.parent.is_dir() else []
        if len(runs) == 1 and runs[0] != want:
            os.replace(runs[0], want)
    except OSError as e:
        log.warning("trial %s: TensorBoard run not renamed (%s)", trial.id, e)


def add_epoch(tdir: Path, trial: Trial, row: dict[str, Any]) -> None:
    """Add one epoch's row (already appended to ``metrics.jsonl``) to the trial's curves.

    tensorboardX writes from a thread of its own and flushes every few seconds; the file is
    closed after the trial's last epoch. What a killed process had not written yet, the next
    attempt replays from the record.
    """
    global _open
    folder, epoch = curves_dir(tdir, trial), int(row["epoch"])
    try:
        if _open is not None and (_open.folder, _open.last_epoch + 1) == (folder, epoch):
            _write_row(_open.writer, row)
            _open.last_epoch = epoch
        else:
            close_curves()
            _open = _start_file(Path(tdir), trial, folder)
    except (OSError, ImportError) as e:  # a file in the way; tensorboardX not installed
        log.warning("trial %s: TensorBoard curves not written (%s)", trial.id, e)
        _open = None
        return
    if epoch >= trial.config.train.epochs:
        close_curves()


def close_curves() -> None:
    """Close this process's open event file, if any (writes what is still queued)."""
    global _open
    if _open is not None:
        writer, _open = _open.writer, None
        writer.close()


atexit.register(close_curves)  # a diverged trial's file, or one left open by a test


def _start_file(tdir: Path, trial: Trial, folder: Path) -> _Open:
    """A new event file for ``folder`` holding every recorded epoch, the old ones deleted."""
    from tensorboardX import SummaryWriter

    if folder.is_dir():
        for old in folder.glob("events.out.tfevents.*"):
            old.unlink(missing_ok=True)
    if folder.parent.is_dir():  # runs under a label the trial had before (an arm renamed)
        for stale in folder.parent.iterdir():
            if stale != folder and stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
    writer = SummaryWriter(str(folder), purge_step=1, flush_secs=10)
    writer.add_text("trial", f"arm **{trial.arm}**, seed {trial.config.seed}, trial "
                    f"`{trial.id}`, sweep {trial.sweep}", global_step=0)
    rows = record.read_metrics(tdir)
    for r in rows:
        _write_row(writer, r)
    return _Open(folder, writer, max((int(r["epoch"]) for r in rows), default=0))


def _write_row(writer: Any, row: dict[str, Any]) -> None:
    step = int(row["epoch"])
    for key, value in sorted(row.items()):
        if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
            writer.add_scalar(key, float(value), global_step=step)
