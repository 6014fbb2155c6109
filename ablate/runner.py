"""Run planned trials as Ray Tune trials; the only module that knows Ray.

The trial records (``ablate.record``) are the truth: a trial is finished when its folder says
done or diverged, whatever Ray remembers. Ray Tune schedules (resources, concurrency cap, the
planner's order) and retries what may succeed on a second attempt (a killed worker, out of
memory); each attempt calls :func:`ablate.train.train_trial`, which resumes from the trial's own
checkpoints, so neither a retry nor a rerun after a killed driver recomputes finished epochs.
Deterministic failures (code, configuration, data) are recorded and end the Tune trial quietly,
so Tune does not retry them.

A run keeps the results folder's bookkeeping (``ablate.bookkeeping``: ``sweep.json``, the driver
lock) up to date. Ray is imported only inside the functions that run trials, so importing this
module stays light.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate import record
from ablate.bookkeeping import (
    config_changes,
    driver_lock,
    migrate_legacy,
    set_aside,
    split_finished,
    write_manifest,
)
from ablate.config import Trial
from ablate.errors import ClusterError, TrialError
from ablate.failures import Failure, classify_exception, classify_record

RAY_DIR = ".ray"  # Tune's own files; never read back, wiped at each run


# ---------------------------------------------------------------------------- progress


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
    pid: int | None = None  # the worker process running the trial
    metrics: dict[str, Any] = field(default_factory=dict)  # an epoch's row, for "result"


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
    ray_start_s: float


class _Tracker:
    """Turns Tune's trial callbacks into :class:`Event` objects with running counts."""

    def __init__(self, total: int, on_event: Callable[[Event], None] | None) -> None:
        self.total, self.on_event = total, on_event
        self.t0 = time.time()
        self.started: dict[str, float] = {}
        self.durations: list[float] = []
        self.done, self.failed, self.slots = 0, 0, 1

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


# ---------------------------------------------------------------------------- the trainable


def _record_failure(tdir: Path, exc: BaseException, failure: Failure) -> None:
    """Make sure the record says failed, with the error's kind (train_trial wrote the rest)."""
    import traceback

    raw = record.read_state_raw(tdir) or {}
    error = raw.get("error") if raw.get("state") == record.FAILED else None
    if not error:
        error = {"type": type(exc).__name__, "message": str(exc),
                 "traceback": "".join(traceback.format_exception(exc))}
    record.write_state(tdir, record.FAILED, error={**error, "kind": failure.kind})


def run_one(config: dict[str, Any]) -> None:
    """The Tune trainable: train one ablate trial in its folder, forwarding epochs to Tune.

    Raises (so Tune retries) only for failures another attempt may fix; the record says failed
    in every case.
    """
    from ray import tune

    from ablate.plugins import load_plugins
    from ablate.train import train_trial

    trial = Trial.from_dict(config["trial"])
    # a fresh worker knows only ablate's own mixers: import the sweep's plugins, from the
    # driver's working directory as the driver did
    load_plugins(trial.plugins, search=config.get("cwd"))
    tdir = record.trial_dir(config["results_dir"], trial.id)
    try:
        train_trial(trial, tdir, report=lambda metrics: tune.report(dict(metrics)))
    except Exception as exc:
        failure = classify_exception(exc)
        _record_failure(tdir, exc, failure)
        if not failure.deterministic:
            raise


# ---------------------------------------------------------------------------- running


def run_plan(trials: list[Trial], results_dir: Path, *, name: str, source: str | None = None,
             max_concurrent: int | None = None, address: str | None = None,
             num_cpus: int | None = None, rerun_changed: bool = False,
             on_event: Callable[[Event], None] | None = None,
             overrides: list[str] | None = None) -> RunSummary:
    """Record the plan in ``sweep.json`` and run every trial of it not finished yet.

    Holds the results folder's driver lock throughout. Starts no Ray at all when nothing is
    left. ``address`` joins an existing cluster (whose nodes must see ``results_dir``); else a
    local Ray with ``num_cpus`` (default: all) is started and stopped. An already initialised
    Ray in this process is used as it is.

    Folders of ablate 0.1 are renamed to their trials' current ids first. A finished trial
    whose stored configuration differs from the planned one is kept, unless ``rerun_changed``:
    then its record is set aside under ``replaced/`` and it runs again. ``overrides``: the
    command line's ``--set``/``--only``/``--seeds`` that made the plan, recorded in sweep.json
    (None keeps what it records, as ``ablate resume`` runs the same plan).
    """
    results_dir = Path(results_dir).resolve()
    with driver_lock(results_dir):
        migrate_legacy(results_dir, trials)
        if rerun_changed:
            for t in trials:
                if record.read_state(record.trial_dir(results_dir, t.id)) in record.FINISHED \
                        and config_changes(results_dir, t):
                    set_aside(results_dir, t)
        write_manifest(results_dir, name=name, source=source, trials=trials,
                       max_concurrent=max_concurrent, overrides=overrides)
        t0 = time.time()
        finished, todo = split_finished(trials, results_dir)
        ray_start_s = 0.0
        if todo:
            ray_start_s = _run_on_ray(todo, results_dir, max_concurrent=max_concurrent,
                                      address=address, num_cpus=num_cpus, on_event=on_event)
        return _summarise(results_dir, finished, todo, time.time() - t0, ray_start_s)


def _summarise(results_dir: Path, finished: list[Trial], todo: list[Trial], wall_s: float,
               ray_start_s: float) -> RunSummary:
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
                      wall_s, ray_start_s)


@contextmanager
def _quiet_tune() -> Iterator[None]:
    """Silence Tune's console reporter and per-trial error logs: the CLI reports instead."""
    env = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
    saved_env = {k: os.environ.get(k) for k in env}
    tune_log = logging.getLogger("ray.tune")
    saved_level = tune_log.level
    os.environ.update(env)
    tune_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        tune_log.setLevel(saved_level)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast when nothing listens at ``address``: ray.init would retry for minutes."""
    if address == "auto":  # Ray finds the local cluster itself, and says so quickly if none
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not port.isdigit():
        raise ClusterError(f"malformed cluster address {address!r}", key="--address",
                           hint="write HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ClusterError(f"nothing answers at {address!r} ({e.strerror or e})",
                           key="--address", hint="start the cluster ('ray start --head') or "
                           "check the address with 'ray status --address ADDRESS'") from None


def _join_cluster(ray: Any, address: str, options: dict[str, Any]) -> None:
    """ray.init on an existing cluster; any failure to join is the user's setup, not a bug."""
    _check_reachable(address)
    try:
        ray.init(address=address, **options)
    except Exception as e:  # ConnectionError, auth and address-format errors alike
        ray.shutdown()
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ClusterError(f"cannot join the Ray cluster at {address!r} ({first})",
                           key="--address",
                           hint="check it with 'ray status --address ADDRESS', "
                                "or leave out --address to start a local Ray") from None


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[float]:
    """Be connected to Ray inside the block; yields the seconds it took to connect.

    An existing connection is used and kept; otherwise this joins ``address`` or starts a local
    Ray (``num_cpus``, default all; no dashboard) and disconnects at the end, which stops a local
    Ray but leaves a joined cluster running.
    """
    import ray

    if ray.is_initialized():
        yield 0.0
        return
    t0 = time.time()
    common = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address:
        _join_cluster(ray, address, common)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, **common)
    try:
        yield time.time() - t0
    finally:
        ray.shutdown()


def _run_on_ray(todo: list[Trial], results_dir: Path, *, max_concurrent: int | None,
                address: str | None, num_cpus: int | None,
                on_event: Callable[[Event], None] | None) -> float:
    """Run ``todo`` as one Tune experiment, in the planner's order; return Ray's start-up s."""
    import shutil

    from ray import tune

    storage = results_dir / RAY_DIR
    shutil.rmtree(storage, ignore_errors=True)
    with ray_session(address, num_cpus) as ray_start_s, _quiet_tune():
        _check_fits(todo)
        tune.Tuner(
            tune.with_resources(run_one, _placement),
            param_space={"results_dir": str(results_dir), "cwd": str(Path.cwd()),
                         "trial": tune.grid_search([t.to_dict() for t in todo])},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=max_concurrent, reuse_actors=True,
                trial_name_creator=_tune_name, trial_dirname_creator=_tune_name),
            run_config=tune.RunConfig(
                name="tune", storage_path=str(storage), verbose=0,
                failure_config=tune.FailureConfig(
                    max_failures=max(t.resources.max_retries for t in todo)),
                callbacks=[_progress_callback(_Tracker(len(todo), on_event), results_dir)]),
        ).fit()
    return ray_start_s


def _check_fits(todo: list[Trial]) -> None:
    """TrialError for a trial asking more than the whole cluster has (Tune would wait forever)."""
    import ray

    have = ray.cluster_resources()
    for t in todo:
        for key, need in (("CPU", t.resources.cpus), ("GPU", t.resources.gpus)):
            if need > have.get(key, 0.0):
                raise TrialError(f"trial {t.id} [{t.arm}] asks for {need:g} {key}s but the Ray "
                                 f"cluster has {have.get(key, 0.0):g}",
                                 key=f"resources.{key.lower()}s",
                                 hint="lower resources in the sweep file, or join a larger "
                                 "cluster with --address")


def _tune_name(tune_trial: Any) -> str:
    return str(tune_trial.config["trial"]["id"])


def _placement(config: dict[str, Any]) -> Any:
    from ray.tune import PlacementGroupFactory

    res = config["trial"]["resources"]
    bundle = {"CPU": float(res.get("cpus", 1.0))}
    if res.get("gpus"):
        bundle["GPU"] = float(res["gpus"])
    return PlacementGroupFactory([bundle])


def _progress_callback(tracker: _Tracker, results_dir: Path) -> Any:
    """A Tune Callback that reports to ``tracker``; final errors are written to the record."""
    # Subclassing Tune's own per-trial printer keeps Tune from adding one; ours prints nothing.
    from ray.tune.progress_reporter import TrialProgressCallback

    class ProgressCallback(TrialProgressCallback):
        def on_trial_start(self, iteration, trials, trial, **info):
            tracker.emit("start", _tune_name(trial))

        def on_trial_result(self, iteration, trials, trial, result, **info):
            metrics = {k: v for k, v in result.items() if "/" in k or k == "epoch"}
            tracker.emit("result", _tune_name(trial), pid=result.get("pid"), metrics=metrics)

        def on_trial_recover(self, iteration, trials, trial, **info):
            tracker.emit("retry", _tune_name(trial))

        def on_trial_complete(self, iteration, trials, trial, **info):
            state = record.read_state(record.trial_dir(results_dir, _tune_name(trial)))
            tracker.emit("done" if state in record.FINISHED else "failed", _tune_name(trial))

        def on_trial_error(self, iteration, trials, trial, **info):
            # Out of retries. A killed worker never got to write its record: write it here.
            tdir = record.trial_dir(results_dir, _tune_name(trial))
            if record.read_state(tdir) != record.FAILED:
                exc = trial.get_error() or RuntimeError("the trial's worker died")
                _record_failure(tdir, exc, classify_exception(exc))
            tracker.emit("failed", _tune_name(trial))

    return ProgressCallback()
