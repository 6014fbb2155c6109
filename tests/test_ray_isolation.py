"""Only the Ray backend may import ray (ablate.raybackend, ablate.raycluster, its connection and
checks before launch, and ablate.raytrain, its Ray Train glue for data-parallel trials):
everything else, the neutral runner and the in-process backend
included, must work (and import fast) without it."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import ablate

PACKAGE = Path(ablate.__file__).parent
ALLOWED = {"ablate.raybackend", "ablate.raycluster", "ablate.raytrain"}
NOT_IMPORTABLE = {"ablate.__main__"}  # runs the CLI on import


def _modules() -> list[str]:
    names = ["ablate"]
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="ablate."):
        names.append(info.name)
    return sorted(set(names) - ALLOWED - NOT_IMPORTABLE)


def _imports_ray(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        if any(n == "ray" or n.startswith("ray.") for n in names):
            lines.append(node.lineno)
    return lines


def test_no_module_but_the_ray_backend_mentions_ray_in_an_import():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if module.endswith(".__init__"):
            module = module[: -len(".__init__")]
        if module in ALLOWED:
            continue
        lines = _imports_ray(ast.parse(path.read_text(), filename=str(path)))
        offenders += [f"{path}:{n}" for n in lines]
    assert not offenders, f"ray imported outside {sorted(ALLOWED)}: {offenders}"


def test_importing_every_other_module_does_not_load_ray():
    modules = _modules()
    assert {"ablate.cli.run", "ablate.runner", "ablate.inprocess"} <= set(modules)
    assert "ablate.raybackend" not in modules
    assert "ablate.train" in modules and "ablate.distributed" in modules
    code = ("import importlib, sys\n"
            f"for m in {modules!r}:\n"
            "    importlib.import_module(m)\n"
            "loaded = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
            "print(loaded[:5])\n"
            "sys.exit(1 if loaded else 0)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_ray_backend_itself_imports_ray_only_when_it_runs():
    code = ("import sys, ablate.raybackend, ablate.raycluster, ablate.runner\n"
            "sys.exit(1 if 'ray' in sys.modules else 0)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_scan_would_catch_a_ray_import():
    assert _imports_ray(ast.parse("import os\nfrom ray import tune\n")) == [2]
    assert _imports_ray(ast.parse("import ray.tune as t")) == [1]
    assert _imports_ray(ast.parse("from . import ray_helpers\nimport rayon")) == []
