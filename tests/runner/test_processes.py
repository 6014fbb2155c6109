"""`ablate run` as a user runs it, in a session of its own: whether it finishes, fails or is
stopped with Ctrl-C or SIGTERM, it exits with the right status after its summary, its Ray
listens on the loopback interface only, and no process it started is left running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from ablate import raybackend, record
from ablate.plan import load_plan
from tests.runner.conftest import write_sweep
from tests.runner.procs import end_session, listening_addresses, session_pids, wait_until_gone

pytestmark = pytest.mark.slow  # real `ablate run` drivers on Ray

LOOPBACK = {"127.0.0.1", "0000:0000:0000:0000:0000:0000:0000:0001"}


def _start(*args: str, fault: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    if fault:
        env[raybackend.FAULT_ENV] = fault
    return subprocess.Popen([sys.executable, "-m", "ablate", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    """The driver's output once it exited; then nothing of its session may be left."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
        left = wait_until_gone(proc.pid, 30.0)
        killed = end_session(proc.pid) if left else []
    assert not left, f"processes left behind by the run: {left} (SIGKILL needed: {killed})"
    return out


def _wait_for_epoch(proc: subprocess.Popen, tdir) -> None:
    """Until the trial has recorded epoch 1 (then it stalls there: the injected fault)."""
    import time

    deadline = time.monotonic() + 240
    while not record.read_metrics(tdir):
        if proc.poll() is not None or time.monotonic() > deadline:
            end_session(proc.pid)
            raise AssertionError(f"the trial never recorded an epoch: {proc.communicate()[0]}")
        time.sleep(0.2)


def test_finished_and_failed_runs_leave_no_process(tmp_path, undecodable_image_folder):
    arms = (f"arms:\n  broken: {{data.name: imagefolder, data.root: '{undecodable_image_folder}',"
            " data.num_train: null, data.num_val: null}\n")
    sweep = write_sweep(tmp_path / "s.yaml", seeds=[0], arms=arms)
    proc = _start("run", str(sweep), "--results", str(tmp_path / "results"))
    out = _finish(proc)
    assert proc.returncode == 1, out
    assert "1 of 2 trials finished" in out and "failed (data)" in out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_run_prints_its_summary_exits_128_plus_signal_and_leaves_nothing(
        tmp_path, sig):
    sweep = write_sweep(tmp_path / "s.yaml", seeds=[0])
    _, [trial] = load_plan(sweep)
    results = tmp_path / "results"
    proc = _start("run", str(sweep), "--results", str(results), fault="stall@epoch=1")
    tdir = record.trial_dir(results, trial.id)
    _wait_for_epoch(proc, tdir)
    # while the run is mid-trial: every Ray process of it listens on the loopback only
    listening = listening_addresses(session_pids(proc.pid))
    assert listening and listening <= LOOPBACK, listening
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C at a terminal: the whole foreground group
    else:
        os.kill(proc.pid, sig)  # `kill PID`, as a scheduler stops a job
    out = _finish(proc)
    assert proc.returncode == 128 + sig, out
    assert "0 of 1 trials finished (0 in this run), 0 failed, 1 unfinished" in out
    assert f"stopped by {sig.name}" in out and f"resume with: ablate resume {results}" in out
    assert out.rstrip().endswith("tables and figures not updated")
    assert "Traceback" not in out and "\x1b[" not in out
    assert [row["epoch"] for row in record.read_metrics(tdir)] == [1]
