"""A full disk, for real: the trial's folder on a 1 MiB tmpfs that holds the records but not a
checkpoint. Mounted in a user and mount namespace of the test's own (``unshare``), so nothing
of the machine's is touched; skipped where the machine does not allow it.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys

import pytest

from ablate import record
from ablate.plan import load_plan
from tests.runner.conftest import write_sweep


def _in_small_tmpfs(folder, script: str, *, timeout: float = 280) -> subprocess.CompletedProcess:
    """Run the shell ``script`` with a 1 MiB tmpfs mounted on ``folder``, in a namespace of its
    own: the mount (and what is written to it) is gone when the script ends."""
    folder.mkdir(exist_ok=True)
    mount = f"mount -t tmpfs -o size=1m tmpfs {shlex.quote(str(folder))}"
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                           f"{mount} && {script}"], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def small_disk(tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) to mount a small tmpfs")
    probe = _in_small_tmpfs(tmp_path / "probe", "true", timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {probe.stderr.strip()}")
    return tmp_path / "disk"


def test_train_on_a_full_disk_is_one_line_with_a_hint_and_the_record_says_disk(
        tmp_path, small_disk):
    sweep = write_sweep(tmp_path / "tiny.yaml", seeds=[0])
    _, [trial] = load_plan(sweep)
    results = small_disk / "results"
    train = shlex.join([sys.executable, "-m", "ablate", "train", "--sweep", str(sweep),
                        "--trial", trial.id, "--results", str(results)])
    state = shlex.quote(str(record.trial_dir(results, trial.id) / "state.json"))
    out = _in_small_tmpfs(small_disk, f"{train} >/dev/null; rc=$?; cat {state}; exit $rc")
    assert out.returncode == 1, out.stderr[-2000:]
    err = out.stderr.strip().splitlines()[-1]
    assert err.startswith("ablate: error: ") and "trial failed (disk)" in err
    assert "free space" in err and "resume" in err
    assert "Traceback" not in out.stderr
    raw = json.loads(out.stdout)  # the record, read before the namespace (and its disk) ended
    assert (raw["state"], raw["error"]["kind"], raw["attempt"]) == ("failed", "disk", 1)
