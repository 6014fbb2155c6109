"""Small layers the blocks and mixers share, all in the channels-last layout (B, H, W, C)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_module
from torch import nn


@register_notrace_module  # FX leaf: BatchNorm's input check branches on the tensor's rank
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


class Conv1x1(nn.Conv2d):
    """A 1x1 convolution applied to channels-last (B, ..., C) tensors.

    It is an ``nn.Conv2d`` (weight (out, in, 1, 1), PyTorch's default initialisation, the
    parameter layout of the DWNet authors' checkpoints), computed as the linear map it is on
    the channels axis, so no permute is needed. A 2-D (out, in) weight, the layout of ablate
    0.1 checkpoints, loads too.
    """

    def __init__(self, in_chans: int, out_chans: int, bias: bool = True):
        super().__init__(in_chans, out_chans, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.flatten(1), self.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        weight = state_dict.get(prefix + "weight")
        if weight is not None and weight.dim() == 2:
            state_dict[prefix + "weight"] = weight[:, :, None, None]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


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
    """1x1 conv (C -> C/4), BatchNorm, ReLU, 1x1 conv (C/4 -> out): how dynamic mixers predict
    weights. ``bias`` is the first conv's; the last always has one.

    Applied to (B, H, W, C) features (one kernel per position) or (B, 1, 1, C) pooled ones. Both
    convs keep PyTorch's default initialisation, as in the authors' code.
    """
    hidden = max(dim // 4, 1)
    return nn.Sequential(
        Conv1x1(dim, hidden, bias=bias),
        BatchNormLast(hidden) if norm else nn.Identity(),
        nn.ReLU(),
        Conv1x1(hidden, out),
    )


def masked_softmax(logits: torch.Tensor, allowed: torch.Tensor | None, dim: int) -> torch.Tensor:
    """Softmax with disallowed entries at the dtype's minimum (exactly 0 after the softmax)."""
    if allowed is not None:
        logits = logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)
    return logits.softmax(dim)
