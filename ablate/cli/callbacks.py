"""``--callback MODULE:FACTORY``: a user's Ray Tune callbacks, attached to a run.

MODULE is imported as a plugin is (from the working directory, or installed), FACTORY() is
called, and what it returns (one ``ray.tune.Callback`` or a list of them) goes to Tune beside
ablate's own, so an MLflow or W&B logger sees every trial's results. Everything is checked
before the run starts, including that Tune can pickle the callbacks (it saves them with its
state): a mistake is a :class:`CallbackError` naming the flag.

The check needs Ray's Callback class without this module importing Ray (only the runner may):
an object can only be a ``ray.tune.Callback`` if ``ray.tune`` is already imported, by the
user's module, so the class is looked up in ``sys.modules``.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ablate.errors import AblateError

FLAG = "--callback"


class CallbackError(AblateError):
    """A ``--callback`` cannot be imported, called, or does not give Tune callbacks."""


def load_callbacks(specs: Iterable[str]) -> list[Any]:
    """The Tune callbacks that the ``MODULE:FACTORY`` specs make, in order."""
    out: list[Any] = []
    for spec in specs:
        made = _call(spec, _factory(spec))
        made = list(made) if isinstance(made, (list, tuple)) else [made]
        tune = sys.modules.get("ray.tune")
        base = getattr(tune, "Callback", None)
        for obj in made:
            if base is None or not isinstance(obj, base):
                what = f"the class {obj.__name__}" if isinstance(obj, type) \
                    else f"a {type(obj).__name__}"
                raise CallbackError(f"the factory returned {what}, not a ray.tune.Callback",
                                    key=f"{FLAG} {spec}",
                                    hint="return an instance of a ray.tune.Callback subclass "
                                    "(or a list of them)")
            _check_picklable(spec, obj)
        out += made
    return out


def _check_picklable(spec: str, obj: Any) -> None:
    """Tune pickles its callbacks into its state when the run starts: check it here."""
    pickler = sys.modules.get("ray.cloudpickle")  # loaded with ray.tune
    if pickler is None:
        return
    try:
        pickler.dumps(obj)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise CallbackError(f"Tune cannot save the {type(obj).__name__} the factory returned "
                            f"(it pickles its callbacks): {type(e).__name__}: {first}",
                            key=f"{FLAG} {spec}",
                            hint="create locks, open files and connections in the "
                            "callback's setup() or first event, not in its constructor") from e


def _factory(spec: str) -> Any:
    module_name, sep, attr = spec.partition(":")
    if not (sep and module_name and attr):
        raise CallbackError("expected MODULE:FACTORY", key=f"{FLAG} {spec}",
                            hint="e.g. --callback my_lab.tracking:make_callbacks")
    cwd = str(Path.cwd().resolve())
    if cwd not in sys.path:  # as plugins are imported: the working directory first
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if not (e.name and module_name.startswith(e.name)):
            raise _raised(spec, "importing it", e) from e
        raise CallbackError(f"no module {e.name!r} in the working directory ({cwd}) or the "
                            "environment", key=f"{FLAG} {spec}",
                            hint="run from the folder that holds it, or install it") from e
    except (Exception, SystemExit) as e:  # sys.exit() at import is the module's error too
        raise _raised(spec, "importing it", e) from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        names = sorted(n for n, v in vars(module).items() if callable(v) and not
                       n.startswith("_") and getattr(v, "__module__", None) == module.__name__)
        raise CallbackError(f"module {module_name!r} has no function {attr!r}" if factory is None
                            else f"{module_name}.{attr} is not callable", key=f"{FLAG} {spec}",
                            hint="name a function of it that returns the callbacks"
                            + (f" (it defines: {', '.join(names)})" if names else ""))
    return factory


def _call(spec: str, factory: Any) -> Any:
    try:
        return factory()
    except (Exception, SystemExit) as e:  # 'sys:exit' as the factory, say
        raise _raised(spec, "calling the factory", e) from e


def _raised(spec: str, doing: str, e: BaseException) -> CallbackError:
    frame = traceback.extract_tb(e.__traceback__)[-1]
    first = (str(e).strip().splitlines() or [""])[0]
    return CallbackError(f"{doing} raised {type(e).__name__}: {first}", key=f"{FLAG} {spec}",
                         hint=f"at {frame.filename}:{frame.lineno}; fix it and run again")
