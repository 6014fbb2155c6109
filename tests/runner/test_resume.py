"""Killing the driver mid-sweep, then ``ablate resume``: nothing lost, nothing trained twice.

The sweep runs in a real ``ablate run`` subprocess with its own local Ray, as a user runs it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ablate import bookkeeping, record
from tests.runner.conftest import write_sweep

pytestmark = pytest.mark.slow  # real `ablate run` drivers on Ray


def _states(results: Path) -> dict[str, str]:
    return {d.name: record.read_state(d) for d in record.list_trial_dirs(results)}


def _ablate(*args: str, **kw) -> subprocess.Popen:
    # A session of its own, so the Ray processes a killed driver leaves behind can be cleaned.
    return subprocess.Popen([sys.executable, "-m", "ablate", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)


def _kill_session(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and what it started, nothing else
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def test_sigkill_driver_then_resume_finishes_every_trial_exactly_once(tmp_path):
    sweep = write_sweep(tmp_path / "s.yaml", seeds=[0, 1, 2, 3])
    results = tmp_path / "results"
    driver = _ablate("run", str(sweep), "--results", str(results))
    try:
        deadline = time.time() + 240
        while time.time() < deadline and driver.poll() is None:
            states = _states(results)
            if "done" in states.values() and "running" in states.values():
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"never had a done and a running trial: {_states(results)}, "
                                 f"{driver.poll()=}")
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        _kill_session(driver)

    before = _states(results)
    finished = {tid for tid, s in before.items() if s == "done"}
    assert finished and len(finished) < 4
    stamps = {tid: [(p.name, p.stat().st_mtime_ns) for p in sorted(d.iterdir()) if p.is_file()]
              for tid in finished for d in [record.trial_dir(results, tid)]}
    # Nobody holds the lock now, so a trial the dead driver left running reads as interrupted.
    assert not bookkeeping.driver_running(results)
    assert bookkeeping.trial_status(record.read_trial(record.trial_dir(results, next(
        t for t, s in before.items() if s == "running"))), results, driver_alive=False,
        now=time.time() + bookkeeping.STALE_S + 1).state == record.INTERRUPTED

    resume = _ablate("resume", str(results))
    try:
        out, _ = resume.communicate(timeout=300)
    finally:
        _kill_session(resume)
    assert resume.returncode == 0, out
    assert "already finished" in out and f"{len(finished)} already finished" in out

    after = _states(results)
    assert len(after) == 4 and set(after.values()) == {"done"}
    for tid in finished:  # not trained again: not a single file of theirs was rewritten
        d = record.trial_dir(results, tid)
        assert [(p.name, p.stat().st_mtime_ns) for p in sorted(d.iterdir()) if p.is_file()] \
            == stamps[tid]
    for tid in after:
        lines = (record.trial_dir(results, tid) / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
