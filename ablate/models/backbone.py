"""One hierarchical backbone for every arm: Swin's macro structure with any block and mixer.

Patch embedding (K=P conv, stride P, then LayerNorm), four stages of widths C, 2C, 4C, 8C with
patch merging between them, LayerNorm + global average pool + Linear head. Stochastic depth
rises linearly from 0 to ``drop_path_rate`` over all blocks. Inside: (B, H, W, C).

It keeps timm's model contract: ``forward_features`` / ``forward_head(pre_logits=)``,
``reset_classifier`` (``global_pool=''`` keeps the map), ``feature_info`` for the four stages
(``features_only=True`` through timm's builder), ``forward_intermediates``,
``prune_intermediate_layers`` and ``set_grad_checkpointing``. Features are channels last
(``output_fmt = 'NHWC'``, as timm's Swin); ``forward_intermediates`` gives NCHW unless asked.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function, trunc_normal_
from timm.models._features import feature_take_indices
from torch import nn
from torch.utils.checkpoint import checkpoint

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
        x = pad_to_even(x)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))  # (B, ceil(H/2), ceil(W/2), 2C)


@register_notrace_function  # FX leaf: the padding depends on the map's size
def pad_to_even(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) -> (B, H + H % 2, W + W % 2, C): odd maps get one zero row/column."""
    return F.pad(x, (0, 0, 0, x.shape[2] % 2, 0, x.shape[1] % 2))


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
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if not self.grad_checkpointing or torch.jit.is_scripting():
            return self.blocks(x)
        for block in self.blocks:  # recomputed in backward; drop-path draws are replayed
            x = checkpoint(block, x, use_reentrant=False)
        return x


class Head(nn.Module):
    """Global average pool over positions (``pool='avg'``, or ``''`` for none), then Linear."""

    def __init__(self, dim: int, num_classes: int, pool: str = "avg"):
        super().__init__()
        if pool not in ("avg", ""):
            raise ValueError(f"global_pool={pool!r}: ablate's models pool by 'avg' or not ('')")
        self.pool = pool
        self.fc = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.pool == "avg":
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
        global_pool: str = "avg",
    ):
        super().__init__()
        self.num_classes = num_classes
        dims = [embed_dim * 2**i for i in range(len(depths))]
        self.num_features = self.head_hidden_size = dims[-1]
        self.output_fmt = "NHWC"
        self.feature_info = [dict(num_chs=d, reduction=patch_size * 2**i, module=f"layers.{i}")
                             for i, d in enumerate(dims)]
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
        self.head = Head(self.num_features, num_classes, global_pool)
        self.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.layers(self.patch_embed(x)))  # (B, h, w, 8C)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs as well as the final features (timm's signature and meaning).

        ``indices``: the last n stages (int), the listed ones, or all (None). ``norm`` applies
        the final norm to the last stage's output (the only one it is sized for).
        ``stop_early`` skips the stages after the last one asked for. Returns
        ``(forward_features output, intermediates)``, or only the intermediates.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt={output_fmt!r}: use 'NCHW' or 'NHWC'")
        take, last = feature_take_indices(len(self.layers), indices)
        stages = self.layers[:last + 1] if stop_early else self.layers
        intermediates, x = [], self.patch_embed(x)
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take:
                y = self.norm(x) if norm and i == len(self.layers) - 1 else x
                intermediates.append(y.permute(0, 3, 1, 2) if output_fmt == "NCHW" else y)
        if intermediates_only:
            return intermediates
        if len(stages) == len(self.layers):
            x = self.norm(x)
        return x, intermediates

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1,
                                  prune_norm: bool = False, prune_head: bool = True) -> list[int]:
        """Drop the stages after the last of ``indices`` (and the norm and head they feed)."""
        take, last = feature_take_indices(len(self.layers), indices)
        cut = last < len(self.layers) - 1
        self.layers = self.layers[:last + 1]
        if prune_norm or cut:
            self.norm = nn.Identity()
        if cut:
            self.num_features = self.head_hidden_size = self.feature_info[last]["num_chs"]
        if prune_head or cut:
            self.reset_classifier(0, "")
        return take

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in backward instead of storing them.

        Outputs and gradients are unchanged; BatchNorm layers in training mode update their
        running statistics again during the recomputation.
        """
        for stage in self.layers:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups by depth, for timm's layer-wise learning-rate decay."""
        return dict(stem=r"^patch_embed", blocks=r"^layers\.(\d+)" if coarse else [
            (r"^layers\.(\d+)\.downsample", (0,)), (r"^layers\.(\d+)\.\w+\.(\d+)", None),
            (r"^norm", (99999,))])

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier for ``num_classes`` (0: none); ``global_pool`` '' keeps the map."""
        pool = self.head.pool if global_pool is None else global_pool
        ref = self.patch_embed.proj.weight  # the new head joins the model's device and dtype
        self.num_classes = num_classes
        self.head = Head(self.num_features, num_classes, pool).to(ref.device, ref.dtype)
        self.head.apply(_init_weights)

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
