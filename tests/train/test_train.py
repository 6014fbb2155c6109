"""train_trial end to end: the record it writes, resume equality, divergence, failure."""

from __future__ import annotations

import json
import math
import os
import signal
import threading

import pytest
import torch

from ablate import checkpoint, failures, models, provenance, record, train
from ablate.config import Trial
from ablate.errors import TrialError

ROW_KEYS = {"epoch", "train/loss", "train/lr", "train/img_per_s", "train/data_wait_frac",
            "val/loss", "val/top1", "val/top5", "time/epoch_s", "mem/peak_mb"}


def test_the_metrics_a_sweep_may_claim_are_those_an_epoch_row_records():
    # spec refuses an expected metric not in record.METRICS; ROW_KEYS is what a trained epoch
    # writes (test_record_of_a_finished_trial), so the two cannot drift apart
    assert {"epoch", *record.METRICS} == ROW_KEYS and len(record.METRICS) == len(ROW_KEYS) - 1


def model_metrics(rows):
    """Everything in the rows but the machine's timings, which differ between any two runs."""
    return [{k: v for k, v in r.items() if k not in train.TIMING_KEYS} for r in rows]


class Stop(Exception):
    """Stands in for a kill: raised from inside the trial at a chosen point."""


def test_record_of_a_finished_trial(tmp_path, make_trial):
    trial, rows_seen = make_trial(epochs=3, keep_checkpoints=1), []
    result = train.train_trial(trial, tmp_path, report=rows_seen.append)

    rows = record.read_metrics(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows == rows_seen
    assert all(set(r) == ROW_KEYS for r in rows)
    assert all(math.isfinite(v) for r in rows for v in r.values())
    assert all(0 <= r["train/data_wait_frac"] < 1 and r["train/img_per_s"] > 0 for r in rows)
    assert record.read_state(tmp_path) == record.DONE
    assert result == record.read_result(tmp_path)
    assert result["state"] == "done" and result["epochs"] == 3 and result["final"] == rows[-1]
    best = max(rows, key=lambda r: r["val/top1"])
    assert result["best"]["val/top1"] == best["val/top1"]
    model = models.create_model(trial.config.model.arch, num_classes=4, drop_path_rate=0.1)
    assert result["params"] == models.count_params(model) > 0
    assert result["flops"] == models.model_stats(trial.config.model.arch, num_classes=4,
                                                 img_size=32).flops > 0
    assert record.read_trial(tmp_path).id == trial.id
    prov = record.read_provenance(tmp_path)
    for key in ("git_commit", "git_dirty", "python", "torch", "timm", "ray", "ablate", "ablate_source",
                "device", "host", "data_fingerprint", "seed", "params", "flops", "wall_time_s"):
        assert key in prov, key
    assert prov["torch"] == torch.__version__ and prov["ray"] and prov["timm"]
    assert prov["ablate_source"] == provenance.source_digest()
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["best.pt", "epoch_0003.pt"]  # keep_checkpoints=1: the rest were pruned


def test_learns_the_synthetic_task(tmp_path, make_trial):
    result = train.train_trial(make_trial(epochs=8, mixup=0.0, cutmix=0.0, lr=5e-2,
                                          randaugment=None, reprob=0.0, warmup_epochs=0.5),
                               tmp_path)
    assert result["best"]["val/top1"] > 60  # 4 classes: chance is 25


def test_resume_at_epoch_boundary_gives_identical_metrics(tmp_path, make_trial):
    trial = make_trial(epochs=3)
    train.train_trial(trial, tmp_path / "whole")

    def stop_after_2(row):
        if row["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        train.train_trial(trial, tmp_path / "cut", report=stop_after_2)
    assert record.read_state(tmp_path / "cut") == record.FAILED
    train.train_trial(trial, tmp_path / "cut")
    whole, cut = record.read_metrics(tmp_path / "whole"), record.read_metrics(tmp_path / "cut")
    assert model_metrics(cut) == model_metrics(whole)
    assert len(cut) == 3
    assert json.loads((tmp_path / "cut" / "state.json").read_text())["attempt"] == 2


def test_killed_mid_epoch_with_workers_loses_only_that_epoch(tmp_path, make_trial, monkeypatch):
    trial = make_trial(epochs=3, workers=2)
    train.train_trial(trial, tmp_path / "whole")
    real_step, calls = train._train_step, []

    def dying_step(run, x, y):
        calls.append(1)
        if len(calls) == 2 * 4 + 2:  # 4 steps per epoch: the 2nd step of epoch 3
            raise Stop
        return real_step(run, x, y)

    monkeypatch.setattr(train, "_train_step", dying_step)
    with pytest.raises(Stop):
        train.train_trial(trial, tmp_path / "cut")
    assert [r["epoch"] for r in record.read_metrics(tmp_path / "cut")] == [1, 2]
    monkeypatch.setattr(train, "_train_step", real_step)
    train.train_trial(trial, tmp_path / "cut")
    assert model_metrics(record.read_metrics(tmp_path / "cut")) == \
        model_metrics(record.read_metrics(tmp_path / "whole"))


def test_a_loader_process_killed_while_handing_over_a_batch_is_a_killed_worker(
        tmp_path, make_trial, monkeypatch):
    # the out-of-memory killer can take a loader process mid-transfer of a batch: the trial
    # then gets the broken transfer's error, not torch's "exited unexpectedly", and a code
    # error is never retried
    from torch.utils.data import dataloader

    real_next, calls = dataloader._MultiProcessingDataLoaderIter._next_data, []

    def dying_transfer(it):
        calls.append(1)
        if len(calls) == 4 + 2:  # 4 steps per epoch: a batch of epoch 2
            os.kill(it._workers[0].pid, signal.SIGKILL)
            raise ConnectionResetError(104, "Connection reset by peer")
        return real_next(it)

    def trial_thread():  # as Tune runs a trial: not the main thread, so torch sets no
        try:  # SIGCHLD handler that would raise its own error when the loader dies
            train.train_trial(make_trial(epochs=2, workers=1), tmp_path)
        except Exception as e:  # noqa: BLE001 - kept for the assertions below
            raised.append(e)

    monkeypatch.setattr(dataloader._MultiProcessingDataLoaderIter, "_next_data",
                        dying_transfer)
    # nor the handler an earlier test in the main thread may have set
    monkeypatch.setattr(dataloader._utils.signal_handling, "_error_if_any_worker_fails",
                        lambda: None)
    raised: list[Exception] = []
    thread = threading.Thread(target=trial_thread)
    thread.start()
    thread.join()
    assert len(raised) == 1 and "exited unexpectedly" in str(raised[0])
    error = record.read_state_raw(tmp_path)["error"]
    assert error["kind"] == failures.KILLED
    assert not failures.classify_record(error).deterministic  # so the runner retries it


def test_resume_skips_a_corrupt_latest_checkpoint(tmp_path, make_trial):
    trial = make_trial(epochs=2)
    train.train_trial(trial, tmp_path / "whole")
    cut = tmp_path / "cut"
    train.train_trial(trial, cut)
    (cut / "checkpoints" / "epoch_0002.pt").write_bytes(b"PK\x03\x04 truncated")
    (cut / "result.json").unlink()
    record.write_state(cut, record.RUNNING)  # as if killed before the result was written
    result = train.train_trial(trial, cut)  # falls back to epoch 1 and redoes epoch 2
    assert result["epochs"] == 2
    assert model_metrics(record.read_metrics(cut)) == \
        model_metrics(record.read_metrics(tmp_path / "whole"))


def test_resume_after_a_torn_last_metrics_line_redoes_that_epoch(tmp_path, make_trial):
    # the checkpoint of epoch 2 is whole but its metrics line is cut: resuming from it would
    # leave epoch 2 out of the record of a trial that then says done
    trial = make_trial(epochs=3, keep_checkpoints=1)
    train.train_trial(trial, tmp_path / "whole")

    def stop_after_2(row):
        if row["epoch"] == 2:
            raise Stop

    cut = tmp_path / "cut"
    with pytest.raises(Stop):
        train.train_trial(trial, cut, report=stop_after_2)
    metrics = cut / "metrics.jsonl"
    metrics.write_bytes(metrics.read_bytes()[:-20])  # a torn last line
    result = train.train_trial(trial, cut)
    assert result["epochs"] == 3
    assert model_metrics(record.read_metrics(cut)) == \
        model_metrics(record.read_metrics(tmp_path / "whole"))


def test_nan_loss_ends_the_trial_as_diverged(tmp_path, make_trial, monkeypatch):
    real_build = train._build_mixing

    def nan_after_5(recipe, num_classes):
        mixup, criterion = real_build(recipe, num_classes)
        calls = []

        def loss(logits, target):
            calls.append(1)
            out = criterion(logits, target)
            return out * float("nan") if len(calls) > 5 else out

        return mixup, loss

    monkeypatch.setattr(train, "_build_mixing", nan_after_5)
    result = train.train_trial(make_trial(epochs=3), tmp_path)  # no exception
    assert result["state"] == record.DIVERGED == record.read_state(tmp_path)
    assert result["diverged"]["epoch"] == 2 and result["diverged"]["step"] == 2
    assert result["epochs"] == 1 and result["final"]["epoch"] == 1
    monkeypatch.setattr(train, "_build_mixing", real_build)
    assert train.train_trial(make_trial(epochs=3), tmp_path) == result  # finished: not re-run


def test_huge_learning_rate_diverges(tmp_path, make_trial):
    result = train.train_trial(make_trial(epochs=2, lr=1e12, warmup_epochs=0, clip_grad=None,
                                          weight_decay=0.0), tmp_path)
    assert result["state"] == record.DIVERGED


def test_failure_records_error_and_traceback(tmp_path, make_trial):
    trial = make_trial(arch="no_such_model_anywhere")
    with pytest.raises(Exception) as info:
        train.train_trial(trial, tmp_path)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["state"] == record.FAILED
    err = state["error"]
    assert err["type"] == type(info.value).__name__ and err["message"] == str(info.value)
    assert "Traceback" in err["traceback"] and "_build_model" in err["traceback"]
    assert err["kind"] == "config"  # an unknown model: retrying cannot help


def test_folder_of_another_trial_is_refused(tmp_path, make_trial):
    record.write_trial(tmp_path, make_trial(seed=1))
    with pytest.raises(TrialError, match="not"):
        train.train_trial(make_trial(seed=2), tmp_path)


def test_recipe_scales_lr_with_batch_and_spares_1d_params(make_trial):
    trial: Trial = make_trial(epochs=10, batch_size=128, warmup_epochs=2)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8),
                                torch.nn.Flatten(), torch.nn.LazyLinear(4))
    model(torch.zeros(2, 3, 8, 8))
    r = trial.config.train
    opt, sched = train._build_optimisation(model, r, steps_per_epoch=5)
    decay = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert all((id(p) in decay) == (p.ndim > 1) for p in model.parameters())
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0, r.weight_decay}
    lr_at = []
    for step in (0, 10, 50):
        sched.step_update(step)
        lr_at.append(opt.param_groups[0]["lr"])
    scale = 128 / 512
    assert lr_at[0] == pytest.approx(r.warmup_lr * scale)
    assert lr_at[1] == pytest.approx(r.lr * scale)  # end of the 2-epoch warm-up
    assert lr_at[2] == pytest.approx(r.min_lr * scale)


def test_checkpoint_crash_while_writing_keeps_the_previous_one(tmp_path, monkeypatch):
    ckpt = tmp_path / "checkpoints"
    checkpoint.save_checkpoint(ckpt, {"epoch": 1, "w": torch.ones(3)}, is_best=True, keep=2)

    def crash(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        checkpoint.save_checkpoint(ckpt, {"epoch": 2, "w": torch.zeros(3)}, is_best=True, keep=2)
    monkeypatch.undo()
    assert sorted(p.name for p in ckpt.iterdir()) == ["best.pt", "epoch_0001.pt"]  # no temp
    latest = checkpoint.load_latest(ckpt)
    assert latest["epoch"] == 1 and torch.equal(latest["w"], torch.ones(3))


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    import random

    import numpy as np

    checkpoint.save_atomic({"rng": checkpoint.capture_rng()}, tmp_path / "r.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    checkpoint.restore_rng(torch.load(tmp_path / "r.pt", weights_only=True)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_trial_with_amp_and_channels_last(tmp_path, make_trial):
    result = train.train_trial(make_trial(epochs=2, workers=2), tmp_path, device="cuda")
    assert result["state"] == "done"
    assert record.read_provenance(tmp_path)["device"].startswith("cuda:")
    assert 0 < result["final"]["mem/peak_mb"] < 4096  # CUDA allocator peak, not process RSS


def test_a_checkpoint_of_another_model_is_a_trial_error_naming_it(tmp_path, make_trial):
    """A checkpoint without a trial id (as earlier versions wrote them) under this trial's
    trial.json, but of another architecture: one line naming it, not load_state_dict's
    RuntimeError."""
    trial, other = make_trial(epochs=2), make_trial(epochs=1, arch="ablate_swin_nano")
    train.train_trial(trial, tmp_path / "a")
    train.train_trial(other, tmp_path / "b")
    foreign = torch.load(tmp_path / "b" / "checkpoints" / "epoch_0001.pt", weights_only=True)
    del foreign["trial"]
    newest = tmp_path / "a" / "checkpoints" / "epoch_0002.pt"
    checkpoint.save_atomic(foreign, newest)
    (tmp_path / "a" / "result.json").unlink()
    record.write_state(tmp_path / "a", record.RUNNING)
    with pytest.raises(TrialError, match="does not fit the trial's model") as info:
        train.train_trial(trial, tmp_path / "a")
    assert info.value.file == str(newest) and "\n" not in str(info.value)


def test_checkpoints_carry_the_trial_id(tmp_path, make_trial):
    trial = make_trial(epochs=1)
    train.train_trial(trial, tmp_path)
    for name in ("epoch_0001.pt", "best.pt"):
        assert torch.load(tmp_path / "checkpoints" / name, weights_only=True)["trial"] == trial.id


def test_a_checkpoint_written_before_they_carried_the_trial_id_still_resumes(tmp_path,
                                                                             make_trial):
    trial = make_trial(epochs=2)
    train.train_trial(trial, tmp_path / "whole")
    cut = tmp_path / "cut"
    train.train_trial(trial, cut)
    for name in ("epoch_0001.pt", "epoch_0002.pt"):
        path = cut / "checkpoints" / name
        state = torch.load(path, weights_only=True)
        del state["trial"]
        checkpoint.save_atomic(state, path)
    (cut / "checkpoints" / "epoch_0002.pt").unlink()
    (cut / "result.json").unlink()
    record.write_state(cut, record.RUNNING)
    first = record.read_metrics(cut)[0]
    assert train.train_trial(trial, cut)["epochs"] == 2
    assert record.read_metrics(cut)[0] == first  # epoch 1 kept, timings and all: resumed
    assert model_metrics(record.read_metrics(cut)) == \
        model_metrics(record.read_metrics(tmp_path / "whole"))
