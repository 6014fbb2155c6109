"""Small layers the blocks and mixers share, all in the channels-last layout (B, H, W, C)."""

from __future__ import annotations

import torch
from torch import nn


class BatchNormLast(nn.BatchNorm2d):
    """BatchNorm2d over channels-last (B, H, W, C) tensors: statistics over B, H and W.

    Normalises the (B*H*W, C) view, the same statistics as BatchNorm2d on (B, C, H, W) (and
    the same state-dict), but on CPU about twice as fast as the channels-last 4-D kernel.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() != 2:
            raise ValueError(f"expected a (N, C) view, got {x.dim()}-D input")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).view(x.shape)


class Mlp(nn.Module):
    """The FFN of both blocks: Linear(C -> rC), activation, Linear(rC -> C)."""

    def __init__(self, dim: int, ratio: float = 4.0, act_layer: type[nn.Module] = nn.GELU):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SqueezeExcite(nn.Module):
    """Squeeze-excitation: rescale channels by a gate computed from the pooled feature."""

    def __init__(self, dim: int, reduction: int = 4):
        super().__init__()
        hidden = max(dim // reduction, 1)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(1, 2), keepdim=True)  # (B, 1, 1, C)
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(s))))


def kernel_generator(dim: int, out: int, *, bias: bool, norm: bool = True) -> nn.Sequential:
    """Linear(C -> C/4), BatchNorm, ReLU, Linear(C/4 -> out): how dynamic mixers predict weights.

    Applied to (B, H, W, C) features (one kernel per position) or (B, 1, 1, C) pooled ones.
    """
    hidden = max(dim // 4, 1)
    return nn.Sequential(
        nn.Linear(dim, hidden, bias=bias),
        BatchNormLast(hidden) if norm else nn.Identity(),
        nn.ReLU(),
        nn.Linear(hidden, out),
    )
