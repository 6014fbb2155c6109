"""Files and folders as ablate writes them: whole files atomically, folders with a clear error.

Every file ablate writes whole (JSON records, checkpoints, tables, figures, reports) goes
through :func:`atomic_file`: a temporary file beside it, then a rename, so a crash never leaves
a half-written one, and readers see the old file or the new one.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ablate.errors import RecordError


def unreadable(path: Path, e: OSError) -> RecordError:
    """The RecordError of a record file that cannot be opened: a folder in its place, or an
    error of the file system."""
    what = "is a folder, not a file" if isinstance(e, IsADirectoryError) else \
        f"cannot be read ({e.strerror or e})"
    return RecordError(what, file=path, hint="delete it or move it away (or delete the trial "
                       "folder to recompute the trial)")


def not_a_folder(path: Path) -> RecordError:
    return RecordError("is a file, not a folder", file=path,
                       hint="delete it or move it away, then run the command again")


def output_dir(path: Path) -> Path:
    """Make the folder ``path`` (and its parents); RecordError when a file is in the way."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        bad = next((p for p in (*path.parents[::-1], path) if p.exists() and not p.is_dir()),
                   path)
        raise not_a_folder(bad) from None
    return path


def _create_new(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_EXCL, 0o666)


def _open_temp(path: Path, mode: str) -> tuple[Path, IO[Any]]:
    """A new file beside ``path``, named for this process and a random token.

    Two writers of the same path (two processes, or two threads) never share a temporary
    file. Created with mode 0o666 less the umask, as ``open`` would make it.
    """
    output_dir(path.parent)
    if path.is_dir():  # the rename would fail once everything is written
        raise RecordError("is a folder, not a file", file=path,
                          hint="delete it or move it away, then run the command again")
    while True:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            return tmp, open(tmp, mode, opener=_create_new)
        except FileExistsError:
            continue


@contextmanager
def atomic_files(paths: list[Path], mode: str = "w") -> Iterator[list[IO[Any]]]:
    """Open a temporary file beside each of ``paths``; they replace them, in order, only if the
    block succeeds.

    Readers see the old file or the new one, never a part: the data is fsynced before the
    renames, and on any error every temporary file is removed and ``paths`` left as they were.
    Several files are renamed only once all of them are written (tables that belong together).
    """
    temps: list[tuple[Path, IO[Any]]] = []
    try:
        for path in paths:
            temps.append(_open_temp(path, mode))
        yield [f for _, f in temps]
        for _, f in temps:
            f.flush()
            os.fsync(f.fileno())
            f.close()
        for (tmp, _), path in zip(temps, paths):
            os.replace(tmp, path)
    finally:
        for tmp, f in temps:
            f.close()
            tmp.unlink(missing_ok=True)  # gone already once renamed


@contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` that replaces it only if the block succeeds
    (see :func:`atomic_files`); the one writer of every whole file ablate writes."""
    with atomic_files([path], mode) as (f,):
        yield f


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as f:
        json.dump(obj, f, indent=1, sort_keys=True, default=str)
