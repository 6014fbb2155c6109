"""Golden plans: every file in sweeps/ plans to exactly the trials in tests/golden/plans/.

A golden file lists each trial's id, label, role, seed, varied axes, expected results,
resources and its full configuration as dotted keys, so a change to a sweep, to the planner or
to a config default shows up as a readable diff. Regenerate after an intended change with
``ABLATE_UPDATE_GOLDEN=1 python -m pytest tests/plan/test_golden.py`` and review the diff.
"""

import json
import os
from pathlib import Path

import pytest

from ablate.config import flatten
from ablate.plan import load_plan

ROOT = Path(__file__).resolve().parents[2]
SWEEPS = sorted((ROOT / "sweeps").rglob("*.yaml"))
GOLDEN = ROOT / "tests" / "golden" / "plans"


def golden_path(sweep: Path) -> Path:
    rel = sweep.relative_to(ROOT / "sweeps").with_suffix("")
    return GOLDEN / ("__".join(rel.parts) + ".json")


def plan_record(sweep: Path) -> dict:
    # Paper-scale sweeps name an ImageNet folder that does not exist here.
    s, trials = load_plan(sweep, check_data=False)
    return {
        "sweep": s.name, "description": s.description, "max_trials": s.max_trials,
        "max_concurrent": s.max_concurrent, "max_retries": s.max_retries,
        "trials": [{"id": t.id, "label": t.arm, "role": t.role, "seed": t.config.seed,
                    "varied": t.varied, "expected": t.expected,
                    "resources": {"cpus": t.resources.cpus, "gpus": t.resources.gpus},
                    "config": flatten(t.config.to_dict())} for t in trials],
    }


def test_every_sweep_has_a_golden_plan():
    assert SWEEPS, "no sweep files found"
    expected = {golden_path(p).name for p in SWEEPS}
    present = {p.name for p in GOLDEN.glob("*.json")}
    if not os.environ.get("ABLATE_UPDATE_GOLDEN"):
        assert present == expected, "golden plans and sweeps/ differ: regenerate (see docstring)"


@pytest.mark.parametrize("sweep", SWEEPS, ids=[str(p.relative_to(ROOT / "sweeps")) for p in SWEEPS])
def test_plan_matches_golden(sweep):
    record = json.loads(json.dumps(plan_record(sweep)))  # tuples -> lists, as on disk
    path = golden_path(sweep)
    if os.environ.get("ABLATE_UPDATE_GOLDEN"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    assert path.exists(), f"no golden plan {path.name}: regenerate (see the module docstring)"
    assert record == json.loads(path.read_text())
