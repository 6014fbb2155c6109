"""Named models registered with timm, and the axes -> mixer resolution (one table, one place).

Every registered model accepts the paper's axes as keyword arguments (``weight_source``,
``window``, ``sharing``, ``group_size`` or ``num_groups``, ``kernel_size``, ``se``,
``drop_path_rate``) plus ``mixer=`` and ``block=``; an axis left out keeps the model's default.
:func:`resolve` turns a name and axes into a :class:`ModelSpec` or raises ModelConfigError
naming the axis and its allowed values; it allocates nothing, so it is the cheap validator.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, is_model, register_model
from torch import nn

from ablate.errors import ModelConfigError, unknown_name_hint
from ablate.models.backbone import Backbone
from ablate.models.blocks import BLOCKS
from ablate.models.mixers import (
    MIXER_TABLE,
    MIXERS,
    SHARINGS,
    check_mixer_args,
    get_mixer,
    known_weight_sources,
    known_windows,
)
from ablate.plugins import note_registration

AXES = ("weight_source", "window", "sharing", "group_size", "num_groups", "kernel_size", "se",
        "drop_path_rate", "mixer", "block")


@dataclass(frozen=True)
class ModelSpec:
    """A fully resolved model: what the backbone is built from."""

    block: str
    mixer: str
    embed_dim: int
    depths: tuple[int, ...]
    group_size: int | None = None  # channels per group (XOR num_groups)
    num_groups: int | None = None  # groups per stage
    kernel_size: int = 7
    se: bool = False
    drop_path_rate: float = 0.0
    patch_size: int = 4
    img_size: int = 224

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))

    @property
    def groups(self) -> tuple[int, ...]:
        """Number of channel groups in each stage."""
        if self.num_groups is not None:
            return (self.num_groups,) * len(self.depths)
        return tuple(w // self.group_size for w in self.widths)


# nano: T's proportions at a quarter of the width (C=24: 3, 6, 12, 24 channels per group with
# G=8, and heads 3, 6, 12, 24 with group_size 8, as T has with G=32 and group_size 32).
_T, _B, _N = (96, (2, 2, 6, 2)), (128, (2, 2, 18, 2)), (24, (1, 1, 2, 1))
_NANO = {"kernel_size": 3, "patch_size": 2, "img_size": 32, "drop_path_rate": 0.0}


def _spec(block, mixer, size, **kw) -> ModelSpec:
    return ModelSpec(block=block, mixer=mixer, embed_dim=size[0], depths=size[1], **kw)


MODEL_DEFAULTS: dict[str, ModelSpec] = {
    "ablate_swin_tiny": _spec("swin", "window_attention", _T, group_size=32, drop_path_rate=0.2),
    "ablate_swin_base": _spec("swin", "window_attention", _B, group_size=32, drop_path_rate=0.5),
    "dwnet_tiny": _spec("dwnet", "dwconv", _T, group_size=1, drop_path_rate=0.2),
    "dwnet_base": _spec("dwnet", "dwconv", _B, group_size=1, drop_path_rate=0.5),
    "dynamic_dwnet_tiny": _spec("dwnet", "dynamic_dwconv", _T, group_size=1, drop_path_rate=0.2),
    "dynamic_dwnet_base": _spec("dwnet", "dynamic_dwconv", _B, group_size=1, drop_path_rate=0.5),
    "idynamic_dwnet_tiny": _spec("dwnet", "idynamic_dwconv", _T, num_groups=32,
                                 drop_path_rate=0.2),
    "idynamic_dwnet_base": _spec("dwnet", "idynamic_dwconv", _B, num_groups=32,
                                 drop_path_rate=0.5),
    "local_mlp_tiny": _spec("swin", "local_mlp", _T, group_size=32, drop_path_rate=0.2),
    "ablate_swin_nano": _spec("swin", "window_attention", _N, group_size=8, **_NANO),
    "sliding_attn_nano": _spec("swin", "sliding_attention", _N, group_size=8, **_NANO),
    "dwnet_nano": _spec("dwnet", "dwconv", _N, group_size=1, **_NANO),
    "dynamic_dwnet_nano": _spec("dwnet", "dynamic_dwconv", _N, group_size=1, **_NANO),
    "idynamic_dwnet_nano": _spec("dwnet", "idynamic_dwconv", _N, num_groups=8, **_NANO),
    "window_idynamic_nano": _spec("dwnet", "window_idynamic", _N, num_groups=8, **_NANO),
    "local_mlp_nano": _spec("swin", "local_mlp", _N, group_size=8, **_NANO),
}
MODEL_NAMES: tuple[str, ...] = tuple(MODEL_DEFAULTS)


def _choice(axes: dict, key: str, allowed) -> Any:
    value = axes.get(key)
    if value is not None and (not isinstance(value, str) or value not in allowed):
        raise ModelConfigError(f"{key}={value!r} is not one of the allowed values", key=key,
                               hint=unknown_name_hint(str(value), allowed))
    return value


def _positive_int(axes: dict, key: str) -> int | None:
    value = axes.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ModelConfigError(f"{key}={value!r} is not a positive integer", key=key)
    return value


def _resolve_mixer(base: ModelSpec, axes: dict) -> str:
    source = _choice(axes, "weight_source", known_weight_sources())
    window = _choice(axes, "window", known_windows())
    named = axes.get("mixer")
    if named is not None:
        # An explicit mixer wins; weight_source/window may only repeat what it is.
        chosen = get_mixer(named)
        asked = (source or chosen.weight_source, window or chosen.window)
        if asked != (chosen.weight_source, chosen.window):
            raise ModelConfigError(
                f"mixer={named!r} is ({chosen.weight_source}, {chosen.window}), but the axes ask "
                f"for ({asked[0]}, {asked[1]})", key="mixer",
                hint="set either mixer or weight_source/window, not conflicting ones")
        return named
    default = get_mixer(base.mixer)
    source = source or default.weight_source
    window = window or default.window
    if (source, window) not in MIXER_TABLE:
        ok = sorted(w for s, w in MIXER_TABLE if s == source)
        raise ModelConfigError(
            f"weight_source={source!r} with window={window!r} is not supported", key="window",
            hint=f"supported windows for {source}: {', '.join(ok)}")
    return MIXER_TABLE[(source, window)]


def _resolve_groups(base: ModelSpec, axes: dict) -> dict[str, int | None]:
    gs, ng = _positive_int(axes, "group_size"), _positive_int(axes, "num_groups")
    if gs is not None and ng is not None:
        raise ModelConfigError("group_size and num_groups are both set", key="group_size",
                               hint="set one: channels per group, or groups per stage")
    if gs is None and ng is None:
        gs, ng = base.group_size, base.num_groups
    widths = base.widths
    key, n = ("group_size", gs) if gs is not None else ("num_groups", ng)
    bad = [w for w in widths if w % n]
    if bad:
        raise ModelConfigError(
            f"{key}={n} does not divide the stage widths {', '.join(map(str, widths))}", key=key,
            hint=f"use a divisor of {widths[0]} (the first stage width)")
    return {"group_size": gs, "num_groups": ng}


def _check_sharing(spec: ModelSpec, axes: dict) -> None:
    wanted = _choice(axes, "sharing", SHARINGS)
    if wanted is None:
        return
    mixer = get_mixer(spec.mixer)
    implied = {mixer.sharing(w // g) for w, g in zip(spec.widths, spec.groups)}
    if implied != {wanted}:
        groups = (f"group_size={spec.group_size}" if spec.group_size is not None
                  else f"num_groups={spec.num_groups}")
        raise ModelConfigError(
            f"sharing={wanted!r} does not hold for {spec.mixer} with {groups}, which gives "
            f"{', '.join(sorted(implied))}", key="sharing",
            hint="spatial/both need a spatially shared mixer (static or pooled_linear, sliding); "
                 "channel/both need more than one channel per group; none/spatial need one")


def resolve(arch: str, **axes: Any) -> ModelSpec:
    """The model ``arch`` with ``axes`` applied; ModelConfigError for anything impossible.

    Axes left out keep the model's defaults, the grouping included: ``ablate_swin_tiny`` with
    ``weight_source="static", window="sliding"`` is a depth-wise conv whose kernels are shared
    by 32 channels (sharing 'both'), unless ``group_size=1`` is given too.
    """
    if not isinstance(arch, str) or arch not in MODEL_DEFAULTS:
        raise ModelConfigError(f"unknown model {arch!r}", key="arch",
                               hint=unknown_name_hint(str(arch), MODEL_NAMES))
    axes = {k: v for k, v in axes.items() if v is not None}
    for key in axes:
        if key not in AXES:
            raise ModelConfigError(f"unknown model argument {key!r}", key=key,
                                   hint=unknown_name_hint(key, AXES))
    base = MODEL_DEFAULTS[arch]
    _choice(axes, "mixer", MIXERS)
    block = _choice(axes, "block", BLOCKS) or base.block
    kernel = axes.get("kernel_size", base.kernel_size)
    se = axes.get("se", base.se)
    if not isinstance(se, bool):
        raise ModelConfigError(f"se={se!r} is not a boolean", key="se", hint="use true or false")
    dpr = axes.get("drop_path_rate", base.drop_path_rate)
    if isinstance(dpr, bool) or not isinstance(dpr, (int, float)) or not 0 <= dpr < 1:
        raise ModelConfigError(f"drop_path_rate={dpr!r} is not in [0, 1)", key="drop_path_rate")
    spec = dataclasses.replace(
        base, block=block, mixer=_resolve_mixer(base, axes), kernel_size=kernel, se=se,
        drop_path_rate=float(dpr), **_resolve_groups(base, axes))
    for width, groups in zip(spec.widths, spec.groups):
        check_mixer_args(spec.mixer, width, groups, kernel)
    _check_sharing(spec, axes)
    return spec


PAPER = dict(
    paper_name="On the Connection between Local Attention and Dynamic Depth-wise Convolution "
               "(Han et al., ICLR 2022)",
    paper_ids="arXiv:2106.04263",
    origin_url="https://github.com/Atten4Vis/DemystifyLocalViT",
)
_SWIN_NOTE = ("Swin blocks after Liu et al., arXiv:2103.14030, as the study uses them",)
# timm's registry reads each entry point's cfg from its module's ``default_cfgs``.
default_cfgs: dict[str, dict[str, Any]] = {}


def default_cfg(arch: str) -> dict[str, Any]:
    """The cfg timm reports for ``arch`` (``timm.get_pretrained_cfg``): how it sees images.

    No weights (no url or hub id). Crop 0.875 as in the paper's evaluation (resize 256, crop
    224); at 64 pixels or less, 1.0, as ablate's own evaluation of small images does.
    """
    spec = MODEL_DEFAULTS[arch]
    size = spec.img_size
    pool = -(-size // (spec.patch_size * 2 ** (len(spec.depths) - 1)))
    return dict(
        input_size=(3, size, size), pool_size=(pool, pool), interpolation="bicubic",
        crop_pct=0.875 if size > 64 else 1.0, mean=IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_DEFAULT_STD, num_classes=1000, first_conv="patch_embed.proj",
        classifier="head.fc",
        description=f"{arch}: {spec.block} blocks with the {spec.mixer} mixer, no weights",
        notes=_SWIN_NOTE if spec.block == "swin" else None, **PAPER,
    )


def _backbone(arch: str, *, num_classes: int = 1000, in_chans: int = 3,
              global_pool: str = "avg", **axes: Any) -> Backbone:
    spec = resolve(arch, **axes)
    model = Backbone(block=spec.block, mixer=spec.mixer, embed_dim=spec.embed_dim,
                     depths=spec.depths, groups=spec.groups, kernel_size=spec.kernel_size,
                     se=spec.se, drop_path_rate=spec.drop_path_rate, num_classes=num_classes,
                     in_chans=in_chans, patch_size=spec.patch_size, global_pool=global_pool)
    model.spec = spec
    return model


def build_model(arch: str, *, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build ``arch`` through timm's builder (what each timm entry point calls).

    ``kwargs`` are the axes and timm's own (``num_classes``, ``in_chans``, ``global_pool``,
    ``features_only``, ``out_indices``, ``feature_cls``, ``pretrained_cfg_overlay``, ...).
    A :class:`Backbone`, or with ``features_only=True`` timm's feature wrapper around one.
    """
    if pretrained:
        raise ModelConfigError(f"{arch} has no pretrained weights", key="pretrained",
                               hint="train it, or load a checkpoint with load_state_dict")
    depth = len(MODEL_DEFAULTS[arch].depths)
    return build_model_with_cfg(
        partial(_backbone, arch), arch, pretrained=False,
        feature_cfg=dict(flatten_sequential=True, out_indices=tuple(range(depth))), **kwargs)


def register_arch(name: str, *, block: str, mixer: str, embed_dim: int,
                  depths: tuple[int, ...], **kw: Any) -> ModelSpec:
    """Register a named model of ablate's backbone (a plugin's own arch), also with timm.

    ``kw`` are the other :class:`ModelSpec` fields: ``group_size`` or ``num_groups`` (one is
    required), ``kernel_size``, ``patch_size``, ``img_size``, ``drop_path_rate``, ``se``. The
    spec is resolved once here, so a model that cannot be built fails at registration, as does
    a name ablate or timm already has.
    """
    if name in MODEL_DEFAULTS:
        raise ModelConfigError(f"a model named {name!r} is already registered", key="arch",
                               hint="give the new model another name")
    if is_model(name):  # timm's registry would warn, then build ours for that name
        raise ModelConfigError(f"timm already has a model named {name!r}", key="arch",
                               hint="give the new model another name, so that timm's stays "
                               "an arm of its own")
    if kw.get("group_size") is None and kw.get("num_groups") is None:
        raise ModelConfigError(f"model {name!r} sets neither group_size nor num_groups",
                               key="group_size", hint="give one: channels per group "
                               "(group_size=1 for a depth-wise conv) or groups per stage")
    spec = ModelSpec(block=block, mixer=mixer, embed_dim=embed_dim, depths=tuple(depths), **kw)
    MODEL_DEFAULTS[name] = spec
    try:
        resolve(name)
    except ModelConfigError:
        del MODEL_DEFAULTS[name]
        raise
    global MODEL_NAMES
    MODEL_NAMES = tuple(MODEL_DEFAULTS)
    _entry_point(name)
    note_registration()
    return spec


def _entry_point(arch: str):
    default_cfgs[arch] = default_cfg(arch)  # before register_model, which reads it

    def entry(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return build_model(arch, pretrained=pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = arch
    entry.__doc__ = f"{arch}: {MODEL_DEFAULTS[arch]}"
    return register_model(entry)


for _arch in MODEL_NAMES:
    _entry_point(_arch)
