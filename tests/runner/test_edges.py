"""The run's edges a user meets before any trial starts: where results go, which cluster, locks.

Each case goes through the CLI and checks the one line, the exit status 2, and that nothing was
written. None needs a Ray: every refusal comes before one would start.
"""

from __future__ import annotations

import os

import pytest

from ablate import bookkeeping
from ablate.cli import main
from ablate.plan import load_plan
from tests.runner.conftest import write_sweep


def _one_line_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("ablate: error: ") and "\n" not in err, err
    for fragment in fragments:
        assert fragment in err
    return err


def _tree(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("where, says", [
    ("a_file", "is a file, not a results folder"),
    ("a_file/sub", "a_file is a file, so no folder can be made under it"),
    ("x" * 300 + "/sub", "name too long for the file system"),
])
def test_a_results_folder_that_cannot_be_is_one_line_and_nothing_is_written(
        tmp_path, capsys, where, says):
    sweep = write_sweep(tmp_path / "tiny.yaml", seeds=[0])
    (tmp_path / "a_file").write_text("not a folder")
    before = _tree(tmp_path)
    assert main(["run", str(sweep), "--results", str(tmp_path / where)]) == 2
    _one_line_error(capsys, "--results: ", says)
    assert _tree(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_an_unwritable_results_parent_is_one_line(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "tiny.yaml", seeds=[0])
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert main(["run", str(sweep), "--results", str(locked / "results")]) == 2
    _one_line_error(capsys, "is not writable by this user")
    assert list(locked.iterdir()) == []


def test_ray_address_in_the_environment_is_joined_and_said_so(tmp_path, capsys, monkeypatch):
    # Nothing listens there: the join is refused in one line naming RAY_ADDRESS, before
    # anything is written (not even the lock or the results folder).
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    sweep = write_sweep(tmp_path / "tiny.yaml", seeds=[0])
    results = tmp_path / "results"
    assert main(["run", str(sweep), "--results", str(results)]) == 2
    out = capsys.readouterr()
    assert "joining the Ray cluster at 127.0.0.1:1 from RAY_ADDRESS" in out.out
    assert out.err.strip().startswith("ablate: error: RAY_ADDRESS: nothing answers at")
    assert "\n" not in out.err.strip()
    assert not results.exists()


def test_address_option_wins_over_ray_address(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    sweep = write_sweep(tmp_path / "tiny.yaml", seeds=[0])
    assert main(["run", str(sweep), "--results", str(tmp_path / "r"), "--address", "x"]) == 2
    out = capsys.readouterr()
    assert "RAY_ADDRESS" not in out.out + out.err
    assert "--address: malformed cluster address 'x'" in out.err


def test_train_from_a_sweep_takes_the_results_folders_lock(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "tiny.yaml", seeds=[0])
    _, [trial] = load_plan(sweep)
    results = tmp_path / "results"
    with bookkeeping.driver_lock(results):  # an 'ablate run' of this folder is running
        code = main(["train", "--sweep", str(sweep), "--trial", trial.id,
                     "--results", str(results)])
    assert code == 2
    _one_line_error(capsys, "already running this results folder")
    assert not (results / "trials").exists()  # the trial was not started


def test_resume_checks_the_folder_too(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    assert main(["resume", str(tmp_path / "a_file")]) == 2
    _one_line_error(capsys, "RESULTS_DIR: is a file")
