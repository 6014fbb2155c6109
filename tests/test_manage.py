"""``ablate reset`` and ``ablate prune`` on results folders of fabricated records (no Ray)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ablate import bookkeeping, record
from ablate.cli import main
from ablate.plan import load_plan
from tests.results.factory import write_record

SWEEP = """\
name: mg
description: a sweep for the management tests
base:
  model: {arch: dwnet_nano}
  data: {name: digits}
  train: {epochs: 3, warmup_epochs: 0}
arms:
  se: {model.se: true}
grid:
  model.kernel_size: [3, 5]
"""
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def folder(tmp_path):
    """(sweep file, results folder, the plan's trials): the first trial failed, the rest
    done, each with three epoch checkpoints and best.pt; sweep.json as a run writes it."""
    sweep = tmp_path / "mg.yaml"
    sweep.write_text(SWEEP)
    results = tmp_path / "res"
    _, trials = load_plan(sweep)
    for i, t in enumerate(trials):
        tdir = write_record(results, t, top1=60.0 + i,
                            state=record.FAILED if i == 0 else record.DONE)
        _checkpoints(tdir, epochs=(1, 2, 3), best=True)
    bookkeeping.write_manifest(results, name="mg", source=str(sweep), trials=trials,
                               max_concurrent=None)
    return sweep, results, trials


def _checkpoints(tdir: Path, *, epochs: tuple[int, ...], best: bool) -> None:
    """Stand-in checkpoint files of distinct sizes (their content is never read)."""
    ckpt = tdir / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    for e in epochs:
        (ckpt / f"epoch_{e:04d}.pt").write_bytes(b"x" * (1000 * e))
    if best:
        (ckpt / "best.pt").write_bytes(b"b" * 500)


def _actions(capsys, sweep, results):
    assert main(["plan", str(sweep), "--json", "--no-stats", "--results", str(results)]) == 0
    return {r["id"]: r["action"] for r in json.loads(capsys.readouterr().out)["trials"]}


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ablate: error: "), err
    return err[0]


def test_reset_failed_deletes_only_those_and_they_start_again(folder, capsys):
    sweep, results, trials = folder
    failed = trials[0]
    assert main(["reset", str(results), "--failed", "--yes"]) == 0
    out = capsys.readouterr().out
    assert str(record.trial_dir(results, failed.id)) in out and "freed" in out
    assert not record.trial_dir(results, failed.id).exists()
    assert _actions(capsys, sweep, results) == {
        t.id: "start" if t is failed else "skip" for t in trials}


def test_reset_by_arm_and_by_id_prefix(folder, capsys):
    sweep, results, trials = folder
    se = {t.id for t in trials if t.arm.startswith("se,")}
    assert main(["reset", str(results), "--arm", "se", "--yes"]) == 0
    assert {d.name for d in record.list_trial_dirs(results)} == {t.id for t in trials} - se
    keep = trials[1]
    assert main(["reset", str(results), "--trial", keep.id[:5], "--yes"]) == 0
    assert keep.id not in {d.name for d in record.list_trial_dirs(results)}
    capsys.readouterr()
    # filters combine: the baseline arm's failed trial only
    assert main(["reset", str(results), "--arm", "baseline", "--failed", "--yes"]) == 0
    assert [d.name for d in record.list_trial_dirs(results)] == []
    capsys.readouterr()
    assert _actions(capsys, sweep, results) == {t.id: "start" for t in trials}


@pytest.mark.parametrize("label", ["", ",", " ", " , "])
def test_an_empty_label_deletes_nothing(folder, capsys, label):
    """An empty shell variable (--arm "$ARM") once selected, and deleted, every trial."""
    sweep, results, trials = folder
    assert main(["reset", str(results), "--arm", label, "--yes"]) == 2
    assert "--arm" in _one_line_error(capsys)
    assert len(record.list_trial_dirs(results)) == len(trials)
    assert main(["plan", str(sweep), "--no-stats", "--only", label]) == 2
    assert "--only" in _one_line_error(capsys)


def test_reset_asks_and_a_no_deletes_nothing(folder, capsys, monkeypatch):
    _, results, trials = folder
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    answers = iter(["n", "y"])
    monkeypatch.setattr("builtins.input", lambda q: next(answers))
    assert main(["reset", str(results), "--arm", "se"]) == 1
    assert len(record.list_trial_dirs(results)) == len(trials)
    assert main(["reset", str(results), "--arm", "se"]) == 0
    assert len(record.list_trial_dirs(results)) == len(trials) - 2


def test_reset_without_a_terminal_needs_yes(folder):
    _, results, trials = folder
    proc = subprocess.run([sys.executable, "-m", "ablate", "reset", str(results), "--failed"],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    [line] = proc.stderr.strip().splitlines()
    assert "stdin is not a terminal" in line and "--yes" in line
    assert len(record.list_trial_dirs(results)) == len(trials)


@pytest.mark.parametrize("flags,message", [
    ([], "say which trials to reset"),
    (["--trial", "zzzz"], "--trial zzzz: unknown trial id 'zzzz'"),
    (["--arm", "sse"], "--arm sse: no trial is labelled 'sse'; did you mean 'se'?"),
])
def test_reset_mistakes_are_one_line(folder, capsys, flags, message):
    _, results, trials = folder
    assert main(["reset", str(results), *flags, "--yes"]) == 2
    assert message in _one_line_error(capsys)
    assert len(record.list_trial_dirs(results)) == len(trials)


@pytest.mark.parametrize("command", [["reset", "--failed", "--yes"], ["prune"]])
def test_nothing_is_deleted_under_a_running_sweep(folder, capsys, command):
    _, results, trials = folder
    with bookkeeping.driver_lock(results):  # what 'ablate run' holds
        before = sorted(p for p in results.rglob("*") if p.is_file())
        assert main([command[0], str(results), *command[1:]]) == 2
    assert "another 'ablate run' is already running" in _one_line_error(capsys)
    assert sorted(p for p in results.rglob("*") if p.is_file()) == before


def test_a_folder_that_is_not_there_is_one_line(tmp_path, capsys):
    assert main(["prune", str(tmp_path / "nope")]) == 2
    assert "no such results folder" in _one_line_error(capsys)
    assert not (tmp_path / "nope").exists()


@pytest.mark.parametrize("command", [["prune"], ["prune", "--dry-run"], ["reset", "--yes"],
                                     ["reset", "--failed", "--yes"]])
def test_a_folder_that_is_not_a_results_folder_is_left_as_it_was(tmp_path, capsys, command):
    # the lock was taken first: a .driver.lock appeared in sweeps/ or any empty folder, and
    # prune there said "freed 0.0 MB" with exit status 0
    (tmp_path / "README.md").write_text("x")
    assert main([command[0], str(tmp_path), *command[1:]]) == 2
    _one_line_error(capsys)
    assert [p.name for p in tmp_path.iterdir()] == ["README.md"]


@pytest.mark.parametrize("command", [["status"], ["resume"], ["prune"], ["reset", "--failed"]])
def test_a_sweep_file_given_for_the_results_folder_is_named_as_one(tmp_path, capsys, command):
    sweep = tmp_path / "group_size.yaml"
    sweep.write_text("description: d\n")
    assert main([command[0], str(sweep), *command[1:]]) == 2
    line = _one_line_error(capsys)
    assert "that is a sweep file" in line and "results/group_size" in line
    assert [p.name for p in tmp_path.iterdir()] == ["group_size.yaml"]


def test_prune_keeps_the_best_of_finished_trials_and_all_of_the_others(folder, capsys):
    _, results, trials = folder
    ckpt = [record.trial_dir(results, t.id) / "checkpoints" for t in trials]
    sizes = {d: {p.name: p.stat().st_size for p in d.iterdir()} for d in ckpt}
    assert main(["prune", str(results)]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in ckpt[0].iterdir()) == sorted(sizes[ckpt[0]])  # failed
    for d in ckpt[1:]:
        assert [p.name for p in d.iterdir()] == ["best.pt"]
    freed = sum(s for d in ckpt[1:] for name, s in sizes[d].items() if name != "best.pt")
    assert f"freed {freed / 1e6:.1f} MB in {len(trials) - 1} finished trials" in out
    assert "1 unfinished trials keep their checkpoints" in out


def test_prune_keep_last_and_a_trial_without_best_pt(folder, capsys):
    _, results, trials = folder
    # a finished trial without best.pt whose best val/top1 was at epoch 2, not the last
    t = trials[1]
    tdir = record.trial_dir(results, t.id)
    (tdir / "checkpoints" / "best.pt").unlink()
    (tdir / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": e, "val/top1": top1}) + "\n" for e, top1 in [(1, 50), (2, 70),
                                                                          (3, 60)]))
    assert main(["prune", str(results), "--keep-last"]) == 0
    assert sorted(p.name for p in (tdir / "checkpoints").iterdir()) == [
        "epoch_0002.pt", "epoch_0003.pt"]
    other = record.trial_dir(results, trials[2].id) / "checkpoints"
    assert sorted(p.name for p in other.iterdir()) == ["best.pt", "epoch_0003.pt"]
    assert main(["prune", str(results)]) == 0
    assert [p.name for p in (tdir / "checkpoints").iterdir()] == ["epoch_0002.pt"]
    assert "freed" in capsys.readouterr().out


def test_prune_dry_run_deletes_nothing(folder, capsys):
    _, results, _ = folder
    before = sorted(p for p in results.rglob("*.pt"))
    assert main(["prune", str(results), "--dry-run"]) == 0
    assert "would free" in capsys.readouterr().out
    assert sorted(p for p in results.rglob("*.pt")) == before
