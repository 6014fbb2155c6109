"""Local attention in sliding windows: each position attends over its own K x K neighbourhood.

The sliding counterpart of Swin's window attention (the paper's window-scheme ablation): same
qkv/proj and heads, a relative position bias with one entry per offset and head (K*K, since in
a sliding window the offset of a key is its position in the query's window), and keys outside
the map masked out (no wrap-around, no padding tokens).
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from ablate.models.layers import masked_softmax
from ablate.models.mixers import Mixer, register_mixer
from ablate.models.mixers.local_ops import local_aggregate, local_correlate


@lru_cache(maxsize=64)
def inside_map(height: int, width: int, kernel_size: int, device: torch.device) -> torch.Tensor:
    """(K*K, H, W, 1) bool: is the offset-o neighbour of each position inside the map."""
    p = kernel_size // 2
    d = torch.arange(kernel_size) - p
    ys = torch.arange(height)[:, None] + d[None, :]  # (H, K)
    xs = torch.arange(width)[:, None] + d[None, :]  # (W, K)
    oky = (ys >= 0) & (ys < height)
    okx = (xs >= 0) & (xs < width)
    ok = oky.t()[:, None, :, None] & okx.t()[None, :, None, :]  # (K, K, H, W)
    return ok.reshape(kernel_size * kernel_size, height, width, 1).to(device)


@register_mixer
class SlidingAttention(Mixer):
    """Multi-head self-attention over each position's K x K neighbourhood."""

    name = "sliding_attention"
    weight_source = "dot_product"
    window = "sliding"
    spatial_sharing = False

    def __init__(self, dim: int, *, num_groups: int, kernel_size: int, shift: bool = False):
        super().__init__(dim, num_groups=num_groups, kernel_size=kernel_size, shift=shift)
        self.scale = (dim // num_groups) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        table = torch.zeros(kernel_size * kernel_size, num_groups)
        self.relative_position_bias_table = nn.Parameter(nn.init.trunc_normal_(table, std=0.02))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1:3]
        k = self.kernel_size
        q, key, v = self.qkv(x).chunk(3, dim=-1)  # each (B, H, W, C)
        logits = local_correlate((q * self.scale).to(key.dtype), key, k, self.num_groups)
        logits = logits.permute(0, 3, 1, 2, 4)  # (B, K*K, H, W, heads): its storage order
        logits = logits + self.relative_position_bias_table[:, None, None, :]
        allowed = None if k == 1 else inside_map(h, w, k, x.device)
        attn = masked_softmax(logits, allowed, dim=1).permute(0, 2, 3, 1, 4)  # (B,H,W,KK,heads)
        return self.proj(local_aggregate(v, attn.to(v.dtype), k))  # autocast may mix dtypes
