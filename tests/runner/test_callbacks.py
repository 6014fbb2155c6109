"""``--callback MODULE:FACTORY`` on run and resume: checked before launch, seen by Tune."""

from __future__ import annotations

import json
import uuid

import pytest

from ablate import bookkeeping, curves, raycluster, record, runner
from ablate.cli import main
from tests.runner.conftest import TINY_TRAIN, write_sweep
from tests.train.test_curves import read_events, scalars

# One result file per on_trial_result, in OUT (filled in by the test).
RECORDER = """\
import json
import threading
from pathlib import Path

from ray import tune

OUT = Path({out!r})


class Recorder(tune.Callback):
    def on_trial_result(self, iteration, trials, trial, result, **info):
        name = f"{{trial.config['trial']['id']}}-{{result['epoch']}}.json"
        (OUT / name).write_text(json.dumps({{"epoch": result["epoch"],
                                             "val/top1": result["val/top1"]}}))


def make():
    return Recorder()


class Locked(tune.Callback):
    def __init__(self):
        self.lock = threading.Lock()


def make_locked():
    return Locked()


def make_two():
    return [Recorder(), Recorder()]


def make_class():
    return Recorder


def make_mixed():
    return [Recorder(), "not a callback"]


def broken():
    raise RuntimeError("no tracking server at http://localhost:5000")


not_a_function = 3
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A callback module in a folder of its own, the working directory: (its name, OUT)."""
    name = f"recorder_{uuid.uuid4().hex[:8]}"  # a fresh name: modules are imported once
    folder, out = tmp_path / "lab", tmp_path / "out"
    folder.mkdir()
    out.mkdir()
    (folder / f"{name}.py").write_text(RECORDER.format(out=str(out)))
    (folder / "crashing_on_import.py").write_text("raise ImportError('needs mlflow>=3')\n")
    (folder / "exiting_on_import.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.chdir(folder)
    return name, out


@pytest.fixture
def no_launch(monkeypatch):
    """Fails the test if a run is started; records the callbacks a run would get."""
    seen = []

    def fake_run_plan(trials, results, *, callbacks=None, **kw):
        seen.append(callbacks)
        raise AssertionError("a run was started")

    monkeypatch.setattr(runner, "run_plan", fake_run_plan)
    return seen


@pytest.mark.parametrize("spec, says", [
    ("{m}", "expected MODULE:FACTORY"),
    ("{m}:", "expected MODULE:FACTORY"),
    ("no_such_module_xyz:make", "no module 'no_such_module_xyz' in the working directory"),
    ("crashing_on_import:make", "importing it raised ImportError: needs mlflow>=3"),
    ("exiting_on_import:make", "importing it raised SystemExit: 3"),
    ("sys:exit", "calling the factory raised SystemExit"),  # was exit 0, nothing run or said
    ("{m}:nope", "has no function 'nope'"),
    ("{m}:not_a_function", "is not callable"),
    ("{m}:broken", "calling the factory raised RuntimeError: no tracking server"),
    ("{m}:make_class", "returned the class Recorder, not a ray.tune.Callback"),
    ("{m}:make_mixed", "returned a str, not a ray.tune.Callback"),
    ("{m}:make_locked", "Tune cannot save the Locked the factory returned"),
])
@pytest.mark.parametrize("command", ["run", "resume"])
def test_a_bad_callback_is_one_line_and_nothing_is_written(tmp_path, plugin, no_launch, capsys,
                                                           spec, says, command):
    name, out = plugin
    spec = spec.format(m=name)
    sweep, results = write_sweep(tmp_path / "s.yaml", seeds=[0]), tmp_path / "results"
    argv = ["run", str(sweep), "--results", str(results)] if command == "run" \
        else ["resume", str(results)]
    assert main([*argv, "--callback", f"{name}:make", "--callback", spec]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"ablate: error: --callback {spec}: ")
    assert says in err and "Traceback" not in err
    assert not results.exists() and list(out.iterdir()) == [] and no_launch == []


def test_the_factories_callbacks_reach_the_run_in_order(tmp_path, plugin, monkeypatch):
    name, _ = plugin
    seen = []

    def fake_run_plan(trials, results, *, callbacks=None, **kw):
        seen.extend(callbacks)
        return runner.RunSummary(results, [], [], [], {}, [t.id for t in trials], 1.0, 0.0)

    monkeypatch.setattr(runner, "run_plan", fake_run_plan)
    sweep = write_sweep(tmp_path / "s.yaml", seeds=[0])
    assert main(["run", str(sweep), "--results", str(tmp_path / "r"),
                 "--callback", f"{name}:make_two", "--callback", f"{name}:make"]) == 1
    assert [type(c).__name__ for c in seen] == ["Recorder"] * 3
    assert len({id(c) for c in seen}) == 3


@pytest.mark.slow  # a real Ray
@pytest.mark.timeout(600)
def test_a_real_run_and_its_resume_feed_the_callback_and_the_curves(tmp_path, plugin, capsys):
    """Through the CLI on a 2-CPU Ray: the callback sees every epoch; after a resume that
    re-runs an epoch in a new worker, the TensorBoard file holds each epoch once."""
    name, out = plugin
    # Two checkpoints kept, so that epoch 1's is still there when the test removes epoch 2's
    # (with the default of one, a kill between the row and the checkpoint leaves epoch 1's).
    sweep = write_sweep(tmp_path / "s.yaml", seeds=[0],
                        train={**TINY_TRAIN, "epochs": 2, "keep_checkpoints": 2})
    results = tmp_path / "results"
    with raycluster.ray_session(num_cpus=2):
        assert main(["run", str(sweep), "--results", str(results),
                     "--callback", f"{name}:make"]) == 0
        [trial] = bookkeeping.read_manifest(results)["trials"]
        tdir = record.trial_dir(results, trial.id)
        assert sorted(p.name for p in out.iterdir()) == [f"{trial.id}-1.json",
                                                         f"{trial.id}-2.json"]
        for row in record.read_metrics(tdir):  # what the callback got is the trial's record
            got = json.loads((out / f"{trial.id}-{row['epoch']}.json").read_text())
            assert got == {"epoch": row["epoch"], "val/top1": row["val/top1"]}
        # As if killed after epoch 2's row but before its checkpoint: resume re-runs epoch 2,
        # and its callbacks see it.
        for p in [*out.iterdir(), tdir / "result.json", tdir / "checkpoints" / "epoch_0002.pt"]:
            p.unlink()
        record.write_state(tdir, record.RUNNING)
        assert main(["resume", str(results), "--callback", f"{name}:make"]) == 0
        assert sorted(p.name for p in out.iterdir()) == [f"{trial.id}-2.json"]
    events = read_events(curves.curves_dir(tdir, trial))
    assert [step for step, _ in scalars(events)["val/top1"]] == [1, 2]
    assert [step for step, _ in scalars(events)["train/lr"]] == [1, 2]
    assert "1 of 1 trials finished (1 in this run)" in capsys.readouterr().out


def test_run_help_names_the_flag(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "--callback MODULE:FACTORY" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["resume", "--help"])
    assert "--callback MODULE:FACTORY" in capsys.readouterr().out
