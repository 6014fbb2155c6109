"""Plugins: a user's modules that register mixers, block styles or models before a plan.

A plugin is any importable module that calls ``ablate.models.register_mixer``,
``register_block`` or ``register_arch`` when it is imported. It is named

- in a sweep file (``plugins: [my_lab.mixers]``), or with ``--plugin MODULE`` on
  ``ablate plan/run/train``: imported from the working directory or the environment;
- by an installed package, through the entry-point group ``ablate.plugins``
  (``[project.entry-points."ablate.plugins"] my_lab = "my_lab.mixers"``): always loaded.

The driver loads them before planning; every Ray worker loads the same list (with the
driver's working directory on its import path) before it builds a model, so a plugin mixer
trains on a cluster too. A plugin that fails to import is a :class:`PluginError` naming it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path

from ablate.errors import AblateError

ENTRY_POINT_GROUP = "ablate.plugins"
_LOADED: dict[str, None] = {}  # every plugin module this process has imported, in order
_REGISTERED = [0]  # how many mixers, blocks and models code outside ablate has registered


def note_registration() -> None:
    """Count one registration by code outside ablate (called by ablate.models' register_*
    functions), so that a plugin whose import registers nothing can be told so."""
    _REGISTERED[0] += 1


def loaded_plugins() -> list[str]:
    """The plugin modules imported so far in this process (what a cache must key on)."""
    return list(_LOADED)


class PluginError(AblateError):
    """A plugin module cannot be imported, or fails while registering."""


def load_plugins(names: Iterable[str], *, search: str | Path | None = None,
                 source: str | None = None) -> list[str]:
    """Import the plugin modules ``names`` and the installed entry points; what was loaded.

    ``search``: a folder put first on the import path (the driver's working directory, for a
    worker). ``source``: where the names came from, for errors (a sweep file, ``--plugin``).
    Importing a module twice is free, so callers need not track what is loaded.
    """
    folder = str(Path(search if search is not None else Path.cwd()).resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    loaded = []
    for ep in _entry_points():
        _import(ep.value.split(":")[0], f"entry point {ep.name!r} of group {ENTRY_POINT_GROUP}",
                load=ep.load)
        loaded.append(ep.value)
    for name in names:
        _import(name, source)
        loaded.append(name)
    return loaded


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)


def _registrations() -> tuple[int, int]:
    """(ablate's registrations by code outside it, timm's models): what a plugin adds to."""
    from timm.models import list_models

    return _REGISTERED[0], len(list_models())


def _import(name: str, source: str | None, load=None) -> None:
    fresh = name not in sys.modules
    before = _registrations() if fresh else None
    try:
        if load is not None:
            load()
        else:
            importlib.import_module(name)
    except AblateError as e:  # the plugin's registration was refused: say which plugin
        raise PluginError(f"plugin {name!r} failed to register: {e}", file=source,
                          key="plugins") from e
    except (Exception, SystemExit) as e:  # a module that calls sys.exit() when imported too
        if isinstance(e, ModuleNotFoundError) and e.name and name.startswith(e.name):
            hint = (f"no module {e.name!r} in the working directory ({Path.cwd()}) or the "
                    "environment: run from the folder that holds it, or install it")
        else:
            frame = traceback.extract_tb(e.__traceback__)[-1]
            hint = f"raised at {frame.filename}:{frame.lineno}; fix the plugin and try again"
        raise PluginError(f"cannot import plugin {name!r} ({type(e).__name__}: {e})",
                          file=source, key="plugins", hint=hint) from e
    if fresh and _registrations() == before:  # imported again, it registers nothing anyway
        raise PluginError(f"plugin {name!r} registered no mixer, block or model", file=source,
                          key="plugins", hint="name the module that calls register_mixer, "
                          "register_block or register_arch (or timm's register_model) when it "
                          "is imported (a package's sub-module, such as my_lab.mixers)")
    _LOADED[name] = None
