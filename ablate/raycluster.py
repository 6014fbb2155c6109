"""Being connected to Ray, and checking that the cluster can run a plan, before any trial.

A local Ray is always a new one, private to the run, listening on the loopback interface only;
a joined cluster is left running, and an address where nothing answers, or where something
that is not Ray answers, is one line at once rather than minutes of Ray's retries. Before
launch, :func:`check_fits` refuses a trial larger than the whole cluster or a process larger
than any node, and on a joined cluster :func:`check_nodes` asks one worker on each node
whether it runs this driver's ablate and sees the results folder. Ray is imported only
inside the functions that use it (with :mod:`ablate.raybackend` and :mod:`ablate.raytrain`,
the only modules that import it).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from ablate.config import Trial
from ablate.errors import ClusterError, TrialError, first_line


def _check_reachable(address: str, key: str, timeout_s: float = 5.0) -> None:
    """Fail fast when no Ray listens at ``address``: ray.init would retry for minutes.

    Nothing listening is one error; something listening that is not Ray another. Ray's
    cluster port (and Ray Client's) is a gRPC server, which answers the HTTP/2 preface with
    its SETTINGS frame at once; a dashboard's port (8265: HTTP/1.1), the usual slip, does not,
    and ray.init kept retrying it for minutes with a warning every few seconds.
    """
    if address == "auto":  # Ray finds the local cluster itself, and says so quickly if none
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not (port.isdigit() and 0 < int(port) < 65536):
        raise ClusterError(f"malformed cluster address {address!r}", key=key,
                           hint="write HOST:PORT, ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)),
                                      timeout=timeout_s) as conn:
            # with TLS on (RAY_USE_TLS), Ray's port answers a TLS handshake, not plain HTTP/2
            tls = os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true")
            answer = None if tls else _http2_answer(conn)
    except OSError as e:
        raise ClusterError(f"nothing answers at {address!r} ({e.strerror or e})",
                           key=key, hint="start the cluster ('ray start --head') or "
                           "check the address with 'ray status --address ADDRESS'") from None
    if answer is not None:
        raise ClusterError(f"what answers at {address!r} is not a Ray cluster ({answer})",
                           key=key, hint="give the head's cluster port, which 'ray start "
                           "--head' prints (6379 by default; 8265 is the dashboard's)")


# An HTTP/2 client's first bytes: the preface, then an empty SETTINGS frame (RFC 9113, 3.4).
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _http2_answer(conn: socket.socket) -> str | None:
    """None when the server answers as HTTP/2 does (a SETTINGS frame first), else what it
    did instead, in words. OSError when the connection fails."""
    conn.sendall(_HTTP2_HELLO)
    head = b""
    try:
        while len(head) < 9:
            chunk = conn.recv(9 - len(head))
            if not chunk:
                break
            head += chunk
    except socket.timeout:
        return "it sent nothing back" if not head else "it stopped answering"
    if len(head) == 9 and head[3] == 4:  # frame type 4: SETTINGS
        return None
    if head.startswith(b"HTTP/1"):
        return "it answers HTTP/1, as a web server or the dashboard does"
    return "it closed the connection" if not head else "it answers another protocol"


def _join_cluster(ray: Any, address: str, key: str, options: dict[str, Any]) -> None:
    """ray.init on an existing cluster; any failure to join is the user's setup, not a bug."""
    _check_reachable(address, key)
    try:
        with _stderr_held():
            try:
                ray.init(address=address, **options)
            except Exception:
                ray.shutdown()
                raise
    except Exception as e:  # ConnectionError, auth and address-format errors alike
        raise ClusterError(f"cannot join the Ray cluster at {address!r} ({first_line(e)})",
                           key=key, hint="check it with 'ray status --address ADDRESS', "
                           "or leave out --address to start a local Ray") from None


@contextmanager
def _stderr_held() -> Iterator[None]:
    """Hold what is written to file descriptor 2 in the block, and write it out after,
    unless the block raised: then it goes to the debug log (``ablate -v``) instead.

    Ray's C++ client writes a warning each second while it retries a server it cannot use,
    before ray.init gives up; a failed join is one line of ours, not a screen of those.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = held.read()
            if failed:
                if text:
                    logging.getLogger(__name__).debug("ray.init wrote:\n%s",
                                                      text.decode(errors="replace"))
            elif text:
                os.write(2, text)


@contextmanager
def _local_ray(ray: Any, num_cpus: int | None, options: dict[str, Any]) -> Iterator[None]:
    """A new Ray of this process's own, reachable from this machine only, for the block.

    ``address="local"``: never join another Ray of the machine (one that ``ray start`` left,
    or RAY_ADDRESS). Ray binds its servers to every interface unless the node's address is
    the loopback one, and it turns 127.0.0.1 into the machine's address unless multi-node
    clusters are off: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 turns them off on Linux too, for the
    processes ray.init starts (they keep it; ours gets its old value back at once) and, by
    its constant, for this process until the block ends.
    """
    from ray._private import ray_constants

    flag, saved_flag = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", os.environ.get(
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    saved_constant = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[flag] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(),
                 include_dashboard=False, _node_ip_address="127.0.0.1", **options)
    finally:
        if saved_flag is None:
            os.environ.pop(flag, None)
        else:
            os.environ[flag] = saved_flag
    try:
        yield
    finally:
        ray.shutdown()
        ray_constants.ENABLE_RAY_CLUSTER = saved_constant


def _silence_raylet_messages() -> None:
    """Keep Ray's raylet error messages (a worker died, in colour) off the user's terminal.

    Ray prints them on the driver's stdout from a thread of its own, whatever
    ``log_to_driver`` says; the run's summary says what they meant. They stay in Ray's logs
    and in this module's debug log.
    """
    from ray._private import worker

    printer = worker.print_to_stdstream
    if getattr(printer, "_ablate_quiet", False):
        return

    def quiet(data: dict[str, Any], ignore_prefix: bool) -> None:
        if data.get("pid") == "raylet":
            logging.getLogger(__name__).debug("ray: %s", " ".join(data.get("lines", [])))
        else:
            printer(data, ignore_prefix)

    quiet._ablate_quiet = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = quiet


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None, *,
                address_from: str = "--address") -> Iterator[float]:
    """Be connected to Ray inside the block; yields the seconds it took to connect.

    An existing connection is used and kept; otherwise this joins ``address`` (errors name
    ``address_from``) or starts a new local Ray (``num_cpus``, default all; loopback only; no
    dashboard) and disconnects at the end, which stops a local Ray but leaves a joined cluster
    running.
    """
    import ray

    if ray.is_initialized():
        yield 0.0
        return
    t0 = time.time()
    common = {"logging_level": logging.ERROR, "log_to_driver": False}
    with ExitStack() as stack:
        if address:
            _join_cluster(ray, address, address_from, common)
            stack.callback(ray.shutdown)
        else:
            stack.enter_context(_local_ray(ray, num_cpus, common))
        _silence_raylet_messages()
        yield time.time() - t0


def check_fits(todo: list[Trial]) -> None:
    """TrialError for a trial Ray could never place (Tune, or Ray Train's worker group, would
    wait for it forever): more than the whole cluster has, or a process (the trial's, or one
    worker's) larger than every node."""
    import ray

    have = ray.cluster_resources()
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    for t in todo:
        why = fit_problem(t, have, nodes)
        if why:
            what, key = why
            raise TrialError(f"trial {t.id} [{t.arm}] {what}", key=key,
                             hint="lower resources in the sweep file, or join a larger "
                             "cluster with --address")


def fit_problem(t: Trial, have: dict[str, float],
                nodes: list[dict[str, float]]) -> tuple[str, str] | None:
    """(what, key) when ``t`` cannot be placed on a cluster of ``have`` in all, as ``nodes``."""
    r = t.resources
    many = r.workers > 1 or r.cpus_per_worker is not None or r.gpus_per_worker is not None
    suffix = "_per_worker" if many else ""
    for key, per in (("CPU", r.worker_cpus), ("GPU", r.worker_gpus)):
        need = per * r.workers
        if need > have.get(key, 0.0):
            asks = f"{r.workers} workers x {per:g} {key}s" if many else f"{need:g} {key}s"
            return (f"asks for {asks} but the Ray cluster has {have.get(key, 0.0):g}",
                    f"resources.{key.lower()}s{suffix}")
    fits = [n for n in nodes
            if n.get("CPU", 0.0) >= r.worker_cpus and n.get("GPU", 0.0) >= r.worker_gpus]
    if nodes and not fits:  # a process runs on one node: its CPUs and GPUs must be there
        most = max(nodes, key=lambda n: (n.get("GPU", 0.0), n.get("CPU", 0.0)))
        key = "gpus" if r.worker_gpus > max(n.get("GPU", 0.0) for n in nodes) else "cpus"
        return (f"needs {r.worker_cpus:g} CPUs and {r.worker_gpus:g} GPUs on one node "
                f"{'per worker ' if many else ''}but no node has them (the largest has "
                f"{most.get('CPU', 0.0):g} CPUs, {most.get('GPU', 0.0):g} GPUs)",
                f"resources.{key}{suffix}")
    return None


def check_nodes(results_dir: Path, key: str, timeout_s: float = 300.0) -> None:
    """ClusterError unless a Ray worker on every node with CPUs or GPUs imports the very
    ablate this driver runs (same version, same source digest) and what its trials import,
    and sees and may write the results folder.

    Otherwise each trial's worker would die at its first import, as "worker died", retried;
    or train with other code than the plan checked, under this run's provenance; or write
    its record where the driver never looks. The folder is seen when a file the driver
    writes there (and removes after) reads back on the node with the driver's random token.
    """
    import secrets

    token = secrets.token_hex(8)
    marker = Path(results_dir).resolve() / f".node-check-{token}"
    marker.write_text(token)
    try:
        _ask_nodes(str(marker), token, key, timeout_s)
    finally:
        marker.unlink(missing_ok=True)


def _ask_nodes(marker: str, token: str, key: str, timeout_s: float) -> None:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from ablate import __version__
    from ablate.provenance import source_digest

    def probe() -> tuple[str, str, bool, bool]:  # a local function: sent by value, so it
        import os  # unpickles on a node without ablate, and says so there
        from pathlib import Path

        import ablate
        import ablate.train  # noqa: F401  (torch, timm and ablate's models, as a trial does)
        from ablate.provenance import source_digest

        try:
            seen = Path(marker).read_text() == token
        except OSError:
            seen = False
        writable = os.access(Path(marker).parent, os.W_OK | os.X_OK)
        return ablate.__version__, source_digest(), seen, writable

    remote = ray.remote(num_cpus=0, max_retries=0)(probe)
    nodes = [n for n in ray.nodes() if n.get("Alive") and (
        n["Resources"].get("CPU", 0) > 0 or n["Resources"].get("GPU", 0) > 0)]
    asked = [(n["NodeManagerAddress"], remote.options(scheduling_strategy=(
        NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))).remote()) for n in nodes]
    want = (__version__, source_digest())
    hint = ("install this ablate (and its dependencies) in the Python environment of every "
            "node, e.g. 'pip install -e .' from the same checkout, then run again")
    for ip, ref in asked:
        try:
            got = ray.get(ref, timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise ClusterError(f"the Ray workers on node {ip} did not answer in {timeout_s:g} "
                               "s", key=key, hint="check the node with 'ray status'") from None
        except ray.exceptions.RayError as e:
            cause = getattr(e, "cause", None) or e
            raise ClusterError(f"the Ray workers on node {ip} cannot import ablate "
                               f"({type(cause).__name__}: {first_line(cause)})", key=key,
                               hint=hint) from None
        if tuple(got[:2]) != want:
            raise ClusterError(f"the Ray workers on node {ip} import ablate {got[0]} with "
                               f"source {got[1]}, not this driver's {want[0]} with source "
                               f"{want[1]}", key=key, hint=hint)
        folder = Path(marker).parent
        if not got[2] or not got[3]:
            raise ClusterError(f"the Ray workers on node {ip} "
                               + ("cannot write" if got[2] else "do not see")
                               + f" the results folder {folder}", key=key,
                               hint="put it on a file system every node mounts at the same "
                               "path, writable by the user Ray runs as")
