"""``ablate plan`` / ``ablate run`` on broken and hostile data folders: one line, exit 2, nothing
run or written; ``--deep-data-check`` decodes every image once and remembers it."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from ablate.cli import main

SWEEP = """\
name: data
description: a sweep on a data folder
base:
  model: {{arch: dwnet_nano}}
  data: {{name: {name}, root: {root}, img_size: 32}}
  train: {{epochs: 1, warmup_epochs: 0, batch_size: 4, workers: 0}}
"""
CIFAR10 = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATE_CACHE_DIR", str(tmp_path / "cache"))


def image_folder(root, per_class=2):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.jpg")
    return root


def cifar_folder(root, labels=(0, 1, 2, 3), n=4):
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    data = np.random.default_rng(0).integers(0, 255, (n, 3072), dtype=np.uint8)
    for f in CIFAR10:
        (base / f).write_bytes(pickle.dumps({b"data": data, b"labels": list(labels)}))
    return base


class CreatesAFile:
    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def sweep_file(tmp_path, root, name="imagefolder"):
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP.format(name=name, root=root))
    return path


def plan(capsys, *args):
    status = main(["plan", *map(str, args), "--no-stats", "--json"])
    out, err = capsys.readouterr()
    return status, out, err


def truncate(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def empty(path):
    path.write_bytes(b"")


def html(path):
    path.write_text("<html>404</html>")


def loop(path):
    path.unlink()
    os.symlink(path.name, path)


def no_train_images(path):
    for f in path.parent.iterdir():
        f.unlink()


@pytest.mark.parametrize("breakage,message", [
    (empty, "the file is empty (0 bytes)"),
    (html, "its first bytes are not those of a JPEG"),
    (loop, "not a readable file (a broken link or a link loop?)"),
    (no_train_images, "class 'dog' has no images in train/"),
])
def test_a_broken_image_folder_is_one_line_naming_the_file(tmp_path, capsys, breakage,
                                                          message):
    root = image_folder(tmp_path / "data")
    bad = root / "train/dog/1.jpg"
    breakage(bad)
    status, out, err = plan(capsys, sweep_file(tmp_path, root))
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and message in err
    named = bad.parent if breakage is no_train_images else bad
    assert f"({named})" in err and "sweep.yaml:5: base.data.root" in err


def test_a_class_folder_link_loop_does_not_hang_the_plan(tmp_path, capsys):
    root = image_folder(tmp_path / "data")
    os.symlink("..", root / "train/cat/up")
    status, out, _ = plan(capsys, sweep_file(tmp_path, root))
    assert status == 0
    assert json.loads(out)["trials"][0]["data_fingerprint"]


@pytest.mark.parametrize("labels,message", [
    ((0, 1, 2), "it has 4 images but 3 labels"),
    ((0, 1, 2, 10), "label 10 is outside the 10 classes (0-9)"),
])
def test_cifar_labels_that_do_not_fit_are_found_by_plan(tmp_path, capsys, labels, message):
    base = cifar_folder(tmp_path / "c", labels=labels)
    status, _, err = plan(capsys, sweep_file(tmp_path, tmp_path / "c", name="cifar10"))
    assert status == 2 and err.count("\n") == 1
    assert message in err and str(base / "data_batch_1") in err


def test_a_malicious_cifar_batch_runs_nothing_at_plan_or_run(tmp_path, capsys):
    base = cifar_folder(tmp_path / "c")
    target = tmp_path / "pwned"
    (base / "data_batch_3").write_bytes(pickle.dumps({b"data": CreatesAFile(target)}))
    sweep = sweep_file(tmp_path, tmp_path / "c", name="cifar10")
    status, _, err = plan(capsys, sweep)
    assert status == 2 and err.count("\n") == 1 and "data_batch_3" in err
    results = tmp_path / "results"
    assert main(["run", str(sweep), "--results", str(results)]) == 2
    assert not target.exists() and not results.exists()


def test_a_good_cifar_folder_plans(tmp_path, capsys):
    cifar_folder(tmp_path / "c")
    status, out, _ = plan(capsys, sweep_file(tmp_path, tmp_path / "c", name="cifar10"))
    assert status == 0 and json.loads(out)["totals"]["trials"] == 1


def test_deep_data_check_finds_what_the_cheap_check_cannot(tmp_path, capsys):
    root = image_folder(tmp_path / "data")
    bad = root / "val/cat/0.jpg"
    truncate(bad)  # its header is a JPEG's
    sweep = sweep_file(tmp_path, root)
    assert plan(capsys, sweep)[0] == 0
    status, out, err = plan(capsys, sweep, "--deep-data-check")
    assert status == 2 and out == "" and err.count("\n") == 1
    assert str(bad) in err and "cannot decode this image" in err
    results = tmp_path / "results"
    assert main(["run", str(sweep), "--deep-data-check", "--results", str(results)]) == 2
    assert str(bad) in capsys.readouterr().err and not results.exists()


def test_deep_data_check_is_remembered_for_the_next_plan(tmp_path, capsys, monkeypatch):
    root = image_folder(tmp_path / "data")
    sweep = sweep_file(tmp_path, root)
    status, out, err = plan(capsys, sweep, "--deep-data-check")
    assert status == 0 and json.loads(out)["totals"]["trials"] == 1
    assert "8 images, all readable (checked now)" in err
    assert "\r" not in err  # no progress bar when stderr is not a terminal

    def fail(*a, **k):
        raise AssertionError("the images were read again")

    monkeypatch.setattr("ablate.deepcheck.read_image", fail)
    monkeypatch.setattr("ablate.deepcheck.check_files", fail)
    status, _, err = plan(capsys, sweep, "--deep-data-check")
    assert status == 0 and "(checked before)" in err
    (root / "val/dog/2.jpg").write_bytes((root / "val/dog/0.jpg").read_bytes())
    with pytest.raises(AssertionError):  # other content: checked again
        plan(capsys, sweep, "--deep-data-check")


@pytest.mark.parametrize("workers", [0, 2])
def test_an_unreadable_image_at_run_time_fails_the_trial_as_data_naming_it(tmp_path, capsys,
                                                                          workers):
    from ablate.failures import classify_record
    from ablate.record import read_state_raw, trial_dir

    root = image_folder(tmp_path / "data")
    bad = root / "train/cat/1.jpg"
    truncate(bad)  # passes the cheap check of plan: found when a trial decodes it
    sweep = sweep_file(tmp_path, root)
    sweep.write_text(sweep.read_text().replace("workers: 0", f"workers: {workers}"))
    status, out, _ = plan(capsys, sweep)
    trial_id = json.loads(out)["trials"][0]["id"]
    results = tmp_path / "results"
    status = main(["train", "--sweep", str(sweep), "--trial", trial_id, "--results",
                   str(results), "--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and str(bad) in err
    error = read_state_raw(trial_dir(results, trial_id))["error"]
    failure = classify_record(error)
    assert failure.kind == "data" and failure.deterministic  # never retried
    assert str(bad) in failure.first_line  # what the run's summary shows ...
    assert "ablate plan --deep-data-check" in failure.first_line  # ... and how to find others


def test_the_progress_bar_is_drawn_on_a_terminal_only(capsys):
    from ablate.cli.plan import _ProgressBar

    for tty in (True, False):
        bar = _ProgressBar("decoding d", tty=tty)
        for done in range(1, 5):
            bar.update(done, 4)
        bar.close()
        err = capsys.readouterr().err
        if tty:  # the first and the last update are drawn, whatever the time between
            assert err.startswith("\rdecoding d [#######") and err.endswith("] 4/4\n")
            assert f"[{'#' * 30}] 4/4" in err
        else:
            assert err == ""


def test_resume_checks_the_runs_data_before_launch(tmp_path, capsys):
    """A resume does not plan again: the folder its unfinished trials were planned with must
    still be there, unchanged, or it is one line and nothing runs."""
    from ablate.record import list_trial_dirs

    root = image_folder(tmp_path / "data")
    sweep = sweep_file(tmp_path, root)
    results = tmp_path / "results"
    assert main(["run", str(sweep), "--debug", "--results", str(results)]) == 0
    assert main(["reset", str(results), "--arm", "baseline", "--yes"]) == 0  # to run again
    capsys.readouterr()

    def refused(*flags):
        status = main(["resume", str(results), "--debug", *flags])
        err = capsys.readouterr().err
        assert status == 2 and err.count("\n") == 1, err
        assert list_trial_dirs(results) == []  # nothing ran, nothing was written
        return err

    extra = root / "train/cat/9.jpg"
    extra.write_bytes((root / "train/cat/0.jpg").read_bytes())
    err = refused()
    assert f"{root}: data.root: the folder's content changed since the run was planned" in err
    extra.unlink()
    bad = root / "val/dog/1.jpg"
    saved = bad.read_bytes()
    truncate(bad)  # same listing, so only the deep check sees it
    assert str(bad) in refused("--deep-data-check")
    bad.write_bytes(saved)
    (tmp_path / "data").rename(tmp_path / "elsewhere")
    assert refused() == (f"ablate: error: {root}: data.root: the run's data: data folder does "
                         "not exist; restore the folder the run was planned with, then resume "
                         "again\n")
    (tmp_path / "elsewhere").rename(tmp_path / "data")
    assert main(["resume", str(results), "--debug", "--deep-data-check"]) == 0
    assert len(list_trial_dirs(results)) == 1


def test_run_decodes_only_the_data_of_the_trials_it_starts(tmp_path, capsys):
    """Finished trials never read their data again, so a run with nothing left to do decodes
    nothing; once a trial is to run again, its folder is decoded, before anything launches."""
    from ablate.record import list_trial_dirs

    root = image_folder(tmp_path / "data")
    sweep = sweep_file(tmp_path, root)
    results = tmp_path / "results"
    assert main(["run", str(sweep), "--debug", "--results", str(results)]) == 0
    truncate(root / "val/dog/1.jpg")  # the listing is unchanged: only decoding sees it
    capsys.readouterr()
    flags = ["--debug", "--deep-data-check", "--results", str(results)]
    assert main(["run", str(sweep), *flags]) == 0
    out, err = capsys.readouterr()
    assert "1 already finished, 0 to run" in out and "decod" not in err, err
    assert main(["reset", str(results), "--arm", "baseline", "--yes"]) == 0
    capsys.readouterr()
    assert main(["run", str(sweep), *flags]) == 2
    out, err = capsys.readouterr()
    assert "0 already finished, 1 to run" in out  # the plan's sorting, then the refusal
    assert err.count("\n") == 1 and str(root / "val/dog/1.jpg") in err, err
    assert list_trial_dirs(results) == []


def test_deep_data_check_with_no_data_check_is_refused(tmp_path, capsys):
    sweep = sweep_file(tmp_path, tmp_path / "absent")
    status, out, err = plan(capsys, sweep, "--deep-data-check", "--no-data-check")
    assert status == 2 and out == ""
    assert err == ("ablate: error: --deep-data-check: --deep-data-check decodes the data "
                   "folders that --no-data-check skips; drop one of the two\n")
