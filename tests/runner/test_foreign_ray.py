"""Another Ray on the machine (a colleague's ``ray start --head``) and ``ablate run`` beside it.

A local run never joins or disturbs a Ray it did not start: it starts its own, which leaves
the other one alive, with no job, actor or node of the run's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ablate import record
from tests.runner import procs
from tests.runner.conftest import write_sweep

pytestmark = pytest.mark.slow  # a `ray start --head` and a real `ablate run`

# Run against the other head: its jobs (drivers), actors and nodes, as the GCS lists them.
_LOOK = """
import json, os, ray
from ray._private import state
ray.init(address=os.environ["HEAD"], logging_level="ERROR", log_to_driver=False)
print(json.dumps({"me": os.getpid(), "jobs": state.jobs(),
                  "actors": list(state.actors()), "nodes": [n["Alive"] for n in ray.nodes()]}))
ray.shutdown()
"""


def _look_at(head: procs.Head) -> dict:
    env = {**os.environ, "HEAD": head.address, "RAY_AUTH_MODE": "token",
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-c", _LOOK], capture_output=True, text=True,
                         env=env, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_local_run_beside_another_ray_leaves_it_alive_and_untouched(tmp_path):
    sweep = write_sweep(tmp_path / "s.yaml", seeds=[0, 1])
    results = tmp_path / "results"
    with procs.ray_head(num_cpus=1) as head:
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS", None)  # a user who unset it, as `ablate run` tells them to
        run = subprocess.Popen([sys.executable, "-m", "ablate", "run", str(sweep),
                                "--results", str(results)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env,
                               start_new_session=True)
        try:
            out, _ = run.communicate(timeout=280)
        finally:
            left = procs.wait_until_gone(run.pid, 30.0)
            procs.end_session(run.pid)  # whatever is left of the run, and only that
        assert run.returncode == 0, out[-3000:]
        assert not left, f"processes left behind by the run: {left}"
        assert "joining" not in out
        dirs = record.list_trial_dirs(results)
        assert len(dirs) == 2 and {record.read_state(d) for d in dirs} == {record.DONE}

        assert head.proc.poll() is None  # the other Ray is still up
        seen = _look_at(head)
        # The look-up's own driver is the only job the head ever had: the run was never one.
        assert [j["DriverPid"] for j in seen["jobs"]] == [seen["me"]]
        assert seen["actors"] == [] and seen["nodes"] == [True]  # no Tune actor, no node added
