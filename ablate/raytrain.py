"""Run one data-parallel trial as a Ray Train run, from inside its Tune trial (Ray backend glue).

A trial with ``resources.workers`` > 1 is a Tune trial whose function (:func:`ablate.raybackend.
run_one`) only starts and watches a Ray Train ``TorchTrainer`` (Train V2: a Tune function
trainable that builds and fits the trainer, rather than the deprecated ``Tuner(trainer)``).
The trainer runs :func:`ablate.train.train_trial` in each of the N workers, with the process
group (gloo on CPU, NCCL on GPUs) set up by Ray Train; each epoch's row reaches Tune through
Ray Train's report and Tune's ``TuneReportCallback``, so the runner's progress events work as
for a trial of one process.

Resources: each worker asks ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs; the Tune
trial itself and Ray Train's controller ask for no CPU (:func:`trial_bundle`), so a trial of N
workers of one CPU fits a machine of N CPUs. Failures: Ray Train does not restart workers
itself (``max_failures=0``); a failed run raises the error of the worker that explains it
best (a killed worker before a collective that lost its peer), and the runner classifies it
as for one process: Tune retries what another attempt may fix, and the new attempt's workers
resume from the trial's last checkpoint. Ray is imported only inside these functions.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from ablate.config import Trial
from ablate.failures import classify_exception

TRAIN_DIR = "train"  # Ray Train's own files, under the runner's Ray folder of the run
V2_FLAG = "RAY_TRAIN_V2_ENABLED"


def trial_bundle() -> dict[str, float]:
    """The Tune trial's own bundle when it only drives workers: no CPU and no GPU.

    Tune needs one non-empty bundle; a byte of memory is one nothing else competes for.
    """
    return {"memory": 1.0}


def fit_workers(trial: Trial, tdir: Path, config: dict[str, Any]) -> None:
    """Train ``trial`` on ``resources.workers`` Ray Train workers, reporting epochs to Tune.

    ``config`` is the Tune trial's config (results folder, working directory, test fault).
    Raises the most telling worker error when the run fails.
    """
    os.environ.setdefault(V2_FLAG, "1")
    import ray.train
    from ray import tune
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    res = trial.resources
    gpus = res.worker_gpus
    per_worker = {"CPU": res.worker_cpus, **({"GPU": gpus} if gpus else {})}
    storage = Path(config["results_dir"]) / ".ray" / TRAIN_DIR
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"trial": trial.to_dict(), "tdir": str(tdir),
                           "cwd": config.get("cwd"), "fault": config.get("fault")},
        torch_config=TorchConfig(backend="nccl" if gpus else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=res.workers, use_gpu=bool(gpus),
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            # a new name per attempt: ablate's own checkpoints resume, not Ray Train's
            name=f"{trial.id}-{tune.get_context().get_trial_id()}-{uuid.uuid4().hex[:8]}",
            storage_path=str(storage),
            failure_config=ray.train.FailureConfig(max_failures=0),
            callbacks=[TuneReportCallback()]))
    try:
        trainer.fit()
    except ray.train.TrainingFailedError as e:
        raise _telling_error(e) from e


def _telling_error(exc: BaseException) -> BaseException:
    """The worker error that explains a failed run: a retryable one (a killed worker) first,
    then the lowest rank's; the run's own error when no worker's is known."""
    failures = dict(sorted(getattr(exc, "worker_failures", {}).items()))
    if not failures:
        return exc
    for error in failures.values():
        if not classify_exception(error).deterministic:
            return error
    return next(iter(failures.values()))


def _worker_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: train the trial as this rank, reporting each epoch's row."""
    import ray.train
    import ray.train.torch

    from ablate.plugins import load_plugins
    from ablate.raybackend import _injected_fault
    from ablate.train import train_trial

    trial = Trial.from_dict(config["trial"])
    load_plugins(trial.plugins, search=config.get("cwd"))
    rank = ray.train.get_context().get_world_rank()
    fault = _injected_fault(config.get("fault"))
    device = ray.train.torch.get_device() if trial.resources.worker_gpus else "cpu"

    def report(metrics: dict[str, Any]) -> None:
        ray.train.report(dict(metrics))  # every rank reports; Tune gets rank 0's row
        if fault is not None:
            fault(int(metrics["epoch"]), rank=rank)

    train_trial(trial, Path(config["tdir"]), report=report, device=str(device))
