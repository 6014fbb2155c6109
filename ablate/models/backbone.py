"""One hierarchical backbone for every arm: Swin's macro structure with any block and mixer.

Patch embedding (K=P conv, stride P, then LayerNorm), four stages of widths C, 2C, 4C, 8C with
patch merging between them, LayerNorm + global average pool + Linear head. Stochastic depth
rises linearly from 0 to ``drop_path_rate`` over all blocks. Inside: (B, H, W, C).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

from ablate.models.blocks import BLOCKS
from ablate.models.mixers import get_mixer


class PatchEmbed(nn.Module):
    """Non-overlapping P x P patches -> C channels, LayerNorm; (B, 3, H, W) -> (B, H/P, W/P, C)."""

    def __init__(self, in_chans: int, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    """Concatenate each 2x2 neighbourhood (4C), LayerNorm, Linear(4C -> 2C) without bias."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1:3]
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))  # odd maps: pad one zero row/column
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))  # (B, ceil(H/2), ceil(W/2), 2C)


class Stage(nn.Module):
    """Optional patch merging, then blocks alternating unshifted/shifted windows."""

    def __init__(self, dim: int, depth: int, *, block_layer, mixer_layer, downsample: bool,
                 drop_paths: Sequence[float], **block_kwargs):
        super().__init__()
        in_dim = dim // 2 if downsample else dim
        self.downsample = PatchMerging(in_dim) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[
            block_layer(dim, mixer_layer, shift=i % 2 == 1, drop_path=drop_paths[i], **block_kwargs)
            for i in range(depth)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class Head(nn.Module):
    """Global average pool over positions, then a Linear classifier."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(1, 2))
        return x if pre_logits else self.fc(x)


class Backbone(nn.Module):
    """The hierarchical model; ``block`` and ``mixer`` are registry names."""

    def __init__(
        self,
        *,
        block: str,
        mixer: str,
        embed_dim: int,
        depths: Sequence[int],
        groups: Sequence[int],
        kernel_size: int,
        se: bool = False,
        drop_path_rate: float = 0.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        patch_size: int = 4,
    ):
        super().__init__()
        self.num_classes = num_classes
        dims = [embed_dim * 2**i for i in range(len(depths))]
        self.num_features = dims[-1]
        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_size)
        n = sum(depths)
        rates = [drop_path_rate * i / max(n - 1, 1) for i in range(n)]  # linear, 0 to rate
        self.layers = nn.Sequential(*[
            Stage(dims[i], depths[i], block_layer=BLOCKS[block], mixer_layer=get_mixer(mixer),
                  downsample=i > 0, drop_paths=rates[sum(depths[:i]):sum(depths[:i + 1])],
                  num_groups=groups[i], kernel_size=kernel_size, se=se)
            for i in range(len(depths))
        ])
        self.norm = nn.LayerNorm(self.num_features)
        self.head = Head(self.num_features, num_classes)
        self.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.layers(self.patch_embed(x)))  # (B, h, w, 8C)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head = Head(self.num_features, num_classes)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters timm's optimizer factory exempts from weight decay (as Swin does)."""
        return {n for n, _ in self.named_parameters() if "relative_position_bias_table" in n}


def _init_weights(m: nn.Module) -> None:
    # Swin's init for Linear layers; norms start at identity; convs (the DWNet family's 1x1
    # convs and kernel generators included) keep PyTorch's default, as in the authors' code.
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
