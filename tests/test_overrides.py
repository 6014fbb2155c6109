"""``--set``, ``--only`` and ``--seeds`` on plan, run and train, through the real CLI.

The ids rule under overrides: a trial the override changes gets a new id (start), one it leaves
alone keeps its id (skip), checked against a results folder of fabricated records.
"""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ablate import bookkeeping, raycluster, record
from ablate.cli import main
from ablate.errors import SpecError
from ablate.plan import load_plan
from ablate.spec import load_sweep
from tests.results.factory import write_record

SWEEP = """\
name: ov
description: a sweep for the override tests
base:
  model: {arch: dwnet_nano}
  data: {name: digits, num_train: 64, num_val: 32}
  train: {epochs: 2, batch_size: 16, warmup_epochs: 0, mixup: 0.0, cutmix: 0.0,
          randaugment: null, reprob: 0.0, workers: 0}
  resources: {cpus: 1}
arms:
  se: {model.se: true}
grid:
  model.kernel_size: [3, 5]
seeds: [0, 1]
"""


@pytest.fixture
def sweep(tmp_path):
    path = tmp_path / "ov.yaml"
    path.write_text(SWEEP)
    return path


def _plan(capsys, sweep, results, *flags):
    assert main(["plan", str(sweep), "--json", "--no-stats", "--results", str(results),
                 *flags]) == 0
    return json.loads(capsys.readouterr().out)


def _finish_all(sweep, results):
    """Records of every trial of the file's own plan, as a finished run leaves them."""
    _, trials = load_plan(sweep)
    for i, t in enumerate(trials):
        write_record(results, t, top1=50.0 + i)
    return trials


def test_an_override_of_one_axis_starts_only_the_trials_it_changes(tmp_path, sweep, capsys):
    results = tmp_path / "res"
    done = {t.id for t in _finish_all(sweep, results)}
    report = _plan(capsys, sweep, results, "--set", "model.kernel_size=5,7")
    rows = report["trials"]
    assert {r["config"]["model"]["kernel_size"] for r in rows} == {5, 7}
    for r in rows:
        changed = r["config"]["model"]["kernel_size"] == 7
        assert (r["id"] in done) is not changed
        assert (r["state"], r["action"]) == (("new", "start") if changed else ("done", "skip"))
    assert report["totals"]["actions"] == {"start": 4, "skip": 4}
    assert report["sweep"]["overrides"] == ["--set model.kernel_size=5,7"]


def test_overrides_that_change_no_result_keep_every_id(tmp_path, sweep, capsys):
    results = tmp_path / "res"
    done = {t.id for t in _finish_all(sweep, results)}
    # workers is operational, max_concurrent bookkeeping: neither enters an id
    rows = _plan(capsys, sweep, results, "--set", "train.workers=1", "--set",
                 "max_concurrent=2")["trials"]
    assert {r["id"] for r in rows} == done and {r["action"] for r in rows} == {"skip"}
    rows = _plan(capsys, sweep, results, "--set", "base.train.epochs=1")["trials"]
    assert {r["config"]["train"]["epochs"] for r in rows} == {1}
    assert not {r["id"] for r in rows} & done and {r["action"] for r in rows} == {"start"}


def test_values_are_read_as_yaml_and_keys_reach_anywhere(tmp_path, sweep, capsys):
    report = _plan(capsys, sweep, tmp_path / "res", "--set", "train.lr=1e-3", "--set",
                   "seeds=[3, 4, 5]", "--set", "max_concurrent=2", "--set", "model.se=true",
                   "--set", "arms.se.model.drop_path_rate=0.05",
                   "--set", "grid.model.kernel_size=null")
    rows = report["trials"]
    assert report["sweep"]["max_concurrent"] == 2
    assert {r["seed"] for r in rows} == {3, 4, 5} and len(rows) == 6  # 2 arms x 3 seeds
    assert {r["config"]["train"]["lr"] for r in rows} == {0.001}
    assert {r["config"]["model"]["se"] for r in rows} == {True}
    assert {r["label"]: r["config"]["model"]["drop_path_rate"] for r in rows} == {
        "baseline": None, "se": 0.05}
    assert {r["config"]["model"]["kernel_size"] for r in rows} == {None}  # the axis is gone


def test_a_value_holding_a_comma_is_quoted(tmp_path, capsys):
    path = tmp_path / "folder.yaml"
    path.write_text("description: d\nbase:\n  model: {arch: dwnet_nano}\n"
                    "  data: {name: imagefolder, root: /nowhere, num_classes: 2}\n")
    rows = _plan(capsys, path, tmp_path / "res", "--no-data-check", "--set",
                 'data.root="/scratch/a,b"')["trials"]
    assert [r["config"]["data"]["root"] for r in rows] == ["/scratch/a,b"]
    rows = _plan(capsys, path, tmp_path / "res", "--no-data-check", "--set",
                 "data.root=/scratch/a,/scratch/b")["trials"]
    assert [r["config"]["data"]["root"] for r in rows] == ["/scratch/a", "/scratch/b"]


def test_only_and_seeds_select_part_of_the_plan(tmp_path, sweep, capsys):
    results = tmp_path / "res"
    full = _plan(capsys, sweep, results)["trials"]

    def pick(*flags):
        return [r["id"] for r in _plan(capsys, sweep, results, *flags)["trials"]]

    assert pick("--only", "se") == [r["id"] for r in full if r["label"].startswith("se,")]
    assert pick("--only", "kernel_size=5", "--seeds", "1") == [
        r["id"] for r in full if r["config"]["model"]["kernel_size"] == 5 and r["seed"] == 1]
    # whole labels hold commas themselves; several of them are joined by commas
    assert pick("--only", "se, kernel_size=3,baseline, kernel_size=5") == [
        r["id"] for r in full if r["label"] in ("se, kernel_size=3", "baseline, kernel_size=5")]
    assert pick("--only", "se", "--only", "baseline") == [r["id"] for r in full]


BAD = [
    (["--set", "train.epochs=x"], "--set train.epochs=x: base.train.epochs: expected an integer"),
    (["--set", "train.epochs"], "--set train.epochs: expected KEY=VALUE"),
    (["--set", "=3"], "--set =3: expected KEY=VALUE"),
    (["--set", "train.epochz=1"], "--set train.epochz=1: base.train.epochz: unknown key "
                                  "'epochz'; did you mean 'epochs'?"),
    (["--set", "train.epochs=0"], "--set train.epochs=0: base.train.epochs: must be >= 1"),
    (["--set", "model.kernel_size=3,x"], "--set model.kernel_size=3,x: grid.model.kernel_size"),
    (["--set", "model.kernel_size=3,3"], "--set model.kernel_size=3,3: grid.model.kernel_size"
                                         "[1]: value integer 3 listed twice"),
    (["--set", "seeds=[0, -1]"], "--set seeds=[0, -1]: seeds[1]: must be >= 0"),
    (["--set", "train.epochs=[1"], "--set train.epochs=[1: the value is not YAML"),
    (["--set", "extends=other.yaml"], "--set extends=other.yaml: extends is read before"),
    (["--set", "maxconcurrent=2"], "did you mean 'max_concurrent'?"),
    (["--set", "train.lr=1e-3,x"], "--set train.lr=1e-3,x: grid.train.lr[1]: expected a number"),
    (["--set", "train.lr=1e-3,,2e-3"], "--set train.lr=1e-3,,2e-3: the value is not YAML"),
    (["--set", "train.lr="], "--set train.lr=: no value given; write null to unset the key"),
    # an arm the flag makes is the flag's, not the sweep file's line of arms:
    (["--set", "arms.twin.model.arch=dwnet_nano"], "--set arms.twin.model.arch=dwnet_nano: "
                                                    "arms.twin: trial 'twin, kernel_size=3' "
                                                    "(seed 0) is identical to 'baseline, "),
    (["--set", "arms.baseline.model.se=true"], "--set arms.baseline.model.se=true: "
                                               "arms.baseline: arm 'baseline' has the "
                                               "baseline's label"),
    (["--only", "sse"], "--only sse: no trial is labelled 'sse'; did you mean 'se'?"),
    (["--seeds", "7"], "--seeds 7: the plan has no seed 7; its seeds are 0, 1"),
    (["--seeds", "0,x"], "--seeds 0,x: expected seeds as whole numbers"),
]


@pytest.mark.parametrize("command", ["plan", "run"])
@pytest.mark.parametrize("flags,message", BAD, ids=[" ".join(f) for f, _ in BAD])
def test_a_bad_flag_is_one_line_exit_2_and_nothing_written(tmp_path, sweep, capsys, command,
                                                           flags, message):
    results = tmp_path / "res"
    assert main([command, str(sweep), "--results", str(results), *flags]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ablate: error: ") and message in err[0], err
    assert captured.out == "" and not results.exists()


KEYS = ["train.epochs", "base.train.lr", "model.kernel_size", "model.se", "data.img_size",
        "seeds", "max_concurrent", "grid.model.kernel_size", "arms.se.model.se", "arms.x",
        "resources.cpus", "base", "base.model", "paired.model.window", "exclude", "name"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(KEYS) | st.text(max_size=12),
                          st.text(max_size=16) | st.sampled_from(
                              ["1", "1e-3", "null", "[0, 1]", "3,5", "true", "{a: 1}", "[",
                               "-1", "x,y", "'a,b'", ".inf"])), max_size=3))
def test_any_override_gives_a_sweep_or_our_error(tmp_path_factory, pairs):
    """Whatever the flags hold, the result is a sweep or a SpecError, never another error."""
    path = tmp_path_factory.getbasetemp() / "prop.yaml"
    if not path.exists():
        path.write_text(SWEEP)
    try:
        load_sweep(path, tuple(f"{k}={v}" for k, v in pairs))
    except SpecError as e:
        assert "\n" not in str(e)


TRIAL = {"model": {"arch": "dwnet_nano"},
         "data": {"name": "synthetic", "num_train": 32, "num_val": 16, "num_classes": 4},
         "train": {"epochs": 3, "batch_size": 16, "warmup_epochs": 0, "workers": 0},
         "seed": 1}


@pytest.mark.parametrize("flags,message", [
    (["--set", "train.epochs=x"], "--set train.epochs=x: train.epochs: expected an integer"),
    (["--set", "model.kernel_size=3,5"], "--set model.kernel_size=3,5: several values make a "
                                         "grid axis"),
    (["--set", "seeds=[2]"], "--set seeds=[2]: a trial config has no key 'seeds'"),
])
def test_train_refuses_a_bad_override_in_one_line(tmp_path, capsys, flags, message):
    cfg = tmp_path / "trial.yaml"
    cfg.write_text(yaml.safe_dump(TRIAL))
    assert main(["train", str(cfg), "--out", str(tmp_path / "t"), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "t").exists()


def test_train_takes_overrides_on_a_config_file_and_on_a_sweep(tmp_path, sweep, capsys):
    cfg = tmp_path / "trial.yaml"
    cfg.write_text(yaml.safe_dump(TRIAL))
    assert main(["train", str(cfg), "--out", str(tmp_path / "t"), "--set",
                 "train.epochs=1"]) == 0
    assert "done: 1 epochs" in capsys.readouterr().out
    assert len(record.read_metrics(tmp_path / "t")) == 1
    assert record.read_trial(tmp_path / "t").config.train.epochs == 1
    # with a sweep, the id is looked up in the plan the overrides make
    [trial] = load_plan(sweep, overrides=("train.epochs=1",), only=("se, kernel_size=3",),
                        seeds=(0,))[1]
    assert main(["train", "--sweep", str(sweep), "--trial", trial.id]) == 2
    assert f"unknown trial id '{trial.id}'" in capsys.readouterr().err
    assert main(["train", "--sweep", str(sweep), "--trial", trial.id, "--results",
                 str(tmp_path / "res"), "--set", "train.epochs=1"]) == 0
    assert f"trial {trial.id} " in capsys.readouterr().out
    assert len(record.read_metrics(record.trial_dir(tmp_path / "res", trial.id))) == 1


def test_sweep_json_keeps_the_overrides_until_a_plan_gives_others(tmp_path):
    results = tmp_path / "res"
    results.mkdir()
    kw = {"name": "ov", "source": "ov.yaml", "trials": [], "max_concurrent": None}
    bookkeeping.write_manifest(results, overrides=["--set train.epochs=1"], **kw)
    bookkeeping.write_manifest(results, **kw)  # ablate resume runs the same plan
    assert bookkeeping.read_manifest(results)["overrides"] == ["--set train.epochs=1"]
    bookkeeping.write_manifest(results, overrides=[], **kw)  # a run without overrides
    assert bookkeeping.read_manifest(results)["overrides"] == []


@pytest.mark.slow
def test_a_smoke_run_of_one_arm_then_a_reset_trial_runs_again_alone(tmp_path, sweep, capsys):
    """--set train.epochs=1 --only X runs X alone, on a real 2-CPU Ray; after ``ablate reset``
    of X, a run of the whole plan runs X from scratch and skips the finished rest."""
    sweep.write_text(SWEEP.replace("grid:\n  model.kernel_size: [3, 5]\n", "")
                     .replace("seeds: [0, 1]", "seeds: [0]"))
    results = tmp_path / "res"
    smoke = ["--results", str(results), "--set", "train.epochs=1"]
    base, se = load_plan(sweep, overrides=("train.epochs=1",))[1]
    assert (base.arm, se.arm) == ("baseline", "se")
    write_record(results, base, top1=40.0)  # the rest of the plan, finished
    before = (record.trial_dir(results, base.id) / "metrics.jsonl").read_bytes()
    with raycluster.ray_session(num_cpus=2):
        assert main(["run", str(sweep), *smoke, "--only", "se"]) == 0
        assert "1 trials, 0 already finished, 1 to run" in capsys.readouterr().out
        assert len(record.read_metrics(record.trial_dir(results, se.id))) == 1
        assert json.loads((results / "sweep.json").read_text())["overrides"] == [
            "--set train.epochs=1", "--only se"]
        first = (record.trial_dir(results, se.id) / "provenance.json").read_bytes()

        assert main(["reset", str(results), "--trial", se.id[:6], "--yes"]) == 0
        assert not record.trial_dir(results, se.id).exists()
        assert main(["run", str(sweep), *smoke]) == 0
        out = capsys.readouterr().out
    assert "2 trials, 1 already finished, 1 to run" in out
    assert record.read_state(record.trial_dir(results, se.id)) == record.DONE
    assert [r["epoch"] for r in record.read_metrics(record.trial_dir(results, se.id))] == [1]
    # a fresh record (provenance holds the wall time), the other trial's untouched
    assert (record.trial_dir(results, se.id) / "provenance.json").read_bytes() != first
    assert (record.trial_dir(results, base.id) / "metrics.jsonl").read_bytes() == before
    assert json.loads((results / "sweep.json").read_text())["overrides"] == [
        "--set train.epochs=1"]
