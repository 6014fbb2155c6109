"""Sweep files: one ablation declared in YAML, validated on the way in, as a frozen :class:`Sweep`.

The language (every key optional unless marked; unknown keys are errors at any depth)::

    name: group_size_mlp          # default: the file's stem; names results/<name>
    description: one line         # required
    plugins: [my_lab.mixers]      # modules to import first: they register mixers, blocks or
                                  # models (importable from the working directory or installed)
    extends: ../other.yaml        # a file (or a list, merged in order) relative to this one,
                                  # deep-merged under this file; name and description are not
                                  # inherited; lists are replaced, not merged; a null in this file
                                  # replaces the inherited value, and removes an inherited grid /
                                  # paired axis, arm or expected entry
    base:                         # required: the baseline trial
      model: {arch: dwnet_tiny, group_size: 8, ...}   # arch required; axes = ModelConfig fields
      data: {name: imagefolder, root: /data/imagenet, img_size: 224, num_classes: 1000}
      train: {epochs: 300, lr: 5.0e-4, ...}           # RecipeConfig fields (lr per 512 images)
      resources: {cpus: 8, gpus: 1}                    # per trial; gpus may be a fraction
    grid:   {model.group_size: [1, 4, 8]}              # cartesian product of the axes
    paired: {model.arch: [a, b], model.window: [shifted, sliding]}   # advanced together
    arms:   {dynamic: {model.arch: dynamic_dwnet_tiny}}  # one-factor differences from base
    baseline: dwnet               # label of the trial that is base unchanged (default "baseline")
    exclude: [{model.window: shifted, model.group_size: [1, 4]}]  # drop a trial matching all
                                  # entries of any condition (a value or a list of values;
                                  # keys: any axis or "seed")
    seeds: [0, 1, 2]              # each trial repeated over them (default [0])
    expected:                     # per trial label: metric -> the paper's number, or a
      dynamic: {val/top1: 81.8}   # direction "> LABEL", "< LABEL" or "~ LABEL" (about equal)
      "group_size=8": {val/top1: "> group_size=1"}
    max_trials: 256               # a larger plan needs confirmation (ablate plan/run --yes)
    max_concurrent: 4             # trials at once (default: as many as resources allow)
    max_retries: 2                # retries of a failing trial

Axes are dotted paths ``model.*``, ``data.*``, ``train.*`` named as in :mod:`ablate.config`;
values are checked as in ``base`` (YAML reads ``1e-3`` as a number here). ``data.root`` is
used as written (relative paths: to the working directory); its content, not its path, enters
each trial's id.
Each planned Trial's ``expected`` is ``{metric: number}`` or ``{metric: {"op": ">", "than":
LABEL}}`` (op ``>``, ``<`` or ``~``), or None.
Trial labels: the arm label (the ``baseline`` label for base itself), then ``axis=value`` for
each grid/paired axis, joined by ", " (``dynamic, window=sliding``; ``group_size=8``).
:func:`load_sweep` parses and validates the file alone; :func:`ablate.plan.load_plan` also
expands it and checks models, data folders, duplicates and the plan size. Every mistake is a
one-line :class:`~ablate.errors.SpecError` with file, line and key path.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from ablate.config import DataConfig, ModelConfig, RecipeConfig, Resources, TrialConfig
from ablate.errors import SpecError, unknown_name_hint
from ablate.sweepfile import KeyPath, _dotted, _load_tree, _show, _where, apply_overrides

DATA_NAMES = ("digits", "cifar10", "cifar100", "imagefolder", "synthetic")
DIRECTION = re.compile(r"^\s*(>|<|~)\s*(\S.*?)\s*$")
METRIC = re.compile(r"^[A-Za-z0-9_]+/[A-Za-z0-9_.]+$")


def _d(cls: type, name: str) -> Any:
    return cls.__dataclass_fields__[name].default


# --- the strict pydantic edge: one model per section, defaults taken from ablate.config ---
# Ranges. Beyond the obvious (counts >= 1, rates in [0, 1)), each value has an upper bound
# that no real run reaches, so that a typo or an overflow is refused here instead of failing
# minutes into a trial or starting a run that never ends:
#   epochs <= 10,000 (the paper trains 300); batch_size <= 65,536 (the paper's global batch is
#   1,024); img_size <= 4,096 pixels (ImageNet trains at 224); kernel_size <= 63 (the paper
#   uses 7), and the planner also refuses a kernel wider than the first stage's map allows;
#   seeds in [0, 2**32 - 1], what numpy's and torch's generators take. Every number must be
#   finite: .inf and .nan are refused everywhere.
MAX_EPOCHS, MAX_BATCH, MAX_IMG, MAX_KERNEL, MAX_SEED = 10_000, 65_536, 4_096, 63, 2**32 - 1
_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)
_Frac = Annotated[float, Field(ge=0, le=1)]
_Rate = Annotated[float, Field(ge=0, lt=1)]
_Pos = Annotated[int, Field(ge=1)]
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$"  # a safe folder name: no "..", no "/"
_MODULE = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"  # a dotted module name


class _ModelSpec(BaseModel):
    model_config = _STRICT
    arch: str
    weight_source: str | None = None
    window: str | None = None
    sharing: str | None = None
    group_size: _Pos | None = None
    num_groups: _Pos | None = None
    kernel_size: Annotated[int, Field(ge=1, le=MAX_KERNEL)] | None = None
    se: bool | None = None
    drop_path_rate: _Rate | None = None
    mixer: str | None = None
    block: str | None = None


class _DataSpec(BaseModel):
    model_config = _STRICT
    name: Literal[DATA_NAMES] = _d(DataConfig, "name")  # type: ignore[valid-type]
    root: str | None = _d(DataConfig, "root")
    img_size: Annotated[int, Field(ge=8, le=MAX_IMG)] = _d(DataConfig, "img_size")
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = _d(DataConfig, "val_fraction")
    num_train: _Pos | None = _d(DataConfig, "num_train")
    num_val: _Pos | None = _d(DataConfig, "num_val")
    num_classes: Annotated[int, Field(ge=2)] | None = _d(DataConfig, "num_classes")


class _TrainSpec(BaseModel):
    model_config = _STRICT
    epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] = _d(RecipeConfig, "epochs")
    batch_size: Annotated[int, Field(ge=1, le=MAX_BATCH)] = _d(RecipeConfig, "batch_size")
    lr: Annotated[float, Field(gt=0)] = _d(RecipeConfig, "lr")
    warmup_lr: Annotated[float, Field(ge=0)] = _d(RecipeConfig, "warmup_lr")
    min_lr: Annotated[float, Field(ge=0)] = _d(RecipeConfig, "min_lr")
    warmup_epochs: Annotated[float, Field(ge=0)] = _d(RecipeConfig, "warmup_epochs")
    weight_decay: Annotated[float, Field(ge=0)] = _d(RecipeConfig, "weight_decay")
    clip_grad: Annotated[float, Field(gt=0)] | None = _d(RecipeConfig, "clip_grad")
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = _d(RecipeConfig, "label_smoothing")
    mixup: Annotated[float, Field(ge=0)] = _d(RecipeConfig, "mixup")
    cutmix: Annotated[float, Field(ge=0)] = _d(RecipeConfig, "cutmix")
    mixup_switch_prob: _Frac = _d(RecipeConfig, "mixup_switch_prob")
    randaugment: Annotated[str, Field(pattern=r"^rand(-[a-z]+[0-9.]*)*$")] | None = _d(
        RecipeConfig, "randaugment")
    color_jitter: Annotated[float, Field(ge=0)] = _d(RecipeConfig, "color_jitter")
    reprob: _Frac = _d(RecipeConfig, "reprob")
    workers: Annotated[int, Field(ge=0)] = _d(RecipeConfig, "workers")
    amp: bool = _d(RecipeConfig, "amp")
    keep_checkpoints: _Pos = _d(RecipeConfig, "keep_checkpoints")


class _ResourcesSpec(BaseModel):
    model_config = _STRICT
    cpus: Annotated[float, Field(gt=0)] = _d(Resources, "cpus")
    gpus: Annotated[float, Field(ge=0)] = _d(Resources, "gpus")


class _BaseSpec(BaseModel):
    model_config = _STRICT
    model: _ModelSpec
    data: _DataSpec = _DataSpec()
    train: _TrainSpec = _TrainSpec()
    resources: _ResourcesSpec = _ResourcesSpec()


class _SweepSpec(BaseModel):
    model_config = _STRICT
    name: Annotated[str, Field(pattern=_NAME, max_length=100)]
    description: Annotated[str, Field(min_length=1)]
    extends: str | list[str] | None = None
    plugins: list[Annotated[str, Field(pattern=_MODULE)]] = []
    base: _BaseSpec
    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] = {}
    paired: dict[str, Annotated[list[Any], Field(min_length=1)]] = {}
    arms: dict[Annotated[str, Field(min_length=1)], dict[str, Any]] = {}
    baseline: Annotated[str, Field(min_length=1)] = "baseline"
    exclude: list[dict[str, Any]] = []
    seeds: Annotated[list[Annotated[int, Field(ge=0, le=MAX_SEED)]], Field(min_length=1)] = [0]
    expected: dict[str, dict[str, float | str]] = {}
    max_trials: _Pos = 256
    max_concurrent: _Pos | None = None
    max_retries: Annotated[int, Field(ge=0)] = _d(Resources, "max_retries")


_SPECS = {"model": _ModelSpec, "data": _DataSpec, "train": _TrainSpec}
AXES = tuple(f"{s}.{f}" for s, m in _SPECS.items() for f in m.model_fields)
_ADAPTERS = {
    f"{s}.{f}": TypeAdapter(Annotated[(fi.annotation, *fi.metadata)] if fi.metadata
                            else fi.annotation, config=ConfigDict(strict=True, allow_inf_nan=False))
    for s, m in _SPECS.items() for f, fi in m.model_fields.items()
}


@dataclass(frozen=True)
class Sweep:
    """A validated sweep file; ``trials`` is filled by :func:`ablate.plan.load_plan`.

    Axes are ``(dotted, value)`` pairs in file order. ``where(path)`` gives the file and line
    that set a key path (for errors found later, e.g. by the planner).
    """

    name: str
    description: str
    path: Path
    base: TrialConfig  # seed = first seed
    resources: Resources
    grid: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    paired: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    arms: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()
    baseline: str = "baseline"
    exclude: tuple[tuple[tuple[str, tuple[Any, ...]], ...], ...] = ()
    seeds: tuple[int, ...] = (0,)
    expected: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_trials: int = 256
    max_concurrent: int | None = None
    extends: tuple[Path, ...] = ()  # the files it builds on, resolved
    plugins: tuple[str, ...] = ()  # modules that register mixers, blocks or models
    results_dir: Path = Path("results")
    trials: tuple = ()
    locs: dict = field(default_factory=dict, compare=False, repr=False)

    def where(self, *path: Any) -> dict[str, Any]:
        """``file=`` and ``line=`` of the nearest recorded key on ``path`` (for SpecError)."""
        return _where(self.locs, self.path, path)

    def error(self, what: str, *path: Any, hint: str | None = None) -> SpecError:
        """A SpecError at the key ``path`` (file, line and dotted key filled in)."""
        return _error(self.locs, self.path, what, path, hint)

    @property
    def max_retries(self) -> int:
        return self.resources.max_retries

    def to_dict(self) -> dict[str, Any]:
        """The resolved sweep as a YAML-ready mapping (extends applied; loads to the same plan)."""
        out: dict[str, Any] = {"name": self.name, "description": self.description, "base": {
            "model": dataclasses.asdict(self.base.model),
            "data": dataclasses.asdict(self.base.data),
            "train": dataclasses.asdict(self.base.train),
            "resources": {"cpus": self.resources.cpus, "gpus": self.resources.gpus}}}
        out |= {"grid": {k: list(v) for k, v in self.grid},
                "paired": {k: list(v) for k, v in self.paired},
                "arms": {label: dict(ov) for label, ov in self.arms},
                "baseline": self.baseline,
                "exclude": [{k: list(v) for k, v in cond} for cond in self.exclude],
                "seeds": list(self.seeds), "expected": _expected_to_yaml(self.expected),
                "max_trials": self.max_trials, "max_concurrent": self.max_concurrent,
                "max_retries": self.max_retries, "plugins": list(self.plugins)}
        return out


def load_sweep(path: str | Path, overrides: tuple[str, ...] = ()) -> Sweep:
    """Parse and validate one sweep file (following ``extends``); SpecError on any mistake.

    ``overrides``: ``KEY=VALUE`` texts (``--set``) applied after ``extends`` and validated with
    the file (see :func:`ablate.sweepfile.apply_overrides`); their errors name the flag.
    """
    path = Path(path)
    raw, locs = _load_tree(path, ())
    if overrides:
        raw, locs = apply_overrides(raw, locs, tuple(overrides))
    return sweep_from_tree(raw, locs, path)


def sweep_from_tree(raw: dict[str, Any], locs: dict, path: Path) -> Sweep:
    """Validate an already read sweep mapping (``locs``: key path -> (file, line))."""
    raw.setdefault("name", path.stem)
    for key in ("grid", "paired", "arms", "exclude", "expected", "max_concurrent"):
        if key in raw and raw[key] is None:
            del raw[key]
    try:
        spec = _SweepSpec.model_validate(raw)
    except ValidationError as e:
        raise _pydantic_error(e, locs, path) from None
    return _to_sweep(spec, path, locs)


# --- errors --------------------------------------------------------------------------------


_EXPECTED = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
             "string_type": "a string", "dict_type": "a mapping", "list_type": "a list",
             "int_from_float": "an integer", "model_type": "a mapping"}


def _explain(err: dict) -> tuple[str, str | None]:
    """A pydantic error as (what, hint) in our words."""
    kind, ctx, value = err["type"], err.get("ctx", {}), err.get("input")
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_show(value)}", None
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<",
              "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {limit}, got {_show(value)}", None
    if kind in ("too_short", "string_too_short"):
        return "must not be empty", None
    if kind == "string_too_long":
        return (f"is {len(value)} characters long, more than {ctx.get('max_length')}",
                "use a shorter name")
    if kind == "finite_number":
        return f"must be a finite number, got {_show(value)}", "give a number (.inf and .nan " \
            "are refused)"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == _NAME:
        return (f"{_show(value)} is not a safe folder name",
                "use letters, digits, '_' and '-', with single dots between them")
    if kind == "string_pattern_mismatch":
        return f"{_show(value)} does not match the pattern {ctx.get('pattern')}", None
    if kind == "literal_error":
        return f"unknown value {_show(value)}", unknown_name_hint(str(value), DATA_NAMES)
    if kind == "missing":
        return "required key is missing", None
    return err.get("msg", kind), None


_MODELS_AT = {(): _SweepSpec, ("base",): _BaseSpec, ("base", "model"): _ModelSpec,
              ("base", "data"): _DataSpec, ("base", "train"): _TrainSpec,
              ("base", "resources"): _ResourcesSpec}


def _pydantic_error(e: ValidationError, locs: dict, path: Path) -> SpecError:
    err = e.errors()[0]
    loc = tuple(p for p in err["loc"] if not str(p).startswith(("function-", "union[")))
    loc = tuple(p for p in loc if p not in ("int", "float", "str", "none", "bool"))
    what, hint = _explain(err)
    if err["type"] == "extra_forbidden":
        parent = _MODELS_AT.get(loc[:-1])
        valid = list(parent.model_fields) if parent else []
        what = f"unknown key '{loc[-1]}'"
        hint = unknown_name_hint(str(loc[-1]), valid) if valid else None
        if loc == ("base", "resources", "max_retries"):
            hint = "max_retries is a top-level key of the sweep"
    elif err["type"] == "missing":
        what = f"required key '{loc[-1]}' is missing"
    elif loc[-1:] == ("[key]",) and err["type"] == "string_too_short":
        return SpecError("an arm label is empty", key=_dotted(loc[:-2]), hint="give every arm "
                         "a name", **_where(locs, path, loc[:-2] + ("",)))  # the key's line
    return _error(locs, path, what, loc, hint)


def _error(locs: dict, path: Path, what: str, keys: KeyPath, hint: str | None) -> SpecError:
    return SpecError(what, key=_dotted(tuple(keys)) or None, hint=hint, **_where(locs, path, keys))


# --- validated spec -> Sweep -----------------------------------------------------------------


def check_axis(key: str, at: KeyPath, err: Any, allow_seed: bool = False) -> None:
    """Raise (via ``err(what, *path, hint=)``) unless ``key`` is a known dotted axis."""
    valid = AXES + (("seed",) if allow_seed else ())
    if key not in valid:
        raise err(f"unknown axis '{key}'", *at, hint=unknown_name_hint(key, valid))


def check_value(key: str, value: Any, at: KeyPath, err: Any) -> Any:
    """Validate one value of a dotted axis with the same rules as ``base``."""
    if key == "seed":
        adapter = TypeAdapter(int, config=ConfigDict(strict=True))
    else:
        adapter = _ADAPTERS[key]
    try:
        return adapter.validate_python(value)
    except ValidationError as e:
        what, hint = _explain(e.errors()[0])
        raise err(what, *at, hint=hint) from None


def _to_sweep(spec: _SweepSpec, path: Path, locs: dict) -> Sweep:
    def err(what: str, *p: Any, hint: str | None = None) -> SpecError:
        return _error(locs, path, what, p, hint)

    b = spec.base
    base = TrialConfig(model=ModelConfig(**b.model.model_dump()),
                       data=DataConfig(**b.data.model_dump()),
                       train=RecipeConfig(**b.train.model_dump()), seed=spec.seeds[0])
    resources = Resources(cpus=b.resources.cpus, gpus=b.resources.gpus,
                          max_retries=spec.max_retries)
    grid = _axes(spec.grid, "grid", err)
    paired = _axes(spec.paired, "paired", err)
    lengths = {len(v) for _, v in paired}
    if len(lengths) > 1:
        first = paired[0]
        bad = next(k for k, v in paired if len(v) != len(first[1]))
        raise err(f"paired axes need lists of one length: {first[0]} has {len(first[1])}, "
                  f"{bad} has {len(dict(paired)[bad])}", "paired", bad)
    arms = _arms(spec, err, {k for k, _ in grid} | {k for k, _ in paired})
    exclude = _exclude(spec.exclude, err)
    if len(set(spec.seeds)) != len(spec.seeds):
        dup = next(s for s in spec.seeds if spec.seeds.count(s) > 1)
        raise err(f"seed {dup} listed twice", "seeds")
    expected = {label: _parse_expected(label, m, err) for label, m in spec.expected.items()}
    ext = spec.extends if isinstance(spec.extends, list) else [spec.extends or ""]
    ext = tuple((path.parent / e).resolve() for e in ext if e)
    return Sweep(name=spec.name, description=spec.description, path=path, base=base,
                 resources=resources, grid=grid, paired=paired, arms=arms,
                 baseline=spec.baseline, exclude=exclude, seeds=tuple(spec.seeds),
                 expected=expected, max_trials=spec.max_trials,
                 max_concurrent=spec.max_concurrent, extends=ext, plugins=tuple(spec.plugins),
                 results_dir=Path("results") / spec.name, locs=locs)


def _axes(axes: dict[str, list[Any]], section: str, err: Any) -> tuple:
    out = []
    for key, values in axes.items():
        check_axis(key, (section, key), err)
        checked = [check_value(key, v, (section, key, i), err) for i, v in enumerate(values)]
        for i, v in enumerate(checked):
            if any(_same(v, w) for w in checked[:i]):
                raise err(f"value {_show(v)} listed twice", section, key, i)
        out.append((key, tuple(checked)))
    return tuple(out)


def _arms(spec: _SweepSpec, err: Any, axis_keys: set[str]) -> tuple:
    out = []
    for label, overrides in spec.arms.items():
        if label == spec.baseline:
            raise err(f"arm '{label}' has the baseline's label", "arms", label,
                      hint="the baseline is base itself; rename the arm or set baseline:")
        if not overrides:
            raise err("arm sets no axis (it would repeat the baseline)", "arms", label)
        items = []
        for key, value in overrides.items():
            check_axis(key, ("arms", label, key), err)
            if key in axis_keys:
                raise err(f"'{key}' is varied by grid/paired and cannot also be set by an arm",
                          "arms", label, key)
            items.append((key, check_value(key, value, ("arms", label, key), err)))
        out.append((label, tuple(items)))
    overlap = {k for k, _ in spec.grid.items()} & set(spec.paired)
    if overlap:
        key = sorted(overlap)[0]
        raise err(f"'{key}' is in both grid and paired", "paired", key)
    return tuple(out)


def _exclude(conditions: list[dict[str, Any]], err: Any) -> tuple:
    out = []
    for i, cond in enumerate(conditions):
        if not cond:
            raise err("empty condition (it would drop every trial)", "exclude", i)
        items = []
        for key, value in cond.items():
            check_axis(key, ("exclude", i, key), err, allow_seed=True)
            values = value if isinstance(value, list) else [value]
            if not values:
                raise err("empty list of values", "exclude", i, key)
            items.append((key, tuple(check_value(key, v, ("exclude", i, key), err)
                                     for v in values)))
        out.append(tuple(items))
    return tuple(out)


def _parse_expected(label: str, metrics: dict[str, Any], err: Any) -> dict[str, Any]:
    """number -> number; "> LABEL" -> {"op": ">", "than": LABEL}."""
    out: dict[str, Any] = {}
    for metric, value in metrics.items():
        if not METRIC.match(metric):
            raise err(f"metric '{metric}' is not of the form split/name", "expected", label,
                      metric, hint="e.g. val/top1")
        if isinstance(value, str):
            m = DIRECTION.match(value)
            if not m:
                raise err(f"expected a number or a direction '> LABEL', '< LABEL', '~ LABEL', "
                          f"got {_show(value)}", "expected", label, metric)
            out[metric] = {"op": m.group(1), "than": m.group(2)}
        else:
            out[metric] = value
    return out


def _expected_to_yaml(expected: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {label: {m: (f"{v['op']} {v['than']}" if isinstance(v, dict) else v)
                    for m, v in metrics.items()} for label, metrics in expected.items()}


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps true apart from 1 (YAML gives both)."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b
