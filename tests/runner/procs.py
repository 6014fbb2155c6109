"""Processes a test started, found through /proc (Linux): by session, and what they listen on.

A test starts every Ray of its own in a new session (``start_new_session=True``), so the
session id finds all of that Ray's processes and none of anyone else's, and ending the session
ends only what the test started.
"""

from __future__ import annotations

import os
import signal
import time
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
