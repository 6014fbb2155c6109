"""The planner: expansion counts, ids, order, roles, labels, exclusions, limits and states."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from ablate.config import TrialConfig
from ablate.errors import SpecError
from ablate.plan import load_plan, num_classes, plan_trials, run_action, trial_states
from ablate.record import trial_dir, write_state
from ablate.spec import load_sweep
from tests.plan.conftest import MINIMAL

ROOT = Path(__file__).resolve().parents[2]


def test_grid_paired_arms_and_seeds_multiply(write_sweep):
    path = write_sweep("""
        grid: {train.epochs: [2, 3, 4], model.se: [false, true]}
        paired: {train.lr: [1.0e-3, 2.0e-3], train.batch_size: [32, 64]}
        arms: {k5: {model.kernel_size: 5}}
        seeds: [0, 1]
    """)
    _, trials = load_plan(path)
    assert len(trials) == 2 * 3 * 2 * 2 * 2  # arms (with baseline) x grid x paired x seeds
    assert len({t.id for t in trials}) == len(trials)
    # paired values move together, never crossed
    assert {(t.config.train.lr, t.config.train.batch_size) for t in trials} == {
        (1e-3, 32), (2e-3, 64)}


def test_order_is_seed_major_with_baselines_first(write_sweep):
    path = write_sweep("""
        arms: {k5: {model.kernel_size: 5}, se: {model.se: true}}
        grid: {train.epochs: [2, 3]}
        seeds: [7, 3]
    """)
    _, trials = load_plan(path)
    keys = [(t.config.seed, t.role, t.arm) for t in trials]
    assert keys == [
        (7, "baseline", "baseline, epochs=2"), (7, "baseline", "baseline, epochs=3"),
        (7, "arm", "k5, epochs=2"), (7, "arm", "k5, epochs=3"),
        (7, "arm", "se, epochs=2"), (7, "arm", "se, epochs=3"),
        (3, "baseline", "baseline, epochs=2"), (3, "baseline", "baseline, epochs=3"),
        (3, "arm", "k5, epochs=2"), (3, "arm", "k5, epochs=3"),
        (3, "arm", "se, epochs=2"), (3, "arm", "se, epochs=3")]


def test_grid_only_baseline_is_the_first_point(write_sweep):
    _, trials = load_plan(write_sweep("grid: {model.kernel_size: [5, 3, 7]}\n"))
    assert [(t.arm, t.role) for t in trials] == [
        ("kernel_size=5", "baseline"), ("kernel_size=3", "arm"), ("kernel_size=7", "arm")]
    assert trials[1].varied == {"model.kernel_size": 3}


def test_varied_shows_every_armed_axis_on_every_trial(write_sweep):
    _, trials = load_plan(write_sweep("""
        arms: {k5: {model.kernel_size: 5}, se: {model.se: true}}
    """))
    base, k5, se = trials
    assert base.varied == {"model.kernel_size": None, "model.se": None}
    assert k5.varied == {"model.kernel_size": 5, "model.se": None}
    assert se.varied == {"model.kernel_size": None, "model.se": True}


def test_ids_are_the_config_hash_and_ignore_labels_and_order(write_sweep):
    _, a = load_plan(write_sweep("""
        arms: {k5: {model.kernel_size: 5}, se: {model.se: true}}
        grid: {train.epochs: [2, 3]}
    """, name="a"))
    _, b = load_plan(write_sweep("""
        baseline: reference
        arms:
          with_se: {model.se: true}
          kernel5: {model.kernel_size: 5}
          k7: {model.kernel_size: 7}  # (kernel_size 3 is dwnet_nano's own: refused)
        grid: {train.epochs: [3, 2]}
    """, name="b", base=MINIMAL.replace("name: t", "name: renamed")))
    assert all(t.id == t.config.trial_id() for t in a + b)
    assert {t.id for t in a} < {t.id for t in b}  # reordered, renamed and extended: ids kept
    by_id = {t.id: t for t in b}
    assert {by_id[t.id].config for t in a} == {t.config for t in a}


def test_exclude_drops_exactly_the_matching_trials(write_sweep):
    _, trials = load_plan(write_sweep("""
        grid: {model.kernel_size: [3, 5, 7], model.se: [false, true], train.epochs: [2, 3]}
        exclude:
          - {model.kernel_size: [3, 5], model.se: true}
          - {train.epochs: 3, model.kernel_size: 7}
    """))
    got = {(t.config.model.kernel_size, t.config.model.se, t.config.train.epochs) for t in trials}
    want = {(k, s, e) for k in (3, 5, 7) for s in (False, True) for e in (2, 3)
            if not (k in (3, 5) and s) and not (e == 3 and k == 7)}
    assert got == want


def test_exclude_by_seed(write_sweep):
    _, trials = load_plan(write_sweep("""
        arms: {se: {model.se: true}}
        seeds: [0, 1]
        exclude: [{seed: 1, model.se: true}]
    """))
    assert [(t.arm, t.config.seed) for t in trials] == [("baseline", 0), ("se", 0),
                                                        ("baseline", 1)]


def test_expected_reaches_the_trials(write_sweep):
    _, trials = load_plan(write_sweep("""
        grid: {model.kernel_size: [3, 5]}
        expected:
          kernel_size=3: {val/top1: 81.2}
          kernel_size=5: {val/top1: "> kernel_size=3", val/loss: "~kernel_size=3 +- 0.1"}
        alpha: 0.01
    """))
    assert trials[0].expected == {"val/top1": 81.2}
    assert trials[1].expected == {
        "val/top1": {"op": ">", "than": "kernel_size=3", "alpha": 0.01},
        "val/loss": {"op": "~", "than": "kernel_size=3", "margin": 0.1, "alpha": 0.01}}


def test_max_trials_needs_confirmation(write_sweep):
    path = write_sweep("grid: {train.epochs: [2, 3, 4]}\nmax_trials: 2\n")
    with pytest.raises(SpecError, match="more than max_trials=2"):
        load_plan(path)
    assert len(load_plan(path, confirm=True)[1]) == 3


def test_model_errors_point_at_the_axis_that_caused_them(write_sweep):
    path = write_sweep("""
        arms:
          ok: {model.se: true}
          bad: {model.weight_source: pooled_linear, model.window: shifted}
    """)
    with pytest.raises(SpecError) as info:
        load_plan(path)
    err = info.value
    assert (err.key, err.line) == ("arms.bad.model.window", 10)
    assert "not supported" in err.what and "trial 'bad'" in err.what


def test_model_errors_from_the_grid_name_the_value(write_sweep):
    path = write_sweep("grid:\n  model.group_size: [1, 2, 5]\n", base=MINIMAL_SWIN)
    with pytest.raises(SpecError) as info:
        load_plan(path)
    assert (info.value.key, info.value.line) == ("grid.model.group_size[2]", 8)


def test_unknown_arch_suggests_the_nearest(write_sweep):
    path = write_sweep("arms: {x: {model.arch: dwnet_nanoo}}\n")
    with pytest.raises(SpecError) as info:
        load_plan(path)
    assert info.value.key == "arms.x.model.arch"
    assert "did you mean 'dwnet_nano'" in info.value.hint


MINIMAL_SWIN = """\
name: t
description: a test sweep
base:
  model: {arch: ablate_swin_nano}
  data: {name: digits}
  train: {epochs: 2, warmup_epochs: 1}
"""


def test_data_folders_are_checked_unless_disabled(write_sweep, tmp_path):
    path = write_sweep("grid: {data.root: [%s, %s/missing]}\n" % (tmp_path, tmp_path),
                       base=MINIMAL.replace("{name: digits}", "{name: imagefolder}"))
    for split in ("train", "val"):
        for c in ("cat", "dog"):  # each class needs an image: empty ones are refused
            (tmp_path / split / c).mkdir(parents=True)
            (tmp_path / split / c / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(SpecError) as info:
        load_plan(path)
    assert info.value.key == "grid.data.root[1]" and "does not exist" in info.value.what
    _, trials = load_plan(path, check_data=False)
    assert num_classes(trials[0].config.data) == 2


def test_trial_states_and_actions(tmp_path, write_sweep):
    _, trials = load_plan(write_sweep("grid: {train.epochs: [2, 3, 4, 5]}\n"))
    results = tmp_path / "results"
    for t, state in zip(trials[1:], ("done", "failed", "running")):
        write_state(trial_dir(results, t.id), state)
    states = trial_states(trials, results)
    assert [states[t.id] for t in trials] == ["new", "done", "failed", "running"]
    assert [run_action(s) for s in ("new", "done", "diverged", "failed", "interrupted",
                                     "corrupt", "damaged")] == [
        "start", "skip", "skip", "resume", "resume", "stop", "stop"]


def test_load_plan_fills_the_sweep(write_sweep):
    sweep, trials = load_plan(write_sweep("grid: {train.epochs: [2, 3]}\n"))
    assert list(sweep.trials) == trials
    assert load_sweep(sweep.path).trials == ()
    assert plan_trials(load_sweep(sweep.path)) == trials


@pytest.mark.parametrize("name", ["quickstart", "source_window_cpu", "main_comparison"])
def test_resolved_sweep_round_trips_through_yaml(name, tmp_path):
    sweep, trials = load_plan(ROOT / f"sweeps/{name}.yaml", check_data=False)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep.to_dict(), sort_keys=False))
    again, trials_again = load_plan(path, check_data=False)
    assert trials_again == trials
    assert dataclasses.replace(again, path=sweep.path, extends=sweep.extends,
                               trials=sweep.trials) == sweep


def test_trial_config_round_trips(write_sweep):
    _, trials = load_plan(write_sweep("arms: {se: {model.se: true}}\n"))
    for t in trials:
        assert TrialConfig.from_dict(t.config.to_dict()) == t.config
        assert type(t).from_dict(t.to_dict()) == t


def test_an_arm_that_restates_the_models_default_is_refused_and_ids_stay(write_sweep):
    # kernel_size 3 is dwnet_nano's own: the arm would train the baseline's network again (a
    # new id, the same model) and the report would compare the model with itself
    with pytest.raises(SpecError) as info:
        load_plan(write_sweep("arms: {k3: {model.kernel_size: 3}, k5: {model.kernel_size: 5}}"))
    assert info.value.key == "arms.k3.model.kernel_size"
    assert "arm 'k3' builds the same model as 'baseline'" in info.value.what
    assert "model.kernel_size 3 is dwnet_nano's default" in info.value.what
    # a grid value that restates it is refused at its index; with another recipe it is a
    # different trial, and kept
    with pytest.raises(SpecError) as info:
        load_plan(write_sweep("grid: {model.drop_path_rate: [null, 0.0]}"))
    assert info.value.key == "grid.model.drop_path_rate[1]"
    _, trials = load_plan(write_sweep("paired: {model.kernel_size: [null, 3], "
                                      "train.epochs: [2, 3]}"))
    assert len(trials) == 2 and len({t.id for t in trials}) == 2
