"""Models: the mixers, the one backbone they sit in, and the timm-registered named models.

Importing this package registers every model with timm (``timm.create_model(name)``). The
public API other parts of ablate use is what this module exports. Plugins (``ablate.plugins``)
extend the study through :func:`register_mixer`, :func:`register_block` and
:func:`register_arch`; any model timm itself knows (``resnet18``) can be an arm too, built by
timm and trained by the same recipe, without ablate's axes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import timm
from torch import nn

from ablate.errors import ModelConfigError, closest
from ablate.models.blocks import BLOCKS
from ablate.models.counts import (
    ModelStats,
    count_flops,
    count_params,
    input_error,
    model_stats,
    single_sample_error,
)
from ablate.models.mixers import (
    MIXER_TABLE,
    MIXERS,
    SHARINGS,
    Mixer,
    known_weight_sources,
    known_windows,
)
from ablate.models.mixers import register_mixer as _register_mixer_class
from ablate.models.reference import REFERENCES
from ablate.models.registry import (
    MODEL_DEFAULTS,
    MODEL_NAMES,
    ModelSpec,
    register_arch,
    resolve,
)
from ablate.plugins import note_registration

# timm models take drop_path_rate too; every other axis is ablate's own
TIMM_MODEL_AXES = ("drop_path_rate",)


def axis_values() -> dict[str, tuple]:
    """Allowed values of the named axes, from the mixers registered now (plugins included)."""
    return {"weight_source": known_weight_sources(), "window": known_windows(),
            "sharing": SHARINGS, "mixer": tuple(MIXERS), "block": tuple(BLOCKS)}


def register_mixer(cls: type[Mixer] | None = None, *,
                   reference: Callable[[nn.Module, Any], Any] | None = None):
    """Register a Mixer subclass by its ``name``; usable as ``@register_mixer`` or
    ``@register_mixer(reference=fn)``.

    ``reference(mixer, x)`` is the slow, obviously-correct computation of the same output; with
    one, the mixer is checked against it by the mixer tests (see README, "Plugins").
    """
    def register(c: type[Mixer]) -> type[Mixer]:
        _register_mixer_class(c)
        if reference is not None:
            REFERENCES[c.name] = reference
        return c

    return register(cls) if cls is not None else register


def register_block(name: str, cls: type[nn.Module]) -> type[nn.Module]:
    """Make a block style selectable as ``block=name`` (``model.block`` in a sweep).

    A block is built as ``cls(dim, mixer_layer, *, num_groups, kernel_size, shift, se,
    drop_path)``, ``mixer_layer`` being the mixer's class (passed by position), and maps
    (B, H, W, C) to (B, H, W, C), as the built-in ones do.
    """
    if BLOCKS.get(name, cls) is not cls:
        raise ModelConfigError(f"a block named {name!r} is already registered", key="block",
                               hint="give the new block another name")
    BLOCKS[name] = cls
    note_registration()
    return cls


def plugin_parts(arch: str, **axes: Any) -> list[tuple[str, str]]:
    """The (kind, name) of the mixer and block of ``arch`` + ``axes`` that a plugin registered
    (code outside ablate), for an error to point at: [] for a timm model or ablate's own."""
    if not is_ablate_model(arch):
        return []
    from ablate.models.registry import resolve

    spec = resolve(arch, **axes)
    parts = [("mixer", spec.mixer, MIXERS.get(spec.mixer)), ("block", spec.block,
                                                             BLOCKS.get(spec.block))]
    return [(kind, name) for kind, name, cls in parts
            if cls is not None and not cls.__module__.startswith("ablate.")]


def is_ablate_model(arch: str) -> bool:
    """Whether ``arch`` is built by ablate (and so takes the study's axes)."""
    return arch in MODEL_DEFAULTS


def validate_model(arch: str, **axes: Any) -> None:
    """Raise ModelConfigError (naming the axis and allowed values) if ``arch`` + ``axes`` is
    not a model that can be built. Cheap: allocates nothing."""
    if isinstance(arch, str) and not is_ablate_model(arch):
        if not timm.is_model(arch):  # timm's registry now: a plugin may have added to it
            near = closest(arch, [*MODEL_DEFAULTS, *timm.list_models()])
            raise ModelConfigError(
                f"unknown model {arch!r}", key="arch",
                hint=(f"did you mean '{near}'? " if near else "") + "ablate's models: "
                + ", ".join(sorted(MODEL_DEFAULTS)) + "; or any name timm.list_models() gives")
        ours = sorted(k for k, v in axes.items() if v is not None and k not in TIMM_MODEL_AXES)
        if ours:
            raise ModelConfigError(
                f"{arch} is a timm model, not one of ablate's: {ours[0]} does not apply to it",
                key=ours[0], hint="remove the axis from this arm, or use one of ablate's models "
                "(ablate_swin_*, dwnet_*, ...) to vary it")
        return
    resolve(arch, **axes)


def create_model(arch: str, *, num_classes: int, in_chans: int = 3, **axes: Any) -> nn.Module:
    """Build a registered model (ablate's or timm's) through ``timm.create_model``."""
    validate_model(arch, **axes)
    axes = {k: v for k, v in axes.items() if v is not None}
    return timm.create_model(arch, num_classes=num_classes, in_chans=in_chans, **axes)


__all__ = [
    "MIXERS", "MIXER_TABLE", "MODEL_NAMES", "Mixer", "ModelSpec", "ModelStats", "axis_values",
    "count_flops", "count_params", "create_model", "input_error", "is_ablate_model",
    "model_stats", "single_sample_error",
    "register_arch", "register_block", "register_mixer", "validate_model",
]
