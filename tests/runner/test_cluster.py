"""Joining an existing Ray cluster with --address, as a user with a cluster does it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest

from ablate import record
from tests.runner import procs
from tests.runner.conftest import write_sweep

pytestmark = pytest.mark.slow  # a real `ray start --head` cluster


def _ablate(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ablate", *args], capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.fixture
def ray_head():
    """A ``ray start --head`` of the test's own (procs.ray_head): its address."""
    with procs.ray_head(num_cpus=2) as head:
        yield head.address


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
    ("ray://localhost:99999", "malformed cluster address 'ray://localhost:99999'"),
    ("", "empty cluster address"),  # it started a local Ray as if --address were not given
])
def test_an_unreachable_or_malformed_address_is_one_line_and_nothing_runs(
        tmp_path, address, message):
    port = procs.free_port()  # nothing listens there
    sweep = write_sweep(tmp_path / "tiny.yaml", seeds=[0])
    results = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = _ablate("run", str(sweep), "--results", str(results),
                  "--address", address.format(port=port), env=env)
    assert out.returncode == 2
    assert out.stderr.strip() == (f"ablate: error: --address: {message.format(port=port)}; "
                                  + ("write HOST:PORT, ray://HOST:PORT or auto"
                                     if "malformed" in message else
                                     "give HOST:PORT, ray://HOST:PORT or auto; leave --address "
                                     "out for a local Ray" if not address else
                                     "start the cluster ('ray start --head') or check the "
                                     "address with 'ray status --address ADDRESS'"))
    assert record.list_trial_dirs(results) == []


@pytest.fixture
def web_server():
    """A port where a web server answers (as the dashboard's 8265 does): not Ray's."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed: the test is over
                return
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def test_an_address_where_a_web_server_answers_is_one_line_at_once(tmp_path, web_server):
    """Ray's cluster port speaks gRPC; given the dashboard's port, ray.init retried for
    minutes, a warning every few seconds. Now it is refused before ray.init is called."""
    sweep = write_sweep(tmp_path / "tiny.yaml", seeds=[0])
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = _ablate("run", str(sweep), "--results", str(tmp_path / "results"),
                  "--address", f"127.0.0.1:{web_server}", env=env)
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"ablate: error: --address: what answers at '127.0.0.1:{web_server}' is not a Ray "
        "cluster (it answers HTTP/1, as a web server or the dashboard does); give the head's "
        "cluster port, which 'ray start --head' prints (6379 by default; 8265 is the "
        "dashboard's)")
    assert not (tmp_path / "results").exists()


def test_with_tls_on_the_greeting_is_not_sent(web_server, monkeypatch):
    """Under RAY_USE_TLS Ray's port expects a TLS handshake: only reachability is checked."""
    from ablate.errors import ClusterError
    from ablate.raycluster import _check_reachable

    with pytest.raises(ClusterError, match="is not a Ray cluster"):
        _check_reachable(f"127.0.0.1:{web_server}", "--address")
    monkeypatch.setenv("RAY_USE_TLS", "1")
    _check_reachable(f"127.0.0.1:{web_server}", "--address")


def test_what_a_failed_join_writes_to_stderr_is_held_back_and_a_good_ones_is_kept(capfd):
    from ablate.raycluster import _stderr_held

    with pytest.raises(ConnectionError), _stderr_held():
        os.write(2, b"[W gcs_client.cc] Failed to get cluster ID\n" * 20)
        raise ConnectionError("cannot join")
    assert capfd.readouterr().err == ""
    with _stderr_held():
        os.write(2, b"Connected to Ray cluster.\n")
    assert capfd.readouterr().err == "Connected to Ray cluster.\n"


# A node set up without this ablate: a sitecustomize on the head's PYTHONPATH runs in every
# worker it starts (not in the driver), before any trial code.
NODE_WITHOUT = {
    "no ablate": ("import sys; sys.modules['ablate'] = None\n",
                  "cannot import ablate (ModuleNotFoundError: import of ablate halted"),
    "another ablate": ("import ablate; ablate.__version__ = '0.0.9'\n",
                       "import ablate 0.0.9 with source "),
    # a node that mounts no shared file system there: the results folder is not its to see
    "no shared folder": ("import builtins, io, os\n"
                         "hidden, real = os.environ['HIDDEN'], io.open\n"
                         "def fake(f, *a, **k):\n"
                         "    if str(f).startswith(hidden): raise FileNotFoundError(2, 'No such file', str(f))\n"
                         "    return real(f, *a, **k)\n"
                         "builtins.open = io.open = fake\n",
                         "do not see the results folder "),
}


@pytest.mark.parametrize("case", sorted(NODE_WITHOUT))
def test_a_node_whose_workers_lack_this_ablate_is_one_line_and_nothing_runs(tmp_path, case):
    site, message = NODE_WITHOUT[case]
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(site)
    path = os.pathsep.join([str(tmp_path / "site"), *filter(None, [os.environ.get("PYTHONPATH")])])
    sweep = write_sweep(tmp_path / "tiny.yaml", seeds=[0])
    results = tmp_path / "results"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
    hidden = {"PYTHONPATH": path, "HIDDEN": str(results)}
    with procs.ray_head(num_cpus=2, env=hidden) as head:
        out = _ablate("run", str(sweep), "--results", str(results), "--address", head.address,
                      env=env)
    assert out.returncode == 2, out.stderr[-2000:]
    line = out.stderr.strip()
    assert len(line.splitlines()) == 1, out.stderr
    assert line.startswith("ablate: error: --address: the Ray workers on node "), line
    assert message in line, line
    assert line.endswith("then run again" if case != "no shared folder" else
                         "writable by the user Ray runs as"), line
    assert not results.exists()  # the node check's file removed, the new folder too
