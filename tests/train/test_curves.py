"""TensorBoard curves: every numeric metric of every epoch, once, also after a resume."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest
from tensorboardX.proto.event_pb2 import Event, SessionLog

from ablate import curves, record, train


class Stop(Exception):
    """Stands in for a kill: raised from inside the trial at a chosen point."""


def read_events(folder: Path) -> list[Event]:
    """Every Event of the folder's event files, file by file. The TFRecord framing: a little-
    endian uint64 length, its 4-byte CRC, the data, the data's 4-byte CRC."""
    events = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (n,) = struct.unpack_from("<Q", data, at)
            events.append(Event.FromString(data[at + 12: at + 12 + n]))
            at += 12 + n + 4
    return events


def scalars(events: list[Event]) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value), ...] in file order."""
    out: dict[str, list[tuple[int, float]]] = {}
    for e in events:
        for v in e.summary.value:
            if v.HasField("simple_value"):
                out.setdefault(v.tag, []).append((e.step, v.simple_value))
    return out


def expected(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        for k, v in r.items():
            if k != "epoch" and isinstance(v, (int, float)):
                out.setdefault(k, []).append((r["epoch"], v))
    return out


def assert_mirrors_metrics(tdir: Path, trial) -> list[Event]:
    folder = curves.curves_dir(tdir, trial)
    events = read_events(folder)
    got, want = scalars(events), expected(record.read_metrics(tdir))
    assert sorted(got) == sorted(want)
    for tag, points in want.items():  # each epoch exactly once, with the recorded value
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in points], rel=1e-6)
    return events


def test_every_numeric_metric_of_every_epoch_is_a_scalar_at_its_epoch(tmp_path, make_trial):
    trial = make_trial(epochs=2)
    train.train_trial(trial, tmp_path)
    folder = curves.curves_dir(tmp_path, trial)
    assert folder.parent == tmp_path / "tensorboard" and folder.name == "tiny.seed0"
    events = assert_mirrors_metrics(tmp_path, trial)
    tags = set(scalars(events))
    assert {"train/loss", "train/lr", "val/top1", "val/loss", "time/epoch_s"} <= tags
    assert "epoch" not in tags
    texts = [v.tensor.string_val[0].decode() for e in events for v in e.summary.value
             if v.tag.startswith("trial")]
    assert len(texts) == 1 and "tiny" in texts[0] and trial.id in texts[0]


@pytest.mark.parametrize("new_process", [False, True])
def test_an_epoch_rerun_after_a_crash_appears_once(tmp_path, make_trial, monkeypatch,
                                                   new_process):
    """A crash after epoch 2's row (and curve point) but before its checkpoint: the resumed
    attempt re-runs epoch 2, and the curves hold epochs 1, 2, 3 once each, with the values of
    the record (the re-run's), in one file that tells TensorBoard to forget the old points."""
    trial = make_trial(epochs=3)
    real_save = train.checkpoint.save_checkpoint

    def crash_at_2(folder, state, **kw):
        if state["epoch"] == 2:
            raise Stop
        return real_save(folder, state, **kw)

    monkeypatch.setattr(train.checkpoint, "save_checkpoint", crash_at_2)
    with pytest.raises(Stop):
        train.train_trial(trial, tmp_path)
    folder = curves.curves_dir(tmp_path, trial)
    monkeypatch.setattr(train.checkpoint, "save_checkpoint", real_save)
    if new_process:  # a retry in a fresh worker has no open file; the old one has epoch 2
        curves.close_curves()
        assert [s for s, _ in scalars(read_events(folder))["val/top1"]] == [1, 2]
    train.train_trial(trial, tmp_path)
    assert record.read_state_raw(tmp_path)["attempt"] == 2
    events = assert_mirrors_metrics(tmp_path, trial)
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1
    purge = [e.step for e in events if e.HasField("session_log")
             and e.session_log.status == SessionLog.START]
    assert purge == [1]


def test_a_failure_to_write_curves_does_not_fail_the_trial(tmp_path, make_trial):
    trial = make_trial(epochs=1)
    (tmp_path / "tensorboard").write_text("a file where the folder goes")
    result = train.train_trial(trial, tmp_path)
    assert result["state"] == record.DONE and result["epochs"] == 1


def test_without_tensorboardx_the_trial_still_runs(tmp_path, make_trial, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # 'import tensorboardX' now fails
    result = train.train_trial(make_trial(epochs=1), tmp_path)
    assert result["state"] == record.DONE and result["epochs"] == 1
    assert "TensorBoard curves not written" in caplog.text
