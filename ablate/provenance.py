"""Where a trial's numbers came from: code version, library versions, machine, data, model size.

Every lookup here is best-effort: a missing git, a package that is not installed or a
non-checkout install gives ``None``, never an exception, because provenance must not be the
reason a trial fails. ``ray`` is looked up by its installed metadata and never imported.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import torch

PACKAGE_DIR = Path(__file__).resolve().parent


def git_state(src: Path = PACKAGE_DIR) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout holding ``src``; (None, None) when there is none."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True,
                                 timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = git("status", "--porcelain", "--", str(src))
    return commit.strip(), (bool(status.strip()) if status is not None else None)


def source_digest(src: Path = PACKAGE_DIR) -> str:
    """12 hex digits of SHA-256 over the package's Python sources (each file's path relative
    to ``src`` and its bytes): the same code gives the same digest wherever it is installed,
    a git checkout or not, and any edit changes it."""
    h = hashlib.sha256()
    for f in sorted(src.rglob("*.py")):
        h.update(f.relative_to(src).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def collect_provenance(*, device: torch.device, data_fingerprint: str, seed: int, params: int,
                       flops: int | None) -> dict[str, Any]:
    """The provenance record of one trial, without its wall time (added when it ends)."""
    commit, dirty = git_state()
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": package_version("timm"),
        "ray": package_version("ray"),
        "ablate": package_version("ablate"),
        "ablate_source": source_digest(),
        "device": device_name(device),
        "host": socket.gethostname(),
        "data_fingerprint": data_fingerprint,
        "seed": seed,
        "params": params,
        "flops": flops,
    }
