"""The inhomogeneous dynamic conv's linear-projection weights, applied in shifted windows.

The paper's window-scheme ablation for linear-projection weights: each position predicts K*K
weights per channel group from its own feature, exactly as the inhomogeneous dynamic conv does,
but they weigh the positions of its (shifted, Swin-style) window, indexed by position within the
window, instead of its sliding neighbourhood. Masked keys (padding, other shift regions) get
weight 0; a window shrunk to a small map uses the top-left ws x ws of the K x K weights.
"""

from __future__ import annotations

import torch

from ablate.models.layers import kernel_generator
from ablate.models.mixers import Mixer, register_mixer
from ablate.models.mixers.windows import allowed_keys, merge, partition, window_layout


@register_mixer
class WindowIDynamic(Mixer):
    """Per-position weights from the centre feature over its shifted window."""

    name = "window_idynamic"
    weight_source = "center_linear"
    window = "shifted"
    spatial_sharing = False

    def __init__(self, dim: int, *, num_groups: int, kernel_size: int, shift: bool = False):
        super().__init__(dim, num_groups=num_groups, kernel_size=kernel_size, shift=shift)
        self.kernel_gen = kernel_generator(dim, kernel_size**2 * num_groups, bias=True)

    def window_weights(self, x: torch.Tensor, lay) -> torch.Tensor:
        """(B, nW, N, N, G): weight of key j for query i in each window, masked keys zero."""
        b, k, g = x.shape[0], self.kernel_size, self.num_groups
        ww = partition(self.kernel_gen(x), lay)  # (B, nW, N, K*K*G)
        n, ws = ww.shape[2], lay.size
        ww = ww.view(b, -1, n, k, k, g)[:, :, :, :ws, :ws].reshape(b, -1, n, n, g)
        if lay.needs_mask:
            ww = ww * allowed_keys(lay, x.device)[..., None]
        return ww

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        g = self.num_groups
        lay = window_layout(h, w, self.kernel_size, self.shift)
        xw = partition(x, lay)  # (B, nW, N, C)
        n = xw.shape[2]
        y = torch.einsum("bwijg,bwjgc->bwigc", self.window_weights(x, lay),
                         xw.view(b, -1, n, g, c // g))
        return merge(y.reshape(b, -1, n, c), lay)
