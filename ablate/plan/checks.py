"""The checks of a plan, each a one-line SpecError at the sweep key that caused it.

Recipes (RandAugment strings, batch splits across workers and accumulation), data sets and
folders (with the content fingerprint that enters the trial ids), train/validation sizes
against the batch, the expected-result labels and duplicate trials. The checks of the models
are ablate.plan.modelchecks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ablate.config import DataConfig, batch_split_error
from ablate.errors import AblateError, SpecError, closest, first_line
from ablate.plan.expand import Candidate
from ablate.spec import Sweep

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
