"""What a finished trial leaves on disk by default, and that the smaller default changes no
record: one epoch checkpoint (all that resuming needs) and a weights-only best.pt."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from ablate import bookkeeping, checkpoint, models, record, train
from ablate.cli import main
from ablate.config import RecipeConfig
from ablate.plan import load_plan

from .conftest import tiny_trial

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "results_v1"
TIMING = set(train.TIMING_KEYS)


class Stop(Exception):
    pass


def default_keep_trial(**recipe):
    """The tests' tiny trial with keep_checkpoints at the recipe's default."""
    t = tiny_trial(**recipe)
    keep = RecipeConfig().keep_checkpoints
    return dataclasses.replace(t, config=dataclasses.replace(
        t.config, train=dataclasses.replace(t.config.train, keep_checkpoints=keep)))


def test_by_default_a_finished_trial_keeps_its_last_epoch_and_the_best_weights(tmp_path):
    trial = default_keep_trial(epochs=3)
    result = train.train_trial(trial, tmp_path)
    ckpt = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == ["best.pt", "epoch_0003.pt"]
    best = torch.load(ckpt / "best.pt", map_location="cpu", weights_only=True)
    assert set(best) == {"format", "epoch", "trial", "model", "best"}  # no optimiser, no RNG
    assert best["epoch"] == result["best"]["epoch"] == best["best"]["epoch"]
    # the weights load into a fresh model of the trial's kind and give its best val/top1
    m = trial.config.model
    model = models.create_model(m.arch, num_classes=4, **m.axes())
    model.load_state_dict(best["model"])
    assert (ckpt / "best.pt").stat().st_size < 0.6 * (ckpt / "epoch_0003.pt").stat().st_size


def test_best_weights_keep_the_model_and_drop_what_only_resuming_needs():
    state = {"format": 1, "epoch": 4, "model": {"w": torch.ones(2)}, "optimizer": {"s": 1},
             "scheduler": {}, "scaler": None, "best": {"val/top1": 50.0, "epoch": 4},
             "elapsed_s": 3.0, "rng": {}}
    kept = checkpoint.best_weights(state)
    assert set(kept) == {"format", "epoch", "model", "best"}
    assert kept["model"] is state["model"]


def test_resume_from_the_single_kept_checkpoint_is_exact(tmp_path):
    trial = default_keep_trial(epochs=3)
    train.train_trial(trial, tmp_path / "whole")

    def stop_after_2(row):
        if row["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        train.train_trial(trial, tmp_path / "cut", report=stop_after_2)
    assert [p.name for p in checkpoint.epoch_checkpoints(tmp_path / "cut" / "checkpoints")] \
        == ["epoch_0002.pt"]
    train.train_trial(trial, tmp_path / "cut")

    def model_rows(tdir):
        return [{k: v for k, v in r.items() if k not in TIMING}
                for r in record.read_metrics(tdir)]

    assert model_rows(tmp_path / "cut") == model_rows(tmp_path / "whole")
    whole = torch.load(tmp_path / "whole" / "checkpoints" / "epoch_0003.pt", weights_only=True)
    cut = torch.load(tmp_path / "cut" / "checkpoints" / "epoch_0003.pt", weights_only=True)
    assert all(torch.equal(whole["model"][k], cut["model"][k]) for k in whole["model"])


@pytest.fixture
def legacy_results(tmp_path: Path) -> Path:
    dest = tmp_path / "results"
    shutil.copytree(FIXTURE / "results", dest)
    return dest


def test_a_folder_made_under_the_old_default_is_not_reported_changed(legacy_results, capsys):
    stored = [json.loads((p / "trial.json").read_text())["config"]["train"]["keep_checkpoints"]
              for p in record.list_trial_dirs(legacy_results)]
    _, trials = load_plan(FIXTURE / "legacy.yaml")
    assert stored and set(stored) != {t.config.train.keep_checkpoints for t in trials}
    assert main(["plan", str(FIXTURE / "legacy.yaml"), "--results", str(legacy_results),
                 "--json", "--no-stats"]) == 0
    rows = json.loads(capsys.readouterr().out)["trials"]
    assert [(r["state"], r["changed"]) for r in rows] == [("done", {})] * len(trials)
    bookkeeping.migrate_legacy(legacy_results, trials)  # what the next run does first
    assert [bookkeeping.config_changes(legacy_results, t) for t in trials] == [{}] * len(trials)


def test_operational_fields_never_count_as_a_change(tmp_path):
    trial = tiny_trial(epochs=1)
    tdir = record.trial_dir(tmp_path, trial.id)

    def stored(**train_fields):
        ran = dataclasses.replace(trial, config=dataclasses.replace(
            trial.config, train=dataclasses.replace(trial.config.train, **train_fields)))
        record.write_trial(tdir, ran)
        record.write_state(tdir, record.DONE)
        return ran

    assert stored(keep_checkpoints=7, workers=5).id == trial.id
    assert bookkeeping.config_changes(tmp_path, trial) == {}
    # the check is not blind: beside them, a result field that differs (as after a change of
    # its default, which keeps the id) is the one change shown
    stored(keep_checkpoints=7, workers=5, lr=1.0)
    assert bookkeeping.config_changes(tmp_path, trial) == {"train.lr": (1.0, 2e-3)}
