"""The Ray backend of the runner: trials as Ray Tune trials.

Ray Tune schedules (resources, the concurrency cap, the planner's order) and retries what may
succeed on a second attempt (a killed worker, out of memory); each attempt calls
:func:`ablate.train.train_trial`, which resumes from the trial's own checkpoints, so neither a
retry nor a rerun after a killed driver recomputes finished epochs. Deterministic failures
(code, configuration, data) are recorded and end the Tune trial quietly, so Tune does not
retry them. The neutral part of a run (lock, sweep.json, skipping, the summary) is
``ablate.runner``'s; connecting to Ray and the checks before launch are
``ablate.raycluster``'s.

The first SIGINT or SIGTERM of a run goes through Tune's own graceful stop. Ray is imported
only inside the functions that use it, so importing this module stays light.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate import record
from ablate.config import Trial
from ablate.failures import classify_exception
from ablate.raycluster import check_fits, check_nodes, ray_session
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
        check_fits(todo)
        if self.address:  # a local Ray's workers run this interpreter, on this machine
            check_nodes(results_dir, self.address_from)

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


# ---------------------------------------------------------------------------- the experiment


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
