"""The runner on a real 2-CPU Ray, in process: retries, failures, resources, the CLI's run command.

One Ray instance serves the whole module (starting Ray costs seconds on 2 cores). What a run
does whatever its backend (skipping, holding failed trials, the summary) is tested without Ray
in test_inprocess.py.
"""

from __future__ import annotations

import dataclasses

import pytest

from ablate import bookkeeping, raybackend, raycluster, record, runner
from ablate.cli import main
from ablate.config import Resources
from ablate.errors import TrialError
from ablate.plan import load_plan
from ablate.train import TIMING_KEYS
from tests.runner.conftest import tiny_trial, write_sweep

pytestmark = pytest.mark.slow  # a real Ray


@pytest.fixture(scope="module", autouse=True)
def ray_on_two_cpus():
    with raycluster.ray_session(num_cpus=2):
        yield


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One tiny trial run to the end without interruption: (trial, results folder)."""
    trial, results = tiny_trial(seed=3), tmp_path_factory.mktemp("finished")
    summary = runner.run_plan([trial], results, name="tiny")
    assert summary.done == [trial.id] and summary.ray_start_s == 0.0  # the module's Ray
    return trial, results


def _model_metrics(tdir):
    """Epoch rows without the timing columns (which differ between any two runs)."""
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS}
            for row in record.read_metrics(tdir)]


def _sweep_of(tmp_path, trial, **train):
    """A one-trial sweep file whose plan is ``trial`` (with ``train`` overrides)."""
    from tests.runner.conftest import TINY_TRAIN

    body = {**TINY_TRAIN, **train}
    return write_sweep(tmp_path / "one.yaml", seeds=[trial.config.seed], train=body)


@pytest.mark.parametrize("fault", ["kill", "kill-loader"])
def test_a_lost_worker_is_retried_from_its_checkpoint_and_said_in_one_line(
        tmp_path, finished, monkeypatch, capfd, fault):
    """The trial's process (kill) or its DataLoader process (kill-loader, the out-of-memory
    killer's usual victim) dies after epoch 1: one retry, resumed after epoch 1, the same
    numbers as an uninterrupted run, and Ray's own death messages kept off the output."""
    trial, reference = finished
    workers = 1 if fault == "kill-loader" else 0
    sweep = _sweep_of(tmp_path, trial, workers=workers)
    _, [planned] = load_plan(sweep)
    monkeypatch.setenv(raybackend.FAULT_ENV, f"{fault}@epoch=1")
    results = tmp_path / "results"
    assert main(["run", str(sweep), "--results", str(results)]) == 0
    out, err = capfd.readouterr()
    tdir = record.trial_dir(results, planned.id)
    raw = record.read_state_raw(tdir)
    assert (raw["state"], raw["attempt"]) == (record.DONE, 2)
    assert [row["epoch"] for row in record.read_metrics(tdir)] == [1, 2, 3]
    assert "1 attempts lost their worker (killed, or out of memory) and were retried" in out
    assert "\x1b[" not in out + err  # no colour codes: nothing of Ray's own printing
    assert "worker died" not in (out + err).lower() and "ray::" not in out + err
    if workers == 0:  # the same trial as the reference: resumed exactly
        assert planned.id == trial.id
        assert _model_metrics(tdir) == _model_metrics(record.trial_dir(reference, trial.id))


def test_failing_trial_is_recorded_not_retried_and_the_others_finish(tmp_path,
                                                                    undecodable_image_folder,
                                                                    capsys):
    arms = (f"arms:\n  broken: {{data.name: imagefolder, data.root: '{undecodable_image_folder}',"
            " data.num_train: null, data.num_val: null}\n")
    sweep = write_sweep(tmp_path / "s.yaml", seeds=[0, 1], arms=arms)
    results = tmp_path / "results"
    assert main(["run", str(sweep), "--results", str(results)]) == 1
    out = capsys.readouterr().out
    states = {t.id: t.state for t in bookkeeping.sweep_status(results)}
    assert sorted(states.values()) == ["done", "done", "failed", "failed"]
    for tid, state in states.items():
        raw = record.read_state_raw(record.trial_dir(results, tid))
        assert raw["attempt"] == 1  # a data error is deterministic: never retried
        if state == "failed":
            assert raw["error"]["kind"] == "data" and raw["error"]["type"] == "UnreadableImage"
            assert "Traceback (most recent call last)" in raw["error"]["traceback"]
    failed = [line for line in out.splitlines() if "failed (data)" in line]
    assert len(failed) == 2 and all("UnreadableImage" in f and "--deep-data-check" in f
                                    for f in failed)
    # Not a terminal (captured): a line per start, per epoch of every trial, per end and failure.
    lines = out.splitlines()
    for tid, state in states.items():
        mine = [line for line in lines if f" {tid} [" in line]
        assert any(line.startswith(f"ablate: start {tid} [") for line in mine)
        epochs = [line for line in mine if line.startswith("ablate: epoch ")]
        if state == "done":
            assert [e.split(": ")[2].split(",")[0] for e in epochs] == ["1/3", "2/3", "3/3"]
            assert all("val/top1 " in e and "img/s" in e for e in epochs)
            assert any(line.startswith(f"ablate: end   {tid} [") for line in mine)
        else:
            assert epochs == [] and any(line.startswith(f"ablate: fail  {tid} [broken]")
                                        and "UnreadableImage: " in line for line in mine)

    assert "will recur" in out and "--failed" in out and "resume with" not in out
    # what a rerun does with them (held, or --retry-failed) is the runner's bookkeeping,
    # whatever the backend: test_inprocess.py


TWO_NODES = [{"CPU": 4.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 1.0}]


@pytest.mark.parametrize("resources, key", [
    (Resources(cpus=6), "resources.cpus"),  # 8 CPUs in all, but a process is on one node
    (Resources(cpus=2, gpus=2), "resources.gpus"),
    (Resources(workers=2, cpus_per_worker=5, gpus_per_worker=1), "resources.cpus_per_worker"),
    (Resources(workers=4, cpus_per_worker=1, gpus_per_worker=1), "resources.gpus_per_worker"),
    (Resources(workers=2, cpus_per_worker=4, gpus_per_worker=1), None),  # a node each
    (Resources(cpus=4, gpus=1), None),
])
def test_a_process_larger_than_every_node_is_refused(resources, key):
    """Ray places a trial's process (or each worker's) on one node; one larger than every
    node waits forever (Train V2 retries the worker group every minute), though it is
    smaller than the cluster's total."""
    have = {"CPU": 8.0, "GPU": 2.0}
    why = raycluster.fit_problem(dataclasses.replace(tiny_trial(), resources=resources), have,
                                 TWO_NODES)
    assert (why and why[1]) == key
    if why and "one node" in why[0]:
        assert "the largest has 4 CPUs, 1 GPUs" in why[0]


def test_trial_larger_than_the_cluster_is_refused_before_anything_runs(tmp_path):
    big = dataclasses.replace(tiny_trial(), resources=Resources(cpus=4))
    with pytest.raises(TrialError, match="asks for 4 CPUs but the Ray cluster has 2") as info:
        runner.run_plan([big], tmp_path / "results", name="tiny", source="sweeps/tiny.yaml")
    assert str(info.value).startswith("sweeps/tiny.yaml: resources.cpus: trial ")
    # refused before anything was written: no sweep.json, no lock, not even the folder
    assert not (tmp_path / "results").exists()
