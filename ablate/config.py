"""Plain data that crosses layers: one trial's fully resolved configuration.

The sweep parser (``spec``) builds these from YAML, the planner (``plan``) expands them into
trials, the runner ships them to workers as dicts, ``train`` consumes them, ``collect`` flattens
them into dotted columns (``model.group_size``, ``train.lr``). Nothing here imports torch or ray.

A trial's id is a hash of what determines its result and nothing else (:meth:`TrialConfig.
identity`): the model, data and recipe fields that can change a metric, and the seed. Left out:

- bookkeeping (sweep name, arm label, the CPUs and GPUs a trial asks for): renaming,
  reordering or extending a sweep keeps the ids of the trials that did not change;
- operational fields (declared ``operational`` below: loader workers, checkpoints kept, the data
  folder's path), which cannot change a metric; the data enters through a fingerprint of its
  content instead (``ablate.datafiles``), so a moved folder keeps its ids;
- every field whose value is its declared default. A field added later with a default that
  reproduces the old behaviour therefore keeps every id. The other side of this rule: if a
  default itself changes, ids stay and the trials' stored configurations no longer match the
  plan; ``ablate plan`` shows those trials as changed and ``ablate run --rerun-changed`` reruns
  them.

How a step is split enters the id. ``train.batch_size`` is the global batch of one optimizer
step; ``resources.workers`` (data-parallel processes) and ``train.accum_steps`` (micro-batches
accumulated per worker) split it into ``workers * accum_steps`` micro-batches of
``batch_size / (workers * accum_steps)`` samples. Both enter the id when they are not 1, the
default, so every existing id stays. They are part of the result: BatchNorm normalises each
micro-batch with its own statistics, and the random streams of stochastic depth and Mixup are
drawn per process. Only for a model without BatchNorm, with those random parts off, are 2
workers and 1 worker with 2 accumulation steps the same computation (each rank trains on the
samples the matching accumulation step would see; a test holds them equal), and even then
they keep two ids: the id says how a trial was run, not only what it should compute.

Folders written before this scheme (ablate 0.1, where the id hashed every field) are found
through :meth:`TrialConfig.legacy_id` and renamed to the new ids by the next ``ablate run``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import typing
from dataclasses import MISSING, dataclass, field
from typing import Any

ID_SCHEME = 2  # hashed into every id: a later change of the rule itself cannot collide

# Every field is declared once, here, with its bounds; the sweep-file schema (``ablate.spec``)
# is generated from these declarations. Beyond the obvious (counts >= 1, rates in [0, 1)),
# each value has an upper bound no real run reaches, so that a typo or an overflow is refused
# when the sweep is read instead of failing minutes into a trial or starting a run that never
# ends: epochs <= 10,000 (the paper trains 300); batch_size <= 65,536 (the paper's global
# batch is 1,024); img_size <= 4,096 pixels (ImageNet trains at 224); kernel_size <= 63 (the
# paper uses 7; the planner also refuses a kernel wider than the first stage's map allows);
# seeds in [0, 2**32 - 1], what numpy's and torch's generators take; workers <= 4,096.
# Every other count is bounded too, so that no integer overflows a results table's int64
# column after the trial ran: channels in a group <= 65,536; images <= 10**9 (ImageNet-1K
# has 1.3M); classes <= 1,000,000 (ImageNet-21K has 21,841; a million makes a head of ~10**9
# weights on a 768-wide model); loader processes <= 1,024; checkpoints kept <= MAX_EPOCHS.
# Every number is finite, and every rate or weight that becomes a float32 tensor is at most
# MAX_RATE = 1e15: scaled by the batch (at most 65,536 / 512 = 128 for the learning rates)
# and multiplied by another such factor (lr x weight decay) it stays within float32's 3.4e38,
# where a larger value is refused by torch ("cannot be converted to type float without
# overflow"); no run learns at such rates, but a huge one may be set to watch a trial diverge.
MAX_EPOCHS, MAX_BATCH, MAX_IMG, MAX_KERNEL, MAX_SEED = 10_000, 65_536, 4_096, 63, 2**32 - 1
MAX_WORKERS = 4_096  # data-parallel workers of one trial (the paper uses 8 GPUs)
MAX_CHANNELS, MAX_IMAGES, MAX_CLASSES, MAX_LOADERS = 65_536, 10**9, 1_000_000, 1_024
MAX_RATE = 1e15
MAX_RETRIES = 1_000
# CPUs or GPUs one trial's process asks for (Ray counts them in units of 1/10,000, in int64;
# the sweep file also refuses a fraction finer than that unit)
MAX_RESOURCE = 1_000_000
DATA_NAMES = ("digits", "cifar10", "cifar100", "imagefolder", "synthetic")


def _f(default: Any = MISSING, *, operational: bool = False, **bounds: Any) -> Any:
    """A config field with its schema: ``bounds`` are pydantic ``Field`` constraints (ge, gt,
    le, lt, pattern) or ``choices`` (a tuple of allowed values); ``operational`` marks a field
    that cannot change a metric (left out of the trial id); ``path=True``, a file system path
    (refused where no file system could hold it)."""
    meta = {"bounds": bounds, "operational": operational}
    return field(default=default, metadata=meta)




@dataclass(frozen=True)
class ModelConfig:
    """Which registered model, and the ablation axes set on it (None: the model's default).

    The axis names are the paper's, and are the keyword arguments of every
    registered model: ``timm.create_model(arch, **axes)``.
    """

    arch: str  # a registered timm name, e.g. "dwnet_tiny", "local_mlp_nano"
    weight_source: str | None = None  # "static" | "dot_product" | "center_linear" | "pooled_linear"
    window: str | None = None  # "shifted" | "sliding"
    sharing: str | None = None  # "spatial" | "channel" | "both" | "none"
    group_size: int | None = _f(None, ge=1, le=MAX_CHANNELS)  # channels sharing one set of spatial weights
    num_groups: int | None = _f(None, ge=1, le=MAX_CHANNELS)  # alternative to group_size: groups per stage
    kernel_size: int | None = _f(None, ge=1, le=MAX_KERNEL)  # K: window / kernel side
    se: bool | None = None  # add squeeze-excitation after the mixer
    drop_path_rate: float | None = _f(None, ge=0, lt=1)
    mixer: str | None = None  # a registered mixer by name (plugins' too); None: from the axes
    block: str | None = None  # a registered block style ("swin", "dwnet", plugins')

    def axes(self) -> dict[str, Any]:
        """The keyword arguments to pass to ``timm.create_model`` (unset axes left out)."""
        return {
            k: v for k, v in dataclasses.asdict(self).items() if k != "arch" and v is not None
        }


@dataclass(frozen=True)
class DataConfig:
    """Which data, at which image size."""

    name: str = _f("digits", choices=DATA_NAMES)
    # folder for cifar*/imagefolder; None for digits/synthetic. Its content, not its path,
    # is part of the trial id.
    root: str | None = _f(None, operational=True, path=True)
    img_size: int = _f(32, ge=8, le=MAX_IMG)
    val_fraction: float = _f(0.2, gt=0, lt=1)  # digits only: held-out share, stratified
    num_train: int | None = _f(None, ge=1, le=MAX_IMAGES)  # synthetic size / cap on training images
    num_val: int | None = _f(None, ge=1, le=MAX_IMAGES)
    num_classes: int | None = _f(None, ge=2, le=MAX_CLASSES)  # synthetic only; others know their own


@dataclass(frozen=True)
class RecipeConfig:
    """The training recipe; defaults are the paper's (Swin's ImageNet recipe) where it has one."""

    epochs: int = _f(300, ge=1, le=MAX_EPOCHS)
    batch_size: int = _f(128, ge=1, le=MAX_BATCH)  # per trial (global batch of this trial)
    # micro-batches accumulated per worker and optimizer step: each worker trains on
    # batch_size / (workers * accum_steps) samples at a time
    accum_steps: int = _f(1, ge=1, le=MAX_BATCH)
    lr: float = _f(5e-4, gt=0, le=MAX_RATE)  # per 512 images; scaled linearly with batch_size
    warmup_lr: float = _f(5e-7, ge=0, le=MAX_RATE)  # per 512 images
    min_lr: float = _f(5e-6, ge=0, le=MAX_RATE)  # per 512 images
    warmup_epochs: float = _f(20, ge=0, le=MAX_EPOCHS)
    weight_decay: float = _f(0.05, ge=0, le=MAX_RATE)
    clip_grad: float | None = _f(5.0, gt=0, le=MAX_RATE)
    label_smoothing: float = _f(0.1, ge=0, lt=1)
    mixup: float = _f(0.8, ge=0, le=MAX_RATE)
    cutmix: float = _f(1.0, ge=0, le=MAX_RATE)
    mixup_switch_prob: float = _f(0.5, ge=0, le=1)
    randaugment: str | None = _f("rand-m9-mstd0.5-inc1", pattern=r"^rand(-[a-z]+[0-9.]*)*$")
    color_jitter: float = _f(0.4, ge=0, le=MAX_RATE)
    reprob: float = _f(0.25, ge=0, le=1)
    workers: int = _f(2, ge=0, le=MAX_LOADERS, operational=True)  # loader processes
    amp: bool = True  # used only on GPU
    # The last N epoch checkpoints kept, besides best.pt (the best epoch's weights only).
    # Default 1: resuming needs only the newest, and each one holds the weights and AdamW's
    # two moment buffers (about 3x the model); with 2 plus a full best.pt the quickstart's
    # 18 nano trials took 481 MB, with 1 and a weights-only best.pt 215 MB (12 MB a trial).
    keep_checkpoints: int = _f(1, ge=1, le=MAX_EPOCHS, operational=True)


def batch_split_error(recipe: RecipeConfig, workers: int = 1) -> tuple[str | None, str]:
    """Why ``recipe.batch_size`` does not split into ``workers * accum_steps`` equal
    micro-batches (even ones when Mixup/CutMix pair samples), and the dotted key to change;
    ``(None, "")`` when it does."""
    batch, accum = recipe.batch_size, recipe.accum_steps
    if batch % workers:
        return (f"batch_size {batch} does not divide over {workers} workers",
                "resources.workers")
    per_worker = batch // workers
    if accum > per_worker:
        return (f"accum_steps {accum} leave less than one sample per micro-batch "
                f"({per_worker} samples per worker)", "train.accum_steps")
    if per_worker % accum:
        return (f"accum_steps {accum} do not divide the {per_worker} samples per worker "
                "into equal micro-batches", "train.accum_steps")
    micro = per_worker // accum
    if (recipe.mixup > 0 or recipe.cutmix > 0) and micro % 2:
        if micro == batch:
            return (f"batch_size {batch} is odd, but Mixup/CutMix mix the batch in pairs",
                    "train.batch_size")
        return (f"the micro-batch of {micro} (batch_size {batch} / ({workers} workers x "
                f"{accum} accum_steps)) is odd, but Mixup/CutMix mix it in pairs",
                "train.batch_size")
    return None, ""


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
        """Inverse of :meth:`to_dict`; keys of fields this version no longer has are ignored
        (a record written by another version still reads)."""
        return cls(
            model=ModelConfig(**_known(ModelConfig, d["model"])),
            data=DataConfig(**_known(DataConfig, d.get("data", {}))),
            train=RecipeConfig(**_known(RecipeConfig, d.get("train", {}))),
            seed=int(d.get("seed", 0)),
        )

    def value_problem(self) -> str | None:
        """The first field whose value is not of its declared type, as 'train.epochs: ...'
        (a record edited by hand); None when every one is."""
        for section in ("model", "data", "train"):
            obj = getattr(self, section)
            hints = type_hints(type(obj))
            for f in dataclasses.fields(obj):
                value = getattr(obj, f.name)
                if not _of_type(value, hints[f.name]):
                    return f"{section}.{f.name}: {value!r} is not of type {hints[f.name]}"
        return None

    def identity(self, data_fingerprint: str | None = None, workers: int = 1) -> dict[str, Any]:
        """What the id hashes: dotted field -> value, for the result-determining fields that
        differ from their defaults, plus the seed, the data's content and the number of
        data-parallel workers (when not 1).

        ``data_fingerprint`` identifies the content of ``data.root`` (``ablate.datafiles``);
        without one (a plan made without looking at the data) the folder's path stands in.
        """
        out: dict[str, Any] = {"seed": self.seed}
        if workers != 1:
            out["resources.workers"] = workers
        for section in ("model", "data", "train"):
            for name, value in _canonical(getattr(self, section), skip_default=True).items():
                out[f"{section}.{name}"] = value
        if self.data.root is not None:
            out["data.content"] = data_fingerprint or f"path:{self.data.root}"
        return out

    @staticmethod
    def result_keys() -> list[str]:
        """The dotted names of :meth:`result_fields` (the seed is apart)."""
        return [f"{s}.{f.name}" for s, cls in (("model", ModelConfig), ("data", DataConfig),
                                                ("train", RecipeConfig))
                for f in dataclasses.fields(cls) if not f.metadata.get("operational")]

    def result_fields(self) -> dict[str, Any]:
        """Every result-determining field (defaults included), dotted: what two records of
        the same id must agree on to be the same experiment."""
        return {f"{s}.{k}": v for s in ("model", "data", "train")
                for k, v in _canonical(getattr(self, s), skip_default=False).items()}

    def trial_id(self, data_fingerprint: str | None = None, workers: int = 1) -> str:
        """12 hex digits of the sha256 of the canonical JSON of :meth:`identity`.

        Float fields are hashed as floats, so ``warmup_epochs=1`` and ``1.0`` are one trial.
        """
        canon = json.dumps({"scheme": ID_SCHEME, **self.identity(data_fingerprint, workers)},
                           sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:12]

    def legacy_id(self) -> str | None:
        """The id ablate 0.1 gave this configuration (a hash of every field it had), or None
        when a field added since then is set away from its default (0.1 could not run it)."""
        d = {}
        for section, names in _V1_FIELDS.items():
            obj = getattr(self, section)
            for f in dataclasses.fields(obj):
                if f.name not in names and getattr(obj, f.name) != f.default:
                    return None
            full = _canonical(obj, skip_default=False, operational=True)
            for name, v1_default in _V1_DEFAULTS.get(section, {}).items():
                if full[name] == _default(obj, name):  # left at today's default: 0.1's then
                    full[name] = v1_default
            d[section] = {k: full[k] for k in names}
        d["seed"] = self.seed
        canon = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:12]


# The fields of ablate 0.1's configs, whose ids hashed all of them (see legacy_id). Frozen.
_V1_FIELDS = {
    "model": ("arch", "weight_source", "window", "sharing", "group_size", "num_groups",
              "kernel_size", "se", "drop_path_rate"),
    "data": ("name", "root", "img_size", "val_fraction", "num_train", "num_val", "num_classes"),
    "train": ("epochs", "batch_size", "lr", "warmup_lr", "min_lr", "warmup_epochs",
              "weight_decay", "clip_grad", "label_smoothing", "mixup", "cutmix",
              "mixup_switch_prob", "randaugment", "color_jitter", "reprob", "workers", "amp",
              "keep_checkpoints"),
}
# ablate 0.1's defaults of the fields whose default changed since (operational ones only: a
# changed result default shows as a changed trial instead). Frozen.
_V1_DEFAULTS = {"train": {"keep_checkpoints": 2}}


type_hints = functools.cache(typing.get_type_hints)  # a dataclass's annotations, resolved once


def _of_type(value: Any, kind: Any) -> bool:
    """Whether ``value`` is of the simple field type ``kind`` (an int counts as a float, a
    bool as neither)."""
    kinds = typing.get_args(kind) if typing.get_args(kind) else (kind,)
    for k in kinds:
        if k is type(None) and value is None:
            return True
        if k is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if k is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if k in (str, bool) and isinstance(value, k):
            return True
    return False


def _default(obj: Any, name: str) -> Any:
    return next(f.default for f in dataclasses.fields(obj) if f.name == name)


def _known(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in d.items() if k in names}


def _canonical(obj: Any, *, skip_default: bool, operational: bool = False) -> dict[str, Any]:
    """A config section as a flat dict, ints in float-typed fields made floats (so 1 and 1.0
    hash alike); operational fields left out unless asked for, default values left out when
    ``skip_default``."""
    out = {}
    for f in dataclasses.fields(obj):
        if f.metadata.get("operational") and not operational:
            continue
        value = _as_declared(f, getattr(obj, f.name))
        if skip_default and f.default is not MISSING and _same_value(
                value, _as_declared(f, f.default)):
            continue
        out[f.name] = value
    return out


def _as_declared(f: dataclasses.Field, value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and "float" in str(f.type):
        return float(value)
    return value


def _same_value(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b  # True == 1 in Python; not here


@dataclass(frozen=True)
class Resources:
    """What one trial asks of the scheduler; only ``workers`` is part of the trial's identity.

    Two forms, never mixed in one sweep file (``ablate.spec`` refuses it): ``cpus``/``gpus``
    for a trial of one process, or ``workers`` with ``cpus_per_worker``/``gpus_per_worker`` for
    a data-parallel trial of ``workers`` processes (a Ray Train run). Either way the resources
    of one worker are :attr:`worker_cpus` and :attr:`worker_gpus`.
    """

    cpus: float = _f(1.0, gt=0, le=MAX_RESOURCE)
    gpus: float = _f(0.0, ge=0, le=MAX_RESOURCE)
    max_retries: int = _f(2, ge=0, le=MAX_RETRIES)  # retries of non-deterministic failures (OOM, killed worker)
    workers: int = _f(1, ge=1, le=MAX_WORKERS)  # data-parallel processes of one trial
    cpus_per_worker: float | None = _f(None, gt=0, le=MAX_RESOURCE)  # None: cpus
    gpus_per_worker: float | None = _f(None, ge=0, le=MAX_RESOURCE)  # None: gpus

    @property
    def worker_cpus(self) -> float:
        return self.cpus if self.cpus_per_worker is None else self.cpus_per_worker

    @property
    def worker_gpus(self) -> float:
        return self.gpus if self.gpus_per_worker is None else self.gpus_per_worker


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
    data_fingerprint: str | None = None  # content of config.data.root (ablate.datafiles)
    plugins: tuple[str, ...] = ()  # modules to import before building the model (workers too)
    # The id a record gives this trial when its configuration hashes to another one today: a
    # default changed in the code since the record was written (its stored configuration holds
    # the old default, which now counts as set). The trial keeps its folder and its records.
    recorded_id: str | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return self.recorded_id or self.config_id

    @property
    def config_id(self) -> str:
        """The id the configuration gives under today's defaults."""
        return self.config.trial_id(self.data_fingerprint, self.resources.workers)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        del d["recorded_id"]
        d["id"] = self.id
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trial:
        """Inverse of :meth:`to_dict`; the recorded ``id`` stays the trial's (``recorded_id``)
        when its configuration gives another one today."""
        trial = cls._from_dict(d)
        recorded = d.get("id")  # ablate 0.1's ids (another hash) are renamed, not kept
        if isinstance(recorded, str) and recorded not in (trial.config_id,
                                                          trial.config.legacy_id()):
            return dataclasses.replace(trial, recorded_id=recorded)
        return trial

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> Trial:
        return cls(
            config=TrialConfig.from_dict(d["config"]),
            sweep=d["sweep"],
            arm=d["arm"],
            varied=dict(d.get("varied", {})),
            role=d.get("role", "arm"),
            resources=Resources(**d.get("resources", {})),
            expected=d.get("expected"),
            data_fingerprint=d.get("data_fingerprint"),
            plugins=tuple(d.get("plugins", ())),
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
