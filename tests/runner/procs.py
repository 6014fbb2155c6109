"""Processes a test started, found through /proc (Linux): by session, and what they listen on;
and a ``ray start --head`` cluster of a test's own.

A test starts every Ray of its own in a new session (``start_new_session=True``), so the
session id finds all of that Ray's processes and none of anyone else's, and ending the session
ends only what the test started.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def session_pids(sid: int) -> list[int]:
    """Live processes of session ``sid`` (zombies, already dead, are left out)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != sid:
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # gone meanwhile
        if state != "Z":
            pids.append(int(entry.name))
    return pids


def wait_until_gone(sid: int, grace_s: float) -> list[int]:
    """The session's processes still alive after waiting up to ``grace_s`` for them to end."""
    deadline = time.monotonic() + grace_s
    while (left := session_pids(sid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def end_session(sid: int, grace_s: float = 30.0) -> list[int]:
    """SIGTERM the session's processes, SIGKILL what is left after ``grace_s``; return the pids
    that needed the SIGKILL (empty when everything ended on SIGTERM)."""
    _signal_all(sid, signal.SIGTERM)
    stubborn = wait_until_gone(sid, grace_s)
    if stubborn:
        _signal_all(sid, signal.SIGKILL)
        wait_until_gone(sid, 10.0)
    return stubborn


def _signal_all(sid: int, sig: int) -> None:
    for pid in session_pids(sid):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def listening_addresses(pids: list[int]) -> set[str]:
    """The local IP addresses on which any of ``pids`` has a listening TCP socket."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found: set[str] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                found.add(_ip(cols[1].split(":")[0], width))
    return found


def _ip(hex_addr: str, width: int) -> str:
    """/proc/net's little-endian hex address as text: 0100007F -> 127.0.0.1."""
    raw = bytes.fromhex(hex_addr)
    if width == 8:
        return ".".join(str(b) for b in raw[::-1])
    words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]
    data = b"".join(words)
    if data[:12] == b"\0" * 10 + b"\xff\xff":  # IPv4 mapped into IPv6
        return ".".join(str(b) for b in data[12:])
    return ":".join(data[i:i + 2].hex() for i in range(0, 16, 2))


# ---------------------------------------------------------------------------- a Ray head


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Head:
    address: str  # 127.0.0.1:PORT
    proc: subprocess.Popen  # ``ray start --block``, the leader of the head's session
    temp_dir: str


@contextmanager
def ray_head(num_cpus: int, env: dict[str, str] | None = None) -> Iterator[Head]:
    """A one-node Ray cluster started the way a user starts one: ``ray start --head``.

    It is the test's own and ends with it, whatever else runs on the machine: a temp dir of
    its own (short: Ray's socket paths must fit in 107 bytes), free ports for everything that
    would otherwise take a fixed default (another Ray may hold those), no RAY_ADDRESS, and
    ``--block`` in a new session, so that ending the session ends exactly this head and its
    processes (``ray stop``, even without --force, would stop every Ray on the machine).
    ``env``: more environment for the head, and so for every worker it starts.
    """
    ray_cli = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    temp_dir = tempfile.mkdtemp(prefix="ablt-", dir="/tmp")
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
    env.pop("RAY_ADDRESS", None)
    ports = {f"--{name}": free_port() for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
        "metrics-export-port")}  # no Ray Client server: ray[client] is not installed
    log = open(f"{temp_dir}/head.log", "w")
    proc = subprocess.Popen([ray_cli, "start", "--head", "--block", f"--port={port}",
                             f"--temp-dir={temp_dir}", f"--num-cpus={num_cpus}",
                             "--include-dashboard=false", "--disable-usage-stats",
                             *(f"{k}={v}" for k, v in ports.items())],
                            stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    try:
        _wait_for_port(proc, port, temp_dir)
        yield Head(f"127.0.0.1:{port}", proc, temp_dir)
    finally:
        end_session(proc.pid)
        proc.wait(timeout=30)
        log.close()
        left = pids_mentioning(temp_dir)
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


def pids_mentioning(text: str) -> list[int]:
    """Processes whose command line names ``text`` (a head's temp dir)."""
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
