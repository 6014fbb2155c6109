import json
import os
from pathlib import Path

import pytest

from ablate import files, record
from ablate.config import ModelConfig, Trial, TrialConfig
from ablate.errors import RecordError


@pytest.fixture
def tdir(tmp_path):
    trial = Trial(config=TrialConfig(model=ModelConfig(arch="dwnet_nano")), sweep="s", arm="a")
    d = record.trial_dir(tmp_path, trial.id)
    record.write_trial(d, trial)
    return d


def test_trial_record_round_trips(tdir):
    trial = record.read_trial(tdir)
    assert trial.id == tdir.name
    assert record.list_trial_dirs(tdir.parent.parent) == [tdir]


def test_state_defaults_to_new_and_keeps_the_attempt_count(tdir):
    assert record.read_state(tdir) == record.NEW
    record.write_state(tdir, record.RUNNING, attempt=2)
    record.write_state(tdir, record.DONE)
    raw = record.read_state_raw(tdir)
    assert raw["state"] == record.DONE and raw["attempt"] == 2


def test_metrics_reader_skips_truncated_line_and_last_record_wins(tdir):
    record.append_metrics(tdir, {"epoch": 1, "val/top1": 10.0})
    record.append_metrics(tdir, {"epoch": 2, "val/top1": 20.0})
    record.append_metrics(tdir, {"epoch": 2, "val/top1": 25.0})  # resumed, re-ran epoch 2
    with open(tdir / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "val/to')  # crash mid-write
    rows = record.read_metrics(tdir)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[1]["val/top1"] == 25.0


def test_truncate_metrics_drops_later_epochs(tdir):
    for e in range(1, 5):
        record.append_metrics(tdir, {"epoch": e})
    record.truncate_metrics(tdir, 2)
    assert [r["epoch"] for r in record.read_metrics(tdir)] == [1, 2]


def test_corrupt_or_future_json_raises_record_error_naming_the_file(tdir):
    (tdir / "result.json").write_text('{"final": ')
    with pytest.raises(RecordError, match="result.json"):
        record.read_result(tdir)
    (tdir / "result.json").write_text(json.dumps({"schema": 99}))
    with pytest.raises(RecordError, match="unknown record schema 99"):
        record.read_result(tdir)


def test_atomic_write_leaves_old_file_when_serialisation_fails(tdir):
    record.write_result(tdir, {"final": {"val/top1": 1.0}})
    with pytest.raises(TypeError):
        files.write_json_atomic(tdir / "result.json", {1j: 1})  # complex keys can't be JSON
    assert record.read_result(tdir)["final"] == {"val/top1": 1.0}
    assert not list(tdir.glob(".result.json.*"))  # no temporary left behind


def test_two_writers_of_one_file_never_share_a_temporary(tdir):
    path = tdir / "result.json"
    with files.atomic_file(path) as outer:
        with files.atomic_file(path) as inner:
            names = {Path(outer.name).name, Path(inner.name).name}
            inner.write('{"who": "inner"}')
        assert len(names) == 2 and all(f".{os.getpid()}." in n for n in names)
        outer.write('{"who": "outer"}')
    assert json.loads(path.read_text()) == {"who": "outer"}  # the last rename wins, whole
    assert not list(tdir.glob(".result.json.*"))


def test_metrics_damage_is_an_unreadable_line_before_the_end(tdir):
    for e in (1, 2, 3):
        record.append_metrics(tdir, {"epoch": e, "val/top1": float(e)})
    assert record.scan_metrics(tdir).damage is None
    with open(tdir / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 4, "va')  # torn at the end: a crash mid-append
    assert record.scan_metrics(tdir).damage is None
    lines = (tdir / "metrics.jsonl").read_text().split("\n")
    lines[1] = '{"loss": 1}'  # JSON, but no epoch's record
    (tdir / "metrics.jsonl").write_text("\n".join(lines))
    scan = record.scan_metrics(tdir)
    assert [r["epoch"] for r in scan.rows] == [1, 3]
    assert scan.damage.line == 2 and "no epoch number" in str(scan.damage)
    with pytest.raises(RecordError, match=r"metrics.jsonl:2: unreadable"):
        record.truncate_metrics(tdir, 3)  # resuming would drop epoch 2 in silence
    assert (tdir / "metrics.jsonl").read_text().split("\n")[1] == '{"loss": 1}'
