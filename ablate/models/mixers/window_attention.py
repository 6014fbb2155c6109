"""Local attention in shifted non-overlapping windows (Swin: Liu et al., ICCV 2021).

Differences from Swin: padded positions (maps that are not a multiple of the window) are masked
out as keys instead of attending to zero vectors, so a window holds only real positions; the
relative-position table keeps (2K-1)^2 entries per head and is indexed by the offsets of the
(possibly shrunk) window actually used.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from ablate.models.layers import masked_softmax
from ablate.models.mixers import Mixer, register_mixer
from ablate.models.mixers.windows import allowed_keys, merge, partition, window_layout


@lru_cache(maxsize=64)
def relative_index(window: int, kernel_size: int, device: torch.device) -> torch.Tensor:
    """(N, N) index into a (2K-1)^2 table for each query/key pair of a window x window block."""
    pos = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    pos = pos.flatten(1)  # (2, N)
    rel = pos[:, :, None] - pos[:, None, :] + (kernel_size - 1)  # (2, N, N), in [0, 2K-2]
    return (rel[0] * (2 * kernel_size - 1) + rel[1]).to(device)


@register_mixer
class WindowAttention(Mixer):
    """Multi-head self-attention inside (shifted) windows, with relative position bias."""

    name = "window_attention"
    weight_source = "dot_product"
    window = "shifted"
    spatial_sharing = False

    def __init__(self, dim: int, *, num_groups: int, kernel_size: int, shift: bool = False):
        super().__init__(dim, num_groups=num_groups, kernel_size=kernel_size, shift=shift)
        self.head_dim = dim // num_groups
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        table = torch.zeros((2 * kernel_size - 1) ** 2, num_groups)
        self.relative_position_bias_table = nn.Parameter(nn.init.trunc_normal_(table, std=0.02))

    def position_bias(self, window: int) -> torch.Tensor:
        """(heads, N, N) bias for a window of side ``window``."""
        table = self.relative_position_bias_table
        idx = relative_index(window, self.kernel_size, table.device)
        return table[idx].permute(2, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        lay = window_layout(h, w, self.kernel_size, self.shift)
        xw = partition(x, lay)  # (B, nW, N, C)
        n = xw.shape[2]
        qkv = self.qkv(xw).view(b, -1, n, 3, self.num_groups, self.head_dim)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # each (B, nW, heads, N, hd)
        attn = (q * self.scale) @ k.transpose(-2, -1) + self.position_bias(lay.size)
        allowed = allowed_keys(lay, x.device)[:, None] if lay.needs_mask else None
        attn = masked_softmax(attn, allowed, dim=-1)  # (B, nW, heads, N, N)
        y = (attn @ v).transpose(2, 3).reshape(b, -1, n, c)
        return merge(self.proj(y), lay)
