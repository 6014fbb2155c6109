"""Run planned trials as Ray Tune trials; the only module that knows Ray.

The trial records (``ablate.record``) are the truth: a trial is finished when its folder says
done or diverged, whatever Ray remembers. Ray Tune schedules (resources, concurrency cap, the
planner's order) and retries what may succeed on a second attempt (a killed worker, out of
memory); each attempt calls :func:`ablate.train.train_trial`, which resumes from the trial's own
checkpoints, so neither a retry nor a rerun after a killed driver recomputes finished epochs.
Deterministic failures (code, configuration, data) are recorded and end the Tune trial quietly,
so Tune does not retry them.

A run keeps the results folder's bookkeeping (``ablate.bookkeeping``: ``sweep.json``, the driver
lock) up to date, and writes nothing but the lock before its plan is checked against the
cluster. A local Ray is always a new one, private to the run, listening on the loopback
interface only; a SIGINT or SIGTERM stops the run's trials (the first one through Tune's own
graceful stop, a second one at once) and the summary says so. Ray is imported only inside the
functions that run trials, so importing this module stays light.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate import record
from ablate.bookkeeping import (
    LOCK,
    config_changes,
    driver_lock,
    held_failures,
    migrate_legacy,
    set_aside,
    split_finished,
    write_manifest,
)
from ablate.config import Trial
from ablate.errors import AblateError, ClusterError, TrialError
from ablate.failures import Failure, classify_exception, classify_record

RAY_DIR = ".ray"  # Tune's own files; never read back, wiped at each run
# Faults a test injects into the trainable (see _injected_fault); inert unless set.
FAULT_ENV = "ABLATE_TEST_FAULT"


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
    retried: int = 0  # attempts restarted after a lost worker or out of memory
    interrupted: int | None = None  # the signal (SIGINT, SIGTERM) that stopped the run
    held: list[str] = field(default_factory=list)  # failed before, recurring: not started


class _Tracker:
    """Turns Tune's trial callbacks into :class:`Event` objects with running counts."""

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


# ---------------------------------------------------------------------------- the trainable


def _record_failure(tdir: Path, exc: BaseException, failure: Failure) -> None:
    """Make sure the record says failed, with the error's kind (train_trial wrote the rest)."""
    import traceback

    raw = record.read_state_raw(tdir) or {}
    error = raw.get("error") if raw.get("state") == record.FAILED else None
    if not error:
        error = {"type": type(exc).__name__, "message": str(exc),
                 "traceback": "".join(traceback.format_exception(exc))}
    try:
        record.write_state(tdir, record.FAILED, error={**error, "kind": failure.kind})
    except OSError:  # a full disk: the record cannot say it, and raising would mean a retry
        logging.getLogger(__name__).error("trial record %s not written", tdir, exc_info=True)


def _injected_fault(spec: str | None) -> Callable[[int], None] | None:
    """The fault ``ABLATE_TEST_FAULT=WHAT@epoch=N[@rank=R]`` asks for, run after epoch N is
    reported (by rank R only, in a data-parallel trial; by every rank without ``@rank``).

    For the tests only, to make a failure happen at a known point instead of racing a trial:
    ``kill`` (the trial's process dies by SIGKILL), ``kill-loader`` (its DataLoader worker
    processes die by SIGKILL, as the out-of-memory killer does; the trial notices at its next
    batch) and ``stall`` (the trial stops making progress, so a run can be interrupted surely
    mid-trial). Unset: None, no effect. The driver reads the variable and hands it to its
    trials in their config (a Ray worker's environment is the one Ray started with).
    """
    if not spec:
        return None
    what, _, when = spec.partition("@epoch=")
    when, _, target = when.partition("@rank=")
    if what not in ("kill", "kill-loader", "stall") or not when.isdigit() or not (
            target.isdigit() or not target):
        raise ValueError(f"{FAULT_ENV}={spec!r}: expected kill|kill-loader|stall@epoch=N"
                         "[@rank=R]")

    def fault(epoch: int, rank: int = 0) -> None:
        if epoch != int(when) or (target and rank != int(target)):
            return
        if what == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif what == "kill-loader":
            for pid in _child_pids(os.getpid()):
                os.kill(pid, signal.SIGKILL)
        else:
            while True:
                time.sleep(1.0)

    return fault


def _child_pids(pid: int) -> list[int]:
    """The processes ``pid`` started (its DataLoader workers, in a trial's process)."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def run_one(config: dict[str, Any]) -> None:
    """The Tune trainable: train one ablate trial in its folder, forwarding epochs to Tune.

    A trial of several workers is a Ray Train run started from here (:mod:`ablate.raytrain`);
    a trial of one runs in this process, without Ray Train.

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
    fault = _injected_fault(config.get("fault"))

    def report(metrics: dict[str, Any]) -> None:
        tune.report(dict(metrics))
        if fault is not None:
            fault(int(metrics["epoch"]))

    try:
        if trial.resources.workers > 1:  # a Ray Train run of data-parallel workers
            from ablate.raytrain import fit_workers

            fit_workers(trial, tdir, config)
        else:
            train_trial(trial, tdir, report=report)
    except Exception as exc:
        failure = classify_exception(exc)
        _record_failure(tdir, exc, failure)
        if not failure.deterministic:
            raise


# ---------------------------------------------------------------------------- running


def run_plan(trials: list[Trial], results_dir: Path, *, name: str, source: str | None = None,
             description: str | None = None, max_concurrent: int | None = None,
             address: str | None = None, address_from: str = "--address",
             num_cpus: int | None = None, rerun_changed: bool = False,
             retry_failed: bool = False, overrides: list[str] | None = None,
             on_event: Callable[[Event], None] | None = None,
             callbacks: list | None = None) -> RunSummary:
    """Record the plan in ``sweep.json`` and run every trial of it not finished yet.

    Holds the results folder's driver lock throughout; before the plan is checked against the
    cluster nothing else is written, and a refused plan leaves no new folder behind. Starts no
    Ray at all when nothing is left. ``address`` joins an existing cluster (whose nodes must
    see ``results_dir``; ``address_from`` names where it came from in errors); else a new local
    Ray with ``num_cpus`` (default: all) is started and stopped. An already initialised Ray in
    this process is used as it is. A SIGINT or SIGTERM stops the run: the summary is returned
    with ``interrupted`` set.

    Folders of ablate 0.1 are renamed to their trials' current ids first. A finished trial
    whose stored configuration differs from the planned one is kept, unless ``rerun_changed``:
    then its record is set aside under ``replaced/`` and it runs again. A trial whose last
    attempt failed in a way that will recur (code, configuration, data) is not started again
    unless ``retry_failed``; the summary lists it under ``held`` (and ``failed``).
    ``overrides``: the command line's ``--set``/``--only``/``--seeds`` that made the plan,
    recorded in sweep.json (None keeps what it records, as ``ablate resume`` runs the same plan).
    ``callbacks``: more ``ray.tune.Callback`` objects for Tune (``--callback``).
    """
    results_dir = Path(results_dir).resolve()
    created = not results_dir.exists()
    try:
        with driver_lock(results_dir):
            t0 = time.time()
            finished, todo = split_finished(trials, results_dir)
            held = [] if retry_failed else held_failures(todo, results_dir)
            todo = [t for t in todo if t not in held]
            changed = [t for t in finished if rerun_changed and config_changes(results_dir, t)]
            if not todo and not changed:
                _write_plan(results_dir, trials, [], name=name, source=source,
                            description=description, max_concurrent=max_concurrent,
                            overrides=overrides)
                summary = _summarise(results_dir, finished, held, time.time() - t0, 0.0)
                return dataclasses.replace(summary, held=[t.id for t in held])
            todo += changed
            stop, retried = _Stop(), 0
            with ray_session(address, num_cpus, address_from=address_from) as ray_start_s:
                _check_fits(todo)
                _write_plan(results_dir, trials, changed, name=name, source=source,
                            description=description, max_concurrent=max_concurrent,
                            overrides=overrides)
                with stop.catching():
                    retried = _run_on_ray(todo, results_dir, max_concurrent=max_concurrent,
                                          on_event=on_event, callbacks=callbacks)
            finished = [t for t in finished if t not in changed]
            summary = _summarise(results_dir, finished, todo + held, time.time() - t0,
                                 ray_start_s)
            return dataclasses.replace(summary, retried=retried, interrupted=stop.signum,
                                       held=[t.id for t in held])
    except AblateError:
        if created:  # refused before anything ran: leave no folder holding only the lock
            (results_dir / LOCK).unlink(missing_ok=True)
            with suppress(OSError):
                results_dir.rmdir()
        raise


def _write_plan(results_dir: Path, trials: list[Trial], changed: list[Trial], *, name: str,
                source: str | None, description: str | None,
                max_concurrent: int | None, overrides: list[str] | None) -> None:
    """The run's first writes, once its plan is accepted: renames, set-asides, sweep.json."""
    migrate_legacy(results_dir, trials)
    for t in changed:
        set_aside(results_dir, t)
    write_manifest(results_dir, name=name, source=source, description=description,
                   trials=trials, max_concurrent=max_concurrent, overrides=overrides)


class _Stop:
    """SIGINT and SIGTERM during a run: the first stops Tune gracefully, a second at once.

    Tune stops gracefully on its SIGUSR1 handler (it stops the trials and saves its state);
    before Tune has installed it, or on a second signal, KeyboardInterrupt ends the run where
    it is. ``signum`` remembers the first signal, for the summary and the exit status.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    def _handle(self, signum: int, frame: Any) -> None:
        first, self.signum = self.signum is None, self.signum or signum
        tune_stop = signal.getsignal(signal.SIGUSR1)
        if first and callable(tune_stop):
            tune_stop(signal.SIGUSR1, frame)
        else:
            raise KeyboardInterrupt

    @contextmanager
    def catching(self) -> Iterator[None]:
        import threading

        if threading.current_thread() is not threading.main_thread():
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
    env = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
           "TUNE_DISABLE_SIGINT_HANDLER": "1"}
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


def _check_reachable(address: str, key: str, timeout_s: float = 5.0) -> None:
    """Fail fast when nothing listens at ``address``: ray.init would retry for minutes."""
    if address == "auto":  # Ray finds the local cluster itself, and says so quickly if none
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not port.isdigit():
        raise ClusterError(f"malformed cluster address {address!r}", key=key,
                           hint="write HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ClusterError(f"nothing answers at {address!r} ({e.strerror or e})",
                           key=key, hint="start the cluster ('ray start --head') or "
                           "check the address with 'ray status --address ADDRESS'") from None


def _join_cluster(ray: Any, address: str, key: str, options: dict[str, Any]) -> None:
    """ray.init on an existing cluster; any failure to join is the user's setup, not a bug."""
    _check_reachable(address, key)
    try:
        ray.init(address=address, **options)
    except Exception as e:  # ConnectionError, auth and address-format errors alike
        ray.shutdown()
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ClusterError(f"cannot join the Ray cluster at {address!r} ({first})", key=key,
                           hint="check it with 'ray status --address ADDRESS', "
                                "or leave out --address to start a local Ray") from None


@contextmanager
def _local_ray(ray: Any, num_cpus: int | None, options: dict[str, Any]) -> Iterator[None]:
    """A new Ray of this process's own, reachable from this machine only, for the block.

    ``address="local"``: never join another Ray of the machine (one that ``ray start`` left,
    or RAY_ADDRESS). Ray binds its servers to every interface unless the node's address is
    the loopback one, and it turns 127.0.0.1 into the machine's address unless multi-node
    clusters are off: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 turns them off on Linux too, for the
    processes ray.init starts (they keep it; ours gets its old value back at once) and, by
    its constant, for this process until the block ends.
    """
    from ray._private import ray_constants

    flag, saved_flag = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", os.environ.get(
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    saved_constant = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[flag] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(),
                 include_dashboard=False, _node_ip_address="127.0.0.1", **options)
    finally:
        if saved_flag is None:
            os.environ.pop(flag, None)
        else:
            os.environ[flag] = saved_flag
    try:
        yield
    finally:
        ray.shutdown()
        ray_constants.ENABLE_RAY_CLUSTER = saved_constant


def _silence_raylet_messages() -> None:
    """Keep Ray's raylet error messages (a worker died, in colour) off the user's terminal.

    Ray prints them on the driver's stdout from a thread of its own, whatever
    ``log_to_driver`` says; the run's summary says what they meant. They stay in Ray's logs
    and in this module's debug log.
    """
    from ray._private import worker

    printer = worker.print_to_stdstream
    if getattr(printer, "_ablate_quiet", False):
        return

    def quiet(data: dict[str, Any], ignore_prefix: bool) -> None:
        if data.get("pid") == "raylet":
            logging.getLogger(__name__).debug("ray: %s", " ".join(data.get("lines", [])))
        else:
            printer(data, ignore_prefix)

    quiet._ablate_quiet = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = quiet


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None, *,
                address_from: str = "--address") -> Iterator[float]:
    """Be connected to Ray inside the block; yields the seconds it took to connect.

    An existing connection is used and kept; otherwise this joins ``address`` (errors name
    ``address_from``) or starts a new local Ray (``num_cpus``, default all; loopback only; no
    dashboard) and disconnects at the end, which stops a local Ray but leaves a joined cluster
    running.
    """
    import ray

    if ray.is_initialized():
        yield 0.0
        return
    t0 = time.time()
    common = {"logging_level": logging.ERROR, "log_to_driver": False}
    with ExitStack() as stack:
        if address:
            _join_cluster(ray, address, address_from, common)
            stack.callback(ray.shutdown)
        else:
            stack.enter_context(_local_ray(ray, num_cpus, common))
        _silence_raylet_messages()
        yield time.time() - t0


def _run_on_ray(todo: list[Trial], results_dir: Path, *, max_concurrent: int | None,
                on_event: Callable[[Event], None] | None,
                callbacks: list | None = None) -> int:
    """Run ``todo`` as one Tune experiment, in the planner's order; return how many attempts
    were retried."""
    import shutil

    from ray import tune

    storage = results_dir / RAY_DIR
    shutil.rmtree(storage, ignore_errors=True)
    tracker = _Tracker(len(todo), on_event)
    with _quiet_tune():
        tune.Tuner(
            tune.with_resources(run_one, _placement),
            param_space={"results_dir": str(results_dir), "cwd": str(Path.cwd()),
                         "fault": os.environ.get(FAULT_ENV),
                         "trial": tune.grid_search([t.to_dict() for t in todo])},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=max_concurrent, reuse_actors=True,
                trial_name_creator=_tune_name, trial_dirname_creator=_tune_name),
            run_config=tune.RunConfig(
                name="tune", storage_path=str(storage), verbose=0,
                failure_config=tune.FailureConfig(
                    max_failures=max(t.resources.max_retries for t in todo)),
                callbacks=[_progress_callback(tracker, results_dir), *(callbacks or [])]),
        ).fit()
    return tracker.retried


def _check_fits(todo: list[Trial]) -> None:
    """TrialError for a trial asking more than the whole cluster has (Tune would wait forever)."""
    import ray

    have = ray.cluster_resources()
    for t in todo:
        r = t.resources
        many = r.workers > 1 or r.cpus_per_worker is not None or r.gpus_per_worker is not None
        for key, per in (("CPU", r.worker_cpus), ("GPU", r.worker_gpus)):
            need, name = per * r.workers, f"resources.{key.lower()}s"
            if many:
                name += "_per_worker"
            if need > have.get(key, 0.0):
                asks = f"{r.workers} workers x {per:g} {key}s" if many else f"{need:g} {key}s"
                raise TrialError(f"trial {t.id} [{t.arm}] asks for {asks} but the Ray "
                                 f"cluster has {have.get(key, 0.0):g}", key=name,
                                 hint="lower resources in the sweep file, or join a larger "
                                 "cluster with --address")


def _tune_name(tune_trial: Any) -> str:
    return str(tune_trial.config["trial"]["id"])


def _placement(config: dict[str, Any]) -> Any:
    from ray.tune import PlacementGroupFactory

    res = config["trial"]["resources"]
    if res.get("workers", 1) > 1:  # the trial only drives its Ray Train workers
        from ablate.raytrain import trial_bundle

        return PlacementGroupFactory([trial_bundle()])
    bundle = {"CPU": float(res.get("cpus_per_worker") or res.get("cpus", 1.0))}
    gpus = res.get("gpus") if res.get("gpus_per_worker") is None else res["gpus_per_worker"]
    if gpus:
        bundle["GPU"] = float(gpus)
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
