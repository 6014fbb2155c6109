"""``ablate plan --estimate``: the schedule's arithmetic on hand-made jobs, the scaling of
measured steps to a trial, the device checks, and the real CLI on a nano model."""

from __future__ import annotations

import dataclasses
import json
import random
import subprocess
import sys
import textwrap

import pytest
import torch

from ablate import estimate
from ablate.cli import main
from ablate.config import Resources
from ablate.estimate import DataSize, EstimateError, StepCost, simulate_schedule
from ablate.plan import load_plan


def makespan(spans):
    return max(e for _, e in spans)


def test_two_cores_run_four_one_core_jobs_two_at_a_time():
    spans = simulate_schedule([3, 3, 3, 1], [(1, 0)] * 4, cpus=2, gpus=0)
    assert spans == [(0, 3), (0, 3), (3, 6), (3, 4)]
    assert makespan(spans) == 6


def test_max_concurrent_caps_what_the_cores_would_allow():
    spans = simulate_schedule([2, 2, 2, 2], [(1, 0)] * 4, cpus=8, gpus=0, max_concurrent=2)
    assert [s for s, _ in spans] == [0, 0, 2, 2] and makespan(spans) == 4
    assert makespan(simulate_schedule([2, 2, 2, 2], [(1, 0)] * 4, cpus=8, gpus=0)) == 2


def test_a_job_that_does_not_fit_yet_lets_the_next_that_fits_start():
    # A holds one of two cores for 5 s; B needs both, so it waits for A; C fits beside A
    spans = simulate_schedule([5, 1, 1], [(1, 0), (2, 0), (1, 0)], cpus=2, gpus=0)
    assert spans == [(0, 5), (5, 6), (0, 1)]


def test_fractional_gpus_share_one_device():
    spans = simulate_schedule([2, 2, 2], [(1, 0.5)] * 3, cpus=16, gpus=1)
    assert spans == [(0, 2), (0, 2), (2, 4)]
    assert makespan(simulate_schedule([2, 2, 2], [(1, 1 / 3)] * 3, cpus=16, gpus=1)) == 2


def test_a_job_larger_than_the_machine_is_refused():
    with pytest.raises(ValueError):
        simulate_schedule([1], [(4, 0)], cpus=2, gpus=0)


def test_random_schedules_respect_the_machine_and_the_bounds():
    rng = random.Random(0)
    for _ in range(200):
        n, cpus = rng.randint(1, 12), rng.randint(1, 6)
        durations = [rng.uniform(0.1, 10) for _ in range(n)]
        demands = [(rng.randint(1, cpus), 0) for _ in range(n)]
        limit = rng.choice([None, 1, 2, 3])
        spans = simulate_schedule(durations, demands, cpus=cpus, gpus=0, max_concurrent=limit)
        assert all(e - s == pytest.approx(d) for (s, e), d in zip(spans, durations))
        for t in {s for s, _ in spans}:  # at every start, what runs fits the machine
            now = [j for j, (s, e) in enumerate(spans) if s <= t < e]
            assert sum(demands[j][0] for j in now) <= cpus
            assert limit is None or len(now) <= limit
        work = sum(d * c for d, (c, _) in zip(durations, demands))
        assert makespan(spans) >= max(max(durations), work / cpus) - 1e-9
        assert makespan(spans) <= sum(durations) + 1e-9
        if limit == 1:  # one at a time: back to back, in the plan's order
            assert makespan(spans) == pytest.approx(sum(durations))


SWEEP = """\
name: est
description: two nano models on synthetic data
base:
  model: {arch: dwnet_nano}
  data: {name: synthetic, img_size: 32, num_train: 100, num_val: 30, num_classes: 4}
  train: {epochs: 3, batch_size: 16, warmup_epochs: 1, workers: 0, mixup: 0.2, cutmix: 0}
  resources: {cpus: 1, gpus: 0}
arms:
  dynamic: {model.arch: dynamic_dwnet_nano, model.weight_source: pooled_linear}
baseline: static
seeds: [0, 1]
max_concurrent: 2
"""


@pytest.fixture
def sweep_file(tmp_path):
    path = tmp_path / "est.yaml"
    path.write_text(SWEEP)
    return path


def test_measured_steps_scale_to_each_trial_and_each_model_is_timed_once(sweep_file,
                                                                         monkeypatch):
    _, trials = load_plan(sweep_file)
    timed = []

    def fake_measure(trial, classes, device, *, steps):
        timed.append(trial.config.model.arch)
        return StepCost(build_s=2.0, train_step_s=1.0, eval_step_s=0.5, checkpoint_s=0.25)

    monkeypatch.setattr(estimate, "measure_step", fake_measure)
    sizes = {t.id: DataSize(train=100, val=30, classes=4) for t in trials}
    cost = estimate.estimate_sweep(trials, sizes, max_concurrent=2, machine=(2, 0))
    assert sorted(timed) == ["dwnet_nano", "dynamic_dwnet_nano"]  # not once per seed
    # 100 // 16 = 6 training steps (the last partial batch is dropped), ceil(30 / 16) = 2
    # validation batches: an epoch is 6 x 1 + 2 x 0.5 + 0.25 s; a trial 2 + 3 epochs
    for r in cost.trials:
        assert (r.steps_per_epoch, r.eval_steps, r.epoch_s) == (6, 2, 7.25)
        assert r.wall_s == 2 + 3 * 7.25 and r.device_hours == pytest.approx(r.wall_s / 3600)
    assert cost.makespan_s == 2 * (2 + 3 * 7.25)  # four equal trials, two at a time
    assert cost.device_hours == {"CPU": pytest.approx(4 * (2 + 3 * 7.25) / 3600)}


def test_a_data_parallel_trial_holds_every_workers_cores_and_is_timed_as_one_worker(
        sweep_file, monkeypatch):
    _, trials = load_plan(sweep_file)
    two = dataclasses.replace(trials[0], resources=Resources(workers=2, cpus_per_worker=2))
    batches = []
    real = estimate._SyntheticLoaders

    def loaders(batch, *args):
        batches.append(batch)
        return real(batch, *args)

    monkeypatch.setattr(estimate, "_SyntheticLoaders", loaders)
    monkeypatch.setattr(estimate, "_threads", lambda trial, device: 1)  # 2 cores, shared
    sizes = {two.id: DataSize(train=100, val=30, classes=4)}
    cost = estimate.estimate_sweep([two], sizes, steps=1, machine=(4, 0))
    assert batches == [8]  # each worker's share of the global batch of 16
    [r] = cost.trials
    # both workers take every one of the 6 global steps; each validates 15 images in 2 of
    # its batches of 8; the trial holds 2 x 2 cores
    assert (r.steps_per_epoch, r.eval_steps, r.amount) == (6, 2, 4.0)
    with pytest.raises(EstimateError, match="asks for 4 CPUs"):
        estimate.estimate_sweep([two], sizes, machine=(2, 0))


def test_a_gpu_trial_on_a_machine_without_one_is_refused(sweep_file):
    _, trials = load_plan(sweep_file)
    gpu_trial = dataclasses.replace(trials[0], resources=Resources(cpus=1, gpus=1))
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(EstimateError, match="asks for 1 GPUs"):
        estimate.trial_device(gpu_trial, None, 0)
    assert estimate.trial_device(gpu_trial, "cpu", 0) == torch.device("cpu")


@pytest.mark.parametrize("flags,message", [
    (["--estimate", "--device", "tpu"], "--device: unknown device 'tpu'"),
    (["--estimate", "--device", "cuda:7"], "--device: device 'cuda:7' is not on this machine"),
    (["--device", "cpu"], "--device: --device is an option of --estimate"),
    (["--estimate-steps", "5"], "--estimate-steps: --estimate-steps is an option of --estimate"),
    (["--estimate", "--estimate-steps", "0"], "--estimate-steps: 0 steps cannot be timed"),
])
def test_bad_estimate_options_are_one_line_and_exit_2(sweep_file, flags, message, capsys,
                                                       monkeypatch):
    if "cuda:7" in flags and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    monkeypatch.setattr(estimate, "measure_step", lambda *a, **k: pytest.fail("measured"))
    assert main(["plan", str(sweep_file), "--no-stats", *flags]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"ablate: error: {message}")
    assert captured.err.count("\n") == 1


def test_plan_estimate_times_the_real_steps_without_ray(sweep_file, tmp_path):
    code = textwrap.dedent(f"""\
        import json, sys
        import torch
        torch.set_num_threads(1)
        from ablate.cli import main
        rc = main(["plan", {str(sweep_file)!r}, "--results", {str(tmp_path / "r")!r},
                   "--no-stats", "--estimate", "--estimate-steps", "2", "--json"])
        print(json.dumps({{"rc": rc, "ray": any(m == "ray" or m.startswith("ray.")
                                                for m in sys.modules)}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    *report, tail = proc.stdout.strip().splitlines()
    assert json.loads(tail) == {"rc": 0, "ray": False}
    report = json.loads("\n".join(report))
    est, planned = report["estimate"], [r["id"] for r in report["trials"]]
    assert [r["id"] for r in est["trials"]] == planned
    assert est["measured"] == 2 and est["steps"] == 2
    for r in est["trials"]:
        assert r["wall_s"] == pytest.approx(r["setup_s"] + r["epochs"] * r["epoch_s"])
        assert r["epoch_s"] > 0 and r["steps_per_epoch"] == 6 and r["device"] == "cpu"
    walls = [r["wall_s"] for r in est["trials"]]
    assert est["device_hours"]["CPU"] == pytest.approx(sum(walls) / 3600)
    assert max(walls) <= est["makespan_s"] + 1e-9 and est["makespan_s"] <= sum(walls)
    assert est["makespan_s"] == pytest.approx(max(r["end_s"] for r in est["trials"]))
    # seeds of one arm are timed once, so they get the same estimate
    by_arm = {}
    for r in est["trials"]:
        by_arm.setdefault(r["arm"], set()).add(round(r["wall_s"], 9))
    assert all(len(v) == 1 for v in by_arm.values())


def test_plan_estimate_text_has_a_line_per_trial_and_a_sweep_total(sweep_file, tmp_path,
                                                                   capsys, monkeypatch):
    monkeypatch.setattr(estimate, "measure_step", lambda *a, **k: StepCost(
        build_s=1.0, train_step_s=10.0, eval_step_s=1.0, checkpoint_s=0.0))
    assert main(["plan", str(sweep_file), "--results", str(tmp_path / "r"), "--no-stats",
                 "--estimate"]) == 0
    out = capsys.readouterr().out
    section = out[out.index("estimate, from"):]
    _, trials = load_plan(sweep_file)
    # 1 + 3 x (6 x 10 + 2 x 1) s = 187 s a trial: 3.1 min, 0.052 CPU-hours
    for t in trials:
        [line] = [x for x in section.splitlines() if x.startswith(t.id)]
        assert "3.1 min" in line and "0.052 CPU" in line
    assert "4 trials, 12.5 min of trial time, 0.208 CPU-hours" in section  # 4 x 187 s
    assert "about 6.2 min of wall time (at most 2 at once" in section  # two at a time
    assert "not included: data loading" in section


def test_a_recipe_that_diverges_at_once_is_an_error_not_a_traceback(sweep_file, capsys):
    assert main(["plan", str(sweep_file), "--no-stats", "--estimate", "--estimate-steps", "3",
                 "--set", "train.lr=1e12", "--only", "static", "--seeds", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ablate: error: train.lr: trial ") and "cannot be timed" in err
    assert err.count("\n") == 1
