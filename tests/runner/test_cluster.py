"""Joining an existing Ray cluster with --address, as a user with a cluster does it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from ablate import record
from tests.runner.conftest import write_sweep
from tests.runner.procs import end_session

pytestmark = pytest.mark.slow  # a real `ray start --head` cluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ablate(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ablate", *args], capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.fixture
def ray_head():
    """A one-node Ray cluster started the way a user starts one: ``ray start --head``.

    It is the test's own and ends with it, whatever else runs on the machine: a temp dir of
    its own (short: Ray's socket paths must fit in 107 bytes), free ports for everything that
    would otherwise take a fixed default (another Ray may hold those), and ``--block`` in a
    new session, so that ending the session ends exactly this head and its processes
    (``ray stop``, even without --force, would stop every Ray on the machine).
    """
    ray_cli = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    temp_dir = tempfile.mkdtemp(prefix="ablt-", dir="/tmp")
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    ports = {f"--{name}": _free_port() for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
        "metrics-export-port")}
    log = open(f"{temp_dir}/head.log", "w")
    head = subprocess.Popen([ray_cli, "start", "--head", "--block", f"--port={port}",
                             f"--temp-dir={temp_dir}", "--num-cpus=2",
                             "--include-dashboard=false", "--disable-usage-stats",
                             *(f"{k}={v}" for k, v in ports.items())],
                            stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    try:
        _wait_for_port(head, port, temp_dir)
        yield f"127.0.0.1:{port}"
    finally:
        end_session(head.pid)
        head.wait(timeout=30)
        log.close()
        left = _pids_mentioning(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"processes of the test's Ray head left running: {left}"


def _wait_for_port(head: subprocess.Popen, port: int, temp_dir: str) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and head.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    log = open(f"{temp_dir}/head.log").read()[-2000:]
    raise AssertionError(f"'ray start --head' did not come up: {log}")


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line names ``text`` (the head's temp dir)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_run_joins_an_existing_cluster_and_leaves_it_running(tmp_path, ray_head):
    sweep = write_sweep(tmp_path / "tiny.yaml", seeds=[0, 1])
    results = tmp_path / "results"
    # `ray start` turns on token authentication; a driver joining it says so (Ray's own rule)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
    done = _ablate("run", str(sweep), "--results", str(results), "--address", ray_head, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    dirs = record.list_trial_dirs(results)
    assert len(dirs) == 2 and {record.read_state(d) for d in dirs} == {record.DONE}
    assert (results / "trials.parquet").exists()
    # the cluster is not ours to stop: a second sweep runs on the same, still-running head,
    # joined this time through RAY_ADDRESS, as a job submitted to the cluster would
    again = write_sweep(tmp_path / "again.yaml", seeds=[2], name="again")
    second = _ablate("run", str(again), "--results", str(tmp_path / "again"),
                     env={**env, "RAY_ADDRESS": ray_head})
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"joining the Ray cluster at {ray_head} from RAY_ADDRESS" in second.stdout


@pytest.mark.parametrize("address, message", [
    ("127.0.0.1:{port}", "nothing answers at '127.0.0.1:{port}' (Connection refused)"),
    ("nonsense", "malformed cluster address 'nonsense'"),
])
def test_an_unreachable_or_malformed_address_is_one_line_and_nothing_runs(
        tmp_path, address, message):
    port = _free_port()  # nothing listens there
    sweep = write_sweep(tmp_path / "tiny.yaml", seeds=[0])
    results = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = _ablate("run", str(sweep), "--results", str(results),
                  "--address", address.format(port=port), env=env)
    assert out.returncode == 2
    assert out.stderr.strip() == (f"ablate: error: --address: {message.format(port=port)}; "
                                  + ("write HOST:PORT, ray://HOST:PORT or auto"
                                     if address == "nonsense" else
                                     "start the cluster ('ray start --head') or check the "
                                     "address with 'ray status --address ADDRESS'"))
    assert record.list_trial_dirs(results) == []
