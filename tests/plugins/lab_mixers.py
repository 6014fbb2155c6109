"""A plugin as a lab would write one: a mixer, its slow reference, and a model that uses it.

``gated_dwconv`` is a static depth-wise convolution whose output is gated, channel by channel,
by a sigmoid of a linear map of the centre token: a new dynamic-weight source
("center_gate"), so the sweep axis ``model.weight_source`` gains a value just by importing it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ablate.models import Mixer, register_arch, register_mixer


def gated_dwconv_reference(m: "GatedDWConv", x: torch.Tensor) -> torch.Tensor:
    """Zero-padded K x K sums written out position by position, then the gate."""
    b, h, w, c = x.shape
    k, p = m.kernel_size, m.kernel_size // 2
    kernel = m.weight.reshape(m.num_groups, k, k).repeat_interleave(c // m.num_groups, 0)
    out = torch.zeros_like(x)
    for i in range(h):
        for j in range(w):
            acc = m.bias.clone()
            for dy in range(-p, p + 1):
                for dx in range(-p, p + 1):
                    if 0 <= i + dy < h and 0 <= j + dx < w:
                        acc = acc + kernel[:, dy + p, dx + p] * x[:, i + dy, j + dx]
            out[:, i, j] = acc
    return out * torch.sigmoid(m.gate(x))


@register_mixer(reference=gated_dwconv_reference)
class GatedDWConv(Mixer):
    name = "gated_dwconv"
    weight_source = "center_gate"
    window = "sliding"
    spatial_sharing = True

    def __init__(self, dim: int, *, num_groups: int, kernel_size: int, shift: bool = False):
        super().__init__(dim, num_groups=num_groups, kernel_size=kernel_size, shift=shift)
        self.weight = nn.Parameter(torch.empty(num_groups, 1, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(dim))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.gate = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) -> (B, H, W, C)
        per_group = self.dim // self.num_groups
        weight = self.weight.repeat_interleave(per_group, 0)
        y = F.conv2d(x.permute(0, 3, 1, 2), weight, self.bias, padding=self.kernel_size // 2,
                     groups=self.dim).permute(0, 2, 3, 1)
        return y * torch.sigmoid(self.gate(x))


register_arch("gated_dwnet_nano", block="dwnet", mixer="gated_dwconv", embed_dim=24,
              depths=(1, 1, 2, 1), group_size=1, kernel_size=3, patch_size=2, img_size=32)
