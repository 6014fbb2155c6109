"""Plain data that crosses layers: one trial's fully resolved configuration.

The sweep parser (``spec``) builds these from YAML, the planner (``plan``) expands them into
trials, the runner ships them to workers as dicts, ``train`` consumes them, ``collect`` flattens
them into dotted columns (``model.group_size``, ``train.lr``). Nothing here imports torch or ray.

A trial's identity is a hash of its :class:`TrialConfig` alone (model, data, recipe, seed);
the sweep name, arm label and resources are bookkeeping and do not change the id, so renaming,
reordering or extending a sweep keeps the ids of the trials that did not change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

CONFIG_SCHEMA = 1


@dataclass(frozen=True)
class ModelConfig:
    """Which registered model, and the ablation axes set on it (None: the model's default).

    The axis names are the paper's (paper-notes.md), and are the keyword arguments of every
    registered model: ``timm.create_model(arch, **axes)``.
    """

    arch: str  # a registered timm name, e.g. "dwnet_tiny", "local_mlp_nano"
    weight_source: str | None = None  # "static" | "dot_product" | "center_linear" | "pooled_linear"
    window: str | None = None  # "shifted" | "sliding"
    sharing: str | None = None  # "spatial" | "channel" | "both" | "none"
    group_size: int | None = None  # channels sharing one set of spatial weights
    num_groups: int | None = None  # alternative to group_size: groups per stage, fixed
    kernel_size: int | None = None  # K: window / kernel side
    se: bool | None = None  # add squeeze-excitation after the mixer
    drop_path_rate: float | None = None

    def axes(self) -> dict[str, Any]:
        """The keyword arguments to pass to ``timm.create_model`` (unset axes left out)."""
        return {
            k: v for k, v in dataclasses.asdict(self).items() if k != "arch" and v is not None
        }


@dataclass(frozen=True)
class DataConfig:
    """Which data, at which image size."""

    name: str = "digits"  # "digits" | "cifar10" | "cifar100" | "imagefolder" | "synthetic"
    root: str | None = None  # folder for cifar*/imagefolder; None for digits/synthetic
    img_size: int = 32
    val_fraction: float = 0.2  # digits only: held-out share, stratified, fixed split
    num_train: int | None = None  # synthetic size / cap on training images (None: all)
    num_val: int | None = None
    num_classes: int | None = None  # synthetic only; others know their own


@dataclass(frozen=True)
class RecipeConfig:
    """The training recipe; defaults are the paper's (Swin's ImageNet recipe) where it has one."""

    epochs: int = 300
    batch_size: int = 128  # per trial (global batch of this trial)
    lr: float = 5e-4  # per 512 images; scaled linearly with batch_size
    warmup_lr: float = 5e-7  # per 512 images
    min_lr: float = 5e-6  # per 512 images
    warmup_epochs: float = 20
    weight_decay: float = 0.05
    clip_grad: float | None = 5.0
    label_smoothing: float = 0.1
    mixup: float = 0.8
    cutmix: float = 1.0
    mixup_switch_prob: float = 0.5
    randaugment: str | None = "rand-m9-mstd0.5-inc1"
    color_jitter: float = 0.4
    reprob: float = 0.25
    workers: int = 2
    amp: bool = True  # used only on GPU
    keep_checkpoints: int = 2  # last N epoch checkpoints kept, besides the best


@dataclass(frozen=True)
class TrialConfig:
    """Everything that determines a trial's result. Its hash is the trial id."""

    model: ModelConfig
    data: DataConfig = field(default_factory=DataConfig)
    train: RecipeConfig = field(default_factory=RecipeConfig)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialConfig:
        return cls(
            model=ModelConfig(**d["model"]),
            data=DataConfig(**d.get("data", {})),
            train=RecipeConfig(**d.get("train", {})),
            seed=int(d.get("seed", 0)),
        )

    def trial_id(self) -> str:
        """12 hex digits of the sha256 of the canonical JSON of this configuration.

        Float fields are hashed as floats, so ``warmup_epochs=1`` and ``1.0`` are one trial.
        """
        canon = json.dumps(_canonical(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:12]


def _canonical(obj: Any) -> Any:
    """Nested dict of a config dataclass, with ints in float-typed fields made floats."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            value = _canonical(value)
        elif isinstance(value, int) and not isinstance(value, bool) and "float" in str(f.type):
            value = float(value)
        out[f.name] = value
    return out


@dataclass(frozen=True)
class Resources:
    """What one trial asks of the scheduler; not part of the trial's identity."""

    cpus: float = 1.0
    gpus: float = 0.0
    max_retries: int = 2  # retries of non-deterministic failures (OOM, killed worker)


@dataclass(frozen=True)
class Trial:
    """One planned trial: its config plus the bookkeeping the sweep gives it."""

    config: TrialConfig
    sweep: str
    arm: str  # the arm's label ("baseline", "group_size=8", ...)
    varied: dict[str, Any] = field(default_factory=dict)  # dotted axis -> value, for display
    role: str = "arm"  # "baseline" | "arm": baselines and first seeds are scheduled first
    resources: Resources = field(default_factory=Resources)
    expected: dict[str, Any] | None = None  # the paper's number or claimed direction, if any

    @property
    def id(self) -> str:
        return self.config.trial_id()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["id"] = self.id
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trial:
        return cls(
            config=TrialConfig.from_dict(d["config"]),
            sweep=d["sweep"],
            arm=d["arm"],
            varied=dict(d.get("varied", {})),
            role=d.get("role", "arm"),
            resources=Resources(**d.get("resources", {})),
            expected=d.get("expected"),
        )


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> dotted keys: {"model": {"arch": x}} -> {"model.arch": x}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
