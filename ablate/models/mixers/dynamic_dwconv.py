"""Homogeneous dynamic depth-wise convolution (dynamic DWNet, Han et al., ICLR 2022).

One K x K kernel per channel (group) per image, predicted from the globally pooled feature and
applied at every position, plus a static per-channel bias initialised to zero. No softmax or
other normalisation of the kernels. Per-sample kernels are applied by folding the batch into
the channels and running one grouped convolution. Unlike the authors' code, it is really
dynamic (theirs silently falls back to a static conv).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ablate.models.layers import kernel_generator
from ablate.models.mixers import Mixer, register_mixer


@register_mixer
class DynamicDWConv(Mixer):
    """Depth-wise conv whose kernels are predicted per image from the pooled feature."""

    name = "dynamic_dwconv"
    weight_source = "pooled_linear"
    window = "sliding"
    spatial_sharing = True

    def __init__(self, dim: int, *, num_groups: int, kernel_size: int, shift: bool = False):
        super().__init__(dim, num_groups=num_groups, kernel_size=kernel_size, shift=shift)
        self.kernel_gen = kernel_generator(dim, num_groups * kernel_size**2, bias=False)
        self.bias = nn.Parameter(torch.zeros(dim))

    def kernels(self, x: torch.Tensor) -> torch.Tensor:
        """(B, G, K, K): the predicted kernel of each group for each image."""
        k = self.kernel_size
        pooled = x.mean(dim=(1, 2), keepdim=True)  # (B, 1, 1, C)
        return self.kernel_gen(pooled).view(x.shape[0], self.num_groups, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        weight = self.kernels(x).repeat_interleave(c // self.num_groups, dim=1)  # (B, C, K, K)
        xc = x.permute(0, 3, 1, 2).reshape(1, b * c, h, w)
        y = F.conv2d(xc, weight.reshape(b * c, 1, *weight.shape[2:]),
                     self.bias.repeat(b), padding=self.kernel_size // 2, groups=b * c)
        return y.view(b, c, h, w).permute(0, 2, 3, 1)
