"""A trial's checkpoints: written atomically after every epoch, pruned, found again on resume.

``tdir/checkpoints/`` holds ``epoch_NNNN.pt`` (the ``keep`` latest) and ``best.pt``. Each file
is a ``torch.save`` dict (loadable with ``weights_only=True``). An epoch checkpoint holds all
that resuming needs::

    {"format": 1, "epoch": int, "trial": id, "model": ..., "optimizer": ..., "scheduler": ...,
     "scaler": ...,
     "best": {"val/top1", "epoch"}, "elapsed_s": float, "rng": {"torch", "numpy", "python"}}

``"trial"`` is the id of the trial that wrote it (checkpoints of earlier versions lack it), so
a checkpoint copied into another trial's folder is refused on resume. ``best.pt`` holds the
weights only, ``{"format", "epoch", "trial", "model", "best"}``: training never
resumes from it (resume reads the newest epoch checkpoint), and without AdamW's two moment
buffers it is a third of the size.

A file is written to a temporary name in the same folder, fsynced and renamed over its final
name, so a crash while writing leaves the previous checkpoints intact; :func:`load_latest`
skips any file that does not load.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ablate import files, record

CKPT_FORMAT = 1
BEST = "best.pt"

log = logging.getLogger(__name__)


def epoch_path(ckpt_dir: Path, epoch: int) -> Path:
    return ckpt_dir / f"epoch_{epoch:04d}.pt"


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """torch.save ``obj`` to ``path`` via a temporary file, fsync and rename."""
    with files.atomic_file(path, "wb") as f:
        torch.save(obj, f)
    _fsync_dir(path.parent)


def _fsync_dir(d: Path) -> None:
    try:  # makes the rename itself durable; not possible on every platform
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(ckpt_dir: Path, state: dict[str, Any], *, is_best: bool, keep: int) -> None:
    """Write this epoch's checkpoint (and best.pt), then drop all but the ``keep`` latest."""
    state = {"format": CKPT_FORMAT, **state}
    save_atomic(state, epoch_path(ckpt_dir, state["epoch"]))
    if is_best:
        save_atomic(best_weights(state), ckpt_dir / BEST)
    for old in epoch_checkpoints(ckpt_dir)[max(1, keep):]:  # at least one: resume needs it
        old.unlink(missing_ok=True)


def best_weights(state: dict[str, Any]) -> dict[str, Any]:
    """What ``best.pt`` keeps of an epoch checkpoint: the model's weights and when they won."""
    return {k: state[k] for k in ("format", "epoch", "trial", "model", "best") if k in state}


epoch_checkpoints = record.epoch_checkpoints  # newest first


def load_latest(ckpt_dir: Path) -> dict[str, Any] | None:
    """The newest epoch checkpoint that loads and is complete; None when there is none."""
    return latest(ckpt_dir)[1]


def latest(ckpt_dir: Path, *, max_epoch: int | None = None
           ) -> tuple[Path | None, dict[str, Any] | None]:
    """(path, contents) of the newest epoch checkpoint that loads and is complete, else
    (None, None); with ``max_epoch``, of none after that epoch. Each newer one skipped is
    logged as a warning naming it."""
    for path in epoch_checkpoints(ckpt_dir):
        if max_epoch is not None and int(path.stem.split("_")[1]) > max_epoch:
            log.warning("skipping checkpoint %s: the trial's metrics.jsonl records epochs "
                        "1-%d only", path, max_epoch)
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is skipped, whatever broke it
            log.warning("skipping unreadable checkpoint %s (%s)", path, type(e).__name__)
            continue
        if isinstance(state, dict) and state.get("format") == CKPT_FORMAT and "epoch" in state:
            return path, state
        log.warning("skipping checkpoint %s: not a format-%d checkpoint", path, CKPT_FORMAT)
    return None, None


def capture_rng() -> dict[str, Any]:
    """The global RNG states (torch, CUDA, numpy, python) as weights_only-loadable values."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    rng = {"torch": torch.get_rng_state(),
           "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
           "python": (version, list(internal), gauss_next)}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_rng(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    name, keys, pos, has_gauss, gauss = rng["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = rng["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
