"""Joining an existing Ray cluster with --address, as a user with a cluster does it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest

from ablate import record
from tests.runner.conftest import write_sweep


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ablate(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ablate", *args], capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.fixture
def ray_head():
    """A one-node Ray cluster started the way a user starts one: ``ray start --head``."""
    ray_cli = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([ray_cli, "start", "--head", f"--port={port}", "--num-cpus=2",
                    "--include-dashboard=false", "--disable-usage-stats"],
                   check=True, capture_output=True, env=env, timeout=180)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, env=env, timeout=180)


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
    # the cluster is not ours to stop: a second sweep runs on the same, still-running head
    again = write_sweep(tmp_path / "again.yaml", seeds=[2], name="again")
    second = _ablate("run", str(again), "--results", str(tmp_path / "again"),
                     "--address", ray_head, env=env)
    assert second.returncode == 0, second.stderr[-2000:]


@pytest.mark.parametrize("address, message", [
    ("127.0.0.1:{port}", "nothing answers at '127.0.0.1:{port}' (Connection refused)"),
    ("nonsense", "malformed cluster address 'nonsense'"),
])
def test_an_unreachable_or_malformed_address_is_one_line_and_nothing_runs(
        tmp_path, address, message):
    port = _free_port()  # nothing listens there
    sweep = write_sweep(tmp_path / "tiny.yaml", seeds=[0])
    results = tmp_path / "results"
    out = _ablate("run", str(sweep), "--results", str(results),
                  "--address", address.format(port=port), env=dict(os.environ))
    assert out.returncode == 2
    assert out.stderr.strip() == (f"ablate: error: --address: {message.format(port=port)}; "
                                  + ("write HOST:PORT, ray://HOST:PORT or auto"
                                     if address == "nonsense" else
                                     "start the cluster ('ray start --head') or check the "
                                     "address with 'ray status --address ADDRESS'"))
    assert record.list_trial_dirs(results) == []
