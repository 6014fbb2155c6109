"""The in-process backend of the runner: trials one after another in this process, no Ray.

For ``ablate train`` (one trial by hand), ``ablate run --debug`` (the plan run here, so pdb
and breakpoints work: ``python -m pdb -m ablate run SWEEP.yaml --debug``) and the tests that
need no cluster. It is not a scheduler: one trial at a time in the planner's order, whatever
``max_concurrent`` says, no retries (a lost data-loader worker or an out-of-memory error is
recorded as failed, and the next run or ``ablate resume`` starts it again), and the trial's
``resources`` are not reserved. It emits the same events as the Ray backend and records
failures the same way; with ``propagate`` the first error is raised where it happened instead,
after the record says failed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate import record
from ablate.config import Trial
from ablate.errors import RecordError, TrialError
from ablate.failures import classify_exception
from ablate.runner import Tracker, record_failure


def train_here(trial: Trial, tdir: Path, *, device: str | None = None,
               report: Callable[[dict[str, Any]], None] | None = None,
               propagate: bool = False) -> dict[str, Any] | None:
    """Train ``trial`` in ``tdir`` in this process (resuming from its checkpoints); its result.

    A failure is recorded as the runner records it (state failed, the error and its kind);
    then it is raised if ``propagate``, else None is returned. ``report(row)`` gets each
    epoch's metrics row. The sweep's plugins are imported first, as a Ray worker does
    (an error there is raised, and recorded nowhere).
    """
    from ablate.plugins import load_plugins
    from ablate.train import train_trial

    load_plugins(trial.plugins)
    try:
        return train_trial(trial, tdir, report=report, device=device)
    except Exception as exc:
        if _holds(tdir, trial):  # not a folder of another trial's that train_trial refused
            record_failure(tdir, exc, classify_exception(exc))
        if propagate:
            raise
        return None


def _holds(tdir: Path, trial: Trial) -> bool:
    """Whether ``tdir`` is ``trial``'s record (train_trial opened it), so a failure goes there."""
    try:
        return record.read_trial(tdir).id == trial.id
    except (RecordError, OSError):
        return False


@dataclass
class InProcessBackend:
    """Run a plan's trials sequentially in this process (see the module's docstring).

    ``propagate``: let the first failure's exception out, for a debugger; signals are then
    left to Python (Ctrl-C is a KeyboardInterrupt, or pdb's own break) instead of the
    runner's stop-and-summarise.
    """

    device: str | None = None
    propagate: bool = False

    @property
    def handles_signals(self) -> bool:
        return not self.propagate

    @contextmanager
    def session(self) -> Iterator[float]:
        yield 0.0  # nothing to connect

    def check_fits(self, todo: list[Trial], results_dir: Path) -> None:
        """TrialError for a data-parallel trial: its workers are Ray Train's to start; this
        process runs any other trial of the plan, one at a time."""
        for t in todo:
            if t.resources.workers > 1:
                raise TrialError(f"trial {t.id} [{t.arm}] runs on {t.resources.workers} "
                                 "data-parallel workers, which only a Ray run starts",
                                 key="resources.workers",
                                 hint="run without --debug, or debug it with "
                                 "--set resources.workers=1")

    def run(self, todo: list[Trial], results_dir: Path, *, max_concurrent: int | None,
            tracker: Tracker) -> None:
        for trial in todo:
            tdir = record.trial_dir(results_dir, trial.id)
            tracker.emit("start", trial.id, pid=os.getpid())

            def report(row: dict[str, Any], tid: str = trial.id) -> None:
                metrics = {k: v for k, v in row.items() if "/" in k or k == "epoch"}
                tracker.emit("result", tid, pid=os.getpid(), metrics=metrics)

            train_here(trial, tdir, device=self.device, report=report,
                       propagate=self.propagate)
            finished = record.read_state(tdir) in record.FINISHED
            tracker.emit("done" if finished else "failed", trial.id)

    def request_stop(self) -> bool:
        return False  # nothing to stop gracefully: the KeyboardInterrupt ends the trial
