"""What a sweep will cost on this machine: a few measured steps, scaled to the plan.

For each distinct step (model, batch size, image size, classes, the recipe's step-shaping
fields, device) of a plan, the model and its optimisation are built as ``ablate.train`` builds
them, and train's own code is timed on synthetic batches: its epoch loop for training steps
(batch preparation and random erasing, Mixup/CutMix, forward, loss, backward, clipping, AdamW
and the lr schedule, AMP on CUDA as the trial would), its evaluation for validation batches,
and its per-epoch record for the metrics row, epoch checkpoint and ``best.pt``. The first step
of each (warm-up: allocator, kernels, lazy inits) is run apart and not counted; a step's time
is the median of the timed ones. CPU trials are timed with as many torch threads as CPUs they
ask for (per worker), as Ray gives them. A data-parallel trial of N workers is timed as one of
its workers: a step on its share of the global batch (``batch_size / N``), accumulated as the
trial accumulates; its workers run those steps at once, and the all-reduce between them is
not timed.

A trial's estimate is ``setup + epochs x (train steps x train step + val batches x eval batch +
checkpoint)``; setup is the measured model and optimiser build. The sweep's wall time comes from
a list-scheduling simulation of the plan's order: each time resources free up, the first
waiting trials that fit start, within ``max_concurrent`` and this machine's CPUs and GPUs.

Not included, and said so wherever the estimate is shown: loading and augmenting images in the
loader processes (synthetic batches are ready at once; a run with too few ``train.workers``
waits on them), starting a trial's process and loading its data set, and the slow-down of
trials that share cores, memory bandwidth or a GPU.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ablate.config import Trial
from ablate.errors import AblateError

NOT_INCLUDED = ("data loading and augmentation in loader processes (synthetic batches); "
                "process start and data set loading; slow-down of trials sharing a machine")
_EPS = 1e-9  # fractional resources (0.5 GPU) add up with rounding error


class EstimateError(AblateError):
    """The estimate cannot be made as asked (no such device, a trial that never fits)."""


@dataclass(frozen=True)
class DataSize:
    """What the estimate needs to know of a trial's data: split sizes and classes."""

    train: int
    val: int
    classes: int


@dataclass(frozen=True)
class StepCost:
    """Measured seconds of one distinct step: the build, a training step, an evaluation batch,
    one epoch's record and checkpoint write."""

    build_s: float
    train_step_s: float
    eval_step_s: float
    checkpoint_s: float


@dataclass(frozen=True)
class TrialCost:
    id: str
    arm: str
    seed: int
    device: str
    unit: str  # what device-hours count: "CPU" (cores) or "GPU"
    amount: float  # CPUs or GPUs the trial holds
    steps_per_epoch: int
    eval_steps: int
    epochs: int
    setup_s: float
    epoch_s: float
    train_s: float  # the epochs alone: what result.json's wall_time_s measures
    wall_s: float  # setup + train
    device_hours: float
    start_s: float  # in the simulated schedule
    end_s: float


@dataclass(frozen=True)
class SweepCost:
    trials: tuple[TrialCost, ...]
    makespan_s: float  # the sweep's wall time in the simulated schedule
    device_hours: dict[str, float]  # unit -> sum over trials
    # {"cpus", "gpus", "max_concurrent"} the schedule used; "load_avg": the 1-minute load
    # average when timing began (a busy machine times slower steps)
    machine: dict[str, Any]
    measured: int  # distinct steps timed
    steps: int  # timed steps per measurement, after one warm-up step
    not_included: str = NOT_INCLUDED

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def estimate_sweep(trials: list[Trial], sizes: dict[str, DataSize], *,
                   device: str | None = None, steps: int = 5,
                   max_concurrent: int | None = None,
                   machine: tuple[float, float] | None = None) -> SweepCost:
    """Measure each distinct step of ``trials`` and estimate every trial and the sweep.

    ``sizes``: trial id -> its data's size. ``device``: time every trial on this device (a
    GPU request is then ignored by the schedule if it is "cpu"); None: what a run would give
    it, CUDA for trials asking for a GPU. ``machine``: (CPUs, GPUs) to schedule on; default
    this machine's.
    """
    cpus, gpus = machine if machine is not None else local_machine()
    devices = [trial_device(t, device, gpus) for t in trials]
    demands = [(_held(t, "cpus"), _held(t, "gpus") if d.type == "cuda" else 0.0)
               for t, d in zip(trials, devices)]
    for t, (c, g) in zip(trials, demands):
        if c > cpus + _EPS or g > gpus + _EPS:
            raise EstimateError(
                f"trial {t.id} [{t.arm}] asks for {c:g} CPUs and {g:g} GPUs; this machine has "
                f"{cpus:g} and {gpus:g}", key="resources",
                hint="the estimate simulates a run on this machine: lower resources, or "
                "estimate where the sweep will run")
    _import_training_code()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    costs: dict[tuple, StepCost] = {}
    for t, d in zip(trials, devices):
        key = step_key(t, sizes[t.id].classes, d)
        if key not in costs:
            costs[key] = measure_step(t, sizes[t.id].classes, d, steps=steps)
    rows = [_trial_cost(t, sizes[t.id], d, demand, costs[step_key(t, sizes[t.id].classes, d)])
            for t, d, demand in zip(trials, devices, demands)]
    spans = simulate_schedule([r.wall_s for r in rows], demands, cpus=cpus, gpus=gpus,
                              max_concurrent=max_concurrent)
    rows = [dataclasses.replace(r, start_s=s, end_s=e) for r, (s, e) in zip(rows, spans)]
    hours: dict[str, float] = {}
    for r in rows:
        hours[r.unit] = hours.get(r.unit, 0.0) + r.device_hours
    return SweepCost(trials=tuple(rows), makespan_s=max((e for _, e in spans), default=0.0),
                     device_hours=hours, machine={"cpus": cpus, "gpus": gpus,
                                                  "max_concurrent": max_concurrent,
                                                  "load_avg": load},
                     measured=len(costs), steps=steps)


def _held(trial: Trial, what: str) -> float:
    """The CPUs or GPUs ``trial`` holds while it runs: every worker's."""
    r = trial.resources
    return r.workers * (r.worker_cpus if what == "cpus" else r.worker_gpus)


def _import_training_code() -> None:
    """Import what a trial's process has imported before its clock starts, so that the first
    measurement does not count it."""
    import timm.data
    import timm.loss
    import timm.optim
    import timm.scheduler
    import timm.utils  # noqa: F401

    from ablate import models, train  # noqa: F401


def local_machine() -> tuple[float, float]:
    """(CPUs, GPUs) a local run gets: all cores (as ``ablate run`` starts Ray), all GPUs."""
    return float(os.cpu_count() or 1), float(torch.cuda.device_count())


def trial_device(trial: Trial, device: str | None, gpus: float) -> torch.device:
    """The device ``trial`` is timed on; EstimateError for one this machine does not have."""
    if device is None:
        if trial.resources.worker_gpus <= 0:
            return torch.device("cpu")
        if gpus <= 0 or not torch.cuda.is_available():
            raise EstimateError(f"trial {trial.id} [{trial.arm}] asks for "
                                f"{_held(trial, 'gpus'):g} GPUs and this machine has none",
                                key="resources.gpus",
                                hint="estimate on the machine the sweep will run on, or "
                                "pass --device cpu to time it on the CPU")
        return torch.device("cuda")
    from ablate.devices import local_device

    return local_device(device, error=EstimateError)


def step_key(trial: Trial, classes: int, device: torch.device) -> tuple:
    """What a step's cost depends on; trials equal here share one measurement."""
    r = trial.config.train
    return (trial.config.model, trial.config.data.img_size, classes, r.batch_size,
            r.mixup > 0 or r.cutmix > 0, r.amp, r.reprob > 0, r.clip_grad is not None,
            str(device), _threads(trial, device), trial.plugins, trial.resources.workers,
            r.accum_steps)


def _threads(trial: Trial, device: torch.device) -> int:
    return max(1, math.floor(trial.resources.worker_cpus)) if device.type == "cpu" else 0


def _trial_cost(trial: Trial, size: DataSize, device: torch.device,
                demand: tuple[float, float], cost: StepCost) -> TrialCost:
    batch, epochs = trial.config.train.batch_size, trial.config.train.epochs
    steps = size.train // batch  # the training loader drops the last partial batch
    world = trial.resources.workers  # each evaluates its share of the validation set
    evals = math.ceil(math.ceil(size.val / world) / (batch // world))
    epoch_s = steps * cost.train_step_s + evals * cost.eval_step_s + cost.checkpoint_s
    train_s = epochs * epoch_s
    wall = cost.build_s + train_s
    unit, amount = ("GPU", demand[1]) if device.type == "cuda" else ("CPU", demand[0])
    return TrialCost(id=trial.id, arm=trial.arm, seed=trial.config.seed, device=str(device),
                     unit=unit, amount=amount, steps_per_epoch=steps, eval_steps=evals,
                     epochs=epochs, setup_s=cost.build_s, epoch_s=epoch_s, train_s=train_s,
                     wall_s=wall, device_hours=wall * amount / 3600, start_s=0.0, end_s=wall)


def simulate_schedule(durations: list[float], demands: list[tuple[float, float]], *,
                      cpus: float, gpus: float,
                      max_concurrent: int | None = None) -> list[tuple[float, float]]:
    """(start, end) of each job under list scheduling in the given order.

    Whenever jobs end (and at 0), the waiting jobs are scanned in order and each that fits in
    the free CPUs and GPUs, and under ``max_concurrent`` running jobs, starts. ValueError if a
    job can never fit.
    """
    for c, g in demands:
        if c > cpus + _EPS or g > gpus + _EPS:
            raise ValueError(f"a job asks for ({c}, {g}); the machine has ({cpus}, {gpus})")
    limit = max_concurrent or len(durations) or 1
    spans: list[tuple[float, float]] = [(0.0, 0.0)] * len(durations)
    waiting, running = list(range(len(durations))), []  # running: heap of (end, job)
    now, free_c, free_g = 0.0, float(cpus), float(gpus)
    while waiting or running:
        for j in list(waiting):
            c, g = demands[j]
            if len(running) < limit and c <= free_c + _EPS and g <= free_g + _EPS:
                waiting.remove(j)
                free_c, free_g = free_c - c, free_g - g
                spans[j] = (now, now + durations[j])
                heapq.heappush(running, (now + durations[j], j))
        now = running[0][0]
        while running and running[0][0] <= now:
            _, j = heapq.heappop(running)
            free_c, free_g = free_c + demands[j][0], free_g + demands[j][1]
    return spans


# -- measuring ---------------------------------------------------------------------------------


class _SyntheticLoaders:
    """Stands in for ``ablate.data.Loaders``: the same few uint8 batches, over and over."""

    def __init__(self, batch: int, img: int, classes: int, count: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.batches = [(torch.randint(0, 256, (batch, 3, img, img), dtype=torch.uint8,
                                       generator=g),
                         torch.randint(0, classes, (batch,), generator=g))
                        for _ in range(min(count, 2))]
        self.count = count

    @property
    def train(self) -> list:
        return [self.batches[i % len(self.batches)] for i in range(self.count)]

    val = train

    def set_epoch(self, epoch: int) -> None:
        pass

    def close(self) -> None:
        pass


def measure_step(trial: Trial, classes: int, device: torch.device, *, steps: int) -> StepCost:
    """Time ``trial``'s build, training step, evaluation batch and checkpoint on ``device``."""
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(_threads(trial, device))
    try:
        with tempfile.TemporaryDirectory(prefix="ablate-estimate-") as tmp:
            return _measure(trial, classes, device, steps, Path(tmp))
    finally:
        torch.set_num_threads(threads)
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _measure(trial: Trial, classes: int, device: torch.device, steps: int,
             tdir: Path) -> StepCost:
    from ablate import train

    torch.manual_seed(0)
    t0 = _now(device)
    run = _build_run(trial, classes, device, tdir)
    build_s = _now(device) - t0
    train_s = _timed(device, steps, lambda n: _train_steps(train, run, n))
    eval_s = _timed(device, steps, lambda n: _eval_steps(train, run, n))
    t0 = _now(device)
    train.record_epoch(run, {"epoch": 1, "val/top1": 0.0}, 0.0)
    return StepCost(build_s=build_s, train_step_s=train_s, eval_step_s=eval_s,
                    checkpoint_s=_now(device) - t0)


def _build_run(trial: Trial, classes: int, device: torch.device, tdir: Path):
    """A ``train.Run`` assembled as a trial's, with synthetic loaders of one worker's share
    of the batch; its schedule is built for epochs of 100 steps, of which each timing call
    runs one."""
    from ablate import train

    per_worker = trial.config.train.batch_size // trial.resources.workers
    loaders = _SyntheticLoaders(per_worker, trial.config.data.img_size, classes, 1)
    run = train.assemble_run(trial, tdir, device, loaders, classes, steps_per_epoch=100)
    run.steps_per_epoch = 1
    return run


def _train_steps(train: Any, run: Any, n: int) -> None:
    run.loaders.count, run.steps_per_epoch = n, n
    try:
        train.train_one_epoch(run, 1)
    except train.Diverged as d:  # the timing would stop short: say so instead
        raise EstimateError(f"trial {run.trial.id} [{run.trial.arm}]: the loss became "
                            f"{d.args[0]['loss']} within a few steps on synthetic data, so its "
                            "steps cannot be timed", key="train.lr",
                            hint="a run of it would diverge too: lower train.lr") from None


def _eval_steps(train: Any, run: Any, n: int) -> None:
    run.loaders.count = n
    train.evaluate(run)


def _timed(device: torch.device, steps: int, call: Any) -> float:
    """The median seconds of ``steps`` calls of ``call(1)``, after one more as warm-up.

    The median, not the mean: on a shared machine one step that waited for another process
    would otherwise set the rate of a whole sweep.
    """
    call(1)
    times = []
    for _ in range(steps):
        t0 = _now(device)
        call(1)
        times.append(_now(device) - t0)
    return statistics.median(times)


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
