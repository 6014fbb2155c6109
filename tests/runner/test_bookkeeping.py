"""The runner's bookkeeping without Ray: sweep.json, the driver lock, status rows, the CLI table."""

from __future__ import annotations

import json
import os

import pytest

from ablate import bookkeeping, files, raybackend, record, runner
from ablate.cli import main
from ablate.errors import RecordError, TrialError
from tests.runner.conftest import tiny_trial


def _write(results, trial, state, epochs=0, **extra):
    tdir = record.trial_dir(results, trial.id)
    record.write_trial(tdir, trial)
    record.write_state(tdir, state, **extra)
    for e in range(1, epochs + 1):
        record.append_metrics(tdir, {"epoch": e, "val/top1": 10.0 * e})
    return tdir


def test_manifest_round_trip_and_an_edited_plan_keeps_dropped_trials_listed(tmp_path):
    a, b, c = (tiny_trial(seed=s) for s in (0, 1, 2))
    bookkeeping.write_manifest(tmp_path, name="tiny", source="s.yaml", trials=[a, b],
                          max_concurrent=2)
    m = bookkeeping.read_manifest(tmp_path)
    assert (m["name"], m["source"], m["max_concurrent"]) == ("tiny", "s.yaml", 2)
    assert m["trials"] == [a, b] and m["retired"] == []
    bookkeeping.write_manifest(tmp_path, name="tiny", source="s.yaml", trials=[b, c],
                          max_concurrent=None)
    m = bookkeeping.read_manifest(tmp_path)
    assert m["trials"] == [b, c] and m["retired"] == [a]  # listed, not run
    bookkeeping.write_manifest(tmp_path, name="tiny", source="s.yaml", trials=[a, b, c],
                          max_concurrent=None)
    assert bookkeeping.read_manifest(tmp_path)["retired"] == []


def test_missing_or_broken_manifest_is_our_error(tmp_path):
    with pytest.raises(RecordError, match="no sweep.json"):
        bookkeeping.read_manifest(tmp_path)
    (tmp_path / bookkeeping.MANIFEST).write_text('{"name": "x"}')
    with pytest.raises(RecordError, match="malformed sweep.json"):
        bookkeeping.read_manifest(tmp_path)
    assert main(["status", str(tmp_path / "nowhere")]) == 2


@pytest.mark.parametrize("edit", [("epochs", "x"), ("lr", True), ("epochs", 2.5)])
def test_a_hand_edited_manifest_is_refused_before_anything_runs(tmp_path, capsys, edit):
    """A config value of the wrong type edited into sweep.json: resume launched the trial and
    it failed as a 'code' error (TypeError)."""
    trial = tiny_trial()
    results = tmp_path / "res"
    bookkeeping.write_manifest(results, name="tiny", source="s.yaml", trials=[trial],
                               max_concurrent=None)
    obj = json.loads((results / bookkeeping.MANIFEST).read_text())
    obj["trials"][0]["config"]["train"][edit[0]] = edit[1]
    (results / bookkeeping.MANIFEST).write_text(json.dumps(obj))
    before = (results / bookkeeping.MANIFEST).read_text()
    assert main(["resume", str(results)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"trials[0] is malformed (train.{edit[0]}: {edit[1]!r}" in err[0]
    assert "ablate run SWEEP.yaml --results" in err[0]
    assert (results / bookkeeping.MANIFEST).read_text() == before
    assert record.list_trial_dirs(results) == []


def test_driver_lock_is_exclusive_and_released(tmp_path):
    assert not bookkeeping.driver_running(tmp_path)
    with bookkeeping.driver_lock(tmp_path):
        assert bookkeeping.driver_running(tmp_path)
        with pytest.raises(TrialError, match="already running"):
            with bookkeeping.driver_lock(tmp_path):
                pass
    assert not bookkeeping.driver_running(tmp_path)


def test_running_trial_is_interrupted_only_when_stale_and_no_driver(tmp_path):
    # A clock of the test's own: the record's last write is at T, "now" is chosen around it.
    T = 1_000_000_000.0
    t = tiny_trial()
    tdir = _write(tmp_path, t, record.RUNNING, epochs=1)
    raw = json.loads((tdir / "state.json").read_text())
    files.write_json_atomic(tdir / "state.json", {**raw, "updated": T})
    for p in tdir.iterdir():
        os.utime(p, (T, T))
    stale, fresh = T + bookkeeping.STALE_S + 5, T + bookkeeping.STALE_S - 5
    assert bookkeeping.trial_status(t, tmp_path, driver_alive=True, now=stale).state \
        == record.RUNNING
    assert bookkeeping.trial_status(t, tmp_path, driver_alive=False, now=stale).state \
        == record.INTERRUPTED
    assert bookkeeping.trial_status(t, tmp_path, driver_alive=False, now=fresh).state \
        == record.RUNNING


def test_split_finished_skips_done_and_diverged_only(tmp_path):
    trials = [tiny_trial(seed=s) for s in range(5)]
    for t, state in zip(trials, [record.DONE, record.DIVERGED, record.FAILED, record.RUNNING]):
        _write(tmp_path, t, state)
    finished, todo = bookkeeping.split_finished(trials, tmp_path)
    assert finished == trials[:2] and todo == trials[2:]


def test_status_table_and_json(tmp_path, capsys):
    done, failed, new = (tiny_trial(seed=s) for s in (0, 1, 2))
    bookkeeping.write_manifest(tmp_path, name="tiny", source=None, trials=[done, failed, new],
                          max_concurrent=None)
    _write(tmp_path, done, record.DONE, epochs=3)
    _write(tmp_path, failed, record.FAILED, epochs=1,
           error={"type": "ValueError", "message": "boom\nmore", "traceback": "..."})
    assert main(["status", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["id", "arm", "state", "epochs", "best", "val/top1", "updated"]
    rows = {line.split()[0]: line.split() for line in out[1:4]}
    assert rows[done.id][2:5] == ["done", "3/3", "30.00"]
    assert rows[failed.id][2:5] == ["failed", "1/3", "10.00"]
    assert rows[new.id][2:5] == ["new", "0/3", "-"]
    assert f"{failed.id} failed (code): ValueError: boom" in out
    assert main(["status", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["state"] for r in rows] == ["done", "failed", "new"]
    assert rows[1]["error"] == "ValueError: boom"


def test_a_line_per_event_off_a_terminal(capsys):
    # the live table of a terminal: tests/test_live.py
    from ablate.cli.display import RunDisplay

    p = runner.Progress(total=5, done=2, failed=1, running=1, elapsed_s=65, eta_s=130)
    assert p.left == 1
    RunDisplay(tty=False).on_event(runner.Event("done", "abc", p))
    assert capsys.readouterr().out == "ablate: end   abc (2 done, 1 running, 1 failed, 1 waiting)\n"


def test_tracker_counts_and_estimates_from_finished_durations():
    events = []
    tracker = runner.Tracker(total=4, on_event=events.append)
    tracker.emit("start", "a")
    tracker.emit("start", "b")
    assert events[-1].progress.running == 2 and events[-1].progress.eta_s is None
    tracker.started["a"] -= 10.0  # "a" ran for 10 s
    tracker.emit("done", "a")
    p = events[-1].progress
    assert (p.done, p.running, p.left) == (1, 1, 2)
    # 2 waiting + half of the one running, at 10 s each, over the 2 slots seen in use
    assert p.eta_s == pytest.approx(10.0 * 2.5 / 2, rel=0.01)
    tracker.emit("failed", "b")
    assert (events[-1].progress.failed, events[-1].progress.running) == (1, 0)


def test_status_of_trial_folders_without_a_sweep_json(tmp_path):
    t = tiny_trial()
    _write(tmp_path, t, record.DONE, epochs=2)
    [row] = bookkeeping.sweep_status(tmp_path)
    assert (row.id, row.state, row.epochs_done, row.best_top1) == (t.id, "done", 2, 20.0)


def test_a_corrupt_record_stops_a_run_before_anything_launches(tmp_path, monkeypatch, capsys):
    from ablate.plan import load_plan
    from tests.runner.conftest import write_sweep

    sweep = write_sweep(tmp_path / "tiny.yaml", seeds=[0, 1])
    _, trials = load_plan(sweep)
    results = tmp_path / "results"
    tdir = _write(results, trials[0], record.DONE)
    (tdir / "state.json").write_text('{"state": "do')  # a torn write by hand or a bad disk
    with pytest.raises(RecordError, match="state.json: corrupt JSON"):
        bookkeeping.split_finished(trials, results)
    launched = []
    monkeypatch.setattr(raybackend.RayBackend, "session", lambda *a: launched.append(a))
    assert main(["run", str(sweep), "--results", str(results)]) == 2
    out, err = capsys.readouterr()
    err = err.strip()
    assert launched == [] and "\n" not in err and out == ""  # not even the plan's counts
    assert f"{tdir / 'state.json'}: corrupt JSON" in err and "delete the file" in err
    assert (tdir / "trial.json").exists()  # nothing lost


def test_status_marks_a_corrupt_record_and_exits_2(tmp_path, capsys):
    good, bad = tiny_trial(seed=0), tiny_trial(seed=1)
    bookkeeping.write_manifest(tmp_path, name="tiny", source=None, trials=[good, bad],
                               max_concurrent=None)
    _write(tmp_path, good, record.DONE, epochs=2)
    bad_dir = _write(tmp_path, bad, record.DONE, epochs=1)
    (bad_dir / "result.json").write_text("{")
    rows = {r.id: r for r in bookkeeping.sweep_status(tmp_path)}
    assert rows[good.id].state == record.DONE
    assert rows[bad.id].state == record.CORRUPT and "result.json" in rows[bad.id].problem
    assert main(["status", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert bad.id in out and "corrupt" in out
    assert f"{bad_dir / 'result.json'}: corrupt JSON" in err


def test_a_deleted_trial_json_is_reported_by_status_and_restored_by_resume(tmp_path, capsys,
                                                                          monkeypatch, caplog):
    from ablate.cli import run as cli_run

    done, other = tiny_trial(seed=0), tiny_trial(seed=1)
    bookkeeping.write_manifest(tmp_path, name="tiny", source=None, trials=[done, other],
                               max_concurrent=None)
    tdir = _write(tmp_path, done, record.DONE, epochs=3)
    _write(tmp_path, other, record.DONE, epochs=3)
    listed = (tdir / "trial.json").read_text()
    (tdir / "trial.json").unlink()
    stray = record.trial_dir(tmp_path, "0123456789ab")  # no plan lists it, nothing names it
    stray.mkdir(parents=True)
    record.append_metrics(stray, {"epoch": 1})
    for _ in range(2):  # every time, not once
        assert main(["status", str(tmp_path)]) == 2
        out, err = capsys.readouterr()
        assert f"{tdir / 'trial.json'}: missing; 'ablate resume {tmp_path}' restores it" in err
        assert f"{stray / 'trial.json'}: missing, and sweep.json does not list this trial" in err
        assert len(err.strip().splitlines()) == 2
        assert stray.name in out and done.id in out
    monkeypatch.setattr(cli_run, "_make_results", lambda results: None)
    launched = []
    monkeypatch.setattr(raybackend, "_run_on_ray", lambda *a, **k: launched.append(a))
    with caplog.at_level("WARNING", logger="ablate.bookkeeping"):
        assert main(["resume", str(tmp_path)]) == 0  # both finished: nothing launches
    assert launched == [] and (tdir / "trial.json").read_text() == listed
    assert f"restored {tdir / 'trial.json'} from sweep.json" in caplog.text
    assert record.read_trial(tdir) == done


def test_plan_run_and_status_derive_the_same_state(tmp_path, monkeypatch, capsys):
    from ablate.plan import load_plan
    from tests.runner.conftest import write_sweep

    sweep = write_sweep(tmp_path / "tiny.yaml", seeds=[0, 1, 2])
    _, trials = load_plan(sweep)
    results = tmp_path / "results"
    bookkeeping.write_manifest(results, name="tiny", source=str(sweep), trials=trials,
                               max_concurrent=None)
    corrupt = _write(results, trials[0], record.DONE, epochs=3)
    (corrupt / "state.json").write_text('{"state": "do')
    damaged = _write(results, trials[1], record.DONE, epochs=3)
    lines = (damaged / "metrics.jsonl").read_text().split("\n")
    (damaged / "metrics.jsonl").write_text("\n".join([lines[0], "{oops", *lines[2:]]))
    expected = {trials[0].id: record.CORRUPT, trials[1].id: record.DAMAGED,
                trials[2].id: record.NEW}

    assert main(["plan", str(sweep), "--results", str(results), "--json", "--no-stats"]) == 0
    planned = {r["id"]: r["state"] for r in json.loads(capsys.readouterr().out)["trials"]}
    assert main(["status", str(results), "--json"]) == 0
    shown = {r["id"]: r["state"] for r in json.loads(capsys.readouterr().out)}
    assert planned == shown == expected

    launched = []
    monkeypatch.setattr(raybackend, "_run_on_ray", lambda *a, **k: launched.append(a))
    assert main(["run", str(sweep), "--results", str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert launched == [] and "\n" not in err and f"{corrupt / 'state.json'}: corrupt" in err
    (corrupt / "state.json").unlink()  # the user deletes it, as the hint says
    assert main(["run", str(sweep), "--results", str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert launched == [] and f"{damaged / 'metrics.jsonl'}:2: unreadable" in err


def test_a_finished_trial_whose_metrics_were_emptied_is_damaged(tmp_path, capsys, monkeypatch):
    """status showed "done 0/3" and exited 0; the tables would have held no epochs of it."""
    from ablate.plan import load_plan
    from tests.runner.conftest import write_sweep

    sweep = write_sweep(tmp_path / "tiny.yaml", seeds=[0, 1])
    _, trials = load_plan(sweep)
    results = tmp_path / "results"
    bookkeeping.write_manifest(results, name="tiny", source=str(sweep), trials=trials,
                               max_concurrent=None)
    for t in trials:
        tdir = _write(results, t, record.DONE, epochs=3)
        record.write_result(tdir, {"state": record.DONE, "epochs": 3})
    emptied = record.trial_dir(results, trials[1].id) / "metrics.jsonl"
    emptied.write_text("")
    assert main(["status", str(results), "--json"]) == 0
    shown = {r["id"]: r["state"] for r in json.loads(capsys.readouterr().out)}
    assert shown == {trials[0].id: record.DONE, trials[1].id: record.DAMAGED}
    launched = []
    monkeypatch.setattr(raybackend, "_run_on_ray", lambda *a, **k: launched.append(a))
    assert main(["run", str(sweep), "--results", str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert launched == [] and "\n" not in err and "ablate reset" in err
    assert f"{emptied}: holds 0 of the 3 epochs result.json counts" in err


def test_a_renamed_arm_relabels_its_finished_trials_tables_and_curves(tmp_path, capsys):
    """The label is not in the id: the finished trial is kept, and what the tables and
    TensorBoard call it follows the sweep file (its configuration stays as it ran)."""
    import pandas as pd

    from tests.runner.conftest import TINY_TRAIN, write_sweep

    sweep = write_sweep(tmp_path / "s.yaml", seeds=[0], train={**TINY_TRAIN, "epochs": 1},
                        arms="arms:\n  k5: {model.kernel_size: 5}\nexpected:\n  k5: {val/top1: 10}\n")
    results = tmp_path / "results"
    assert main(["run", str(sweep), "--debug", "--results", str(results)]) == 0
    tables = pd.read_parquet(results / "trials.parquet").set_index("arm")
    tid = tables.loc["k5", "id"]
    tdir = record.trial_dir(results, tid)
    before = record.read_trial(tdir)
    metrics = (tdir / "metrics.jsonl").read_bytes()
    sweep.write_text(sweep.read_text().replace("k5:", "small_kernel:").replace(
        "val/top1: 10", "val/top1: 12"))
    assert main(["run", str(sweep), "--debug", "--results", str(results)]) == 0
    assert "0 to run" in capsys.readouterr().out  # nothing recomputed
    after = record.read_trial(tdir)
    assert (after.arm, after.expected, after.id) == ("small_kernel", {"val/top1": 12}, tid)
    assert (after.config, after.resources) == (before.config, before.resources)
    assert (tdir / "metrics.jsonl").read_bytes() == metrics
    tables = pd.read_parquet(results / "trials.parquet")
    assert sorted(tables["arm"]) == ["baseline", "small_kernel"]
    assert [d.name for d in (tdir / "tensorboard").iterdir()] == ["small_kernel.seed0"]


def test_an_unreadable_sweep_json_is_rewritten_by_the_run_its_hint_names(tmp_path, monkeypatch,
                                                                          capsys):
    """resume, status and a plain run refuse it in one line that names the command which
    rewrites it from the sweep file; that command does, keeping the finished trial."""
    from ablate.cli import run as cli_run
    from tests.runner.conftest import write_sweep

    sweep = write_sweep(tmp_path / "tiny.yaml", seeds=[0])
    results = tmp_path / "results"
    monkeypatch.setattr(cli_run, "_make_results", lambda results: None)
    assert main(["run", str(sweep), "--results", str(results), "--debug"]) == 0
    (results / bookkeeping.MANIFEST).write_text('{"name": "tin')
    capsys.readouterr()
    rewrite = f"'ablate run SWEEP.yaml --results {results} --yes'"
    for argv in (["resume", str(results), "--debug"], ["status", str(results)],
                 ["run", str(sweep), "--results", str(results), "--debug"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "sweep.json: corrupt JSON" in err and rewrite in err
    launched = []
    monkeypatch.setattr(raybackend, "_run_on_ray", lambda *a, **k: launched.append(a))
    assert main(["run", str(sweep), "--results", str(results), "--yes"]) == 0
    assert launched == []  # the trial stayed finished: nothing to launch
    assert "1 already finished, 0 to run" in capsys.readouterr().out
    listed = [t.id for t in bookkeeping.read_manifest(results)["trials"]]
    assert listed == [d.name for d in record.list_trial_dirs(results)]
    assert main(["resume", str(results), "--debug"]) == 0
