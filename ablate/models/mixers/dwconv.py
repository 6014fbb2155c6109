"""Static depth-wise convolution (DWNet's mixer), optionally with a kernel per channel group.

With one channel per group it is the plain 7x7 depth-wise conv of DWNet (sharing 'spatial');
with several, the channels of a group share one kernel (sharing 'both'). The bias stays one per
channel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ablate.models.mixers import Mixer, register_mixer


@register_mixer
class DWConv(Mixer):
    """K x K depth-wise convolution with zero padding (one kernel per group of channels)."""

    name = "dwconv"
    weight_source = "static"
    window = "sliding"
    spatial_sharing = True

    def __init__(self, dim: int, *, num_groups: int, kernel_size: int, shift: bool = False):
        super().__init__(dim, num_groups=num_groups, kernel_size=kernel_size, shift=shift)
        self.weight = nn.Parameter(torch.empty(num_groups, 1, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(dim))
        bound = 1 / math.sqrt(kernel_size * kernel_size)  # nn.Conv2d's default init
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        nn.init.uniform_(self.bias, -bound, bound)

    def channel_weight(self) -> torch.Tensor:
        """(C, 1, K, K): each group's kernel repeated for its channels."""
        per_group = self.dim // self.num_groups
        return self.weight if per_group == 1 else self.weight.repeat_interleave(per_group, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc = x.permute(0, 3, 1, 2)  # (B, C, H, W), a channels-last view
        y = F.conv2d(xc, self.channel_weight(), self.bias, padding=self.kernel_size // 2,
                     groups=self.dim)
        return y.permute(0, 2, 3, 1)
