"""Parameter and FLOP counts of any model at any input size, by torch's own counter.

FLOPs come from :class:`torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions and
the registered formulas of the mixers' custom ops) on a batch of one, reported as multiply-adds
(FLOPs / 2), the convention of the paper's tables. Norms, activations and softmax are not
counted, as in the papers' counters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ablate.errors import first_line


@dataclass(frozen=True)
class ModelStats:
    """Size of one configured model: parameters and multiply-adds per image."""

    params: int
    flops: int


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, img_size: int, in_chans: int = 3) -> int:
    """Multiply-adds of one forward pass on a (1, in_chans, img_size, img_size) input.

    Runs the model in eval mode (restored afterwards) on the device and dtype of its parameters;
    a model on the meta device is counted without computing anything.
    """
    p = next(model.parameters())
    x = torch.zeros(1, in_chans, img_size, img_size, device=p.device, dtype=p.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def input_error(arch: str, *, img_size: int, num_classes: int = 2, in_chans: int = 3,
                **axes) -> str | None:
    """Why ``arch`` with ``axes`` cannot run on ``img_size`` images (the first line of what its
    forward raised), or None when it can. Shapes only, on the meta device: no memory, no
    compute. A timm model built for one input size (Swin's windows, ViT's position table) is
    the usual case; ablate's models pad their windows and take any size their stages allow.

    The pass that answers also counts the model, so :func:`model_stats` of the same model,
    ``num_classes`` and size is then free (``ablate plan`` checks, then reports its counts).
    """
    key = _key(arch, num_classes, img_size, in_chans, axes)
    if key in _STATS:
        return None
    model = _meta_model(arch, num_classes, in_chans, axes)
    try:
        flops = count_flops(model, img_size, in_chans)
    except Exception as e:  # noqa: BLE001 - whatever the model's code raises is the answer
        return first_line(e).rstrip(".")
    _remember(key, ModelStats(params=count_params(model), flops=flops))
    return None


def single_sample_error(arch: str, *, img_size: int, in_chans: int = 3, **axes) -> str | None:
    """Why ``arch`` cannot train on micro-batches of one sample (the first line of what its
    training-mode forward raised: a BatchNorm with one value per channel, as over a dynamic
    kernel generator's pooled vector or a 1x1 map), or None when it can. Meta device."""
    model = _meta_model(arch, 2, in_chans, axes).train()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_chans, img_size, img_size, device="meta"))
    except Exception as e:  # noqa: BLE001 - whatever the model's code raises is the answer
        return first_line(e).rstrip(".")
    return None


def model_stats(arch: str, *, num_classes: int, img_size: int, in_chans: int = 3,
                **axes) -> ModelStats:
    """Parameters and multiply-adds of ``arch`` with ``axes`` at ``img_size``; cached.

    Raises ModelConfigError for a configuration :func:`validate_model` would reject.
    """
    from ablate.models import validate_model

    validate_model(arch, **axes)  # our error, before an unhashable value reaches the cache
    key = _key(arch, num_classes, img_size, in_chans, axes)
    if key not in _STATS:
        model = _meta_model(arch, num_classes, in_chans, axes)
        _remember(key, ModelStats(params=count_params(model),
                                  flops=count_flops(model, img_size, in_chans)))
    return _STATS[key]


def _meta_model(arch: str, num_classes: int, in_chans: int, axes: dict) -> nn.Module:
    """``arch`` built on the meta device: shapes only, no memory, no initialisation cost."""
    from ablate.models import create_model

    with torch.device("meta"):
        return create_model(arch, num_classes=num_classes, in_chans=in_chans, **axes)


_STATS: dict[tuple, ModelStats] = {}  # the counts of this process's models, oldest first


def _key(arch: str, num_classes: int, img_size: int, in_chans: int, axes: dict) -> tuple:
    return (arch, num_classes, img_size, in_chans,
            tuple(sorted((k, v) for k, v in axes.items() if v is not None)))


def _remember(key: tuple, stats: ModelStats, most: int = 256) -> None:
    _STATS[key] = stats
    while len(_STATS) > most:
        del _STATS[next(iter(_STATS))]
