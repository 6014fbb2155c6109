"""Local MLP: static spatial weights inside (shifted) windows, shared by groups of channels.

The paper's channel-sharing ablation (Swin-MLP style): for each channel group a K*K x K*K
weight matrix and a K*K bias mix the positions of a window; no qkv or output projection. Keys
outside the window's real positions (padding, the other side of a shift) count as zeros, which
is Swin-MLP's zero-padded shift. One channel per group means no channel sharing.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ablate.models.mixers import Mixer, register_mixer
from ablate.models.mixers.windows import allowed_keys, merge, partition, window_layout


@register_mixer
class LocalMLP(Mixer):
    """A static window x window spatial MLP per channel group."""

    name = "local_mlp"
    weight_source = "static"
    window = "shifted"
    spatial_sharing = False

    def __init__(self, dim: int, *, num_groups: int, kernel_size: int, shift: bool = False):
        super().__init__(dim, num_groups=num_groups, kernel_size=kernel_size, shift=shift)
        n = kernel_size * kernel_size
        bound = 1 / math.sqrt(n)  # Conv1d's default init, as Swin-MLP's grouped conv has
        self.weight = nn.Parameter(torch.empty(num_groups, n, n).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_groups, n).uniform_(-bound, bound))

    def window_weights(self, lay) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights (nW or 1, G, N, N) with masked keys zeroed, and bias (G, N), for a layout."""
        k, g, ws = self.kernel_size, self.num_groups, lay.size
        n = ws * ws
        w = self.weight.view(g, k, k, k, k)[:, :ws, :ws, :ws, :ws].reshape(1, g, n, n)
        if lay.needs_mask:
            w = w * allowed_keys(lay, w.device)[:, None]
        bias = self.bias.view(g, k, k)[:, :ws, :ws].reshape(g, n)
        return w, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, wd, c = x.shape
        g = self.num_groups
        lay = window_layout(h, wd, self.kernel_size, self.shift)
        xw = partition(x, lay)  # (B, nW, N, C)
        n = xw.shape[2]
        w, bias = self.window_weights(lay)
        if w.shape[0] == 1:
            y = torch.einsum("gij,bwjgc->bwigc", w[0], xw.view(b, -1, n, g, c // g))
        else:
            y = torch.einsum("wgij,bwjgc->bwigc", w, xw.view(b, -1, n, g, c // g))
        y = y + bias.t()[:, :, None]  # (N, G, 1)
        return merge(y.reshape(b, -1, n, c), lay)
