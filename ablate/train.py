"""Train and evaluate one trial, resumably: the code path of both the runner and `ablate train`.

:func:`train_trial` reads as its phases: open the record, build data/model/optimisation,
resume from the latest checkpoint, then per epoch train, evaluate, record, checkpoint, report;
finally write the result. Two pieces: the training engine (setup, the epoch loop, the step,
evaluation) runs in every worker process of a trial and knows its rank and world size
(:mod:`ablate.distributed`); the recorder (the record's files, checkpoints, the result) is
the main rank's job alone. The recipe is Swin's (as in the paper) through timm's factories:
AdamW without decay on norms/biases/1-D parameters, lr scaled by batch/512, cosine schedule
with warm-up stepped per iteration, gradient clipping, Mixup/CutMix with soft-target loss (or
label smoothing), stochastic depth through the model's ``drop_path_rate``; AMP and
channels-last on CUDA only (ablate.devices).

Data parallelism and accumulation: ``train.batch_size`` is the global batch of one optimizer
step. Each of ``world`` ranks trains on a disjoint share of every global batch
(:class:`ablate.data.EpochSampler`), split into ``train.accum_steps`` micro-batches whose
gradients are accumulated, then summed over the ranks once per step; each micro-batch's loss
is scaled by ``1 / (world * accum_steps)``, so the step equals one step on the whole global
batch (exactly, for a model without BatchNorm and with Mixup and stochastic depth off).
Evaluation splits the validation set over the ranks and sums their counts: every image counts
once. Every rank resumes from the same checkpoint, in the main rank's trial folder; a cluster
of several nodes needs the results folder on storage they all see.

Reproducibility: the global RNGs are seeded from the trial seed; the data order and every
augmentation are functions of (seed, epoch, sample) (see ablate.data), and the checkpoint
holds the global RNG states that Mixup (numpy) and stochastic depth (torch) draw from, so on
CPU a trial resumed at an epoch boundary reproduces the uninterrupted run exactly. Ranks other
than 0 draw their own random streams (seeded from the trial seed and the rank) after building
the model, so that all ranks start from the same weights; the checkpoint holds every rank's
states.
"""

from __future__ import annotations

import logging
import math
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ablate import checkpoint, curves, devices, record
from ablate import distributed as dist
from ablate.augment import BatchPrep
from ablate.bookkeeping import config_diff, describe_changes
from ablate.config import RecipeConfig, Trial, batch_split_error
from ablate.data import Loaders, build_loaders, checked_batches, load_splits, mix_seeds
from ablate.distributed import Ranks
from ablate.errors import TrialError, first_line
from ablate.provenance import collect_provenance

log = logging.getLogger(__name__)

# Metrics that measure the machine rather than the model: they differ between two runs.
TIMING_KEYS = ("train/img_per_s", "train/data_wait_frac", "time/epoch_s", "mem/peak_mb")
Report = Callable[[dict[str, Any]], None]


@dataclass
class Run:
    """Everything one attempt at a trial trains with (within a process; never pickled)."""

    trial: Trial
    tdir: Path
    device: torch.device
    loaders: Loaders
    prep: BatchPrep  # uint8 batch -> normalised (and erased, in training) on the device
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any  # timm CosineLRScheduler
    scaler: torch.amp.GradScaler | None
    amp_dtype: torch.dtype | None  # None: full precision
    mixup: Any  # timm Mixup or None
    criterion: torch.nn.Module
    steps_per_epoch: int
    params: int
    flops: int | None
    provenance: dict[str, Any]
    best: dict[str, Any]  # {"val/top1", "epoch"}
    elapsed_s: float  # training wall time of earlier attempts, from the checkpoint
    ranks: Ranks = Ranks()  # this process among the trial's data-parallel workers
    rank_rngs: list[Any] | None = None  # every rank's RNG states at the last epoch's end


def train_trial(trial: Trial, tdir: Path, *, report: Report | None = None,
                device: str | None = None) -> dict[str, Any]:
    """Train ``trial`` in ``tdir`` (resuming from its latest checkpoint); return result.json.

    A finished trial (done or diverged) returns its stored result without training. A NaN or
    infinite loss ends the trial as "diverged" without raising. Any exception writes state
    "failed" with the error and traceback, then propagates. ``report(row)`` is called after
    every epoch with that epoch's metrics row.

    In a process group of several ranks (:mod:`ablate.distributed`) every rank calls this with
    the same arguments; each trains on its share, all get the same rows, and only rank 0
    writes to ``tdir`` (the others return ``{"state": ...}`` without a record).
    """
    tdir, ranks = Path(tdir), dist.current_ranks()
    if trial.resources.workers != ranks.world:
        raise TrialError(f"trial {trial.id} asks for {trial.resources.workers} workers, but "
                         f"{ranks.world} processes run it", key="resources.workers",
                         hint="run a data-parallel trial with 'ablate run', which starts "
                         "its workers")
    if ranks.main:  # the other ranks would race the main rank's first writes
        for note in check_folder(tdir, trial):
            log.warning("%s", note)
    finished = _finished_result(tdir, trial)
    if finished is not None:
        return finished
    if ranks.main:
        _open_record(tdir, trial)
    run = None
    try:
        run = _setup(trial, tdir, device, ranks)
        start_epoch = _resume(run)
        result = _train_epochs(run, start_epoch, report)
        dist.barrier()  # the ranks leave together, once the main rank's record is written
        return result
    except Exception as e:
        if ranks.main:
            record.write_state(tdir, record.FAILED, error=_error_record(e))
        raise
    finally:
        if run is not None:
            run.loaders.close()


# What a trial's record holds besides trial.json, which is written before any of them.
_RECORD_FILES = ("state.json", "metrics.jsonl", "result.json", "checkpoints")


def check_folder(tdir: Path, trial: Trial) -> list[str]:
    """TrialError unless ``tdir`` is new, or ``trial``'s record: a folder of another trial, or
    one holding a record with no trial.json (copied, half deleted) is never trained into, since
    its checkpoints and results would be taken for ``trial``'s. RecordError for checkpoints
    that would fail the trial (``record.check_checkpoints``), TrialError for checkpoints of an
    unfinished trial trained under another configuration than ``trial``'s (a default changed
    in the code: ``bookkeeping.config_diff``); returns a warning for each checkpoint it
    will skip (``train_trial`` logs them). Writes nothing."""
    tdir = Path(tdir)
    if (tdir / "trial.json").exists():
        held = record.read_trial(tdir)
        if held.id != trial.id:
            raise TrialError(f"folder holds trial {held.id}, not {trial.id}", file=tdir,
                             hint="give each trial its own folder")
        notes = record.check_checkpoints(tdir)  # RecordError for one that is no file
        if record.read_state(tdir) not in record.FINISHED \
                and record.epoch_checkpoints(tdir / record.CHECKPOINTS) \
                and (changes := config_diff(held.config, trial.config)):
            raise TrialError(f"the checkpoints of trial {trial.id} were trained under another "
                             f"configuration ({describe_changes(changes)}); resuming them "
                             "would train a mix of the two", file=tdir / "trial.json",
                             hint="delete the trial's checkpoints folder to train it afresh "
                             "under this configuration")
        return notes
    found = [name for name in _RECORD_FILES if (tdir / name).exists()]
    if found:
        raise TrialError(f"holds {', '.join(found)} but no trial.json: the files of an unknown "
                         f"trial, not to be taken for trial {trial.id}'s", file=tdir,
                         hint="delete the folder (or pass another one) to train afresh; a "
                         "results folder's trial gets its trial.json back from 'ablate resume'")
    return []


def _finished_result(tdir: Path, trial: Trial) -> dict[str, Any] | None:
    if record.read_state(tdir) in record.FINISHED and (result := record.read_result(tdir)):
        log.info("trial %s already %s", trial.id, result.get("state"))
        return result
    return None


def _open_record(tdir: Path, trial: Trial) -> None:
    tdir.mkdir(parents=True, exist_ok=True)
    record.write_trial(tdir, trial)
    attempt = (record.read_state_raw(tdir) or {}).get("attempt", 0) + 1
    record.write_state(tdir, record.RUNNING, attempt=attempt)


def _error_record(e: BaseException) -> dict[str, str]:
    from ablate.failures import classify_exception

    return {"type": type(e).__name__, "message": str(e), "kind": classify_exception(e).kind,
            "traceback": "".join(traceback.format_exception(e))}


# -- setup -------------------------------------------------------------------------------------


def _setup(trial: Trial, tdir: Path, device_arg: str | None, ranks: Ranks = Ranks()) -> Run:
    """Seed, then build data, model, optimisation and provenance for one attempt."""
    cfg = trial.config
    why, key = batch_split_error(cfg.train, ranks.world)
    if why:
        raise TrialError(why, key=key, hint="make train.batch_size a multiple of workers x "
                         "accum_steps (x 2 with Mixup/CutMix)")
    device = devices.default_device(device_arg)
    _seed_everything(cfg.seed)
    splits = load_splits(cfg.data, cfg.train)
    loaders = build_loaders(splits, cfg.train, seed=cfg.seed, pin_memory=device.type == "cuda",
                            rank=ranks.rank, world=ranks.world)
    run = assemble_run(trial, tdir, device, loaders, splits.num_classes,
                       steps_per_epoch=len(loaders.train), ranks=ranks)
    run.provenance = collect_provenance(device=device, data_fingerprint=splits.fingerprint,
                                        seed=cfg.seed, params=run.params, flops=run.flops)
    if ranks.main:
        record.write_provenance(tdir, run.provenance)
    return run


def assemble_run(trial: Trial, tdir: Path, device: torch.device, loaders: Any,
                 num_classes: int, *, steps_per_epoch: int, ranks: Ranks = Ranks()) -> Run:
    """The model, optimiser, schedule, precision and mixing of ``trial`` on ``device``, with
    ``loaders`` (anything with ``train``/``val`` iterables and ``close()``), as one attempt
    trains with; no provenance yet. ``ablate.estimate`` times these same pieces."""
    recipe = trial.config.train
    model, params, flops = _build_model(trial, num_classes, device)
    if not ranks.main:  # same weights as rank 0, but its own dropout and Mixup draws
        _seed_everything(mix_seeds(trial.config.seed, ranks.rank) % 2**32)
    optimizer, scheduler = _build_optimisation(model, recipe, steps_per_epoch)
    amp_dtype = devices.amp_dtype(recipe, device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    mixup, criterion = _build_mixing(recipe, num_classes)
    return Run(trial=trial, tdir=tdir, device=device, loaders=loaders,
               prep=BatchPrep(recipe, device), model=model, optimizer=optimizer,
               scheduler=scheduler, scaler=scaler, amp_dtype=amp_dtype, mixup=mixup,
               criterion=criterion, steps_per_epoch=steps_per_epoch, params=params,
               flops=flops, provenance={}, best={"val/top1": None, "epoch": None},
               elapsed_s=0.0, ranks=ranks)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _build_model(trial: Trial, num_classes: int, device: torch.device):
    from ablate import models

    m = trial.config.model
    model = models.create_model(m.arch, num_classes=num_classes, **m.axes())
    params = models.count_params(model)
    flops = models.model_stats(m.arch, num_classes=num_classes,
                               img_size=trial.config.data.img_size, **m.axes()).flops
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model, params, flops


def _build_optimisation(model: torch.nn.Module, recipe: RecipeConfig, steps_per_epoch: int):
    """AdamW + per-iteration cosine schedule with warm-up; all lrs scaled by batch/512."""
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    scale = recipe.batch_size / 512
    optimizer = create_optimizer_v2(model, opt="adamw", lr=recipe.lr * scale,
                                    weight_decay=recipe.weight_decay, filter_bias_and_bn=True,
                                    betas=(0.9, 0.999), eps=1e-8)
    total = recipe.epochs * steps_per_epoch
    warmup = min(int(recipe.warmup_epochs * steps_per_epoch), max(total - 1, 0))
    scheduler = CosineLRScheduler(optimizer, t_initial=max(total - warmup, 1),
                                  lr_min=recipe.min_lr * scale, warmup_t=warmup,
                                  warmup_lr_init=recipe.warmup_lr * scale, warmup_prefix=True,
                                  t_in_epochs=False)
    return optimizer, scheduler


def _build_mixing(recipe: RecipeConfig, num_classes: int):
    """timm Mixup/CutMix with soft-target loss, or label smoothing when mixing is off."""
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if recipe.mixup > 0 or recipe.cutmix > 0:  # on micro-batches: even ones (see _setup)
        mixup = Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix,
                      switch_prob=recipe.mixup_switch_prob, mode="batch",
                      label_smoothing=recipe.label_smoothing, num_classes=num_classes)
        return mixup, SoftTargetCrossEntropy()
    if recipe.label_smoothing > 0:
        return None, LabelSmoothingCrossEntropy(smoothing=recipe.label_smoothing)
    return None, torch.nn.CrossEntropyLoss()


def _resume(run: Run) -> int:
    """Load the latest valid checkpoint into ``run``; return the number of finished epochs.

    Every rank reads the same checkpoint (the main rank's) and restores its own RNG states.
    A checkpoint after the last epoch metrics.jsonl records whole (its line torn or lost) is
    skipped: resuming from it would leave that epoch out of the record for good.
    """
    path, state = checkpoint.latest(run.tdir / "checkpoints",
                                    max_epoch=record.recorded_epochs(run.tdir))
    if state is None:
        if run.ranks.main:
            record.truncate_metrics(run.tdir, 0)
        return 0
    owner = state.get("trial", run.trial.id)  # older ones do not say; trial.json did
    if owner != run.trial.id:
        raise TrialError(f"checkpoint of trial {owner}, not of {run.trial.id}", file=path,
                         hint="delete the trial's checkpoints folder to train it from the "
                         "start, or 'ablate reset' the trial")
    try:
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        if run.scaler is not None and state.get("scaler"):
            run.scaler.load_state_dict(state["scaler"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise TrialError(f"checkpoint does not fit the trial's model ({first_line(e)[:200]})",
                         file=path, hint="it is another model's: delete the trial's "
                         "checkpoints folder to train it from the start, or 'ablate reset' "
                         "the trial") from None
    run.best, run.elapsed_s = dict(state["best"]), float(state["elapsed_s"])
    rank_rngs = state.get("rank_rngs") or [state["rng"]]
    if len(rank_rngs) != run.ranks.world:
        raise TrialError(f"the checkpoint of epoch {state['epoch']} was written by "
                         f"{len(rank_rngs)} workers, this attempt has {run.ranks.world}",
                         file=run.tdir, key="resources.workers",
                         hint="resume with the number of workers the trial started with")
    checkpoint.restore_rng(rank_rngs[run.ranks.rank])
    if run.ranks.main:
        record.truncate_metrics(run.tdir, state["epoch"])
    log.info("trial %s: resuming after epoch %d", run.trial.id, state["epoch"])
    return int(state["epoch"])


# -- the epoch loop ----------------------------------------------------------------------------


class Diverged(Exception):
    """The training loss became NaN or infinite at (epoch, step)."""


def _train_epochs(run: Run, start_epoch: int, report: Report | None) -> dict[str, Any]:
    """Per epoch: train, evaluate, record, checkpoint, report; then write the result."""
    recipe, t_start = run.trial.config.train, time.perf_counter()
    for epoch in range(start_epoch + 1, recipe.epochs + 1):
        t_epoch = time.perf_counter()
        devices.reset_peak_memory(run.device)
        try:
            row = {"epoch": epoch, **train_one_epoch(run, epoch)}
        except Diverged as d:
            log.warning("trial %s diverged: %s", run.trial.id, d)
            return _finish(run, record.DIVERGED, t_start, diverged=d.args[0])
        row.update(evaluate(run))
        row["time/epoch_s"] = time.perf_counter() - t_epoch
        row["mem/peak_mb"] = devices.peak_memory_mb(run.device)
        run.rank_rngs = dist.gather_objects(checkpoint.capture_rng())
        if run.ranks.main:
            record_epoch(run, row, time.perf_counter() - t_start)
        log.debug("trial %s epoch %d: %s", run.trial.id, epoch, row)
        if report is not None:
            report(dict(row))
    return _finish(run, record.DONE, t_start)


def train_one_epoch(run: Run, epoch: int) -> dict[str, float]:
    """One pass over the training data; time spent blocked on the loader is measured apart."""
    run.model.train()
    run.loaders.set_epoch(epoch)
    batches, batch_size = checked_batches(run.loaders.train), run.trial.config.train.batch_size
    wait = loss_sum = 0.0
    t0 = time.perf_counter()
    for step in range(run.steps_per_epoch):
        t_wait = time.perf_counter()
        x, y = next(batches)
        x, y = run.prep(x, train=True), y.to(run.device, non_blocking=True)
        wait += time.perf_counter() - t_wait  # loading and preparing the batch
        loss = _train_step(run, x, y)
        if not math.isfinite(loss):
            raise Diverged({"epoch": epoch, "step": step + 1, "loss": str(loss)})
        loss_sum += loss
        run.scheduler.step_update(num_updates=(epoch - 1) * run.steps_per_epoch + step + 1)
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    seconds = time.perf_counter() - t0
    return {"train/loss": loss_sum / run.steps_per_epoch,
            "train/lr": run.optimizer.param_groups[0]["lr"],
            "train/img_per_s": run.steps_per_epoch * batch_size / seconds,
            "train/data_wait_frac": wait / seconds}


def _train_step(run: Run, x: torch.Tensor, y: torch.Tensor) -> float:
    """One optimizer step on this rank's share ``x, y`` of a global batch: forward and
    backward per micro-batch (``train.accum_steps`` of them), gradients summed over the ranks
    once, then clip and step. Returns the mean loss over the global batch; when it is NaN or
    infinite (on any rank) no step is taken and the caller stops the trial."""
    accum = run.trial.config.train.accum_steps
    scale = 1.0 / (accum * run.ranks.world)  # the mean over the global batch
    run.optimizer.zero_grad(set_to_none=True)
    loss_sum = 0.0
    for xm, ym in zip(x.chunk(accum), y.chunk(accum)):
        if run.mixup is not None:
            xm, ym = run.mixup(xm, ym)
        with torch.autocast(run.device.type, dtype=run.amp_dtype,
                            enabled=run.amp_dtype is not None):
            loss = run.criterion(run.model(xm), ym)
        value = loss.item()  # one sync per micro-step on a GPU: stop a divergence at once
        loss_sum += value
        if not math.isfinite(value):
            break
        loss = loss * scale if scale != 1.0 else loss
        (run.scaler.scale(loss) if run.scaler is not None else loss).backward()
    value = dist.sum_over_ranks([loss_sum], run.device)[0] * scale
    if not math.isfinite(value):  # the same on every rank: all stop together
        return value
    dist.sum_gradients(list(run.model.parameters()))
    _clip_and_step(run)
    dist.broadcast_buffers(run.model)
    return value


def _clip_and_step(run: Run) -> None:
    clip = run.trial.config.train.clip_grad
    if run.scaler is not None:
        run.scaler.unscale_(run.optimizer)
    if clip:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), clip)
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()


@torch.no_grad()
def evaluate(run: Run) -> dict[str, float]:
    """Loss, top-1 and top-5 (percent, timm's convention) on the whole validation set.

    Each rank evaluates its share; the counts of correct predictions and the loss sums are
    added over the ranks, so every validation image counts once."""
    run.model.eval()
    n, loss_sum, top1, top5 = 0, 0.0, 0, 0
    for x, y in checked_batches(run.loaders.val):
        x, y = run.prep(x, train=False), y.to(run.device, non_blocking=True)
        with torch.autocast(run.device.type, dtype=run.amp_dtype,
                            enabled=run.amp_dtype is not None):
            logits = run.model(x).float()
        ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = ranked == y[:, None]
        n += y.shape[0]
        loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
        top1 += int(hits[:, 0].sum())
        top5 += int(hits.any(dim=1).sum())
    n, loss_sum, top1, top5 = dist.sum_over_ranks([n, loss_sum, top1, top5], run.device)
    return {"val/loss": loss_sum / n, "val/top1": 100.0 * top1 / n,
            "val/top5": 100.0 * top5 / n}


# -- record: the main rank's job ----------------------------------------------------------------


def record_epoch(run: Run, row: dict[str, Any], attempt_s: float) -> None:
    """Append the row, then checkpoint: a crash in between only re-runs this epoch.

    The checkpoint holds every rank's RNG states (``run.rank_rngs``), so that each rank of a
    resumed attempt continues its own streams."""
    epoch = row["epoch"]
    is_best = run.best["val/top1"] is None or row["val/top1"] > run.best["val/top1"]
    if is_best:
        run.best = {"val/top1": row["val/top1"], "epoch": epoch}
    record.append_metrics(run.tdir, row)
    curves.add_epoch(run.tdir, run.trial, row)
    state = {"epoch": epoch, "trial": run.trial.id, "model": run.model.state_dict(),
             "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
             "scaler": run.scaler.state_dict() if run.scaler is not None else None,
             "best": run.best, "elapsed_s": run.elapsed_s + attempt_s,
             "rng": checkpoint.capture_rng(),
             "rank_rngs": run.rank_rngs if run.ranks.parallel else None}
    checkpoint.save_checkpoint(run.tdir / "checkpoints", state, is_best=is_best,
                               keep=run.trial.config.train.keep_checkpoints)


def _finish(run: Run, state: str, t_start: float, **extra: Any) -> dict[str, Any]:
    """Write result.json, the wall time into provenance.json, and the final state (the main
    rank; the others only say how the trial ended)."""
    if not run.ranks.main:
        return {"state": state}
    rows = record.read_metrics(run.tdir)
    wall = run.elapsed_s + time.perf_counter() - t_start
    result = {"state": state, "final": rows[-1] if rows else {}, "best": run.best,
              "epochs": len(rows), "wall_time_s": wall, "params": run.params,
              "flops": run.flops, **extra}
    record.write_result(run.tdir, result)
    record.write_provenance(run.tdir, {**run.provenance, "wall_time_s": wall})
    record.write_state(run.tdir, state)
    log.info("trial %s %s after %d epochs (best val/top1 %s)", run.trial.id, state, len(rows),
             run.best["val/top1"])
    return record.read_result(run.tdir)
