"""Planning: a :class:`~ablate.spec.Sweep` expanded into ordered, checked :class:`Trial` s.

Expansion is arms (the baseline first) x grid (cartesian, file order) x paired (zipped) x seeds,
minus the excluded trials. Role "baseline": with arms, every trial of the baseline arm; without,
the trial at the first value of every grid and paired axis. Order: by seed, baselines before
arms within a seed, then file order; so every arm's first seed runs before any repeat. Trial ids
are ``TrialConfig.trial_id()``: a hash of what determines the result (see ``ablate.config``),
so labels, order, the sweep's name and operational settings do not change them. A data folder
enters the id through the fingerprint of its content, computed here when folders are checked;
a plan made without the data (``check_data=False``) has provisional ids for folder data.

Checked here (each a one-line SpecError pointing at the key that caused it): models and their
axis combinations (``ablate.models.validate_model``), data folders, the expected-result labels,
duplicate trials, an empty plan, and the size limit ``max_trials`` unless ``confirm``.
Nothing here prints, imports Ray, or builds a model.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate.config import (
    DataConfig,
    ModelConfig,
    RecipeConfig,
    Trial,
    TrialConfig,
    batch_split_error,
)
from ablate.errors import AblateError, SpecError, closest
from ablate.plugins import load_plugins
from ablate.record import (
    CORRUPT,
    DAMAGED,
    DIVERGED,
    DONE,
    FAILED,
    INTERRUPTED,
    NEW,
    RUNNING,
    trial_state,
)
from ablate.spec import Sweep, _dotted, _same, load_sweep

FOLDER_DATA = ("cifar10", "cifar100", "imagefolder")
KNOWN_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100}
ACTIONS = {NEW: "start", DONE: "skip", DIVERGED: "skip", FAILED: "resume",
           INTERRUPTED: "resume", RUNNING: "resume",
           CORRUPT: "stop", DAMAGED: "stop"}  # run refuses until the record is repaired


@dataclass(frozen=True)
class _Candidate:
    """A trial before checks, with the key path that set each varied axis (for errors)."""

    order: tuple[int, int, int]  # (seed index, 0 baseline / 1 arm, position in the file)
    label: str
    role: str
    varied: dict[str, Any]
    config: TrialConfig
    sources: dict[str, tuple]  # dotted axis -> key path in the sweep file


def load_plan(path: str | Path, *, confirm: bool = False, check_data: bool = True,
              plugins: tuple[str, ...] = (), overrides: tuple[str, ...] = (),
              only: tuple[str, ...] = (), seeds: tuple[int, ...] = ()
              ) -> tuple[Sweep, list[Trial]]:
    """Load, validate and plan a sweep file; the Sweep comes back with ``trials`` filled.

    ``plugins``: modules to load besides the sweep's own (``--plugin``); ``overrides``:
    ``KEY=VALUE`` texts set on the file (``--set``); ``only`` and ``seeds``: keep part of the
    plan (``--only``, ``--seeds``; see :func:`select_trials`).
    """
    sweep = load_sweep(path, overrides)
    if plugins:
        load_plugins(plugins, source="--plugin")
        sweep = dataclasses.replace(sweep, plugins=tuple(dict.fromkeys(
            (*sweep.plugins, *plugins))))
    trials = plan_trials(sweep, confirm=confirm, check_data=check_data, only=only,
                         seeds=seeds)
    return dataclasses.replace(sweep, trials=tuple(trials)), trials


def plan_trials(sweep: Sweep, *, confirm: bool = False, check_data: bool = True,
                only: tuple[str, ...] = (), seeds: tuple[int, ...] = ()) -> list[Trial]:
    """The sweep's trials in run order; SpecError for any impossible or suspicious plan.

    ``check_data=False`` skips the existence checks of data folders (to plan a paper-scale
    sweep on a machine without ImageNet); ``confirm`` lifts the ``max_trials`` limit.
    ``only``/``seeds`` keep part of the plan; the checks after that see only that part.
    """
    load_plugins(sweep.plugins, source=str(sweep.path))  # they may define mixers and models
    kept = _apply_exclude(sweep, list(_expand(sweep)))
    if not kept:
        raise sweep.error("the plan is empty: every trial is excluded", "exclude")
    _check_expected(sweep, {c.label for c in kept})
    if only or seeds:
        kept = select_trials(kept, only, seeds, label=lambda c: c.label,
                             seed=lambda c: c.config.seed)
    _check_recipes(sweep, kept)
    _check_models(sweep, kept)
    fingerprints, folder_sizes = _check_data(sweep, kept, check_data)
    _check_splits(sweep, kept, folder_sizes)
    _check_duplicates(sweep, kept, fingerprints)
    if len(kept) > sweep.max_trials and not confirm:
        raise sweep.error(f"the plan has {len(kept)} trials, more than max_trials="
                          f"{sweep.max_trials}", "max_trials",
                          hint="check the grid and exclusions, raise max_trials, or confirm "
                          "with --yes")
    kept.sort(key=lambda c: c.order)
    return [Trial(config=c.config, sweep=sweep.name, arm=c.label, varied=c.varied, role=c.role,
                  resources=sweep.resources, expected=sweep.expected.get(c.label),
                  data_fingerprint=fingerprints.get(c.config.data), plugins=sweep.plugins)
            for c in kept]


def trial_states(trials: list[Trial], results_dir: str | Path) -> dict[str, str]:
    """Trial id -> its recorded state (new, running, done, failed, diverged)."""
    return {t.id: trial_state(results_dir, t).state for t in trials}


def run_action(state: str) -> str:
    """What ``ablate run`` does with a trial in ``state``: start, skip or resume."""
    return ACTIONS.get(state, "start")


def num_classes(data: DataConfig) -> int | None:
    """Classes of a dataset: declared, known, or the class folders of an image folder."""
    if data.num_classes is not None:
        return data.num_classes
    if data.name in KNOWN_CLASSES:
        return KNOWN_CLASSES[data.name]
    if data.name == "imagefolder" and data.root:
        root = Path(data.root).expanduser()
        root = root / "train" if (root / "train").is_dir() else root
        if root.is_dir():
            return sum(1 for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return None


def select_trials(items: list, only: tuple[str, ...], seeds: tuple[int, ...], *,
                  label: Any, seed: Any, flag: str = "--only") -> list:
    """The items whose label matches a name of ``only`` and whose seed is in ``seeds`` (an
    empty filter keeps all); ``label``/``seed`` read them from an item, and ``flag`` names
    the option ``only`` came from in errors.

    A name matches a whole label (``se, kernel_size=3``) or one of its comma-separated parts
    (``se``: the arm; ``kernel_size=3``: a grid value). Each text of ``only`` may list several
    names, joined by commas; a label that itself holds commas may be given whole. A name or a
    seed that matches nothing is a SpecError naming its flag and the closest choice.
    """
    labels = {label(i) for i in items}
    names = labels | {p for lab in labels for p in lab.split(", ")}
    wanted = [(text, n) for text in only for n in _split_names(text, names)]
    for text, n in wanted:
        if n not in names:
            near = closest(n, names)
            raise SpecError(f"no trial is labelled '{n}'", key=f"{flag} {text}",
                            hint=(f"did you mean '{near}'? " if near else "")
                            + "'ablate plan' lists the labels")
    seeds_flag = "--seeds " + ",".join(map(str, seeds))
    plan_seeds = sorted({seed(i) for i in items})
    for s in seeds:
        if s not in plan_seeds:
            raise SpecError(f"the plan has no seed {s}", key=seeds_flag,
                            hint=f"its seeds are {', '.join(map(str, plan_seeds))}; to add "
                            "seeds, --set seeds=[...]")
    picked = {n for _, n in wanted}
    kept = [i for i in items if (not picked or label(i) in picked
                                 or picked & set(label(i).split(", ")))
            and (not seeds or seed(i) in seeds)]
    if not kept:
        flags = [f"{flag} {t}" for t in only] + ([seeds_flag] if seeds else [])
        raise SpecError("no trial matches all of the selection", key=" ".join(flags),
                        hint="'ablate plan' lists each trial's label and seed")
    return kept


def _split_names(text: str, names: set[str]) -> list[str]:
    """``a, x=1,b`` -> the longest runs of comma-separated pieces that are names."""
    pieces = [p.strip() for p in text.split(",")]
    out, i = [], 0
    while i < len(pieces):
        j = next((j for j in range(len(pieces), i, -1)
                  if ", ".join(pieces[i:j]) in names), i + 1)
        out.append(", ".join(pieces[i:j]))
        i = j
    return [n for n in out if n]


# --- expansion -----------------------------------------------------------------------------


def _expand(sweep: Sweep):
    """Every (seed, arm, grid point, paired index) as a candidate, in file order per seed."""
    arms = [(sweep.baseline, ())] + list(sweep.arms) if sweep.arms else [(None, ())]
    grid = list(itertools.product(*(list(enumerate(v)) for _, v in sweep.grid)))
    paired = range(len(sweep.paired[0][1]) if sweep.paired else 1)
    points = list(itertools.product(enumerate(arms), enumerate(grid), paired))
    axis_keys = [k for k, _ in sweep.grid] + [k for k, _ in sweep.paired]
    leaves = [k.split(".", 1)[1] for k in axis_keys]
    names = dict(zip(axis_keys, leaves if len(set(leaves)) == len(leaves) else axis_keys))
    varied = list(dict.fromkeys(k for _, ov in sweep.arms for k, _ in ov)) + axis_keys
    base = dataclasses.asdict(sweep.base)
    for s_index, seed in enumerate(sweep.seeds):
        for position, ((a, (arm, overrides)), (g, point), p) in enumerate(points):
            sources = {k: ("arms", arm, k) for k, _ in overrides}
            values = dict(overrides)
            for (key, _), (i, v) in zip(sweep.grid, point):
                values[key], sources[key] = v, ("grid", key, i)
            for key, vs in sweep.paired:
                values[key], sources[key] = vs[p], ("paired", key, p)
            config = _resolve(base, values, seed)
            flat = _flat(config)
            parts = ([arm] if arm is not None else []) + [
                f"{names[k]}={_fmt(values[k])}" for k in axis_keys]
            first = a == 0 and (bool(sweep.arms) or (g == 0 and p == 0))
            yield _Candidate(order=(s_index, 0 if first else 1, position),
                             label=", ".join(parts) or sweep.baseline,
                             role="baseline" if first else "arm",
                             varied={k: flat[k] for k in varied}, config=config, sources=sources)


def _resolve(base: dict[str, Any], values: dict[str, Any], seed: int) -> TrialConfig:
    d = {s: dict(base[s]) for s in ("model", "data", "train")}
    for key, value in values.items():
        section, name = key.split(".", 1)
        d[section][name] = value
    return TrialConfig(model=ModelConfig(**d["model"]), data=DataConfig(**d["data"]),
                       train=RecipeConfig(**d["train"]), seed=seed)


def _flat(config: TrialConfig) -> dict[str, Any]:
    out = {"seed": config.seed}
    for section in ("model", "data", "train"):
        for k, v in dataclasses.asdict(getattr(config, section)).items():
            out[f"{section}.{k}"] = v
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return repr(value) if isinstance(value, float) else str(value)


def _apply_exclude(sweep: Sweep, candidates: list[_Candidate]) -> list[_Candidate]:
    used = [False] * len(sweep.exclude)
    kept = []
    for c in candidates:
        flat = _flat(c.config)
        hits = [all(any(_same(flat[k], v) for v in vs) for k, vs in cond)
                for cond in sweep.exclude]
        used = [u or h for u, h in zip(used, hits)]
        if not any(hits):
            kept.append(c)
    for i, u in enumerate(used):
        if not u:
            raise sweep.error("this condition matches no trial", "exclude", i,
                              hint="check its values against the grid, arms and base")
    return kept


# --- checks ----------------------------------------------------------------------------------


def _source(c: _Candidate, key: str) -> tuple:
    section, name = key.split(".", 1)
    return c.sources.get(key, ("base", section, name))


def _check_expected(sweep: Sweep, labels: set[str]) -> None:
    for label, metrics in sweep.expected.items():
        if label not in labels:
            near = closest(label, labels)
            raise sweep.error(f"no trial is labelled '{label}'", "expected", label,
                              hint=(f"did you mean '{near}'? " if near else "")
                              + "labels are shown by ablate plan")
        for metric, value in metrics.items():
            if isinstance(value, dict) and value["than"] not in labels:
                near = closest(value["than"], labels)
                raise sweep.error(f"no trial is labelled '{value['than']}'", "expected",
                                  label, metric, hint=f"did you mean '{near}'?" if near else
                                  "labels are shown by ablate plan")


# Sections of a RandAugment string timm understands: a letter key and its number (m9, n2,
# mstd0.5, mmax10, inc1, p0.5) or a transform-weights choice starting with "t".
_RAND_SECTION = re.compile(r"^(t.*|(mstd|mmax|inc|m|n|p)[0-9][0-9.]*)$")


def _check_recipes(sweep: Sweep, kept: list[_Candidate]) -> None:
    for c in kept:
        train = c.config.train
        if train.warmup_epochs > train.epochs:
            raise sweep.error(f"warmup_epochs ({train.warmup_epochs}) exceeds epochs "
                              f"({train.epochs}) in trial '{c.label}'",
                              *_source(c, "train.warmup_epochs"))
        _check_split(sweep, c, sweep.resources.workers)
        for section in (train.randaugment or "rand").split("-")[1:]:
            if not _RAND_SECTION.match(section):
                raise sweep.error(f"randaugment section {section!r} is not one timm knows "
                                  f"(trial '{c.label}')", *_source(c, "train.randaugment"),
                                  hint="sections are m<magnitude>, n<ops>, mstd<std>, "
                                  "mmax<max>, inc<0|1>, p<prob>: e.g. rand-m9-mstd0.5-inc1")


def _check_split(sweep: Sweep, c: _Candidate, workers: int) -> None:
    """The global batch splits into equal micro-batches over the workers and accumulation
    steps (even ones, with Mixup/CutMix)."""
    train = c.config.train
    why, key = batch_split_error(train, workers)
    if why:
        at = ("base", "resources", "workers") if key == "resources.workers" else _source(c, key)
        hint = _SPLIT_HINTS[key]
        if key == "train.batch_size" and workers * train.accum_steps == 1:
            hint = "use an even batch_size, or set mixup and cutmix to 0"
        raise sweep.error(f"{why} (trial '{c.label}')", *at, hint=hint)


_SPLIT_HINTS = {
    "resources.workers": "use a number of workers that divides train.batch_size",
    "train.accum_steps": "use accum_steps that divide batch_size / workers",
    "train.batch_size": "use an even micro-batch (batch_size / (workers * accum_steps)), or "
                        "set mixup and cutmix to 0"}


def _check_splits(sweep: Sweep, kept: list[_Candidate],
                  folder_sizes: dict[DataConfig, tuple[int, int]]) -> None:
    """Each trial's training split holds at least one batch and its validation split an
    image (what would otherwise fail minutes into the trial). ``folder_sizes``: the image
    folders' (train, val) counts, as :func:`_check_data` listed them."""
    seen: set = set()
    for c in kept:
        data, batch = c.config.data, c.config.train.batch_size
        if (data, batch) in seen:
            continue
        seen.add((data, batch))
        sizes = _split_sizes(data, folder_sizes.get(data))
        if sizes is None:
            continue
        (n_train, n_val), why = sizes
        if why:
            raise sweep.error(f"{why} (trial '{c.label}')", *_source(c, "data.val_fraction"),
                              hint=f"raise data.val_fraction (the {data.name} set has "
                              f"{DIGITS_IMAGES} images in {KNOWN_CLASSES['digits']} classes)")
        if n_train < batch:
            raise sweep.error(f"batch_size {batch} is larger than the training split "
                              f"({n_train} images, trial '{c.label}')",
                              *_source(c, "train.batch_size"),
                              hint=f"use a batch_size of at most {n_train}")
        if n_val < 1:
            raise sweep.error(f"the validation split is empty (trial '{c.label}')",
                              *_source(c, "data.num_val"), hint="raise data.num_val")


DIGITS_IMAGES = 1797  # scikit-learn's handwritten digits, 8x8, 10 classes


def _split_sizes(data: DataConfig, folder: tuple[int, int] | None):
    """((train, val) image counts, a reason the split cannot be made or None), or None when
    the sizes are not known (an image folder that was not listed: ``folder`` is its counts)."""
    import math

    why = None
    if data.name == "digits":
        # scikit-learn's stratified split: ceil(n * fraction) validation images, and at least
        # one image per class on each side.
        n_val = math.ceil(DIGITS_IMAGES * data.val_fraction)
        n_train = DIGITS_IMAGES - n_val
        classes = KNOWN_CLASSES["digits"]
        if min(n_val, n_train) < classes:
            why = (f"val_fraction {data.val_fraction} leaves {n_val} validation and {n_train} "
                   f"training images; each must hold one image of each of {classes} classes")
    elif data.name == "synthetic":
        n_train, n_val = data.num_train or 256, data.num_val or 64
    elif data.name in ("cifar10", "cifar100"):
        n_train, n_val = 50_000, 10_000
    elif data.name == "imagefolder" and folder is not None:
        n_train, n_val = folder
    else:
        return None
    n_train = min(n_train, data.num_train or n_train)
    n_val = min(n_val, data.num_val or n_val)
    return (n_train, n_val), why


def _first_per(kept: list[_Candidate], section: str) -> Iterator[_Candidate]:
    """The first trial of each distinct ``section`` config: each is checked once, and an
    error names the first trial that has it."""
    seen: set = set()
    for c in kept:
        value = getattr(c.config, section)
        if value not in seen:
            seen.add(value)
            yield c


def _first_per_model_at_size(kept: list[_Candidate]) -> Iterator[_Candidate]:
    """The first trial of each distinct (model config, image size), as :func:`_first_per`."""
    seen: set = set()
    for c in kept:
        pair = (c.config.model, c.config.data.img_size)
        if pair not in seen:
            seen.add(pair)
            yield c


def _check_models(sweep: Sweep, kept: list[_Candidate]) -> None:
    from ablate.modelcache import ModelCache
    from ablate.plugins import loaded_plugins

    cache = ModelCache(loaded_plugins())
    for c in _first_per(kept, "model"):
        model = c.config.model
        config = dataclasses.asdict(model)
        if cache.get("valid", config):
            continue  # checked before by the same code: no need to import torch and timm
        from ablate.models import validate_model  # the registry imports torch and timm

        try:
            validate_model(model.arch, **model.axes())
        except AblateError as e:
            axis = (e.key or "arch").split(".")[-1]
            key = f"model.{axis}" if f"model.{axis}" in c.varied or axis in model.axes() \
                else "model.arch"
            raise SpecError(f"{e.what} (trial '{c.label}')", key=_dotted(_source(c, key)),
                            hint=e.hint, **sweep.where(*_source(c, key))) from None
        cache.put("valid", config, True)
    _check_kernels(sweep, kept, cache)
    _check_input_sizes(sweep, kept, cache)
    cache.save()


def _check_input_sizes(sweep: Sweep, kept: list[_Candidate], cache: Any) -> None:
    """Each model runs a forward pass (shapes only) at its trial's image size: a timm model
    built for another size (Swin's windows, a ViT's position table) is refused here, not in
    the first step of a trial."""
    for c in _first_per_model_at_size(kept):
        model, img = c.config.model, c.config.data.img_size
        config = {"model": dataclasses.asdict(model), "img_size": img}
        if cache.get("runs_at", config):
            continue
        from ablate.models import input_error

        why = input_error(model.arch, img_size=img, **model.axes())
        if why is not None:
            raise sweep.error(f"{model.arch} cannot take {img}x{img} images: {why} "
                              f"(trial '{c.label}')", *_source(c, "data.img_size"),
                              hint="use an image size the model is built for (a timm model's "
                              "own, such as 224), or one of ablate's models")
        cache.put("runs_at", config, True)


def _check_kernels(sweep: Sweep, kept: list[_Candidate], cache: Any) -> None:
    """A kernel wider than 2M - 1, M the first stage's map side, has taps that never reach
    an image position: refuse it rather than train parameters that stay zero-input."""
    for c in _first_per_model_at_size(kept):
        model, img = c.config.model, c.config.data.img_size
        if model.kernel_size is None:
            continue
        config = {"model": dataclasses.asdict(model), "img_size": img}
        side = cache.get("stage1", config)
        if side is None:
            from ablate.models import is_ablate_model
            from ablate.models.registry import resolve

            if not is_ablate_model(model.arch):
                continue
            side = -(-img // resolve(model.arch, **model.axes()).patch_size)
            cache.put("stage1", config, side)
        if model.kernel_size > 2 * side - 1:
            raise sweep.error(f"kernel_size {model.kernel_size} is wider than the first stage's "
                              f"{side}x{side} map allows at img_size {img} (trial '{c.label}')",
                              *_source(c, "model.kernel_size"),
                              hint=f"use a kernel_size of at most {2 * side - 1}")


def _check_data(sweep: Sweep, kept: list[_Candidate], check_exists: bool
                ) -> tuple[dict[DataConfig, str | None], dict[DataConfig, tuple[int, int]]]:
    """Check each distinct data configuration; with ``check_exists``, also its folder, and
    return the fingerprint of each folder's content (what trial ids hash instead of paths)
    and each image folder's (train, val) image counts, from one listing of it."""
    fingerprints: dict[DataConfig, str | None] = {}
    folder_sizes: dict[DataConfig, tuple[int, int]] = {}
    for c in _first_per(kept, "data"):
        data = c.config.data
        where = _source(c, "data.root")
        if data.name in FOLDER_DATA and not data.root:
            raise sweep.error(f"data '{data.name}' needs a root folder", *where)
        if data.name not in FOLDER_DATA and data.root:
            raise sweep.error(f"data '{data.name}' takes no root folder", *where,
                              hint="remove data.root (or set it to null)")
        known = KNOWN_CLASSES.get(data.name)
        if known and data.num_classes not in (None, known):
            raise sweep.error(f"'{data.name}' has {known} classes, not {data.num_classes}",
                              *_source(c, "data.num_classes"), hint="remove data.num_classes")
        if data.name == "synthetic" and data.num_classes is None:
            raise sweep.error("synthetic data needs num_classes", *_source(c, "data.name"),
                              hint="set data.num_classes")
        if check_exists:
            _check_folder(sweep, data, c)
            fingerprints[data], listing = _fingerprint(sweep, data, c)
            if listing is not None:
                folder_sizes[data] = (len(listing["train"]), len(listing["val"]))
            _check_files(sweep, data, c, fingerprints[data])
    return fingerprints, folder_sizes


def _fingerprint(sweep: Sweep, data: DataConfig, c: _Candidate):
    """(the content fingerprint, the image folder's listing or None)."""
    from ablate.datafiles import data_fingerprint, folder_listing

    try:
        listing = folder_listing(Path(data.root).expanduser()) \
            if data.name == "imagefolder" else None
        return data_fingerprint(data, listing), listing
    except OSError as e:
        raise sweep.error(f"cannot read the data folder ({e.strerror or e})",
                          *_source(c, "data.root"), hint="check the folder's permissions"
                          ) from None


def _check_folder(sweep: Sweep, data: DataConfig, c: _Candidate) -> None:
    from ablate.datafiles import validate_data

    try:
        validate_data(data)
    except AblateError as e:
        raise _data_error(sweep, c, e) from None


def _check_files(sweep: Sweep, data: DataConfig, c: _Candidate, fingerprint: str | None) -> None:
    """The cheap check of every file (names, headers, classes with images, CIFAR labels);
    remembered per content, so planning the same data again reads nothing."""
    from ablate.deepcheck import check_data

    try:
        check_data(data, fingerprint)
    except AblateError as e:
        raise _data_error(sweep, c, e) from None


def _data_error(sweep: Sweep, c: _Candidate, e: AblateError) -> SpecError:
    """A data problem as an error at the sweep key that chose the data, naming the file."""
    key = e.key if e.key in c.varied or (e.key or "").startswith("data.") else "data.root"
    what = f"{e.what} ({e.file})" if e.file else e.what
    return sweep.error(what, *_source(c, key), hint=e.hint)


def _check_duplicates(sweep: Sweep, kept: list[_Candidate],
                      fingerprints: dict[DataConfig, str | None]) -> None:
    seen: dict[str, _Candidate] = {}
    for c in kept:
        tid = c.config.trial_id(fingerprints.get(c.config.data))
        if tid in seen:
            first = seen[tid]
            where = next((p for p in c.sources.values()), ("base",))[:2]
            raise sweep.error(f"trial '{c.label}' (seed {c.config.seed}) is identical to "
                              f"'{first.label}' (id {tid})", *where,
                              hint="remove one, or make them differ in some axis")
        seen[tid] = c

