"""Checking a data folder's files before a launch, once per content.

Two levels, each remembered per data fingerprint (``ablate.datafiles.data_fingerprint``) and
folder in ``data-checks/`` of ablate's cache folder (``$ABLATE_CACHE_DIR``, else
``$XDG_CACHE_HOME/ablate``, else ``~/.cache/ablate``), so a second plan of the same data is
instant:

- ``files`` (what ``ablate plan`` always does): ``ablate.datafiles.check_files``, every class
  has images in every split, every file has an image name and header, CIFAR batches are read
  safely and their labels fit;
- ``decoded`` (``--deep-data-check``): on top of that, every image is decoded once, exactly
  as a trial's loader decodes it, in several processes for large folders.

The fingerprint covers the file list, not the bytes: a file damaged in place after a check
passed is only met by the trial that reads it (a data error naming it). Digits and synthetic
data have no files and nothing to check. Nothing here prints; progress goes to a callback.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ablate.config import DataConfig
from ablate.datafiles import (
    CIFAR_FILES,
    check_files,
    folder_listing,
    read_image,
)
from ablate.errors import DataError, UnreadableImage

CHECK_VERSION = 1  # raise when a check or the RGB conversion changes: old results then expire
LEVELS = ("files", "decoded")
_CHUNK = 256  # images per task of the decoding processes
_POOL_FROM = 2000  # fewer images are decoded in this process (starting workers costs more)
_SHOWN = 5  # unreadable images named in the error


@dataclass(frozen=True)
class DataCheck:
    """What a check found: the level reached, the number of images, whether it was cached."""

    level: str
    images: int
    cached: bool


def cache_dir() -> Path:
    """Where check results are kept: ``data-checks/`` in ablate's cache folder."""
    from ablate.modelcache import cache_dir as ablate_cache

    return ablate_cache() / "data-checks"


def check_data(data: DataConfig, fingerprint: str | None, *, deep: bool = False,
               on_progress: Callable[[int, int], None] | None = None,
               workers: int | None = None) -> DataCheck | None:
    """Check ``data``'s files (``deep``: decode every image too), unless done before.

    The folder's layout must have been checked (``ablate.datafiles.validate_data``). The first
    problem of the cheap check is a DataError naming the file; the deep check decodes every
    image and names all that fail in one DataError. ``on_progress(done, total)`` is called
    while images are decoded. None for data without files.
    """
    if not data.root or fingerprint is None:
        return None
    level = LEVELS[deep]
    path = _cache_file(data, fingerprint)
    known = _read_cache(path)
    if known and LEVELS.index(known["level"]) >= LEVELS.index(level):
        return DataCheck(known["level"], known["images"], cached=True)
    images = known["images"] if known else check_files(data)
    if deep and data.name not in CIFAR_FILES:  # a CIFAR batch is raw pixels: read is decoded
        _decode_all(_listing(data), on_progress, workers)
    _write_cache(path, {"version": CHECK_VERSION, "fingerprint": fingerprint, "level": level,
                        "root": str(Path(data.root).expanduser()), "images": images,
                        "checked_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return DataCheck(level, images, cached=False)


def _listing(data: DataConfig) -> list[str]:
    root = Path(data.root).expanduser()
    return [str(root / split / rel) for split, files in folder_listing(root).items()
            for rel in files]


def _decode_all(paths: list[str], on_progress: Callable[[int, int], None] | None,
                workers: int | None) -> None:
    chunks = [paths[i:i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    workers = workers or (min(os.cpu_count() or 1, 8) if len(paths) >= _POOL_FROM else 1)
    bad: list[tuple[str, str]] = []
    done = 0
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = pool.map(_decode_chunk, chunks)
            for chunk, found in zip(chunks, results):
                done, bad = done + len(chunk), bad + found
                if on_progress is not None:
                    on_progress(done, len(paths))
    else:
        for chunk in chunks:
            done, bad = done + len(chunk), bad + _decode_chunk(chunk)
            if on_progress is not None:
                on_progress(done, len(paths))
    if len(bad) == 1:
        raise UnreadableImage(bad[0][1], file=bad[0][0], hint="fix or remove it, then check "
                              "again")
    if bad:
        shown = ", ".join(p for p, _ in bad[:_SHOWN]) + (
            f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else "")
        raise DataError(f"{len(bad)} of {len(paths)} images cannot be decoded: {shown} "
                        f"(the first: {bad[0][1]})", hint="fix or remove them, then check again")


def _decode_chunk(paths: list[str]) -> list[tuple[str, str]]:
    """(path, what is wrong) for each image of ``paths`` that cannot be decoded.

    Plain strings come back: an AblateError's file and hint do not survive pickling.
    """
    bad = []
    for p in paths:
        try:
            read_image(Path(p)).close()
        except UnreadableImage as e:
            bad.append((p, e.what))
    return bad


def _cache_file(data: DataConfig, fingerprint: str) -> Path:
    root = str(Path(data.root).expanduser().resolve())
    where = hashlib.sha256(f"{CHECK_VERSION}\n{root}".encode()).hexdigest()[:8]
    return cache_dir() / f"{fingerprint}-{where}.json"


def _read_cache(path: Path) -> dict | None:
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(known, dict) and known.get("version") == CHECK_VERSION \
        and known.get("level") in LEVELS and isinstance(known.get("images"), int)
    return known if ok else None


def _write_cache(path: Path, entry: dict) -> None:
    """Best effort: a cache that cannot be written only means checking again next time."""
    from ablate.files import atomic_file

    try:
        with atomic_file(path) as f:
            json.dump(entry, f, indent=1)
    except OSError:
        pass
