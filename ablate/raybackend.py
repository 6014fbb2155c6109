"""The Ray backend of the runner: trials as Ray Tune trials; the only module that imports Ray.

Ray Tune schedules (resources, the concurrency cap, the planner's order) and retries what may
succeed on a second attempt (a killed worker, out of memory); each attempt calls
:func:`ablate.train.train_trial`, which resumes from the trial's own checkpoints, so neither a
retry nor a rerun after a killed driver recomputes finished epochs. Deterministic failures
(code, configuration, data) are recorded and end the Tune trial quietly, so Tune does not
retry them. The neutral part of a run (lock, sweep.json, skipping, the summary) is
``ablate.runner``'s.

A local Ray is always a new one, private to the run, listening on the loopback interface only;
a joined cluster is left running. The first SIGINT or SIGTERM of a run goes through Tune's own
graceful stop. Ray is imported only inside the functions that use it, so importing this module
stays light.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate import record
from ablate.config import Trial
from ablate.errors import ClusterError, TrialError
from ablate.failures import classify_exception
from ablate.runner import Tracker, record_failure

RAY_DIR = ".ray"  # Tune's own files; never read back, wiped at each run
# Faults a test injects into the trainable (see _injected_fault); inert unless set.
FAULT_ENV = "ABLATE_TEST_FAULT"


@dataclass
class RayBackend:
    """Run trials on Ray Tune: join ``address`` (errors name ``address_from``) or start a new
    local Ray with ``num_cpus`` (default: all). An already initialised Ray in this process is
    used as it is."""

    address: str | None = None
    address_from: str = "--address"
    num_cpus: int | None = None
    callbacks: list | None = None  # more ray.tune.Callback objects (--callback)
    handles_signals: bool = True

    def session(self) -> Any:
        return ray_session(self.address, self.num_cpus, address_from=self.address_from)

    def check_fits(self, todo: list[Trial], results_dir: Path) -> None:
        _check_fits(todo)
        if self.address:  # a local Ray's workers run this interpreter, on this machine
            _check_nodes(results_dir, self.address_from)

    def run(self, todo: list[Trial], results_dir: Path, *, max_concurrent: int | None,
            tracker: Tracker) -> None:
        _run_on_ray(todo, results_dir, max_concurrent=max_concurrent, tracker=tracker,
                    callbacks=self.callbacks)

    def request_stop(self) -> bool:
        """Tune's SIGUSR1 handler stops the trials and saves its state; before Tune has
        installed it there is nothing graceful to do."""
        tune_stop = signal.getsignal(signal.SIGUSR1)
        if callable(tune_stop):
            tune_stop(signal.SIGUSR1, None)
            return True
        return False


# ---------------------------------------------------------------------------- the trainable


def _injected_fault(spec: str | None) -> Callable[..., None] | None:
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
        record_failure(tdir, exc, failure)
        if not failure.deterministic:
            raise


# ---------------------------------------------------------------------------- connecting


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


# ---------------------------------------------------------------------------- the experiment


def _run_on_ray(todo: list[Trial], results_dir: Path, *, max_concurrent: int | None,
                tracker: Tracker, callbacks: list | None = None) -> None:
    """Run ``todo`` as one Tune experiment, in the planner's order, reporting to ``tracker``
    (and to ``callbacks``, more Tune callbacks)."""
    import shutil

    from ray import tune

    storage = results_dir / RAY_DIR
    shutil.rmtree(storage, ignore_errors=True)
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


def _check_nodes(results_dir: Path, key: str, timeout_s: float = 300.0) -> None:
    """ClusterError unless a Ray worker on every node with CPUs or GPUs imports the very
    ablate this driver runs (same version, same source digest) and what its trials import,
    and sees and may write the results folder.

    Otherwise each trial's worker would die at its first import, as "worker died", retried;
    or train with other code than the plan checked, under this run's provenance; or write
    its record where the driver never looks. The folder is seen when a file the driver
    writes there (and removes after) reads back on the node with the driver's random token.
    """
    import secrets

    token = secrets.token_hex(8)
    marker = Path(results_dir).resolve() / f".node-check-{token}"
    marker.write_text(token)
    try:
        _ask_nodes(str(marker), token, key, timeout_s)
    finally:
        marker.unlink(missing_ok=True)


def _ask_nodes(marker: str, token: str, key: str, timeout_s: float) -> None:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from ablate import __version__
    from ablate.provenance import source_digest

    def probe() -> tuple[str, str, bool, bool]:  # a local function: sent by value, so it
        import os  # unpickles on a node without ablate, and says so there
        from pathlib import Path

        import ablate
        import ablate.train  # noqa: F401  (torch, timm and ablate's models, as a trial does)
        from ablate.provenance import source_digest

        try:
            seen = Path(marker).read_text() == token
        except OSError:
            seen = False
        writable = os.access(Path(marker).parent, os.W_OK | os.X_OK)
        return ablate.__version__, source_digest(), seen, writable

    remote = ray.remote(num_cpus=0, max_retries=0)(probe)
    nodes = [n for n in ray.nodes() if n.get("Alive") and (
        n["Resources"].get("CPU", 0) > 0 or n["Resources"].get("GPU", 0) > 0)]
    asked = [(n["NodeManagerAddress"], remote.options(scheduling_strategy=(
        NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))).remote()) for n in nodes]
    want = (__version__, source_digest())
    hint = ("install this ablate (and its dependencies) in the Python environment of every "
            "node, e.g. 'pip install -e .' from the same checkout, then run again")
    for ip, ref in asked:
        try:
            got = ray.get(ref, timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise ClusterError(f"the Ray workers on node {ip} did not answer in {timeout_s:g} "
                               "s", key=key, hint="check the node with 'ray status'") from None
        except ray.exceptions.RayError as e:
            cause = getattr(e, "cause", None) or e
            first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
            raise ClusterError(f"the Ray workers on node {ip} cannot import ablate "
                               f"({type(cause).__name__}: {first})", key=key,
                               hint=hint) from None
        if tuple(got[:2]) != want:
            raise ClusterError(f"the Ray workers on node {ip} import ablate {got[0]} with "
                               f"source {got[1]}, not this driver's {want[0]} with source "
                               f"{want[1]}", key=key, hint=hint)
        folder = Path(marker).parent
        if not got[2] or not got[3]:
            raise ClusterError(f"the Ray workers on node {ip} "
                               + ("cannot write" if got[2] else "do not see")
                               + f" the results folder {folder}", key=key,
                               hint="put it on a file system every node mounts at the same "
                               "path, writable by the user Ray runs as")


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


def _progress_callback(tracker: Tracker, results_dir: Path) -> Any:
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
                record_failure(tdir, exc, classify_exception(exc))
            tracker.emit("failed", _tune_name(trial))

    return ProgressCallback()
