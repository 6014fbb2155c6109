"""benchmarks/gpu.py, the device check: its GPU rows' code runs through on the CPU (the dry
run), and a row that raises is a NO row that does not stop the rows after it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu.py"


@pytest.fixture(scope="module")
def gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_a_failing_check_is_one_row_and_the_next_still_runs(gpu, capsys, tmp_path):
    table = gpu.Table(tmp_path / "rows.json")

    def out_of_memory():
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    table.run("train img/s compile", out_of_memory)
    table.run("after", lambda: [("after", "1.0", "", "yes")])
    assert table.rows == [
        ("train img/s compile", "error: RuntimeError: CUDA out of memory. Tried to allocate "
         "2.00 GiB", "no error", "NO"),
        ("after", "1.0", "", "yes")]
    # each row was shown, and saved, as it came
    assert capsys.readouterr().out.count("\n") == 2
    assert [tuple(r) for r in json.loads((tmp_path / "rows.json").read_text())] == table.rows


def test_the_dry_run_goes_through_every_gpu_row(gpu, tmp_path):
    """The dry run, with no time budget left for the compiled speeds: every other row runs
    and passes, and the compiled ones are skipped (not started) and say so."""
    rows_file = tmp_path / "rows.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--budget-s", "0",
                           "--json", str(rows_file)], capture_output=True, text=True,
                          timeout=600, env=env)
    rows = json.loads(rows_file.read_text())
    log = proc.stdout[-3000:] + proc.stderr[-3000:]
    compiled = [r for r in rows if r[0].startswith("train img/s compile: ")]
    assert [r[0].split(": ", 1)[1] for r in compiled] == list(gpu.SPEED), log
    assert all(r[3] == "skipped" and "time budget" in r[1] for r in compiled)
    assert proc.returncode == 1  # a skipped target is not a met one
    others = [r for r in rows if r not in compiled]
    assert [r for r in others if r[1].startswith("error:") or r[3] not in ("yes", "")] == [], log
    checks = [r[0] for r in others]
    speed = [c for c in checks if c.startswith("train img/s eager: ")]
    assert [c.split(": ", 1)[1] for c in speed] == list(gpu.SPEED)
    assert any(c.startswith("aggregate Triton vs gather (B=2") for c in checks)
    assert "GPU-marked tests" in checks and any(c.startswith("logits CPU vs GPU: ") for c in checks)
    train = next(r for r in rows if r[0].startswith("ablate train dwnet_nano"))
    assert "result.json" in train[1] and "checkpoints" in train[1]
    # the dry run judges no speed: its figures come from toy shapes on a CPU
    assert all(r[3] == "" for r in others if r[0].startswith(("train img/s", "aggregate")))
