"""What the planner learns about a model configuration, kept between runs (torch-free).

Checking that a model configuration can be built, and counting its parameters and
multiply-adds, needs torch and timm, whose import alone takes seconds. Both answers depend only
on the configuration and on the code that builds it, so ``ablate plan`` keeps them in a small
JSON file and a second plan of the same sweep answers without importing either.

An entry's key is a hash of the configuration and of a *code stamp*: the versions of ablate,
timm and torch, the size and modification time of every file of ``ablate.models``, and the
names and files of the plugins loaded in this process. Editing a model file, upgrading timm or
loading another plugin gives new keys, so a stale answer is never used; old entries are
dropped once the file holds :data:`MAX_ENTRIES`.

The file is ``models.json`` in the cache folder: ``$ABLATE_CACHE_DIR``, else
``$XDG_CACHE_HOME/ablate``, else ``~/.cache/ablate``. Deleting it is always safe. A cache that
cannot be read or written is ignored (the answers are recomputed), never an error.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import ablate
from ablate.files import atomic_file

MAX_ENTRIES = 4096


def cache_dir() -> Path:
    """The folder ablate keeps its caches in (see the module docstring)."""
    if os.environ.get("ABLATE_CACHE_DIR"):
        return Path(os.environ["ABLATE_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "ablate"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _files(folder: Path) -> list[list]:
    return [[str(p.relative_to(folder)), st.st_size, st.st_mtime_ns]
            for p in sorted(folder.rglob("*.py")) for st in [p.stat()]]


@lru_cache(maxsize=1)
def _library_stamp() -> tuple:
    models = Path(ablate.__file__).parent / "models"
    return (ablate.__version__, _version("timm"), _version("torch"), _files(models))


def code_stamp(plugins: list[str]) -> str:
    """A hash of everything besides the configuration that a cached answer depends on."""
    loaded = []
    for name in sorted(set(plugins)):
        file = getattr(sys.modules.get(name), "__file__", None)
        st = os.stat(file) if file and os.path.exists(file) else None
        loaded.append([name, file, st and st.st_size, st and st.st_mtime_ns])
    blob = json.dumps([_library_stamp(), loaded], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class ModelCache:
    """Answers about model configurations, read once and written back by :meth:`save`."""

    def __init__(self, plugins: list[str] | tuple[str, ...] = (), path: Path | None = None):
        self.path = path or cache_dir() / "models.json"
        self.stamp = code_stamp(list(plugins))
        self._entries = self._read()
        self._dirty = False

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
            entries = data.get("entries") if isinstance(data, dict) else None
            return entries if isinstance(entries, dict) else {}
        except (OSError, ValueError):
            return {}

    def _key(self, kind: str, config: dict[str, Any]) -> str:
        blob = json.dumps([self.stamp, kind, config], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def get(self, kind: str, config: dict[str, Any]) -> Any:
        """The answer stored for ``config`` under ``kind``, or None."""
        return self._entries.get(self._key(kind, config))

    def put(self, kind: str, config: dict[str, Any], value: Any) -> None:
        key = self._key(kind, config)
        if self._entries.get(key) != value:
            self._entries.pop(key, None)  # re-inserted last: the newest entries are kept
            self._entries[key] = value
            self._dirty = True

    def save(self) -> None:
        """Write the entries back if anything changed; a failure to write is ignored."""
        if not self._dirty:
            return
        entries = dict(list(self._entries.items())[-MAX_ENTRIES:])
        try:
            with atomic_file(self.path) as f:
                json.dump({"entries": entries}, f)  # insertion order = age: not sorted
        except OSError:
            return
        self._dirty = False
