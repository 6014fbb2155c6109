"""Token mixers: the one layer the study is about, in its variants, selectable by name.

The contract every mixer keeps (the one tensor layout of the models):

    mixer(x) with x of shape (B, H, W, C)  ->  (B, H, W, C)

channels last, any H and W (windows shrink or pad as needed; nothing is fixed at construction).
Constructor: ``Mixer(dim, *, num_groups, kernel_size, shift)``, where ``num_groups`` is the
number of channel groups that each share one set of spatial weights in this stage (heads, for
attention; ``dim`` for a plain depth-wise conv), ``kernel_size`` is K (kernel or window side,
odd) and ``shift`` asks a shifted-window mixer to shift by K//2 (the others ignore it).
Class attributes declare the mixer's place on the paper's axes: ``weight_source``, ``window``
and ``spatial_sharing`` (are the weights shared across positions). Channel sharing follows from
the group size, so :meth:`Mixer.sharing` gives the ``sharing`` axis value.
"""

from __future__ import annotations

from typing import ClassVar

from timm.layers import register_notrace_module
from torch import nn

from ablate.errors import ModelConfigError, unknown_name_hint
from ablate.plugins import note_registration

# Complete by definition: weights shared across positions, across channels, both or neither.
SHARINGS = ("spatial", "channel", "both", "none")


class Mixer(nn.Module):
    """Base of every mixer: stores the contract's arguments and checks them."""

    name: ClassVar[str]
    weight_source: ClassVar[str]
    window: ClassVar[str]
    spatial_sharing: ClassVar[bool]

    def __init__(self, dim: int, *, num_groups: int, kernel_size: int, shift: bool = False):
        super().__init__()
        check_mixer_args(type(self).name, dim, num_groups, kernel_size)
        self.dim = dim
        self.num_groups = num_groups
        self.kernel_size = kernel_size
        self.shift = bool(shift) and self.window == "shifted"

    @classmethod
    def sharing(cls, group_size: int) -> str:
        """The ``sharing`` axis value this mixer has with ``group_size`` channels per group."""
        channel = group_size > 1
        if cls.spatial_sharing:
            return "both" if channel else "spatial"
        return "channel" if channel else "none"

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_groups={self.num_groups}, kernel_size={self.kernel_size}" + (
            ", shift=True" if self.shift else ""
        )


def check_mixer_args(name: str, dim: int, num_groups: int, kernel_size: int) -> None:
    """Raise ModelConfigError for a kernel or grouping no mixer can be built with."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
        raise ModelConfigError(
            f"kernel_size={kernel_size!r} is not allowed", key="kernel_size",
            hint="use a positive odd integer such as 3, 5 or 7",
        )
    if kernel_size % 2 == 0:
        raise ModelConfigError(
            f"kernel_size={kernel_size} is even", key="kernel_size",
            hint="the window needs a centre: use an odd size such as 3, 5 or 7",
        )
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1:
        raise ModelConfigError(
            f"num_groups={num_groups!r} for {name} is not a positive integer", key="num_groups"
        )
    if dim % num_groups:
        raise ModelConfigError(
            f"{num_groups} groups do not divide the {dim} channels of {name}", key="num_groups",
            hint=f"use a divisor of {dim}",
        )


MIXERS: dict[str, type[Mixer]] = {}
# (weight_source, window) -> the mixer that the two axes select when no mixer is named: the
# first one registered with that pair (the built-ins below come first). Others with the same
# pair are reached by name (``mixer=``).
MIXER_TABLE: dict[tuple[str, str], str] = {}


def register_mixer(cls: type[Mixer]) -> type[Mixer]:
    """Class decorator: make a mixer selectable by its ``name`` (and its axis values valid),
    and a leaf module for FX tracing (timm's feature extraction, ``torch.fx``).

    ModelConfigError if the class does not declare the contract's class attributes, or if
    another class already holds the name.
    """
    missing = [a for a in ("name", "weight_source", "window", "spatial_sharing")
               if not hasattr(cls, a)]
    if missing or not (isinstance(cls, type) and issubclass(cls, Mixer)):
        raise ModelConfigError(
            f"{getattr(cls, '__name__', cls)!r} is not a complete Mixer",
            key="mixer", hint="subclass ablate.models.Mixer and set the class attributes "
            f"name, weight_source, window and spatial_sharing (missing: {', '.join(missing)})")
    if cls.window not in ("shifted", "sliding"):
        raise ModelConfigError(f"mixer {cls.name!r} has window={cls.window!r}", key="window",
                               hint="a mixer's window scheme is 'shifted' or 'sliding'")
    if MIXERS.get(cls.name, cls) is not cls:
        raise ModelConfigError(f"a mixer named {cls.name!r} is already registered",
                               key="mixer", hint="give the new mixer another name")
    MIXERS[cls.name] = cls
    if not cls.__module__.startswith("ablate."):
        note_registration()
    MIXER_TABLE.setdefault((cls.weight_source, cls.window), cls.name)
    # An FX leaf: a mixer adapts to the input's size in Python (windows shrink, maps pad),
    # which symbolic tracing cannot follow; traced models and feature extractors call it whole.
    register_notrace_module(cls)
    return cls


def known_weight_sources() -> tuple[str, ...]:
    """The dynamic-weight sources some registered mixer has (built-ins and plugins)."""
    return tuple(dict.fromkeys(m.weight_source for m in MIXERS.values()))


def known_windows() -> tuple[str, ...]:
    """The window schemes some registered mixer has."""
    return tuple(dict.fromkeys(m.window for m in MIXERS.values()))


def get_mixer(name: str) -> type[Mixer]:
    """The mixer class registered as ``name``; ModelConfigError naming the valid ones if none."""
    try:
        return MIXERS[name]
    except (KeyError, TypeError):
        raise ModelConfigError(
            f"unknown mixer {name!r}", key="mixer", hint=unknown_name_hint(str(name), MIXERS)
        ) from None


# Import every implementation here, so registration never depends on what a caller imported.
from ablate.models.mixers import (  # noqa: F401
    dwconv,
    dynamic_dwconv,
    idynamic_dwconv,
    local_mlp,
    sliding_attention,
    window_attention,
    window_idynamic,
)
