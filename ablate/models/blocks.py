"""The two block styles of the study; the mixer is a constructor argument of both.

Layout (B, H, W, C) in and out. ``mixer_layer`` is a mixer class (see
:mod:`ablate.models.mixers`), built as ``mixer_layer(dim, num_groups=, kernel_size=, shift=)``.
"""

from __future__ import annotations

import torch
from timm.layers import DropPath
from torch import nn

from ablate.models.layers import BatchNormLast, Conv1x1, Mlp, SqueezeExcite
from ablate.models.mixers import Mixer


class SwinBlock(nn.Module):
    """Swin's block: x + DropPath(Mixer(LN(x))), then x + DropPath(MLP(LN(x)))."""

    def __init__(
        self,
        dim: int,
        mixer_layer: type[Mixer],
        *,
        num_groups: int,
        kernel_size: int,
        shift: bool = False,
        se: bool = False,
        drop_path: float = 0.0,
        mlp_ratio: float = 4.0,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        act_layer: type[nn.Module] = nn.GELU,
    ):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.mixer = mixer_layer(dim, num_groups=num_groups, kernel_size=kernel_size, shift=shift)
        self.se = SqueezeExcite(dim) if se else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, mlp_ratio, act_layer)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.se(self.mixer(self.norm1(x))))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class DWNetBlock(nn.Module):
    """DWNet's block: no pre-norm; 1x1-BN-ReLU, mixer-BN-ReLU, 1x1-BN; then a BN-pre-norm FFN.

    The 1x1 convs are bias-free :class:`Conv1x1` layers with PyTorch's default initialisation
    (the authors' ``nn.Conv2d``), not trunc-normal Linear layers; the FFN's are Linear, as Swin's.
    Squeeze-excitation, when asked for, follows the mixer's BN-ReLU, as in the Swin block it
    follows the mixer.
    """

    def __init__(
        self,
        dim: int,
        mixer_layer: type[Mixer],
        *,
        num_groups: int,
        kernel_size: int,
        shift: bool = False,
        se: bool = False,
        drop_path: float = 0.0,
        mlp_ratio: float = 4.0,
        norm_layer: type[nn.Module] = BatchNormLast,
        act_layer: type[nn.Module] = nn.GELU,
    ):
        super().__init__()
        self.conv1 = Conv1x1(dim, dim, bias=False)
        self.bn1 = norm_layer(dim)
        self.mixer = mixer_layer(dim, num_groups=num_groups, kernel_size=kernel_size, shift=shift)
        self.bn2 = norm_layer(dim)
        self.se = SqueezeExcite(dim) if se else nn.Identity()
        self.conv2 = Conv1x1(dim, dim, bias=False)
        self.bn3 = norm_layer(dim)
        self.act = nn.ReLU()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, mlp_ratio, act_layer)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(x)))
        y = self.se(self.act(self.bn2(self.mixer(y))))
        x = x + self.drop_path1(self.bn3(self.conv2(y)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


BLOCKS: dict[str, type[nn.Module]] = {"swin": SwinBlock, "dwnet": DWNetBlock}
