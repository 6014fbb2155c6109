"""Models: the mixers, the one backbone they sit in, and the timm-registered named models.

Importing this package registers every model with timm (``timm.create_model(name)``). The
public API other parts of ablate use is what this module exports.
"""

from __future__ import annotations

from typing import Any

import timm
from torch import nn

from ablate.models.counts import ModelStats, count_flops, count_params, model_stats
from ablate.models.mixers import MIXERS, SHARINGS, WEIGHT_SOURCES, WINDOWS
from ablate.models.registry import MIXER_TABLE, MODEL_NAMES, ModelSpec, resolve

AXIS_VALUES: dict[str, tuple] = {
    "weight_source": WEIGHT_SOURCES,
    "window": WINDOWS,
    "sharing": SHARINGS,
}


def validate_model(arch: str, **axes: Any) -> None:
    """Raise ModelConfigError (naming the axis and allowed values) if ``arch`` + ``axes`` is
    not a model that can be built. Cheap: allocates nothing."""
    resolve(arch, **axes)


def create_model(arch: str, *, num_classes: int, in_chans: int = 3, **axes: Any) -> nn.Module:
    """Build a registered model through ``timm.create_model`` with the given axes."""
    validate_model(arch, **axes)
    return timm.create_model(arch, num_classes=num_classes, in_chans=in_chans, **axes)


__all__ = [
    "AXIS_VALUES", "MIXERS", "MIXER_TABLE", "MODEL_NAMES", "ModelSpec", "ModelStats",
    "count_flops", "count_params", "create_model", "model_stats", "validate_model",
]
