"""Which torch device a trial runs on, in what precision, and how much memory it peaked at.

Everything here works on CPU and CUDA alike; the CUDA-only parts (bf16 support, the caching
allocator's peak) are asked only when the device is a CUDA one.
"""

from __future__ import annotations

import resource

import torch

from ablate.config import RecipeConfig
from ablate.errors import AblateError, TrialError


def local_device(name: str, *, error: type[AblateError] = TrialError,
                 key: str = "--device") -> torch.device:
    """The torch device ``name`` (cpu, cuda, cuda:N) if this machine has it, else ``error``
    in one line: checked before a trial starts, not a traceback from its first tensor."""
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise error(f"unknown device {name!r}", key=key, hint="use cpu, cuda or cuda:N")
    if dev.type == "cuda" and (not torch.cuda.is_available()
                               or (dev.index or 0) >= torch.cuda.device_count()):
        raise error(f"device {name!r} is not on this machine "
                    f"({torch.cuda.device_count()} CUDA devices)", key=key,
                    hint=f"use {key} cpu, or leave {key} out")
    return dev


def default_device(name: str | None) -> torch.device:
    """``name`` when given (Ray Train's device for a worker, or ``--device``), else the first
    GPU when there is one, else the CPU."""
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def amp_dtype(recipe: RecipeConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``recipe`` on ``device``: bf16 where the GPU has it, else fp16
    (with a grad scaler); None (full precision) on the CPU or with ``train.amp: false``."""
    if device.type != "cuda" or not recipe.amp:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak (CUDA only: the CPU's resident-set peak cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: peak allocated since the last reset; CPU: the process's peak resident set so far."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
