"""`ablate train`: one trial by hand, from a config file or from a sweep and a trial id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ablate import record
from ablate.cli import main

TINY = {"model": {"arch": "dwnet_nano"},
        "data": {"name": "synthetic", "num_train": 32, "num_val": 16, "num_classes": 4},
        "train": {"epochs": 2, "batch_size": 16, "warmup_epochs": 1, "workers": 0},
        "seed": 1}


def test_trains_from_a_config_file_and_prints_each_epoch(tmp_path, capsys):
    cfg = tmp_path / "trial.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    assert main(["train", str(cfg), "--out", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert "epoch 1/2" in out and "epoch 2/2" in out and "val/top1" in out and "img/s" in out
    assert out.strip().splitlines()[-1].startswith("done: 2 epochs")
    assert len(record.read_metrics(tmp_path / "t")) == 2
    trial = record.read_trial(tmp_path / "t")
    assert trial.config.seed == 1 and trial.config.train.epochs == 2
    # the written trial.json is itself a valid input, naming the same trial
    assert main(["train", str(tmp_path / "t" / "trial.json"), "--out", str(tmp_path / "t")]) == 0
    assert "done: 2 epochs" in capsys.readouterr().out


@pytest.mark.parametrize("content,message", [
    ({**TINY, "train": {"epoch": 2}}, "train.epoch: unknown key 'epoch'; did you mean 'epochs'"),
    ({**TINY, "train": {"epochs": "two"}}, "train.epochs: expected an integer, got string 'two'"),
    # the sweep schema's bounds hold for a trial file too
    ({**TINY, "train": {"epochs": 0}}, "train.epochs: must be >= 1, got integer 0"),
    ({**TINY, "train": {"lr": -1}}, "train.lr: must be > 0"),
    ({**TINY, "modle": {}}, "modle: unknown key"),
    ({"data": {}}, "model: required key 'model' is missing"),
    ({**TINY, "model": {"arch": "dwnet_nano", "group_size": "8"}}, "model.group_size"),
    ({**TINY, "model": {"arch": "dwnet_nan"}}, "model.arch: unknown model 'dwnet_nan'"),
    ({**TINY, "data": {"name": "imagefolder", "root": "/no/such/dir"}},
     "data.root: data folder does not exist (/no/such/dir); expected layout: ROOT/train/"),
])
def test_malformed_config_is_one_line_naming_the_key(tmp_path, capsys, content, message):
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps(content))
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and str(cfg) in err


def test_missing_file_and_missing_arguments(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "trial config file not found" in capsys.readouterr().err
    assert main(["train"]) == 2
    assert "no trial given" in capsys.readouterr().err
    assert main(["train", "--trial", "abc"]) == 2
    assert "--sweep and --trial" in capsys.readouterr().err
    assert main(["train", "--sweep", "s.yaml", "--trial", "abc", "--out", "x"]) == 2
    assert "with --sweep, give --results" in capsys.readouterr().err


@pytest.mark.parametrize("device, message", [
    ("tpu", "--device: unknown device 'tpu'; use cpu, cuda or cuda:N"),
    ("cuda:99", "--device: device 'cuda:99' is not on this machine ("),
])
def test_a_device_this_machine_lacks_is_one_line_and_nothing_is_written(tmp_path, capsys,
                                                                        device, message):
    cfg = tmp_path / "trial.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    assert main(["train", str(cfg), "--out", str(tmp_path / "t"), "--device", device]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"ablate: error: {message}") and err.count("\n") == 1
    assert out == "" and not (tmp_path / "t").exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_folder_the_file_system_refuses_is_one_line(tmp_path, capsys):
    """/proc takes no new folder, even from root (for whom os.access says yes)."""
    cfg = tmp_path / "trial.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    assert main(["train", str(cfg), "--out", "/proc/ablate-trial"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ablate: error: /proc/ablate-trial: --out: ") and err.count("\n") == 1
    sweep = write_sweep(tmp_path)
    assert main(["run", str(sweep), "--debug", "--results", "/proc/ablate-results"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ablate: error: /proc/ablate-results") and err.count("\n") == 1


def write_sweep(tmp_path):
    sweep = {"name": "tiny", "description": "two seeds of a tiny trial",
             "base": {k: v for k, v in TINY.items() if k != "seed"}, "seeds": [0, 1]}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def test_trains_one_trial_of_a_sweep(tmp_path, capsys):
    from ablate.plan import load_plan

    path = write_sweep(tmp_path)
    _, trials = load_plan(path)
    target = trials[1]
    results = tmp_path / "results"
    assert main(["train", "--sweep", str(path), "--trial", target.id[:6],
                 "--results", str(results)]) == 0
    tdir = record.trial_dir(results, target.id)
    assert record.read_state(tdir) == record.DONE and record.read_trial(tdir) == target
    assert [p.name for p in record.list_trial_dirs(results)] == [target.id]
    assert main(["train", "--sweep", str(path), "--trial", "fffffff",
                 "--results", str(results)]) == 2
    assert "unknown trial id 'fffffff'" in capsys.readouterr().err


def test_a_data_parallel_trial_of_a_sweep_is_one_line_and_nothing_is_written(tmp_path, capsys):
    """Its workers are Ray Train's to start; the refusal came after the sweep's results
    folder and its lock were made."""
    from ablate.plan import load_plan

    base = {k: v for k, v in TINY.items() if k != "seed"}
    path = tmp_path / "dp.yaml"
    path.write_text(yaml.safe_dump({"description": "two workers", "base": {
        **base, "resources": {"workers": 2, "cpus_per_worker": 1}}}))
    results = tmp_path / "results"
    assert main(["train", "--sweep", str(path), "--trial", load_plan(path)[1][0].id,
                 "--results", str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "resources.workers" in err and "ablate run" in err
    assert not results.exists()


@pytest.mark.parametrize("arch", ["dwnet_nano", "ablate_swin_nano"])
def test_a_folder_of_files_without_trial_json_is_refused_before_anything_is_written(
        tmp_path, capsys, arch):
    """A copied or half-deleted trial folder: checkpoints and records of an unknown trial.
    Resuming them would record another trial's epochs as this one's (the same architecture)
    or relabel the folder, then crash (another one)."""
    import shutil

    cfg = tmp_path / "trial.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    assert main(["train", str(cfg), "--out", str(tmp_path / "a")]) == 0
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "a", copy)
    (copy / "trial.json").unlink()
    before = {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()}
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**TINY, "model": {"arch": arch}, "seed": 2}))
    capsys.readouterr()
    assert main(["train", str(other), "--out", str(copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(copy) in err and "no trial.json" in err
    assert "checkpoints" in err
    assert {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()} == before


def test_checkpoints_trained_under_another_configuration_are_not_resumed(tmp_path, capsys):
    """The id leaves out fields at their defaults, so after a default changed in the code an
    interrupted trial's checkpoints carry the old experiment under the same id."""
    import json

    cfg = tmp_path / "trial.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "epochs": 3}}))
    out = tmp_path / "a"
    assert main(["train", str(cfg), "--out", str(out)]) == 0
    stored = json.loads((out / "trial.json").read_text())
    planned = stored["config"]["train"]["lr"]
    stored["config"]["train"]["lr"] = planned * 2  # what the older default ran with
    (out / "trial.json").write_text(json.dumps(stored))
    (out / "result.json").unlink()
    record.write_state(out, record.RUNNING)  # as if killed after epoch 3
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["train", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(out / "trial.json") in err
    assert f"train.lr {planned * 2!r} -> {planned!r}" in err and "checkpoints" in err
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    shutil_rmtree = __import__("shutil").rmtree
    shutil_rmtree(out / "checkpoints")  # as the hint says: it trains afresh under the plan
    assert main(["train", str(cfg), "--out", str(out)]) == 0
    assert record.read_trial(out).config.train.lr == planned
    assert record.read_state(out) == record.DONE


def test_a_checkpoint_of_another_trial_is_refused_on_resume(tmp_path, capsys):
    """trial.json is this trial's, but its checkpoints were copied from another trial of the
    same model: resuming them would record the other trial's epochs as this one's."""
    import shutil

    cfg, other = tmp_path / "trial.yaml", tmp_path / "other.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "epochs": 3}}))
    other.write_text(yaml.safe_dump({**TINY, "seed": 2}))
    assert main(["train", str(other), "--out", str(tmp_path / "b")]) == 0
    out = tmp_path / "a"
    assert main(["train", str(cfg), "--out", str(out)]) == 0
    shutil.rmtree(out / "checkpoints")
    shutil.copytree(tmp_path / "b" / "checkpoints", out / "checkpoints")
    (out / "result.json").unlink()
    record.write_state(out, record.RUNNING)  # as if killed after epoch 2
    capsys.readouterr()
    assert main(["train", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "checkpoint of trial" in err
    assert str(out / "checkpoints" / "epoch_0002.pt") in err
    assert record.read_state(out) == record.FAILED
    assert [r["epoch"] for r in record.read_metrics(out)] == [1, 2, 3]  # its own, kept
