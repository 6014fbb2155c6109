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
                                  # paired axis, arm, expected entry or resources key (to switch
                                  # between the two resources forms)
    base:                         # required: the baseline trial
      model: {arch: dwnet_tiny, group_size: 8, ...}   # arch required; axes = ModelConfig fields
      data: {name: imagefolder, root: /data/imagenet, img_size: 224, num_classes: 1000}
      train: {epochs: 300, lr: 5.0e-4, ...}           # RecipeConfig fields (lr per 512 images)
      resources: {cpus: 8, gpus: 1}                    # per trial; gpus may be a fraction
                                                       # (a multiple of 0.0001, Ray's unit)
      # or a data-parallel trial (never mixed with cpus/gpus):
      # resources: {workers: 8, cpus_per_worker: 8, gpus_per_worker: 1}
    grid:   {model.group_size: [1, 4, 8]}              # cartesian product of the axes
    paired: {model.arch: [a, b], model.window: [shifted, sliding]}   # advanced together
    arms:   {dynamic: {model.arch: dynamic_dwnet_tiny}}  # one-factor differences from base;
                                  # labels (and baseline) are letters, digits, '_' and '-'
    baseline: dwnet               # label of the trial that is base unchanged (default "baseline")
    exclude: [{model.window: shifted, model.group_size: [1, 4]}]  # drop a trial matching all
                                  # entries of any condition (a value or a list of values;
                                  # keys: any axis or "seed")
    seeds: [0, 1, 2]              # each trial repeated over them (default [0])
    expected:                     # per trial label: metric -> the paper's number, or a
      dynamic: {val/top1: 81.8}   # claim "> LABEL", "< LABEL" or "~ LABEL ± MARGIN" (about
      "group_size=8": {val/top1: "> group_size=1"}   # equal within MARGIN, metric's units;
      "group_size=4": {val/top1: "~ group_size=8 ± 0.5"}  # "+-" works too); see ablate.stats
    alpha: 0.05                   # significance level of the claims' tests, in (0, 0.5]
    max_trials: 256               # a larger plan needs confirmation (ablate plan/run --yes)
    max_concurrent: 4             # trials at once (default: as many as resources allow)
    max_retries: 2                # retries of a failing trial

Axes are dotted paths ``model.*``, ``data.*``, ``train.*`` named as in :mod:`ablate.config`;
values are checked as in ``base`` (YAML reads ``1e-3`` as a number here). ``data.root`` is
used as written (relative paths: to the working directory); its content, not its path, enters
each trial's id.
Each planned Trial's ``expected`` is ``{metric: number}`` or ``{metric: {"op": ">", "than":
LABEL}}`` (op ``>``, ``<`` or ``~``; ``~`` also has ``"margin"``; a claim has ``"alpha"`` when
the sweep's is not 0.05), or None.
Trial labels: the arm label (the ``baseline`` label for base itself), then ``axis=value`` for
each grid/paired axis, joined by ", " (``dynamic, window=sliding``; ``group_size=8``).
:func:`load_sweep` parses and validates the file alone; :func:`ablate.plan.load_plan` also
expands it and checks models, data folders, duplicates and the plan size. Every mistake is a
one-line :class:`~ablate.errors.SpecError` with file, line and key path.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    create_model,
)

from ablate.config import (
    DATA_NAMES,
    MAX_SEED,
    DataConfig,
    ModelConfig,
    RecipeConfig,
    Resources,
    TrialConfig,
    type_hints,
)
from ablate.errors import SpecError, path_problem, unknown_name_hint
from ablate.expected import ALPHA, expected_to_yaml, parse_expected
from ablate.sweepfile import KeyPath, _dotted, _load_tree, _show, _where, apply_overrides



def _d(cls: type, name: str) -> Any:
    return cls.__dataclass_fields__[name].default


# --- the strict pydantic edge: one model per section, generated from ablate.config ---------
# Each config field is declared once, in ablate.config, with its default and bounds (and why
# the bounds are what they are); the section models below are made from those declarations.
_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$"  # a safe folder name: no "..", no "/"
_MODULE = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"  # a dotted module name




def _field_type(cls: type, name: str) -> Any:
    """The pydantic type of one dataclass field: its type with the declared bounds."""
    f = cls.__dataclass_fields__[name]
    kind = type_hints(cls)[name]
    bounds = dict(f.metadata.get("bounds", {}))
    choices = bounds.pop("choices", None)
    optional = type(None) in typing.get_args(kind)
    base = next(a for a in typing.get_args(kind) if a is not type(None)) if optional else kind
    is_path = bounds.pop("path", False)
    if choices is not None:
        base = Literal[choices]  # type: ignore[valid-type]
    elif bounds:
        base = Annotated[base, Field(**bounds)]
    if is_path:
        base = Annotated[base, AfterValidator(_usable_path)]
    return base | None if optional else base


def _usable_path(text: str) -> str:
    why = path_problem(text)
    if why:
        raise ValueError(f"the path {why}")
    return text


def _section_model(cls: type, skip: tuple[str, ...] = ()) -> type[BaseModel]:
    """A strict pydantic model of the dataclass ``cls``: same fields, defaults and bounds."""
    fields = {f.name: (_field_type(cls, f.name), ... if f.default is MISSING else f.default)
              for f in dataclasses.fields(cls) if f.name not in skip}
    return create_model(f"_{cls.__name__}Spec", __config__=_STRICT, **fields)


_ModelSpec = _section_model(ModelConfig)
_DataSpec = _section_model(DataConfig)
_TrainSpec = _section_model(RecipeConfig)
_ResourcesSpec = _section_model(Resources, skip=("max_retries",))  # a top-level sweep key
_MaxRetries = _field_type(Resources, "max_retries")


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
    alpha: Annotated[float, Field(gt=0, le=0.5)] = ALPHA  # above 0.5 both directions "agree"
    max_trials: Annotated[int, Field(ge=1, le=10**9)] = 256
    max_concurrent: Annotated[int, Field(ge=1, le=10**6)] | None = None
    max_retries: _MaxRetries = _d(Resources, "max_retries")


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
    alpha: float = ALPHA
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
            "resources": _resources_to_yaml(self.resources)}}
        out |= {"grid": {k: list(v) for k, v in self.grid},
                "paired": {k: list(v) for k, v in self.paired},
                "arms": {label: dict(ov) for label, ov in self.arms},
                "baseline": self.baseline,
                "exclude": [{k: list(v) for k, v in cond} for cond in self.exclude],
                "seeds": list(self.seeds), "expected": expected_to_yaml(self.expected),
                "alpha": self.alpha,
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
    base = raw.get("base")
    if isinstance(base, dict) and isinstance(base.get("resources"), dict):
        # a null removes the key (an inherited one too), so an extending file can switch from
        # one resources form to the other: {workers: null, cpus_per_worker: null, cpus: 2}
        raw["base"] = {**base, "resources": {k: v for k, v in base["resources"].items()
                                             if v is not None}}
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
        if isinstance(value, str) and re.fullmatch(r"[-+]?[0-9]+(:[0-9]+)+(\.[0-9]*)?", value):
            return (f"expected {_EXPECTED[kind]}, got {_show(value)}", "write the number "
                    "itself (YAML 1.1 would read this as a base-60 number; ablate does not)")
        if isinstance(value, str) and re.fullmatch(r"[-+]?0[0-9_]+", value):
            return (f"expected {_EXPECTED[kind]}, got {_show(value)}", "write it without the "
                    "leading zero (YAML 1.1 would read it as an octal number; ablate does not)")
        return f"expected {_EXPECTED[kind]}, got {_show(value)}", None
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<",
              "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        limit = f"{limit:g}" if isinstance(limit, float) and abs(limit) >= 1e6 else limit
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
    if kind == "value_error" and str(ctx.get("error", "")).startswith("the path "):
        return f"{ctx['error']}", "give the folder's real path"
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
    resources = _resources(b.resources, spec.max_retries, err)
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
    expected = {label: parse_expected(label, m, err, spec.alpha)
                for label, m in spec.expected.items()}
    ext = spec.extends if isinstance(spec.extends, list) else [spec.extends or ""]
    ext = tuple((path.parent / e).resolve() for e in ext if e)
    return Sweep(name=spec.name, description=spec.description, path=path, base=base,
                 resources=resources, grid=grid, paired=paired, arms=arms,
                 baseline=spec.baseline, exclude=exclude, seeds=tuple(spec.seeds),
                 expected=expected, alpha=spec.alpha, max_trials=spec.max_trials,
                 max_concurrent=spec.max_concurrent, extends=ext, plugins=tuple(spec.plugins),
                 results_dir=Path("results") / spec.name, locs=locs)


_ONE_WORKER, _PER_WORKER = ("cpus", "gpus"), ("workers", "cpus_per_worker", "gpus_per_worker")


def _resources(given: BaseModel, max_retries: int, err: Any) -> Resources:
    """The resources of ``base``: the one-worker form or the per-worker form, not both."""
    one = [k for k in _ONE_WORKER if k in given.model_fields_set]
    many = [k for k in _PER_WORKER if k in given.model_fields_set]
    if one and many:
        raise err(f"'{many[0]}' cannot be combined with '{one[0]}'", "base", "resources",
                  many[0], hint="write either cpus/gpus (a trial of one process) or workers "
                  "with cpus_per_worker/gpus_per_worker; resources merge with the files this "
                  "one extends: to switch forms, set the unwanted form's keys to null ("
                  f"{', '.join(f'{k}: null' for k in many)}, or {', '.join(f'{k}: null' for k in one)})")
    for key in (*one, *many):
        amount = getattr(given, key)
        if isinstance(amount, float) and amount and not _in_units(amount):
            raise err(f"{amount!r} is not a multiple of {RESOURCE_UNIT}, the finest fraction "
                      "of a CPU or GPU Ray schedules", "base", "resources", key,
                      hint=f"give a multiple of {RESOURCE_UNIT} (Ray refuses a finer one when "
                      "the run starts)")
    res = Resources(**{k: getattr(given, k) for k in (*one, *many)}, max_retries=max_retries)
    if res.workers > 1 and res.worker_gpus != int(res.worker_gpus):
        raise err(f"{res.workers} workers cannot share GPUs ({res.worker_gpus!r} GPU a "
                  "worker): two NCCL ranks cannot use one GPU", "base", "resources",
                  "gpus_per_worker", hint="give each worker a whole GPU, or use one worker")
    return res


RESOURCE_UNIT = 0.0001  # Ray counts CPUs and GPUs in units of 1/10,000


def _in_units(amount: float) -> bool:
    """Whether ``amount`` is a whole number of Ray's resource units (up to float rounding)."""
    units = amount / RESOURCE_UNIT
    return round(units) >= 1 and abs(units - round(units)) <= 1e-6 * max(1.0, units)


def _resources_to_yaml(r: Resources) -> dict[str, Any]:
    if r.workers == 1 and r.cpus_per_worker is None and r.gpus_per_worker is None:
        return {"cpus": r.cpus, "gpus": r.gpus}
    return {"workers": r.workers, "cpus_per_worker": r.worker_cpus,
            "gpus_per_worker": r.worker_gpus}


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


# An arm label is one part of a trial label ("se, kernel_size=5"): ", " joins the parts and
# "=" marks a grid value, so --only and reset --arm could not tell them apart; a "." would
# split --set arms.LABEL.model.se at the wrong place. Letters, digits, "_" and "-" only.
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_LABEL_WHY = "may hold only letters, digits, '_' and '-'"
_LABEL_HINT = ("rename it, e.g. kernel_size_5 (', ' joins a trial label's parts and '=' marks "
               "a grid value, so --only and reset --arm could not tell them apart)")


def _arms(spec: _SweepSpec, err: Any, axis_keys: set[str]) -> tuple:
    out = []
    if not _LABEL.match(spec.baseline):
        raise err(f"the baseline label {spec.baseline!r} {_LABEL_WHY}", "baseline",
                  hint=_LABEL_HINT)
    for label, overrides in spec.arms.items():
        if not _LABEL.match(label):
            raise err(f"arm label {label!r} {_LABEL_WHY}", "arms", label, hint=_LABEL_HINT)
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


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps true apart from 1 (YAML gives both)."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b
