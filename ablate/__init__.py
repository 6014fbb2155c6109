"""ablate: reproducible ablation studies of local attention and dynamic depth-wise convolution.

After ``import ablate``, every ablate model is registered with timm, so
``timm.create_model("dwnet_tiny")`` works, whichever of the two was imported first. The
registration happens when timm is imported, not when ablate is: ``import ablate`` alone (and so
the ``ablate`` command line) does not load torch or timm, which take seconds to import.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"


def _register_models() -> None:
    import ablate.models  # noqa: F401  (registers the models with timm)


class _AfterTimm(importlib.abc.MetaPathFinder):
    """Registers ablate's models the moment timm has finished importing.

    A post-import hook: it finds timm's own spec through the other finders and wraps its
    loader, then takes itself off ``sys.meta_path`` (it is needed once per process).
    """

    def find_spec(self, name, path=None, target=None):
        if name != "timm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader

        class Loader(importlib.abc.Loader):
            def create_module(self, spec):
                return loader.create_module(spec)

            def exec_module(self, module):
                loader.exec_module(module)
                _register_models()

        spec.loader = Loader()
        return spec


if "timm" in sys.modules:
    _register_models()
elif not any(isinstance(f, _AfterTimm) for f in sys.meta_path):
    sys.meta_path.insert(0, _AfterTimm())
