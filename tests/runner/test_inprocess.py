"""The runner over its in-process backend: a run's bookkeeping without Ray, in seconds.

Events and summary, skipping finished trials, holding and retrying failed ones, signals, and
``ablate run --debug`` (errors raise where they happen, for pdb). What only Ray does (retries
of lost workers, resources, its processes, clusters) is tested in test_run, test_processes
and test_cluster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from ablate import bookkeeping, raybackend, record, runner
from ablate.cli import main
from ablate.cli import run as cli_run
from ablate.inprocess import InProcessBackend
from ablate.plan import load_plan
from tests.runner.conftest import tiny_trial, write_sweep


@pytest.fixture
def no_ray(monkeypatch):
    """Any use of the Ray backend fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("the Ray backend was used")

    monkeypatch.setattr(raybackend.RayBackend, "session", refuse)


@pytest.fixture
def runs_in_process(monkeypatch, no_ray):
    """``ablate run`` and ``resume`` without --debug get the in-process backend instead of Ray
    (failures recorded, not raised), and make no tables: the CLI's bookkeeping, fast."""
    import ablate.runner as neutral

    real = neutral.run_plan
    monkeypatch.setattr(neutral, "run_plan",
                        lambda *a, **k: real(*a, **{**k, "backend": InProcessBackend()}))
    monkeypatch.setattr(cli_run, "_make_results", lambda results: None)


def _with_report_hook(monkeypatch, hook):
    """Have every trial call ``hook(epoch)`` after each epoch it reports."""
    import ablate.train

    real = ablate.train.train_trial

    def train_trial(trial, tdir, *, report=None, device=None):
        def hooked(row):
            if report is not None:
                report(row)
            hook(int(row["epoch"]))

        return real(trial, tdir, report=hooked, device=device)

    monkeypatch.setattr(ablate.train, "train_trial", train_trial)


def _broken_arm(folder) -> str:
    return (f"arms:\n  broken: {{data.name: imagefolder, data.root: '{folder}',"
            " data.num_train: null, data.num_val: null}\n")


def test_trials_run_one_at_a_time_in_plan_order_with_the_runs_events_and_summary(
        tmp_path, undecodable_image_folder, no_ray):
    sweep = write_sweep(tmp_path / "s.yaml", seeds=[0, 1],
                        arms=_broken_arm(undecodable_image_folder))
    _, trials = load_plan(sweep)
    broken = {t.id for t in trials if t.arm.startswith("broken")}
    results, events = tmp_path / "results", []
    summary = runner.run_plan(trials, results, name="tiny", backend=InProcessBackend(),
                              max_concurrent=4, on_event=events.append)
    assert len(broken) == 2 and len(trials) == 4
    assert max(e.progress.running for e in events) == 1  # whatever max_concurrent says
    assert [e.trial_id for e in events if e.kind == "start"] == [t.id for t in trials]
    for t in trials:
        mine = [e for e in events if e.trial_id == t.id]
        if t.id in broken:
            assert [e.kind for e in mine] == ["start", "failed"]
        else:
            assert [e.kind for e in mine] == ["start", "result", "result", "result", "done"]
            assert [e.metrics["epoch"] for e in mine if e.kind == "result"] == [1, 2, 3]
            assert all("val/top1" in e.metrics and e.pid == os.getpid()
                       for e in mine if e.kind == "result")
    last = events[-1].progress
    assert (last.done, last.failed, last.running, last.left) == (2, 2, 0, 0)
    assert sorted(summary.done) == sorted(t.id for t in trials if t.id not in broken)
    assert set(summary.failed) == broken and {f.kind for f in summary.failed.values()} == {"data"}
    assert (summary.unfinished, summary.retried, summary.interrupted) == ([], 0, None)
    for tid in broken:  # recorded as the Ray backend records it: kind, traceback, one attempt
        raw = record.read_state_raw(record.trial_dir(results, tid))
        assert (raw["state"], raw["attempt"], raw["error"]["kind"]) == ("failed", 1, "data")
        assert "Traceback (most recent call last)" in raw["error"]["traceback"]
    manifest = bookkeeping.read_manifest(results)
    assert manifest["trials"] == trials and manifest["max_concurrent"] == 4


def test_rerun_skips_finished_and_holds_recurring_failures_and_retry_failed_starts_them(
        tmp_path, undecodable_image_folder, runs_in_process, capsys):
    sweep = write_sweep(tmp_path / "s.yaml", seeds=[0, 1],
                        arms=_broken_arm(undecodable_image_folder))
    results = tmp_path / "results"
    run = ["run", str(sweep), "--results", str(results)]
    assert main(run) == 1
    assert "2 trials failed with an error that will recur" in capsys.readouterr().out
    states = {t.id: t.state for t in bookkeeping.sweep_status(results)}
    done = {tid for tid, s in states.items() if s == "done"}
    failed = {tid for tid, s in states.items() if s == "failed"}
    assert len(done) == len(failed) == 2
    files = {tid: {p.name: p.read_bytes() for p in record.trial_dir(results, tid).iterdir()
                   if p.is_file()} for tid in states}

    assert main(run) == 1  # nothing started: the finished are skipped, the failed held
    out = capsys.readouterr().out
    assert "2 already finished, 2 held (failed before), 0 to run" in out
    assert "2 failed before and were not started again" in out and "ablate: start" not in out
    for tid in states:
        assert {p.name: p.read_bytes() for p in record.trial_dir(results, tid).iterdir()
                if p.is_file()} == files[tid]

    assert main([*run, "--retry-failed"]) == 1
    out = capsys.readouterr().out
    assert "2 already finished, 2 to run" in out
    assert sorted(line.split()[2] for line in out.splitlines()
                  if line.startswith("ablate: start ")) == sorted(failed)
    for tid in failed:
        assert record.read_state_raw(record.trial_dir(results, tid))["attempt"] == 2
    for tid in done:  # not one byte of the finished trials rewritten
        assert {p.name: p.read_bytes() for p in record.trial_dir(results, tid).iterdir()
                if p.is_file()} == files[tid]


def test_rerun_of_a_finished_plan_starts_no_backend(tmp_path):
    trial, results = tiny_trial(seed=3), tmp_path / "results"
    assert runner.run_plan([trial], results, name="tiny", backend=InProcessBackend()).done \
        == [trial.id]
    before = {p: p.stat().st_mtime_ns for p in results.rglob("trials/*/*") if p.is_file()}

    class Refusing(InProcessBackend):
        def session(self):
            raise AssertionError("a finished plan started its backend")

    events = []
    again = runner.run_plan([trial], results, name="tiny", backend=Refusing(),
                            on_event=events.append)
    assert events == [] and again.done == [] and again.skipped == [trial.id]
    assert {p: p.stat().st_mtime_ns for p in results.rglob("trials/*/*") if p.is_file()} \
        == before
    manifest = json.loads((results / bookkeeping.MANIFEST).read_text())
    assert [t["id"] for t in manifest["trials"]] == [trial.id]


def test_ctrl_c_while_the_backend_starts_leaves_no_folder_behind(tmp_path, capsys):
    """Ctrl-C while Ray starts: the run had written only its lock, and the folder that held
    it made 'ablate resume' say it was no results folder."""
    trial, results = tiny_trial(seed=3), tmp_path / "results"

    class Starting(InProcessBackend):
        def session(self):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.run_plan([trial], results, name="tiny", backend=Starting())
    assert not results.exists()
    results.mkdir()  # what a driver killed at that moment (SIGKILL: no cleanup) leaves
    (results / bookkeeping.LOCK).write_text("1 host 0\n")
    assert main(["resume", str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "stopped before it wrote its plan" in err
    assert "ablate run SWEEP.yaml" in err


def test_sigint_mid_trial_stops_the_run_with_its_summary_and_a_rerun_resumes(tmp_path,
                                                                             monkeypatch):
    first, second = tiny_trial(seed=0), tiny_trial(seed=1)
    results = tmp_path / "results"
    _with_report_hook(monkeypatch, lambda epoch: epoch == 1 and os.kill(os.getpid(),
                                                                        signal.SIGINT))
    summary = runner.run_plan([first, second], results, name="tiny", backend=InProcessBackend())
    assert summary.interrupted == signal.SIGINT
    assert (summary.done, summary.failed, summary.unfinished) == ([], {}, [first.id, second.id])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back
    tdir = record.trial_dir(results, first.id)
    assert record.read_state(tdir) == record.RUNNING  # stopped, not failed
    assert [row["epoch"] for row in record.read_metrics(tdir)] == [1]

    monkeypatch.undo()
    again = runner.run_plan([first, second], results, name="tiny", backend=InProcessBackend())
    assert sorted(again.done) == sorted([first.id, second.id]) and again.interrupted is None
    assert [row["epoch"] for row in record.read_metrics(tdir)] == [1, 2, 3]  # resumed after 1
    assert record.read_state_raw(tdir)["attempt"] == 2


def test_debug_run_raises_the_trials_error_where_it_happened_and_records_it(
        tmp_path, monkeypatch, no_ray):
    sweep = write_sweep(tmp_path / "s.yaml", seeds=[0, 1])
    _, [first, second] = load_plan(sweep)
    results = tmp_path / "results"

    def bug(epoch):
        if epoch == 2:
            raise ZeroDivisionError("a bug in the trial's code")

    _with_report_hook(monkeypatch, bug)
    with pytest.raises(ZeroDivisionError, match="a bug in the trial's code") as raised:
        main(["run", str(sweep), "--results", str(results), "--debug"])
    assert raised.traceback[-1].name == "bug"  # pdb's post-mortem starts in the failing frame
    tdir = record.trial_dir(results, first.id)
    raw = record.read_state_raw(tdir)
    assert (raw["state"], raw["error"]["kind"], raw["error"]["type"]) == \
        ("failed", "code", "ZeroDivisionError")
    assert [row["epoch"] for row in record.read_metrics(tdir)] == [1, 2]
    assert not record.trial_dir(results, second.id).exists()  # the run stopped there
    assert not bookkeeping.driver_running(results)  # the lock is released on the way out


def test_debug_run_of_a_sweep_finishes_without_loading_ray(tmp_path):
    sweep = write_sweep(tmp_path / "s.yaml", seeds=[0, 1])
    results = tmp_path / "results"
    code = ("import sys\nfrom ablate.cli import main\n"
            f"rc = main(['run', {str(sweep)!r}, '--results', {str(results)!r}, '--debug'])\n"
            "print('ray loaded:', any(m == 'ray' or m.startswith('ray.') for m in sys.modules))\n"
            "sys.exit(rc)\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=280)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[-1] == "ray loaded: False"
    assert "2 trials, 0 already finished, 2 to run" in proc.stdout
    assert sum(line.startswith("ablate: epoch ") for line in lines) == 6
    assert {t.state for t in bookkeeping.sweep_status(results)} == {"done"}
    assert (results / "trials.parquet").exists()


def test_train_refuses_a_folder_of_another_trial_and_leaves_its_record_alone(tmp_path, capsys):
    import yaml

    from tests.runner.conftest import TINY_DATA, TINY_TRAIN

    cfg = tmp_path / "trial.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"arch": "dwnet_nano"}, "data": TINY_DATA,
                                   "train": TINY_TRAIN, "seed": 0}))
    other, out = tiny_trial(seed=5), tmp_path / "out"
    record.write_trial(out, other)
    record.write_state(out, record.DONE)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["train", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"folder holds trial {other.id}" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_debug_is_in_the_help_of_run_and_resume(capsys):
    for command in ("run", "resume"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert "--debug" in out and "pdb" in out


def test_debug_refuses_a_data_parallel_trial_and_tune_callbacks_in_one_line_before_writing(
        tmp_path, capsys, no_ray):
    sweep = write_sweep(tmp_path / "s.yaml", seeds=[0])
    results = tmp_path / "results"
    assert main(["run", str(sweep), "--results", str(results), "--debug",
                 "--set", "resources={workers: 2, cpus_per_worker: 1}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "resources.workers" in err and "2 data-parallel" in err
    assert "--debug" in err and not results.exists()
    assert main(["run", str(sweep), "--results", str(results), "--debug",
                 "--callback", "os:getcwd"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--callback" in err and "--debug" in err
    assert not results.exists()
