"""The collective operations of a data-parallel trial, over ``torch.distributed``.

A trial of several workers runs one process per worker; whoever starts them (Ray Train, or a
test with ``torch.multiprocessing``) initialises the default process group (gloo on CPU, NCCL
on CUDA) before :func:`ablate.train.train_trial` runs. Each helper here is a no-op in a process
of its own (no process group, or a world of one), so the single-process path never pays for
them.

Gradients are averaged with one explicit all-reduce per optimizer step, after every
accumulation micro-step has run its backward pass, rather than by DistributedDataParallel:
accumulation then never communicates per micro-step, the model stays a plain module (its
checkpoint has the same keys as a single-process one) and the order of the summation is
fixed. BatchNorm running statistics are rank 0's, sent to the other ranks after each step as
DistributedDataParallel does by default; its batch statistics stay each device's own
micro-batch (no SyncBN), as in the authors' code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

BUCKET_ELEMENTS = 2**24  # gradients are all-reduced in flat buckets of at most 64 MiB (fp32)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the trial's workers."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """The main rank: the only one that writes the trial's record."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1


def current_ranks() -> Ranks:
    """The rank and world size of the initialised process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def sum_over_ranks(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sums of ``values`` over the ranks (float64, so counts stay exact)."""
    if not current_ranks().parallel:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def sum_gradients(params: list[torch.nn.Parameter]) -> None:
    """Replace every gradient by its sum over the ranks, in flat buckets (one call per bucket).

    Parameters without a gradient are left out; every rank runs the same model code on the
    same kind of batch, so they are the same parameters on every rank.
    """
    if not current_ranks().parallel:
        return
    bucket: list[torch.Tensor] = []
    size = 0
    for p in params:
        if p.grad is None:
            continue
        bucket.append(p.grad)
        size += p.grad.numel()
        if size >= BUCKET_ELEMENTS:
            _all_reduce_flat(bucket)
            bucket, size = [], 0
    if bucket:
        _all_reduce_flat(bucket)


def _all_reduce_flat(grads: list[torch.Tensor]) -> None:
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    _copy_back(flat, grads)


def _copy_back(flat: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics): one broadcast per
    dtype, of the buffers flattened together (a DWNet-T has some 180 of them; one call each
    was a collective launch and a synchronisation apiece, every step)."""
    if not current_ranks().parallel:
        return
    groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for b in model.buffers():
        groups.setdefault((b.dtype, b.device), []).append(b)
    for buffers in groups.values():
        flat = torch.cat([b.reshape(-1) for b in buffers])
        dist.broadcast(flat, src=0)
        _copy_back(flat, buffers)


def gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (pickled; for small things such as RNG states)."""
    ranks = current_ranks()
    if not ranks.parallel:
        return [obj]
    out: list[Any] = [None] * ranks.world
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if current_ranks().parallel:
        dist.barrier()
