"""A file where a results folder has a folder, or a folder where it has a file (a copy gone
wrong, a hand edit): every command says so in one line naming the path, with exit status 2,
and launches nothing; ``collect`` (and the ``report`` and ``figures`` that collect first) skip
a trial whose record cannot be read with a warning naming it, as for a corrupt JSON file."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from ablate import bookkeeping, raybackend, record
from ablate.cli import main
from tests.runner.conftest import write_sweep


@pytest.fixture
def finished(tmp_path):
    """A sweep file and its results folder: two done trials, collected, figures drawn."""
    from ablate.plan import load_plan
    from tests.results import factory

    sweep = write_sweep(tmp_path / "tiny.yaml", seeds=[0, 1])
    _, trials = load_plan(sweep)
    results = tmp_path / "results"
    bookkeeping.write_manifest(results, name="tiny", source=str(sweep), trials=trials,
                               max_concurrent=None)
    with factory.fast_writes():
        for t in trials:
            factory.write_record(results, t, top1=50.0 + t.config.seed)
    return sweep, results, record.trial_dir(results, trials[0].id)


def _file(path):
    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    path.write_text("not a folder\n")
    return path


def _folder(path):
    path.unlink(missing_ok=True)
    (path / "inside").mkdir(parents=True)
    return path


def _garbled(path):
    path.write_text('{"name": "cut sh')
    return path


def _edited(name, change):
    """A hand edit that leaves the record valid JSON of the wrong shape."""
    def edit(r, t):
        path = t / name
        obj = json.loads(path.read_text())
        change(obj)
        path.write_text(json.dumps(obj))
        return path
    return edit


def _digits(r, t):
    path = t / "result.json"
    path.write_text(path.read_text().replace('"epochs": ', '"epochs": 1' + "0" * 5000 + ", "
                                             '"x": ', 1))
    return path


# name -> (what breaks, given (results, tdir): the path the line must name)
BREAKS = {
    "trial folder is a file": lambda r, t: _file(t),
    "trials is a file": lambda r, t: _file(r / "trials"),
    "metrics.jsonl is a folder": lambda r, t: _folder(t / "metrics.jsonl"),
    "trial.json is a folder": lambda r, t: _folder(t / "trial.json"),
    "state.json is a folder": lambda r, t: _folder(t / "state.json"),
    "sweep.json is a folder": lambda r, t: _folder(r / "sweep.json"),
    "sweep.json is not JSON": lambda r, t: _garbled(r / "sweep.json"),
    "figures is a file": lambda r, t: _file(r / "figures"),
    "tables is a file": lambda r, t: _file(r / "tables"),
    "trials.parquet is a folder": lambda r, t: _folder(r / "trials.parquet"),
}
HAND_EDITS = {  # each was a traceback in collect/report/status, or a trial dropped in silence
    "result.json best is a number": _edited("result.json", lambda o: o.update(best=5)),
    "result.json epochs has 5000 digits": _digits,
    "trial.json has no config": _edited("trial.json", lambda o: o.pop("config")),
    "trial.json train is a list": _edited("trial.json", lambda o: o["config"].update(train=[])),
    "trial.json epochs is a string": _edited("trial.json",
                                             lambda o: o["config"]["train"].update(epochs="x")),
    "state.json updated is NaN": _edited("state.json", lambda o: o.update(updated=math.nan)),
    "state.json updated is 1e300": _edited("state.json", lambda o: o.update(updated=1e300)),
}
BREAKS.update(HAND_EDITS)
TRIAL_LEVEL = ("trial folder is a file", "metrics.jsonl is a folder", "trial.json is a folder",
               "state.json is a folder", *HAND_EDITS)
# (break, command): 2 = one error line naming the path; "warn" = exit 0 with a warning line
# naming it; "shown" = exit 0, the trial shown as corrupt or damaged (plan, as for bad JSON)
CASES = [
    *[(b, c, 2) for b in (*TRIAL_LEVEL, "trials is a file") for c in ("status", "run")],
    *[(b, "plan", "shown") for b in TRIAL_LEVEL],
    ("trials is a file", "plan", 2),
    ("trials is a file", "prune", 2),
    ("trials is a file", "collect", 2),
    *[(b, c, "warn") for b in TRIAL_LEVEL for c in ("collect", "report")],
    *[(b, c, 2) for b in ("sweep.json is a folder", "sweep.json is not JSON")
      for c in ("status", "report", "resume", "run")],
    ("figures is a file", "figures", 2),
    ("tables is a file", "report", 2),
    ("trials.parquet is a folder", "collect", 2),
    ("trials.parquet is a folder", "report", 2),
]


@pytest.mark.parametrize("broken,command,expect", CASES,
                         ids=[f"{b}-{c}" for b, c, _ in CASES])
def test_a_file_or_folder_in_the_wrong_place_is_one_line(finished, monkeypatch, capsys,
                                                          broken, command, expect):
    sweep, results, tdir = finished
    bad = BREAKS[broken](results, tdir)
    launched = []
    monkeypatch.setattr(raybackend.RayBackend, "session", lambda *a: launched.append(a))
    argv = {"status": ["status", str(results)], "prune": ["prune", str(results)],
            "plan": ["plan", str(sweep), "--results", str(results), "--no-stats"],
            "run": ["run", str(sweep), "--results", str(results)],
            "resume": ["resume", str(results)], "collect": ["collect", str(results)],
            "report": ["report", str(results)],
            "figures": ["figures", str(results), "--format", "svg"]}[command]
    code = main(argv)
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("ablate: error:")]
    assert launched == []
    if expect == 2:
        assert code == 2 and len(errors) == 1 and str(bad) in errors[0], err
        assert "Traceback" not in err
        if bad.name == "sweep.json":  # never "delete it": that would lose the plan
            assert "rewrite it from the sweep file with 'ablate run SWEEP.yaml" in errors[0]
    elif expect == "warn":
        assert code == 0 and errors == [], err
        warnings = [line for line in err.splitlines() if line.startswith("ablate: warning:")]
        assert len(warnings) == 1 and str(bad) in warnings[0], err
    else:
        row = next(line for line in out.splitlines() if line.startswith(tdir.name))
        assert code == 0 and (" corrupt " in row or " damaged " in row), out


def test_plan_with_a_file_as_results_folder_is_one_line(finished, tmp_path, capsys):
    sweep, _, _ = finished
    afile = _file(tmp_path / "afile")
    assert main(["plan", str(sweep), "--results", str(afile)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{afile}: --results: is a file, not a results folder" in err


@pytest.fixture
def interrupted(tmp_path):
    """A results folder whose one trial was stopped after its 3 epochs' checkpoints were
    written, before its result: resuming it loads epoch_0003.pt and trains nothing more."""
    from tests.runner.conftest import TINY_TRAIN

    sweep = write_sweep(tmp_path / "tiny.yaml", seeds=[0],
                        train={**TINY_TRAIN, "keep_checkpoints": 3})
    results = tmp_path / "results"
    assert main(["run", str(sweep), "--results", str(results), "--debug"]) == 0
    [tdir] = record.list_trial_dirs(results)
    (tdir / "result.json").unlink()
    record.write_state(tdir, record.RUNNING)
    return results, tdir


@pytest.mark.parametrize("broken", ["checkpoints", "checkpoints/epoch_0003.pt",
                                    "checkpoints/best.pt"])
def test_checkpoints_that_would_fail_the_trial_stop_resume_before_launch(
        interrupted, monkeypatch, capsys, broken):
    results, tdir = interrupted
    bad = tdir / broken
    _file(bad) if broken == "checkpoints" else _folder(bad)
    metrics = (tdir / "metrics.jsonl").read_bytes()
    launched = []
    monkeypatch.setattr(raybackend.RayBackend, "session", lambda *a: launched.append(a))
    capsys.readouterr()
    assert main(["resume", str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert launched == [] and "\n" not in err and f"{bad}: " in err
    assert "delete it" in err and "ablate reset" in err
    assert (tdir / "metrics.jsonl").read_bytes() == metrics
    assert record.read_state(tdir) == record.RUNNING  # nothing written


@pytest.mark.parametrize("cut", [0, 5000, "metrics"])
def test_a_newest_checkpoint_resume_will_skip_is_said_before_it_runs(interrupted, capsys, cut):
    """An empty or truncated epoch_0003.pt, or a whole one whose epoch's metrics line is torn:
    the trial falls back to epoch_0002.pt and trains epoch 3 again; the run says so, naming
    the file, instead of only a worker's log."""
    results, tdir = interrupted
    newest = tdir / "checkpoints" / "epoch_0003.pt"
    if cut == "metrics":
        metrics = tdir / "metrics.jsonl"
        metrics.write_bytes(metrics.read_bytes()[:-20])
    else:
        newest.write_bytes(newest.read_bytes()[:cut])
    capsys.readouterr()
    assert main(["resume", str(results), "--debug"]) == 0
    out, err = capsys.readouterr()
    note = [line for line in err.splitlines() if line.startswith(f"ablate: warning: {newest}")]
    assert len(note) == 1 and "resumes from epoch_0002.pt" in note[0], err
    assert ("empty" in note[0]) == (cut == 0)
    assert ("metrics.jsonl records epochs 1-2 only" in note[0]) == (cut == "metrics")
    assert [r["epoch"] for r in record.read_metrics(tdir)] == [1, 2, 3]
    assert record.read_state(tdir) == record.DONE
