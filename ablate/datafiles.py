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
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ablate.config import DataConfig

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
FOLDER_SPLITS = ("train", "val")
CIFAR_FILES = {  # name -> (archive folder, train batches, test batches)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]),
    "cifar100": ("cifar-100-python", ["train"], ["test"]),
}
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
    found: list[str] = []
    stack = [("", class_dir)]
    while stack:
        prefix, folder = stack.pop()
        for e in os.scandir(folder):
            if e.name.startswith("."):
                continue
            if e.is_dir(follow_symlinks=False):
                stack.append((f"{prefix}{e.name}/", Path(e.path)))
            elif os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES:
                found.append(prefix + e.name)
    return sorted(found)


def cifar_dir(root: Path, name: str) -> Path:
    """The archive folder of a CIFAR root: ROOT itself or ROOT/<archive folder>."""
    folder = CIFAR_FILES[name][0]
    return root if root.name == folder else root / folder


def data_fingerprint(data: DataConfig) -> str | None:
    """16 hex digits identifying the content of ``data``'s folder; None if it has no folder.

    The folder must exist with the expected layout (``ablate.data.validate_data`` checks that
    first and says what is wrong); OSError otherwise.
    """
    if not data.root:
        return None
    root = Path(data.root).expanduser()
    h = hashlib.sha256(f"{data.name}\n".encode())
    if data.name in CIFAR_FILES:
        _hash_cifar(h, cifar_dir(root, data.name), data.name)
    else:
        _hash_folder(h, root)
    return h.hexdigest()[:16]


def _hash_folder(h, root: Path) -> None:
    classes = class_names(root / FOLDER_SPLITS[0])
    h.update(("classes:" + "\n".join(classes) + "\n").encode())
    for split in FOLDER_SPLITS:
        listing = [f"{c}/{f}" for c in class_names(root / split)
                   for f in image_files(root / split / c)]
        h.update(f"{split}:{len(listing)}\n".encode())
        h.update(("\n".join(listing) + "\n").encode())


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
