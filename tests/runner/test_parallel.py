"""Data-parallel trials through the runner: a Ray Train run of 2 CPU workers (gloo) per trial.

One 2-CPU Ray serves the module; the Tune trial that drives the 2 workers asks for no CPU, so
they fit. The reference for "the same numbers" is the same trial run uninterrupted by 2 gloo
processes started without Ray (tests/train/test_parallel_engine.py).
"""

from __future__ import annotations

import dataclasses

import pytest

from ablate import raybackend, raycluster, record, runner
from ablate.cli import main
from ablate.config import Resources
from ablate.errors import TrialError
from ablate.train import TIMING_KEYS
from tests.runner.conftest import tiny_trial, write_sweep
from tests.train.test_parallel_engine import model_rows, train_on_two_ranks

pytestmark = pytest.mark.slow  # a real Ray


@pytest.fixture(scope="module", autouse=True)
def ray_on_two_cpus():
    with raycluster.ray_session(num_cpus=2):
        yield


def two_worker_trial(**resources):
    t = tiny_trial(seed=5, retries=2)
    return dataclasses.replace(t, resources=Resources(
        **{"workers": 2, "cpus_per_worker": 1, "max_retries": 2, **resources}))


@pytest.mark.timeout(900)  # two Ray Train attempts and a reference run, on 2 busy cores
def test_a_killed_worker_is_retried_and_resumes_to_the_uninterrupted_numbers(
        tmp_path, monkeypatch):
    trial = two_worker_trial()
    reference = train_on_two_ranks(trial, tmp_path / "reference")[0]["rows"]
    events = []
    monkeypatch.setenv(raybackend.FAULT_ENV, "kill@epoch=1@rank=1")
    summary = runner.run_plan([trial], tmp_path / "results", name="tiny",
                              on_event=events.append)
    assert summary.done == [trial.id] and summary.retried == 1, summary
    tdir = record.trial_dir(tmp_path / "results", trial.id)
    raw = record.read_state_raw(tdir)
    assert (raw["state"], raw["attempt"]) == (record.DONE, 2)
    rows = record.read_metrics(tdir)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert model_rows(rows) == model_rows(reference)
    # the epochs reached the driver as events: Ray Train hands rows to Tune asynchronously, so
    # epoch 1's may go down with the killed attempt (the record has it); the retry resumed
    # after epoch 1 and reported the rest
    epochs = [e.metrics["epoch"] for e in events if e.kind == "result"]
    assert epochs in ([1, 2, 3], [2, 3])
    assert [e.kind for e in events if e.kind in ("retry", "done")] == ["retry", "done"]
    assert all(k in rows[-1] for k in TIMING_KEYS)


@pytest.mark.parametrize("resources,key", [
    ({"gpus_per_worker": 1.0}, "resources.gpus_per_worker"),  # a cluster without GPUs
    ({"workers": 3}, "resources.cpus_per_worker"),  # 3 x 1 CPU on 2
])
def test_a_trial_larger_than_the_cluster_is_refused_before_launch(tmp_path, resources, key):
    trial = two_worker_trial(**resources)
    with pytest.raises(TrialError) as info:
        runner.run_plan([trial], tmp_path / "results", name="tiny")
    assert info.value.key == key and "workers x" in str(info.value)
    assert not (tmp_path / "results").exists()  # nothing written


def test_plan_shows_the_workers_of_each_trial(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "s.yaml", seeds=[0])
    sweep.write_text(sweep.read_text().replace(
        "resources: {cpus: 1}", "resources: {workers: 2, cpus_per_worker: 1}"))
    assert main(["plan", str(sweep)]) == 0
    assert "per trial 2 workers x (1 CPU, 0 GPU)" in capsys.readouterr().out


def test_gpus_per_worker_on_a_cluster_without_gpus_is_one_line_and_exit_2(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "s.yaml", seeds=[0])
    sweep.write_text(sweep.read_text().replace(
        "resources: {cpus: 1}", "resources: {workers: 2, cpus_per_worker: 1, gpus_per_worker: 1}"))
    results = tmp_path / "results"
    assert main(["run", str(sweep), "--results", str(results)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "resources.gpus_per_worker" in err[0] and "0" in err[0], err
    assert not results.exists()
