"""The package's layers: each module imports only from its own layer and the layers it builds on.

    core     errors, config, files, record, failures, plugins, provenance: what every layer shares
    build    models, data, augment, checkpoint, caches: how one model and one data set are made
    sweep    sweepfile, expected, spec: reading a sweep file
    plan     plan: a sweep file becomes trials (checks models and data, so it builds on build)
    run      train, distributed, curves, bookkeeping, estimate, runner and its backends
             (raybackend with raycluster and raytrain, inprocess): trials run (on one process or several
             data-parallel ones) and are recorded (never re-planned here), or a few of their
             steps are timed
    results  rows, columns, collect, stats, claims, setting, report, figures (with labels):
             records become tables, verdicts and figures (no torch, no run)
    cli      the command line and the logic of its management commands (manage: reset, prune),
             which may use everything

Every import counts, also those inside functions (they are how heavy libraries load late, and a
late import across layers is still a dependency). A new upward import fails this test: move
the shared code down to the layer both need, or add the module to the right layer here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ablate

PACKAGE = Path(ablate.__file__).parent
LAYERS = {
    "core": ["ablate.errors", "ablate.config", "ablate.files", "ablate.record", "ablate.failures",
             "ablate.plugins", "ablate.provenance"],
    "build": ["ablate.models", "ablate.data", "ablate.datafiles", "ablate.augment",
              "ablate.checkpoint", "ablate.modelcache", "ablate.deepcheck"],
    "sweep": ["ablate.sweepfile", "ablate.expected", "ablate.spec"],
    "plan": ["ablate.plan"],
    "run": ["ablate.train", "ablate.devices", "ablate.distributed", "ablate.curves", "ablate.bookkeeping",
            "ablate.runner", "ablate.raybackend", "ablate.raycluster", "ablate.raytrain", "ablate.inprocess",
            "ablate.estimate"],
    "results": ["ablate.rows", "ablate.columns", "ablate.collect", "ablate.stats",
                "ablate.claims", "ablate.setting", "ablate.report", "ablate.figures", "ablate.labels"],
    "cli": ["ablate.cli", "ablate.__main__", "ablate.manage"],
}
MAY_IMPORT = {
    "core": {"core"},
    "build": {"core", "build"},
    "sweep": {"core", "sweep"},
    "plan": {"core", "build", "sweep", "plan"},
    "run": {"core", "build", "run"},
    "results": {"core", "results"},
    "cli": set(LAYERS),
}


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str | None:
    for layer, prefixes in LAYERS.items():
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return layer
    return None


def _imported(tree: ast.AST) -> list[tuple[str, int]]:
    """The ablate modules a file imports, with the line; ``from ablate import x`` is ablate.x."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("ablate.")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "ablate":
                found += [(f"ablate.{a.name}", node.lineno) for a in node.names
                          if (PACKAGE / a.name).is_dir() or (PACKAGE / f"{a.name}.py").is_file()]
            elif node.module.startswith("ablate."):
                found.append((node.module, node.lineno))
    return found


def _modules() -> dict[str, Path]:
    return {_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if _name(p) != "ablate"}


def test_every_module_has_a_layer():
    assert [m for m in _modules() if _layer(m) is None] == []


def test_no_module_imports_from_a_layer_it_does_not_build_on():
    offenders = []
    for module, path in _modules().items():
        layer = _layer(module)
        if layer is None:
            continue  # reported by test_every_module_has_a_layer
        for target, line in _imported(ast.parse(path.read_text())):
            other = _layer(target)
            if other is not None and other not in MAY_IMPORT[layer]:
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module} ({layer}) "
                                 f"imports {target} ({other})")
    assert offenders == []


def test_the_checker_sees_imports_inside_functions_and_from_the_package():
    # The rule must not be vacuous: a late import and a package-relative one are both seen.
    code = "def f():\n    from ablate.runner import run_plan\n\nfrom ablate import collect\n"
    assert sorted(_imported(ast.parse(code))) == [("ablate.collect", 4), ("ablate.runner", 2)]
    assert "run" not in MAY_IMPORT["results"] and "plan" not in MAY_IMPORT["run"]
