"""Shifted non-overlapping windows (Swin's scheme), shared by every shifted-window mixer.

The window shrinks to the map when the map is not larger than it (and then does not shift),
decided from the actual input so one model runs at any image size. Maps that are not a multiple
of the window are padded at the bottom/right; padded keys are masked out, so a position's
window holds only real positions. A shift is Swin's cyclic roll by -s plus a mask that keeps
wrapped-around regions apart, which yields the same windows as zero-padding by (ws - s, s).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import torch


@dataclass(frozen=True)
class WindowLayout:
    """How one (H, W) map is cut into windows: window side, shift and padded size."""

    height: int
    width: int
    size: int
    shift: int
    padded_h: int
    padded_w: int

    @property
    def num_windows(self) -> int:
        return (self.padded_h // self.size) * (self.padded_w // self.size)

    @property
    def needs_mask(self) -> bool:
        return self.shift > 0 or self.padded_h != self.height or self.padded_w != self.width


def window_layout(height: int, width: int, kernel_size: int, shift: bool) -> WindowLayout:
    """The window layout for a map; ``shift`` asks for a K//2 shift when the map allows it."""
    size = kernel_size
    s = kernel_size // 2 if shift else 0
    if min(height, width) <= kernel_size:  # window covers the map: shrink it, no shift
        size, s = min(height, width), 0
    ph = -(-height // size) * size
    pw = -(-width // size) * size
    return WindowLayout(height, width, size, s, ph, pw)


@lru_cache(maxsize=64)
def _slots(lay: WindowLayout, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather indices: window slot -> source position (padding: position 0, always masked or
    discarded), and position -> its window slot. One gather replaces pad, roll and permute."""
    ws, s = lay.size, lay.shift
    r = torch.arange(lay.padded_h).view(-1, ws)  # (nWh, ws): rolled row of each slot
    c = torch.arange(lay.padded_w).view(-1, ws)
    rows = (r[:, None, :, None] + s) % lay.padded_h  # (nWh, 1, ws, 1): source row
    cols = (c[None, :, None, :] + s) % lay.padded_w  # (1, nWw, 1, ws)
    real = (rows < lay.height) & (cols < lay.width)  # (nWh, nWw, ws, ws)
    pos = torch.where(real, rows * lay.width + cols, torch.zeros((), dtype=torch.long))
    src = pos.reshape(-1)  # window-major, then row-major inside a window
    # Each real position fills one slot; the padding slots all write to a spare last entry,
    # dropped. A scatter, not a boolean-mask assignment: no op whose output shape depends on
    # data, so torch.compile traces this without a graph break (it ignores the cache).
    n = lay.height * lay.width
    target = torch.where(real.reshape(-1), src, torch.full_like(src, n))
    inv = torch.zeros(n + 1, dtype=torch.long).scatter_(0, target, torch.arange(src.numel()))
    return src.to(device), inv[:n].to(device)


def partition(x: torch.Tensor, lay: WindowLayout) -> torch.Tensor:
    """(B, H, W, C) -> (B, nW, ws*ws, C): the (shifted) windows, padding slots filled with a
    copy of position 0 (callers mask them as keys and discard them as queries)."""
    b, h, w, c = x.shape
    src, _ = _slots(lay, x.device)
    return x.reshape(b, h * w, c).index_select(1, src).view(b, lay.num_windows, -1, c)


def merge(xw: torch.Tensor, lay: WindowLayout) -> torch.Tensor:
    """(B, nW, ws*ws, C) -> (B, H, W, C): the inverse of :func:`partition`."""
    b, c = xw.shape[0], xw.shape[-1]
    _, inv = _slots(lay, xw.device)
    return xw.reshape(b, -1, c).index_select(1, inv).view(b, lay.height, lay.width, c)


@lru_cache(maxsize=64)
def _allowed_cpu(lay: WindowLayout) -> torch.Tensor:
    # Label every padded position by its shift region, and -1 for padding; a key is allowed for
    # a query when both carry the same label and the key is real.
    label = torch.zeros(lay.padded_h, lay.padded_w, dtype=torch.long)
    if lay.shift:
        ws, s = lay.size, lay.shift
        cuts = (slice(0, -ws), slice(-ws, -s), slice(-s, None))
        n = 0
        for hs in cuts:
            for wsl in cuts:
                label[hs, wsl] = n
                n += 1
    real = torch.zeros(lay.padded_h, lay.padded_w, dtype=torch.bool)
    real[: lay.height, : lay.width] = True
    if lay.shift:
        real = torch.roll(real, shifts=(-lay.shift, -lay.shift), dims=(0, 1))
    label = torch.where(real, label, torch.full_like(label, -1))
    cut = replace(lay, shift=0, height=lay.padded_h, width=lay.padded_w)  # already rolled
    lw = partition(label[None, :, :, None].float(), cut)[0, :, :, 0]  # (nW, N)
    return (lw[:, :, None] == lw[:, None, :]) & (lw[:, None, :] >= 0)


@lru_cache(maxsize=64)
def allowed_keys(lay: WindowLayout, device: torch.device) -> torch.Tensor:
    """(nW, N, N) bool: may query i attend key j in the same window. Cached per layout and
    device (no host-to-device copy per forward)."""
    return _allowed_cpu(lay).to(device)
