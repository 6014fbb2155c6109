"""``ablate plan``: text and JSON output, states from a results folder, errors as exit 2."""

import json
from pathlib import Path

from ablate.cli import main
from ablate.record import trial_dir, write_state

SWEEP = """\
name: cli
description: a sweep for the CLI tests
base:
  model: {arch: dwnet_nano}
  data: {name: digits}
  train: {epochs: 2, warmup_epochs: 1}
arms:
  se: {model.se: true}
grid:
  model.kernel_size: [3, 5]
"""

ROOT = Path(__file__).resolve().parents[2]


def test_plan_json_lists_trials_states_and_actions(tmp_path, capsys):
    path = tmp_path / "cli.yaml"
    path.write_text(SWEEP)
    assert main(["plan", str(path), "--json", "--no-stats"]) == 0
    report = json.loads(capsys.readouterr().out)
    trials = report["trials"]
    assert [t["label"] for t in trials] == ["baseline, kernel_size=3", "baseline, kernel_size=5",
                                            "se, kernel_size=3", "se, kernel_size=5"]
    assert {t["state"] for t in trials} == {"new"} and report["totals"]["trials"] == 4
    results = tmp_path / "res"
    write_state(trial_dir(results, trials[0]["id"]), "done")
    write_state(trial_dir(results, trials[1]["id"]), "failed")
    assert main(["plan", str(path), "--json", "--no-stats", "--results", str(results)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(t["state"], t["action"]) for t in report["trials"]] == [
        ("done", "skip"), ("failed", "resume"), ("new", "start"), ("new", "start")]
    assert report["totals"]["actions"] == {"skip": 1, "resume": 1, "start": 2}
    assert report["sweep"]["results_dir"] == str(results)


def test_plan_text_shows_every_trial_and_model_sizes(tmp_path, capsys):
    path = tmp_path / "cli.yaml"
    path.write_text(SWEEP.replace("[3, 5]", "[3]"))
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    from ablate.cli.plan import _si
    from ablate.models import model_stats
    from ablate.plan import load_plan

    _, trials = load_plan(path)
    for t in trials:
        assert t.id in out and t.arm in out
    stats = model_stats("dwnet_nano", num_classes=10, img_size=32, kernel_size=3, se=True)
    assert f"{_si(stats.params)}  {_si(stats.flops)}" in out
    assert "2 trials: 2 labels x 1 seeds" in out


def test_plan_errors_are_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "cli.yaml"
    path.write_text(SWEEP.replace("kernel_size: [3, 5]", "kernel_sise: [3, 5]"))
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and ":10: grid.model.kernel_sise: unknown axis" in err
    assert "did you mean 'model.kernel_size'" in err


def test_plan_larger_than_max_trials_needs_yes(tmp_path, capsys):
    path = tmp_path / "cli.yaml"
    path.write_text(SWEEP + "max_trials: 3\n")
    assert main(["plan", str(path), "--no-stats"]) == 2
    assert "max_trials" in capsys.readouterr().err
    assert main(["plan", str(path), "--no-stats", "--yes"]) == 0


def test_paper_sweep_plans_without_its_data(capsys):
    path = str(ROOT / "sweeps/main_comparison.yaml")
    assert main(["plan", path, "--no-stats"]) == 2
    assert "data folder does not exist" in capsys.readouterr().err
    assert main(["plan", path, "--no-stats", "--no-data-check"]) == 0
    assert "8 trials" in capsys.readouterr().out


def test_plan_into_another_sweeps_folder_says_run_needs_yes(tmp_path, capsys):
    """'a run would: start 4' alone misled: 'ablate run' refuses that folder without --yes."""
    from ablate import bookkeeping
    from ablate.plan import load_plan

    path, results = tmp_path / "cli.yaml", tmp_path / "res"
    path.write_text(SWEEP)
    _, trials = load_plan(path)
    bookkeeping.write_manifest(results, name="other", source="other.yaml", trials=trials[:1],
                               max_concurrent=None)
    argv = ["plan", str(path), "--no-stats", "--results", str(results)]
    assert main(argv) == 0
    assert "the results folder holds sweep 'other': 'ablate run' adds these trials to it " \
           "only with --yes" in capsys.readouterr().out
    bookkeeping.write_manifest(results, name="cli", source=str(path), trials=trials,
                               max_concurrent=None)
    assert main(argv) == 0
    assert "holds sweep" not in capsys.readouterr().out
