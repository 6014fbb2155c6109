"""The checks of a plan, each a one-line SpecError at the sweep key that caused it.

Recipes (RandAugment strings, batch splits across workers and accumulation), models and their
axis combinations, each model's forward pass and kernels at its trial's image size (shapes
only, on the meta device, remembered in ablate's model cache), data sets and folders (with the
content fingerprint that enters the trial ids), train/validation sizes against the batch, the
expected-result labels, duplicate trials and trials that build the same network as another.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ablate.config import DataConfig, batch_split_error
from ablate.errors import AblateError, SpecError, closest, first_line
from ablate.plan.expand import Candidate
from ablate.spec import Sweep, _dotted

FOLDER_DATA = ("cifar10", "cifar100", "imagefolder")
KNOWN_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100}


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



def _source(c: Candidate, key: str) -> tuple:
    section, name = key.split(".", 1)
    return c.sources.get(key, ("base", section, name))


def check_expected(sweep: Sweep, labels: set[str]) -> None:
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


def check_recipes(sweep: Sweep, kept: list[Candidate], cache: Any) -> None:
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
                                  hint=_RAND_HINT)
    _check_randaugment_values(sweep, kept, cache)


_RAND_HINT = ("sections are m<magnitude>, n<ops>, mstd<std>, mmax<max>, inc<0|1>, p<prob>: "
              "e.g. rand-m9-mstd0.5-inc1")


def _check_randaugment_values(sweep: Sweep, kept: list[Candidate], cache: Any) -> None:
    """Each RandAugment string parsed by timm's own parser (the one training calls), so that a
    value it cannot read (``m1.2.3``: int('1.2.3')) is refused here, not in the first epoch.
    Remembered in the model cache: a second plan imports no timm for it."""
    seen: set = set()
    for c in kept:
        text = c.config.train.randaugment
        if not text or text in seen:
            continue
        seen.add(text)
        if cache.get("randaugment", {"text": text}):
            continue
        from timm.data.auto_augment import rand_augment_transform

        try:
            rand_augment_transform(text, {})
        except Exception as e:  # noqa: BLE001 - timm raises ValueError, AssertionError, ...
            raise sweep.error(f"randaugment {text!r} cannot be read by timm ({first_line(e)}) "
                              f"(trial '{c.label}')", *_source(c, "train.randaugment"),
                              hint=_RAND_HINT) from None
        cache.put("randaugment", {"text": text}, True)
    cache.save()


def _check_split(sweep: Sweep, c: Candidate, workers: int) -> None:
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


def check_splits(sweep: Sweep, kept: list[Candidate],
                  folder_sizes: dict[DataConfig, tuple[int, int]]) -> None:
    """Each trial's training split holds at least one batch and its validation split an
    image (what would otherwise fail minutes into the trial). ``folder_sizes``: the image
    folders' (train, val) counts, as :func:`check_data` listed them."""
    seen: set = set()
    for c in kept:
        data, batch = c.config.data, c.config.train.batch_size
        if (data, batch) in seen:
            continue
        seen.add((data, batch))
        sizes = split_sizes(data, folder_sizes.get(data))
        if sizes is None:
            continue
        (n_train, n_val), why = sizes
        if why:
            way = "raise" if n_val < KNOWN_CLASSES["digits"] else "lower"
            raise sweep.error(f"{why} (trial '{c.label}')", *_source(c, "data.val_fraction"),
                              hint=f"{way} data.val_fraction (the {data.name} set has "
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


def split_sizes(data: DataConfig, folder: tuple[int, int] | None):
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


def _first_per(kept: list[Candidate], section: str) -> Iterator[Candidate]:
    """The first trial of each distinct ``section`` config: each is checked once, and an
    error names the first trial that has it."""
    seen: set = set()
    for c in kept:
        value = getattr(c.config, section)
        if value not in seen:
            seen.add(value)
            yield c


def _first_per_model_at_size(kept: list[Candidate]) -> Iterator[Candidate]:
    """The first trial of each distinct (model config, image size), as :func:`_first_per`."""
    seen: set = set()
    for c in kept:
        pair = (c.config.model, c.config.data.img_size)
        if pair not in seen:
            seen.add(pair)
            yield c


def check_models(sweep: Sweep, kept: list[Candidate], cache: Any) -> None:
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
    _check_single_samples(sweep, kept, cache)
    cache.save()


def _check_single_samples(sweep: Sweep, kept: list[Candidate], cache: Any) -> None:
    """A micro-batch of one sample trains only a model without BatchNorm over one value per
    channel (the dynamic DWNets' kernel generators, a 1x1 last map): refused here, not at
    the trial's first step."""
    workers = sweep.resources.workers
    ones = [c for c in kept if c.config.train.batch_size == workers * c.config.train.accum_steps]
    for c in _first_per_model_at_size(ones):
        model, img = c.config.model, c.config.data.img_size
        config = {"model": dataclasses.asdict(model), "img_size": img}
        if cache.get("trains_on_one", config):
            continue
        from ablate.models import single_sample_error

        why = single_sample_error(model.arch, img_size=img, **model.axes())
        if why is not None:
            key = "train.accum_steps" if c.config.train.accum_steps > 1 else \
                "train.batch_size"
            raise sweep.error(f"{model.arch} cannot train on micro-batches of one sample: {why} "
                              f"(trial '{c.label}')", *_source(c, key),
                              hint="use a micro-batch (batch_size / (workers * accum_steps)) "
                              "of at least 2")
        cache.put("trains_on_one", config, True)


# how the backbone calls a plugin's part (the contract of ablate.models' register_* functions)
_BUILT_AS = {"mixer": "Mixer(dim, *, num_groups, kernel_size, shift)",
             "block": "Block(dim, mixer_layer, *, num_groups, kernel_size, shift, se, drop_path)"}


def _check_input_sizes(sweep: Sweep, kept: list[Candidate], cache: Any) -> None:
    """Each model runs a forward pass (shapes only) at its trial's image size: a timm model
    built for another size (Swin's windows, a ViT's position table) is refused here, not in
    the first step of a trial."""
    for c in _first_per_model_at_size(kept):
        model, img = c.config.model, c.config.data.img_size
        config = {"model": dataclasses.asdict(model), "img_size": img}
        if cache.get("runs_at", config):
            continue
        from ablate.models import input_error, plugin_parts

        plugins = plugin_parts(model.arch, **model.axes())
        try:
            why = input_error(model.arch, img_size=img,
                              num_classes=num_classes(c.config.data) or 2, **model.axes())
        except Exception as e:  # noqa: BLE001 - building the model raised
            if not plugins:
                raise
            kind, name = plugins[0]  # the arch and axes are valid: the plugin's code failed
            raise sweep.error(f"{model.arch} with the plugin {kind} '{name}' cannot be built: "
                              f"{type(e).__name__}: {first_line(e)} (trial '{c.label}')",
                              *_source(c, f"model.{kind}"), hint=f"ablate builds a {kind} as "
                              f"{_BUILT_AS[kind]}: check the plugin's code") from None
        if why is not None:
            if plugins:  # ablate's backbones take any size: the plugin's code failed
                kind, name = plugins[0]
                raise sweep.error(f"{model.arch} with the plugin {kind} '{name}' fails its "
                                  f"forward pass at {img}x{img}: {why} (trial '{c.label}')",
                                  *_source(c, f"model.{kind}"), hint=f"a {kind} must map "
                                  "(B, H, W, C) to (B, H, W, C): check the plugin's code")
            raise sweep.error(f"{model.arch} cannot take {img}x{img} images: {why} "
                              f"(trial '{c.label}')", *_source(c, "data.img_size"),
                              hint="use an image size the model is built for (a timm model's "
                              "own, such as 224), or one of ablate's models")
        cache.put("runs_at", config, True)


def _check_kernels(sweep: Sweep, kept: list[Candidate], cache: Any) -> None:
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


def check_data(sweep: Sweep, kept: list[Candidate], check_exists: bool
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


def _fingerprint(sweep: Sweep, data: DataConfig, c: Candidate):
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


def _check_folder(sweep: Sweep, data: DataConfig, c: Candidate) -> None:
    from ablate.datafiles import validate_data

    try:
        validate_data(data)
    except AblateError as e:
        raise _data_error(sweep, c, e) from None


def _check_files(sweep: Sweep, data: DataConfig, c: Candidate, fingerprint: str | None) -> None:
    """The cheap check of every file (names, headers, classes with images, CIFAR labels);
    remembered per content, so planning the same data again reads nothing."""
    from ablate.deepcheck import check_data

    try:
        check_data(data, fingerprint)
    except AblateError as e:
        raise _data_error(sweep, c, e) from None


def _data_error(sweep: Sweep, c: Candidate, e: AblateError) -> SpecError:
    """A data problem as an error at the sweep key that chose the data, naming the file."""
    key = e.key if e.key in c.varied or (e.key or "").startswith("data.") else "data.root"
    what = f"{e.what} ({e.file})" if e.file else e.what
    return sweep.error(what, *_source(c, key), hint=e.hint)


def check_duplicates(sweep: Sweep, kept: list[Candidate],
                      fingerprints: dict[DataConfig, str | None]) -> None:
    seen: dict[str, Candidate] = {}
    for c in kept:
        tid = c.config.trial_id(fingerprints.get(c.config.data))
        if tid in seen:
            first = seen[tid]
            where = next((p for p in c.sources.values()), ("base",))[:2]
            raise sweep.error(f"trial '{c.label}' (seed {c.config.seed}) is identical to "
                              f"'{first.label}' (id {tid})", *where,
                              hint="remove one, or make them differ in some axis")
        seen[tid] = c


def check_same_models(sweep: Sweep, kept: list[Candidate],
                      fingerprints: dict[DataConfig, str | None], cache: Any) -> None:
    """A trial of another id than a baseline trial that builds the baseline's network (an axis
    set to the model's own default: kernel_size 3 on a _nano model, drop_path_rate 0) with the
    same data, recipe and seed would train the identical model again, and the report would
    compare the model with itself. The ids stay as they are (they hash the configuration as
    written); the plan refuses the trial, naming the axis that makes no difference. The same
    holds between two arms that ask for one network in two ways (a model by name, and the
    mixer that makes it): the later one is refused, naming the first (a baseline first)."""
    built: dict = {}

    def key(c: Candidate) -> tuple:
        model = c.config.model
        if model not in built:
            built[model] = _built_network(model, cache)
        ident = c.config.identity(fingerprints.get(c.config.data), sweep.resources.workers)
        return built[model], json.dumps({k: v for k, v in ident.items()
                                         if not k.startswith("model.")}, sort_keys=True,
                                        default=str)

    first: dict[tuple, Candidate] = {}
    for c in sorted(kept, key=lambda c: c.role != "baseline"):  # stable: baselines first
        seen = first.setdefault(key(c), c)
        if seen.config != c.config:
            raise _same_model_error(sweep, c, seen)
    cache.save()


def _built_network(model: Any, cache: Any) -> str:
    """What the network built from ``model`` is made of (one of ablate's models: its resolved
    blocks, mixer, widths, groups, kernel, ...; a timm model: its configuration as written)."""
    config = dataclasses.asdict(model)
    hit = cache.get("network", config)
    if hit is None:
        from ablate.models import is_ablate_model

        hit = config
        if is_ablate_model(model.arch):
            from ablate.models.registry import resolve

            spec = resolve(model.arch, **model.axes())
            hit = {"block": spec.block, "mixer": spec.mixer, "embed_dim": spec.embed_dim,
                   "depths": list(spec.depths), "groups": list(spec.groups),
                   "kernel_size": spec.kernel_size, "se": spec.se,
                   "drop_path_rate": spec.drop_path_rate, "patch_size": spec.patch_size}
        cache.put("network", config, hit)
    return json.dumps(hit, sort_keys=True)


def _same_model_error(sweep: Sweep, c: Candidate, first: Candidate) -> SpecError:
    """'trial X builds the same model as Y: model.kernel_size 3 is dwnet_nano's default'."""
    a, b = dataclasses.asdict(c.config.model), dataclasses.asdict(first.config.model)
    keys = [f"model.{k}" for k in a if a[k] != b[k]]
    at = next((k for k in keys if k in c.sources), None) or next(iter(c.sources), None)
    where = c.sources.get(at, ("base", "model")) if at else ("base", "model")
    if len(keys) == 1 and None in (a[keys[0][6:]], b[keys[0][6:]]):
        value = b[keys[0][6:]] if a[keys[0][6:]] is None else a[keys[0][6:]]
        why = f"{keys[0]} {_fmt(value)} is {c.config.model.arch}'s default"
    else:
        def axes(d: dict) -> str:
            return ", ".join(f"{k} {_fmt(d[k[6:]])}" for k in keys)
        why = f"{axes(a)} builds what {axes(b)} does, the other axes being equal"
    kind = "arm" if where[0] == "arms" and c.label == where[1] else "trial"
    return sweep.error(f"{kind} '{c.label}' builds the same model as '{first.label}' (same data, "
                       f"recipe and seed {c.config.seed}): {why}", *where,
                       hint="drop the arm or grid value, or change the value")


def _fmt(value: Any) -> str:
    return {True: "true", False: "false", None: "null"}.get(value, str(value)) \
        if isinstance(value, (bool, type(None))) else str(value)
