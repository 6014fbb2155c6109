"""Run planned trials: the backend-neutral part of a run, over a backend that executes them.

The trial records (``ablate.record``) are the truth: a trial is finished when its folder says
done or diverged, whatever an engine remembers. This module does what every run does whatever
executes its trials: it holds the results folder's driver lock, sorts the plan into finished,
held and to-run trials (once, and hands that to the caller), keeps ``sweep.json`` up to date,
turns the backend's reports into :class:`Event` objects with running counts, catches SIGINT
and SIGTERM, and reads the records back into a :class:`RunSummary`.

Two backends execute the trials. ``ablate.raybackend`` (the default, and the engine of every
real run) runs them as Ray Tune trials: resources, the concurrency cap, retries of lost
workers. ``ablate.inprocess`` runs them one after another in this process, for ``ablate train``,
``ablate run --debug`` (pdb) and the tests that need no Ray; it is not a scheduler. A run
writes nothing but the lock before the backend has accepted its plan. Neither Ray nor torch is
imported by this module.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ablate import record
from ablate.bookkeeping import (
    LOCK,
    MANIFEST,
    begun_changes,
    config_changes,
    describe_changes,
    driver_lock,
    held_failures,
    migrate_legacy,
    relabel,
    set_aside,
    split_finished,
    write_manifest,
)
from ablate.config import Trial
from ablate.errors import AblateError, RecordError, TrialError
from ablate.failures import Failure, classify_record

# ---------------------------------------------------------------------------- what a run reports


@dataclass(frozen=True)
class Progress:
    """Counts over the trials of this run (finished ones skipped at the start are not in it)."""

    total: int
    done: int = 0
    failed: int = 0
    running: int = 0
    elapsed_s: float = 0.0
    eta_s: float | None = None  # None until a trial has finished

    @property
    def left(self) -> int:
        return self.total - self.done - self.failed - self.running


@dataclass(frozen=True)
class Event:
    """What the runner tells its caller: a trial started, reported an epoch, ended."""

    kind: str  # "start" | "result" | "retry" | "done" | "failed"
    trial_id: str
    progress: Progress
    pid: int | None = None  # the process running the trial
    metrics: dict[str, Any] = field(default_factory=dict)  # an epoch's row, for "result"


@dataclass(frozen=True)
class Triage:
    """The plan sorted against the results folder, before anything runs."""

    finished: list[Trial]  # done or diverged: skipped (less those rerun as changed)
    todo: list[Trial]  # to run now, in the planner's order, then the changed ones rerun
    held: list[Trial]  # failed before with an error that recurs: not started
    changes: dict[str, dict[str, tuple[Any, Any]]]  # finished trials run under another config
    rerun_changed: bool  # whether the changed ones are in ``todo``
    notes: list[str] = field(default_factory=list)  # checkpoints of ``todo`` resuming skips


@dataclass(frozen=True)
class RunSummary:
    """How a run ended, from the records: what finished, what failed and why."""

    results_dir: Path
    skipped: list[str]  # finished before this run started
    done: list[str]  # finished (done or diverged) in this run
    diverged: list[str]  # those of ``done`` that diverged (a result, not a failure)
    failed: dict[str, Failure]
    unfinished: list[str]  # neither: the run was interrupted
    wall_s: float
    ray_start_s: float  # seconds the backend took to connect (Ray's start; 0 in-process)
    retried: int = 0  # attempts restarted after a lost worker or out of memory
    interrupted: int | None = None  # the signal (SIGINT, SIGTERM) that stopped the run
    held: list[str] = field(default_factory=list)  # failed before, recurring: not started


class Tracker:
    """Turns a backend's reports (a trial started, an epoch, an end) into :class:`Event`
    objects with running counts and a time estimate."""

    def __init__(self, total: int, on_event: Callable[[Event], None] | None) -> None:
        self.total, self.on_event = total, on_event
        self.t0 = time.time()
        self.started: dict[str, float] = {}
        self.durations: list[float] = []
        self.done, self.failed, self.slots, self.retried = 0, 0, 1, 0

    def progress(self) -> Progress:
        running = len(self.started)
        self.slots = max(self.slots, running)
        eta = None
        if self.durations:
            mean = sum(self.durations) / len(self.durations)
            left = self.total - self.done - self.failed - running
            eta = mean * (left + 0.5 * running) / self.slots
        return Progress(self.total, self.done, self.failed, running, time.time() - self.t0, eta)

    def emit(self, kind: str, trial_id: str, **kw: Any) -> None:
        if kind == "start":
            self.started.setdefault(trial_id, time.time())
        elif kind == "retry":
            self.retried += 1
        elif kind in ("done", "failed"):
            began = self.started.pop(trial_id, None)
            if kind == "done":
                self.done += 1
                if began is not None:
                    self.durations.append(time.time() - began)
            else:
                self.failed += 1
        if self.on_event is not None:
            self.on_event(Event(kind, trial_id, self.progress(), **kw))


def record_failure(tdir: Path, exc: BaseException, failure: Failure) -> None:
    """Make sure a trial's record says failed, with the error's kind (``train_trial`` wrote the
    rest when it could; a killed worker never got to)."""
    raw = record.read_state_raw(tdir) or {}
    error = raw.get("error") if raw.get("state") == record.FAILED else None
    if not error:
        error = {"type": type(exc).__name__, "message": str(exc),
                 "traceback": "".join(traceback.format_exception(exc))}
    try:
        record.write_state(tdir, record.FAILED, error={**error, "kind": failure.kind})
    except OSError:  # a full disk: the record cannot say it, and raising would mean a retry
        logging.getLogger(__name__).error("trial record %s not written", tdir, exc_info=True)


# ---------------------------------------------------------------------------- backends


class Backend(Protocol):
    """What executes a run's trials; :func:`run_plan` does everything else.

    ``session()`` is entered before anything but the lock is written and yields the seconds
    it took to be ready; inside it ``check_fits`` refuses (with our error) a plan the backend
    can never run (it may write only files it removes again before it returns), then ``run`` runs ``todo``, reporting each start, epoch and end to the
    tracker and recording each failure in the trial's folder (:func:`record_failure`).
    ``request_stop()`` is called on the first SIGINT/SIGTERM: True when the backend will stop
    gracefully by itself, False to stop at once (KeyboardInterrupt where the run is).
    ``handles_signals``: False leaves SIGINT to Python (and pdb) for the whole run.
    """

    handles_signals: bool

    def session(self) -> AbstractContextManager[float]: ...

    def check_fits(self, todo: list[Trial], results_dir: Path) -> None: ...

    def run(self, todo: list[Trial], results_dir: Path, *, max_concurrent: int | None,
            tracker: Tracker) -> None: ...

    def request_stop(self) -> bool: ...


# ---------------------------------------------------------------------------- running


def triage(trials: list[Trial], results_dir: Path, *, rerun_changed: bool = False,
           retry_failed: bool = False) -> Triage:
    """Sort ``trials`` into finished, held and to-run, as a run would (reads records only).

    RecordError on a trial whose record is corrupt or damaged (``bookkeeping.split_finished``),
    or whose checkpoints would fail it after launch (``record.check_checkpoints``, which also
    gives the notes: checkpoints it will skip), or were trained under another configuration
    than the plan's (``bookkeeping.begun_changes``) unless ``rerun_changed``, which sets such
    a trial aside and starts it afresh as it reruns the finished trials that changed.
    """
    finished, todo = split_finished(trials, results_dir)
    held = [] if retry_failed else held_failures(todo, results_dir)
    todo = [t for t in todo if t not in held]
    notes = [note for t in todo
             for note in record.check_checkpoints(record.trial_folder(results_dir, t))]
    changes = {t.id: c for t in finished if (c := config_changes(results_dir, t))}
    begun = {t.id: c for t in todo if (c := begun_changes(results_dir, t))}
    if begun and not rerun_changed:
        t = next(t for t in todo if t.id in begun)
        raise RecordError(
            f"trial {t.id} was interrupted under another configuration than the plan's now "
            f"({describe_changes(begun[t.id])}); resuming its checkpoints would train a mix of "
            "the two", file=record.trial_folder(results_dir, t) / "trial.json",
            hint=f"'ablate reset {results_dir} --trial {t.id}' starts it afresh under the plan, "
            "or 'ablate run --rerun-changed' does (with every finished trial that changed; "
            "their old records go to replaced/)")
    changes |= begun
    if rerun_changed:
        todo += [t for t in finished if t.id in changes]
        finished = [t for t in finished if t.id not in changes]
    return Triage(finished, todo, held, changes, rerun_changed, notes)


def run_plan(trials: list[Trial], results_dir: Path, *, name: str, source: str | None = None,
             description: str | None = None, max_concurrent: int | None = None,
             address: str | None = None, address_from: str = "--address",
             num_cpus: int | None = None, rerun_changed: bool = False,
             retry_failed: bool = False, overrides: list[str] | None = None,
             on_event: Callable[[Event], None] | None = None,
             on_triage: Callable[[Triage], None] | None = None,
             callbacks: list | None = None, backend: Backend | None = None) -> RunSummary:
    """Record the plan in ``sweep.json`` and run every trial of it not finished yet.

    Holds the results folder's driver lock throughout; before the backend has accepted the
    plan nothing else is written, and a refused plan leaves no new folder behind. Starts no
    backend at all when nothing is left. ``backend`` defaults to Ray
    (``ablate.raybackend.RayBackend``): ``address`` joins an existing cluster (whose nodes
    must see ``results_dir``; ``address_from`` names where it came from in errors), else a new
    local Ray with ``num_cpus`` (default: all) is started and stopped; ``callbacks`` are more
    ``ray.tune.Callback`` objects for its Tune experiment (``--callback``). A SIGINT or SIGTERM
    stops the run: the summary is returned with ``interrupted`` set.

    Folders of ablate 0.1 are renamed to their trials' current ids first. A finished trial
    whose stored configuration differs from the planned one is kept, unless ``rerun_changed``:
    then its record is set aside under ``replaced/`` and it runs again. A trial whose last
    attempt failed in a way that will recur (code, configuration, data) is not started again
    unless ``retry_failed``; the summary lists it under ``held`` (and ``failed``).
    ``on_triage`` is called once, under the lock, with that sorting of the plan (before any
    backend starts). ``overrides``: the command line's ``--set``/``--only``/``--seeds`` that
    made the plan, recorded in sweep.json (None keeps what it records, as ``ablate resume``
    runs the same plan).
    """
    results_dir = Path(results_dir).resolve()
    created = not results_dir.exists()
    manifest = {"name": name, "source": source, "description": description,
                "max_concurrent": max_concurrent, "overrides": overrides}
    try:
        with driver_lock(results_dir):
            t0 = time.time()
            work = triage(trials, results_dir, rerun_changed=rerun_changed,
                          retry_failed=retry_failed)
            if on_triage is not None:
                on_triage(work)
            changed = [t for t in work.todo if t.id in work.changes]
            if not work.todo:
                _write_plan(results_dir, trials, [], manifest)
                summary = _summarise(results_dir, work.finished, work.held, time.time() - t0,
                                     0.0)
                return dataclasses.replace(summary, held=[t.id for t in work.held])
            if backend is None:
                from ablate.raybackend import RayBackend

                backend = RayBackend(address=address, address_from=address_from,
                                     num_cpus=num_cpus, callbacks=callbacks)
            tracker, stop = Tracker(len(work.todo), on_event), _Stop(backend)
            with backend.session() as start_s:
                try:
                    backend.check_fits(work.todo, results_dir)
                except TrialError as e:  # a trial's resources: they come from the sweep file
                    e.file = e.file or source
                    raise
                _write_plan(results_dir, trials, changed, manifest)
                with stop.catching():
                    backend.run(work.todo, results_dir, max_concurrent=max_concurrent,
                                tracker=tracker)
            summary = _summarise(results_dir, work.finished, work.todo + work.held,
                                 time.time() - t0, start_s)
            return dataclasses.replace(summary, retried=tracker.retried,
                                       interrupted=stop.signum,
                                       held=[t.id for t in work.held])
    except (AblateError, KeyboardInterrupt):
        # refused, or stopped (Ctrl-C while Ray starts), before the plan was written: leave
        # no folder holding only the lock
        if created and not (results_dir / MANIFEST).exists():
            (results_dir / LOCK).unlink(missing_ok=True)
            with suppress(OSError):
                results_dir.rmdir()
        raise


def _write_plan(results_dir: Path, trials: list[Trial], changed: list[Trial],
                manifest: dict[str, Any]) -> None:
    """The run's first writes, once its plan is accepted: renames, set-asides, sweep.json."""
    migrate_legacy(results_dir, trials)
    relabel(results_dir, trials)
    for t in changed:
        set_aside(results_dir, t)
    write_manifest(results_dir, trials=trials, **manifest)


class _Stop:
    """SIGINT and SIGTERM during a run: the first asks the backend to stop gracefully, a
    second (or a backend that cannot) stops at once.

    Stopping at once is a KeyboardInterrupt where the run is; ``signum`` remembers the first
    signal, for the summary and the exit status.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.signum: int | None = None

    def _handle(self, signum: int, frame: Any) -> None:
        first, self.signum = self.signum is None, self.signum or signum
        if not (first and self.backend.request_stop()):
            raise KeyboardInterrupt

    @contextmanager
    def catching(self) -> Iterator[None]:
        import threading

        if not self.backend.handles_signals \
                or threading.current_thread() is not threading.main_thread():
            yield
            return
        saved = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        except KeyboardInterrupt:
            self.signum = self.signum or signal.SIGINT
        finally:
            for s, handler in saved.items():
                signal.signal(s, handler)


def _summarise(results_dir: Path, finished: list[Trial], todo: list[Trial], wall_s: float,
               start_s: float) -> RunSummary:
    done, diverged, failed, unfinished = [], [], {}, []
    for t in todo:
        tdir = record.trial_dir(results_dir, t.id)
        raw = record.read_state_raw(tdir) or {}
        if raw.get("state") in record.FINISHED:
            done.append(t.id)
            if raw["state"] == record.DIVERGED:
                diverged.append(t.id)
        elif raw.get("state") == record.FAILED:
            failed[t.id] = classify_record(raw.get("error") or {"type": "Error"})
        else:
            unfinished.append(t.id)
    return RunSummary(results_dir, [t.id for t in finished], done, diverged, failed, unfinished,
                      wall_s, start_s)
