"""Inhomogeneous dynamic depth-wise convolution (Han et al., ICLR 2022), on any device.

A K x K kernel per position, predicted from the feature at that position (Linear C -> C/4 with
bias, BatchNorm, ReLU, Linear C/4 -> K*K*G), shared by the channels of each of G groups of
consecutive channels; no output bias, no normalisation of the kernels. The authors ship a CUDA
kernel; here the aggregation gathers over the K*K offsets of a padded input
(:func:`~ablate.models.mixers.local_ops.local_aggregate`) and never unfolds the input.
"""

from __future__ import annotations

import torch

from ablate.models.layers import kernel_generator
from ablate.models.mixers import Mixer, register_mixer
from ablate.models.mixers.local_ops import local_aggregate


@register_mixer
class IDynamicDWConv(Mixer):
    """Per-position kernels from the centre feature, applied in sliding windows."""

    name = "idynamic_dwconv"
    weight_source = "center_linear"
    window = "sliding"
    spatial_sharing = False

    def __init__(self, dim: int, *, num_groups: int, kernel_size: int, shift: bool = False):
        super().__init__(dim, num_groups=num_groups, kernel_size=kernel_size, shift=shift)
        self.kernel_gen = kernel_generator(dim, kernel_size**2 * num_groups, bias=True)

    def kernels(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, K*K, G): the kernel each position applies to its neighbourhood.

        Stored offset-major (each offset's (B, H, W, G) slice contiguous), which the
        aggregation loops read fastest; the predicted position-major tensor is freed.
        """
        b, h, w, _ = x.shape
        kernel = self.kernel_gen(x).view(b, h, w, self.kernel_size**2, self.num_groups)
        return kernel.permute(0, 3, 1, 2, 4).contiguous().permute(0, 2, 3, 1, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_aggregate(x, self.kernels(x).to(x.dtype), self.kernel_size)
