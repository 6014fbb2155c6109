"""The files of a data folder and a fingerprint of its content, without torch.

A trial's id must say which data it was trained on, not where that data lay: a folder moved to
a scratch disk is the same data set, and two folders with different images are different ones
even at the same path. :func:`data_fingerprint` identifies a data folder by what it holds:

- an image folder (``ROOT/{train,val}/CLASS/...``): the sorted class names, then for each split
  its number of images and the sorted list of their paths relative to the split folder;
- a CIFAR python archive: for each batch file, its name, its size and a hash of its first and
  last MiB (the archives are 30-180 MB; reading their ends is instant and tells any two real
  archives apart);
- digits and synthetic data have no folder: their content is fixed by the configuration, so
  they have no fingerprint and the configuration alone identifies them.

Listing an image folder reads directory entries only (no image is opened, no file is stat'ed),
so ImageNet's 1.3 million files are listed in seconds. The loader (``ablate.data``) reads the
same list, so what the fingerprint covers is exactly what a trial trains on.

Reading a file never trusts it: a CIFAR batch is unpickled by :func:`read_cifar_batch`, which
resolves only the few numpy names an array needs (anything else is a DataError naming the file,
and nothing from the file runs); an image is decoded by :func:`read_image`, which converts every
Pillow mode to 8-bit RGB one way (see there). :func:`check_files` is the cheap check of a data
folder that ``ablate plan`` runs before anything is launched.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ablate.config import DATA_NAMES, DataConfig
from ablate.errors import DataError, UnreadableImage, unknown_name_hint

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
FOLDER_SPLITS = ("train", "val")
CIFAR_FILES = {  # name -> (archive folder, train batches, test batches)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]),
    "cifar100": ("cifar-100-python", ["train"], ["test"]),
}
CIFAR_LABELS = {"cifar10": (b"labels", 10), "cifar100": (b"fine_labels", 100)}  # key, classes
CIFAR_SOURCE = "https://www.cs.toronto.edu/~kriz/cifar.html"
_EDGE = 1 << 20  # bytes hashed at each end of a CIFAR batch file


def class_names(split_dir: Path) -> list[str]:
    """The class folders of one split, sorted (hidden folders are not classes)."""
    return sorted(e.name for e in os.scandir(split_dir)
                  if e.is_dir() and not e.name.startswith("."))


def image_files(class_dir: Path) -> list[str]:
    """The images under one class folder, as sorted paths relative to it.

    Sub-folders are searched too; links to folders are not followed (a link loop inside a
    class folder cannot hang the listing), hidden files and folders are skipped.
    """
    return sorted(rel for rel, _ in folder_entries(class_dir) if is_image_name(rel))


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def folder_entries(class_dir: Path) -> Iterator[tuple[str, os.DirEntry]]:
    """Every entry under a class folder that is not a folder, with its relative path.

    Sub-folders are searched; links to folders are skipped, never followed; hidden names are
    skipped. Broken links and link loops are yielded (opening them fails).
    """
    stack = [("", class_dir)]
    while stack:
        prefix, folder = stack.pop()
        for e in os.scandir(folder):
            if e.name.startswith("."):
                continue
            if e.is_dir(follow_symlinks=False):
                stack.append((f"{prefix}{e.name}/", Path(e.path)))
            elif not (e.is_symlink() and _is(e.is_dir)):
                yield prefix + e.name, e


def _is(test: Callable[[], bool]) -> bool:
    """A DirEntry test that follows a link, False where the link cannot be followed (os.scandir
    swallows only some errors: a link loop raises)."""
    try:
        return test()
    except OSError:
        return False


def cifar_dir(root: Path, name: str) -> Path:
    """The archive folder of a CIFAR root: ROOT itself or ROOT/<archive folder>."""
    folder = CIFAR_FILES[name][0]
    return root if root.name == folder else root / folder


def folder_listing(root: Path) -> dict[str, list[str]]:
    """Split -> its images as sorted ``CLASS/FILE`` paths, for an image folder ROOT/SPLIT/CLASS
    (the one listing the fingerprint, the planner's split sizes and the deep check read)."""
    return {split: [f"{c}/{f}" for c in class_names(root / split)
                    for f in image_files(root / split / c)] for split in FOLDER_SPLITS}


def data_fingerprint(data: DataConfig,
                     listing: dict[str, list[str]] | None = None) -> str | None:
    """16 hex digits identifying the content of ``data``'s folder; None if it has no folder.

    The folder must exist with the expected layout (``validate_data`` checks that
    first and says what is wrong); OSError otherwise. ``listing``: the image folder's
    :func:`folder_listing`, when the caller has it already.
    """
    if not data.root:
        return None
    root = Path(data.root).expanduser()
    h = hashlib.sha256(f"{data.name}\n".encode())
    if data.name in CIFAR_FILES:
        _hash_cifar(h, cifar_dir(root, data.name), data.name)
    else:
        _hash_folder(h, root, listing or folder_listing(root))
    return h.hexdigest()[:16]


def _hash_folder(h, root: Path, listing: dict[str, list[str]]) -> None:
    classes = class_names(root / FOLDER_SPLITS[0])
    h.update(("classes:" + "\n".join(classes) + "\n").encode())
    for split in FOLDER_SPLITS:
        h.update(f"{split}:{len(listing[split])}\n".encode())
        h.update(("\n".join(listing[split]) + "\n").encode())


def _hash_cifar(h, base: Path, name: str) -> None:
    _, train, test = CIFAR_FILES[name]
    for f in train + test:
        path = base / f
        size = path.stat().st_size
        h.update(f"{f}:{size}\n".encode())
        with open(path, "rb") as fh:
            h.update(fh.read(_EDGE))
            if size > 2 * _EDGE:
                fh.seek(-_EDGE, os.SEEK_END)
                h.update(fh.read(_EDGE))


# -- reading files without trusting them --------------------------------------------------------

# What a CIFAR python batch refers to: dicts, lists, bytes and numbers need no global; a numpy
# array needs these (numpy 2 names numpy.core "numpy._core"; protocol 2 writes bytes through
# _codecs.encode). Nothing else is resolved, so no name from a file can run.
_PICKLE_NAMES = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
                 ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                 ("numpy.core.numeric", "_frombuffer")}


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the names in ``_PICKLE_NAMES``."""

    def find_class(self, module: str, name: str) -> Any:
        if (module.replace("numpy._core", "numpy.core"), name) not in _PICKLE_NAMES:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a data file "
                                         "never needs (reading it could run code)")
        if module.startswith("numpy.core."):
            import numpy

            if hasattr(numpy, "_core"):  # numpy 2: numpy.core is a deprecated alias
                module = "numpy._core." + module.split(".", 2)[2]
        return super().find_class(module, name)


def read_cifar_batch(path: Path, name: str) -> tuple[Any, Any]:
    """A CIFAR python batch file as (uint8 images (N, 3072), int64 labels (N,)).

    Unpickled without resolving any name but numpy's array constructors; DataError naming the
    file when it is not a batch, refers to anything else, or its labels do not fit its images
    (fewer labels than images, or a label outside the data set's classes).
    """
    import numpy as np

    key, classes = CIFAR_LABELS[name]

    def bad(what: str) -> DataError:
        return DataError(f"not a CIFAR python batch: {what}", file=path,
                         hint=f"replace the archive with the python version from {CIFAR_SOURCE}")

    try:
        with open(path, "rb") as fh:
            batch = _ArrayUnpickler(fh, encoding="bytes").load()
    except MemoryError:
        raise
    except Exception as e:  # anything a crafted or damaged file makes the unpickler raise
        raise bad(str(e) or type(e).__name__) from None
    if not isinstance(batch, dict) or b"data" not in batch or key not in batch:
        raise bad(f"it has no {b'data'!r} and {key!r} entries")
    images, labels = batch[b"data"], np.asarray(batch[key])
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 \
            or images.shape[1] != 3 * 32 * 32:
        raise bad("its data is not a uint8 array of 3072 values per image")
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise bad(f"its {key!r} are not whole numbers")
    if len(labels) != len(images):
        raise bad(f"it has {len(images)} images but {len(labels)} labels")
    if labels.size and not 0 <= labels.min() <= labels.max() < classes:
        worst = labels.min() if labels.min() < 0 else labels.max()
        raise bad(f"label {worst} is outside the {classes} classes (0-{classes - 1})")
    return images, labels.astype(np.int64)


# Leading bytes of each image format the loader reads (WebP: RIFF, a size, then WEBP).
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM",
          b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+",  # TIFF, BigTIFF
          b"P1", b"P2", b"P3", b"P4", b"P5", b"P6")


def image_header_problem(head: bytes) -> str | None:
    """Why the first 16 bytes of a file are not those of an image, or None if they are."""
    if not head:
        return "the file is empty (0 bytes)"
    if head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return None
    return "its first bytes are not those of a JPEG, PNG, GIF, BMP, WebP, TIFF or PPM image"


def check_files(data: DataConfig, on_file: Callable[[], None] | None = None) -> int:
    """The cheap check of a data folder already laid out right (``validate_data``).

    An image folder: every class folder has an image in each split, every file in a class
    folder has an image extension and an image header (16 bytes read; nothing is decoded).
    A CIFAR archive: every batch is read safely and its labels fit its images. Returns the
    number of images; the first problem is a DataError naming the file and what to do.
    """
    root = Path(data.root).expanduser()
    if data.name in CIFAR_FILES:
        base = cifar_dir(root, data.name)
        _, train, test = CIFAR_FILES[data.name]
        return sum(len(read_cifar_batch(base / f, data.name)[1]) for f in train + test)
    count = 0
    for split in FOLDER_SPLITS:
        for c in class_names(root / split):
            found = 0
            for rel, entry in folder_entries(root / split / c):
                _check_entry(entry, rel)
                found += 1
                if on_file is not None:
                    on_file()
            if not found:
                raise DataError(f"class '{c}' has no images in {split}/", file=root / split / c,
                                hint="add images to it, or remove this class from every split")
            count += found
    return count


def _check_entry(entry: os.DirEntry, rel: str) -> None:
    path = Path(entry.path)
    if not _is(entry.is_file):  # follows links: a broken link, a link loop, a pipe or a socket
        raise DataError("not a readable file (a broken link or a link loop?)", file=path,
                        hint="remove it from the class folder")
    if not is_image_name(rel):
        raise DataError(f"not an image file (images end in {', '.join(IMAGE_SUFFIXES)})",
                        file=path, hint="move it out of the class folder, or rename it if it is "
                        "an image")
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as e:
        raise UnreadableImage(f"cannot be read ({e.strerror or e})", file=path,
                              hint="check its permissions, or remove it") from None
    problem = image_header_problem(head)
    if problem:
        raise UnreadableImage(f"not an image: {problem}", file=path,
                              hint="replace or remove it")


def read_image(path: Path) -> Any:
    """Decode one image file to an 8-bit RGB PIL image; UnreadableImage naming it otherwise.

    Every mode becomes RGB one way. Grey (1, L) is copied to the three channels; 16-bit grey
    (I;16, and I holding 16-bit values, as Pillow opens 16-bit PNGs) is scaled to 8 bits as
    value / 257, so 65535 is 255 and nothing is clipped; wider I values are scaled from the
    32-bit range. Palette images take their palette's colours; CMYK and the other modes go
    through Pillow's conversion. Transparency (RGBA, LA, PA, or a palette's, grey or RGB
    image's transparent colour) is composited on black: a pixel becomes its colour times its
    opacity, so a fully transparent one is black whatever colour the file stored there.
    """
    from PIL import Image

    img = None
    try:
        img = Image.open(path)
        img.load()
    except MemoryError:
        raise
    except Exception as e:  # Pillow raises many types for a damaged file; all are the file's
        if img is not None:
            img.close()
        raise UnreadableImage(f"cannot decode this image ({e})", file=path,
                              hint="find every unreadable image with 'ablate plan "
                              "--deep-data-check SWEEP.yaml', then fix or remove them") from None
    with img:
        return to_rgb(img)


def to_rgb(img: Any) -> Any:
    """``img`` as 8-bit RGB, converted as :func:`read_image` documents."""
    import numpy as np
    from PIL import Image

    if img.mode.startswith("I"):
        value = np.asarray(img, dtype=np.float64)
        wide = img.mode == "I" and value.size and value.max() > 65535
        value = value * (255 / (2**31 - 1)) if wide else value / 257
        img = Image.fromarray(np.clip(np.rint(value), 0, 255).astype(np.uint8), "L")
    if img.mode == "P" or "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        black = Image.new("RGBA", img.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, img.convert("RGBA")).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


# -- layout: what each data set needs on disk, checked without reading an image --------------

_LAYOUT = {
    "cifar10": "ROOT/cifar-10-batches-py/{data_batch_1..5,test_batch} (the extracted python "
               "pickle archive; ROOT may also be that folder itself)",
    "cifar100": "ROOT/cifar-100-python/{train,test} (the extracted python pickle archive; "
                "ROOT may also be that folder itself)",
    "imagefolder": "ROOT/train/CLASS/*.jpg and ROOT/val/CLASS/*.jpg, one folder per class, "
                   "the same class folders in both",
}


def validate_data(cfg: DataConfig) -> None:
    """Check a DataConfig without loading images; raise DataError naming the path and layout."""
    if cfg.name not in DATA_NAMES:
        raise DataError(f"unknown data set {cfg.name!r}", key="data.name",
                        hint=unknown_name_hint(cfg.name, DATA_NAMES))
    if cfg.img_size < 8:
        raise DataError(f"img_size {cfg.img_size} is too small", key="data.img_size",
                        hint="use 8 or more (the nano models expect 32)")
    if cfg.name == "digits" and not 0 < cfg.val_fraction < 1:
        raise DataError(f"val_fraction {cfg.val_fraction} is not in (0, 1)",
                        key="data.val_fraction", hint="e.g. 0.2")
    if cfg.name == "synthetic" and cfg.num_classes is not None and cfg.num_classes < 2:
        raise DataError("synthetic data needs at least 2 classes", key="data.num_classes")
    if cfg.name in CIFAR_FILES:
        _cifar_dir(cfg)
    elif cfg.name == "imagefolder":
        _folder_classes(cfg)


def _require_root(cfg: DataConfig) -> Path:
    if not cfg.root:
        raise DataError(f"data set {cfg.name!r} needs a folder", key="data.root",
                        hint=f"set data.root; expected layout: {_LAYOUT[cfg.name]}")
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError("data folder does not exist", file=root, key="data.root",
                        hint=f"expected layout: {_LAYOUT[cfg.name]}")
    return root


def _cifar_dir(cfg: DataConfig) -> Path:
    root = _require_root(cfg)
    _, train, test = CIFAR_FILES[cfg.name]
    base = cifar_dir(root, cfg.name)
    missing = [f for f in train + test if not (base / f).is_file()]
    if missing:
        raise DataError(f"missing {', '.join(missing)}", file=base, key="data.root",
                        hint=f"expected layout: {_LAYOUT[cfg.name]}")
    return base


def _folder_classes(cfg: DataConfig) -> dict[str, list[str]]:
    """Class folder names of ROOT/train and ROOT/val (each non-empty, the same in both)."""
    root = _require_root(cfg)
    found = {}
    for split in ("train", "val"):
        d = root / split
        if not d.is_dir():
            raise DataError(f"no {split}/ folder", file=root, key="data.root",
                            hint=f"expected layout: {_LAYOUT['imagefolder']}")
        classes = class_names(d)
        if not classes:
            raise DataError("no class folders", file=d, key="data.root",
                            hint=f"expected layout: {_LAYOUT['imagefolder']}")
        if len(classes) == 1:  # it would train to 100% and say nothing
            raise DataError(f"one class folder ({classes[0]}): a classifier needs two or more",
                            file=d, key="data.root",
                            hint=f"expected layout: {_LAYOUT['imagefolder']}")
        stray = _loose_image(d)
        if stray:  # never read: an image belongs to the class folder it is in
            raise DataError("an image outside the class folders would be left out", file=stray,
                            key="data.root", hint="move it into its class folder; "
                            f"expected layout: {_LAYOUT['imagefolder']}")
        found[split] = classes
    if found["train"] != found["val"]:
        diff = sorted(set(found["train"]) ^ set(found["val"]))
        raise DataError(f"train/ and val/ have different class folders ({', '.join(diff[:5])})",
                        file=root, key="data.root",
                        hint=f"give both splits the same classes; layout: {_LAYOUT['imagefolder']}")
    return found


def _loose_image(split_dir: Path) -> Path | None:
    """The first image file directly in a split folder (beside the class folders), if any."""
    with os.scandir(split_dir) as entries:
        for e in sorted(entries, key=lambda e: e.name):
            if not e.name.startswith(".") and is_image_name(e.name) and _is(e.is_file):
                return Path(e.path)
    return None


def check_data_unchanged(trials: list[Any]) -> None:
    """DataError unless each trial's data folder is there, laid out as its loader needs, with
    the content its id was planned with (``Trial.data_fingerprint``, from sweep.json).

    For a resumed run, which does not plan again: a folder gone or changed since would be met
    by the trials one by one, or, changed, would silently continue them on other data under
    the old ids.
    """
    seen: set[tuple[DataConfig, str]] = set()
    for t in trials:
        data, planned = t.config.data, t.data_fingerprint
        if not data.root or planned is None or (data, planned) in seen:
            continue
        seen.add((data, planned))
        try:
            validate_data(data)
            now = data_fingerprint(data)
        except OSError as e:
            raise DataError(f"cannot read the data folder ({e.strerror or e})", file=data.root,
                            key="data.root", hint="check the folder's permissions") from None
        except DataError as e:
            e.what = f"the run's data: {e.what}"
            e.hint = "restore the folder the run was planned with, then resume again"
            raise
        if now != planned:
            raise DataError(f"the folder's content changed since the run was planned (files "
                            f"fingerprint {planned}, now {now})", file=data.root,
                            key="data.root", hint="restore it as it was to resume, or run "
                            "the sweep file again: other data gives new trial ids")
