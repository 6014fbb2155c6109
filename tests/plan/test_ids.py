"""Trial ids mean "same experiment": what cannot change a metric is not in them, the data
enters by its content, new fields with old-behaviour defaults keep every id, and folders of
ablate 0.1 are found and renamed, never recomputed."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from ablate import bookkeeping, record
from ablate.cli import main
from ablate.config import DataConfig, ModelConfig, RecipeConfig, Trial, TrialConfig
from ablate.plan import load_plan, trial_states

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "results_v1"
SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": RecipeConfig}


def base() -> TrialConfig:
    return TrialConfig(model=ModelConfig(arch="dwnet_nano"), data=DataConfig(name="digits"),
                       train=RecipeConfig(epochs=3), seed=1)


def _other_value(f: dataclasses.Field):
    """A valid-typed value different from the field's default."""
    d = f.default
    if isinstance(d, bool) or "bool" in str(f.type):
        return not d if isinstance(d, bool) else True
    if isinstance(d, (int, float)):
        return d + 1
    if "int" in str(f.type):
        return 3
    if "float" in str(f.type):
        return 0.5
    return "something-else"


@pytest.mark.parametrize("section,name", [
    (s, f.name) for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)
    if f.default is not dataclasses.MISSING])
def test_a_field_is_in_the_id_exactly_when_it_can_change_a_metric(section, name):
    cfg = base()
    part = getattr(cfg, section)
    f = next(f for f in dataclasses.fields(part) if f.name == name)
    changed = dataclasses.replace(cfg, **{section: dataclasses.replace(
        part, **{name: _other_value(f)})})
    operational = f.metadata.get("operational", False)
    if name == "root":  # the folder's path is out; its content is in (next tests)
        assert changed.trial_id("same content") == dataclasses.replace(
            cfg, data=dataclasses.replace(cfg.data, root="/elsewhere")).trial_id("same content")
    else:
        assert (changed.trial_id() == cfg.trial_id()) == operational
    assert {"train.workers", "train.keep_checkpoints", "data.root"} == {
        f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)
        if f.metadata.get("operational")}


def test_adding_a_field_whose_default_keeps_todays_behaviour_keeps_every_id():
    cfg = base()
    # a later version of the recipe, with a new knob defaulting to what the code did before
    Newer = dataclasses.make_dataclass(
        "RecipeConfig", [("accum_steps", int, dataclasses.field(default=1))],
        bases=(RecipeConfig,), frozen=True)
    newer = dataclasses.replace(cfg, train=Newer(**dataclasses.asdict(cfg.train)))
    assert newer.trial_id() == cfg.trial_id()
    assert dataclasses.replace(newer, train=dataclasses.replace(
        newer.train, accum_steps=2)).trial_id() != cfg.trial_id()


def test_a_trial_record_of_a_field_this_version_lacks_still_reads():
    d = base().to_dict()
    d["train"]["a_field_from_the_future"] = 7
    assert TrialConfig.from_dict(d) == base()


def _image_folder(root: Path, per_class: int = 2) -> Path:
    for split in ("train", "val"):
        for label, cls in enumerate(("cat", "dog")):
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (8, 8), (40 * label, 10 * i, 0)).save(
                    root / split / cls / f"{i}.png")
    return root


def _folder_sweep(tmp_path: Path, root: Path) -> Path:
    path = tmp_path / f"s{abs(hash(str(root)))}.yaml"
    path.write_text(f"""\
name: folders
description: one trial on an image folder
base:
  model: {{arch: dwnet_nano}}
  data: {{name: imagefolder, root: {json.dumps(str(root))}, img_size: 32}}
  train: {{epochs: 1, warmup_epochs: 0, workers: 0, batch_size: 2}}
""")
    return path


def test_a_moved_data_folder_keeps_its_ids_and_other_content_gets_new_ones(tmp_path):
    first = _image_folder(tmp_path / "data")
    (_, [a]) = load_plan(_folder_sweep(tmp_path, first))
    moved = tmp_path / "scratch" / "data"
    shutil.copytree(first, moved)
    (_, [b]) = load_plan(_folder_sweep(tmp_path, moved))
    assert b.id == a.id and b.config.data.root != a.config.data.root
    (moved / "val" / "dog" / "extra.png").write_bytes((moved / "val" / "dog" / "0.png")
                                                      .read_bytes())
    (_, [c]) = load_plan(_folder_sweep(tmp_path, moved))
    assert c.id != a.id
    renamed = tmp_path / "renamed"
    shutil.copytree(first, renamed)
    (renamed / "train" / "dog").rename(renamed / "train" / "wolf")
    (renamed / "val" / "dog").rename(renamed / "val" / "wolf")
    (_, [d]) = load_plan(_folder_sweep(tmp_path, renamed))
    assert d.id not in {a.id, c.id}


def test_loader_workers_and_checkpoints_kept_do_not_rerun_a_finished_trial(tmp_path):
    cfg = base()
    trial = Trial(config=cfg, sweep="s", arm="baseline")
    record.write_trial(record.trial_dir(tmp_path, trial.id), trial)
    record.write_state(record.trial_dir(tmp_path, trial.id), record.DONE)
    busier = Trial(config=dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, workers=8, keep_checkpoints=5)), sweep="s", arm="baseline")
    assert trial_states([busier], tmp_path) == {trial.id: record.DONE}
    assert bookkeeping.config_changes(tmp_path, busier) == {}


def test_a_default_changed_in_the_code_shows_and_is_kept_unless_asked(tmp_path, capsys):
    cfg = base()
    trial = Trial(config=cfg, sweep="s", arm="baseline")
    tdir = record.trial_dir(tmp_path, trial.id)
    # What a record of a version whose default lr was 1e-3 looks like to this one: the id
    # left the default out then as now, the stored configuration says what actually ran.
    ran = dataclasses.replace(trial, config=dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, lr=1e-3)))
    record.write_trial(tdir, ran)
    record.write_state(tdir, record.DONE)
    assert bookkeeping.config_changes(tmp_path, trial) == {"train.lr": (1e-3, 5e-4)}
    set_aside = bookkeeping.set_aside(tmp_path, trial)
    assert not tdir.exists() and (set_aside / "trial.json").exists()
    assert trial_states([trial], tmp_path) == {trial.id: record.NEW}


def _interrupted_under(tdir: Path, ran: Trial, *, checkpoint: bool) -> None:
    """A trial folder as a run under ``ran``'s configuration leaves it when killed."""
    import torch

    record.write_trial(tdir, ran)
    record.write_state(tdir, record.RUNNING)  # no driver holds the lock: interrupted
    if checkpoint:
        (tdir / record.CHECKPOINTS).mkdir()
        torch.save({"epoch": 1}, tdir / record.CHECKPOINTS / "epoch_0001.pt")


def test_an_interrupted_trial_with_checkpoints_of_another_configuration_is_not_resumed(
        tmp_path):
    from ablate.errors import RecordError
    from ablate.runner import triage

    cfg = base()
    trial = Trial(config=cfg, sweep="s", arm="baseline")
    ran = dataclasses.replace(trial, config=dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, lr=1e-3)))
    tdir = record.trial_dir(tmp_path, trial.id)
    _interrupted_under(tdir, ran, checkpoint=True)
    with pytest.raises(RecordError) as e:
        triage([trial], tmp_path)
    assert e.value.file == str(tdir / "trial.json") and "train.lr 0.001 -> 0.0005" in str(e.value)
    assert f"--trial {trial.id}" in e.value.hint and "--rerun-changed" in e.value.hint
    work = triage([trial], tmp_path, rerun_changed=True)  # set aside and started afresh
    assert work.todo == [trial] and work.changes == {trial.id: {"train.lr": (1e-3, 5e-4)}}
    shutil.rmtree(tdir / record.CHECKPOINTS)  # nothing trained yet: it restarts under the plan
    work = triage([trial], tmp_path)
    assert work.todo == [trial] and work.changes == {}


@pytest.fixture
def legacy_results(tmp_path: Path) -> Path:
    dest = tmp_path / "results"
    shutil.copytree(FIXTURE / "results", dest)
    return dest


def test_a_results_folder_of_ablate_0_1_plans_as_done(legacy_results, capsys):
    old_ids = sorted(p.name for p in record.list_trial_dirs(legacy_results))
    assert main(["plan", str(FIXTURE / "legacy.yaml"), "--results", str(legacy_results),
                 "--json", "--no-stats"]) == 0
    rows = json.loads(capsys.readouterr().out)["trials"]
    assert [(r["state"], r["action"]) for r in rows] == [("done", "skip")] * 2
    assert sorted(r["legacy_id"] for r in rows) == old_ids
    assert not {r["id"] for r in rows} & set(old_ids)  # the scheme did change
    assert main(["status", str(legacy_results)]) == 0
    assert capsys.readouterr().out.count(" done ") == 2


@pytest.mark.slow
def test_run_renames_ablate_0_1_folders_and_recomputes_nothing(legacy_results, capsys):
    before = {p.name: (p / "result.json").read_text()
              for p in record.list_trial_dirs(legacy_results)}
    assert main(["run", str(FIXTURE / "legacy.yaml"), "--results", str(legacy_results)]) == 0
    out = capsys.readouterr().out
    assert "2 already finished, 0 to run" in out
    _, trials = load_plan(FIXTURE / "legacy.yaml")
    after = {p.name: (p / "result.json").read_text()
             for p in record.list_trial_dirs(legacy_results)}
    assert sorted(after) == sorted(t.id for t in trials)
    assert sorted(after.values()) == sorted(before.values())  # the same records, renamed
    for t in trials:
        assert record.read_trial(record.trial_dir(legacy_results, t.id)).id == t.id
        assert t.config.legacy_id() in before


@pytest.mark.slow
def test_run_keeps_a_changed_trial_and_reruns_it_only_with_rerun_changed(legacy_results,
                                                                          capsys):
    sweep = str(FIXTURE / "legacy.yaml")
    _, trials = load_plan(FIXTURE / "legacy.yaml")
    bookkeeping.migrate_legacy(legacy_results, trials)
    target = trials[0]
    tdir = record.trial_dir(legacy_results, target.id)
    stored = json.loads((tdir / "trial.json").read_text())
    stored["config"]["train"]["lr"] = 1e-3  # it ran under another default lr
    (tdir / "trial.json").write_text(json.dumps(stored))
    assert main(["run", sweep, "--results", str(legacy_results)]) == 0
    out = capsys.readouterr().out
    assert "0 to run" in out and "train.lr 0.001 -> 0.0005" in out and "--rerun-changed" in out
    assert main(["run", sweep, "--results", str(legacy_results), "--rerun-changed"]) == 0
    out = capsys.readouterr().out
    assert "1 already finished, 1 to run" in out
    assert record.read_trial(tdir).config.train.lr == 5e-4  # rerun under the plan's config
    assert record.read_state(tdir) == record.DONE
    [kept] = (legacy_results / "replaced").iterdir()
    assert json.loads((kept / "trial.json").read_text())["config"]["train"]["lr"] == 1e-3
    assert (kept / "result.json").exists()  # nothing lost


def test_run_refuses_to_resume_checkpoints_of_another_configuration(legacy_results, capsys):
    sweep = str(FIXTURE / "legacy.yaml")
    _, trials = load_plan(FIXTURE / "legacy.yaml")
    bookkeeping.migrate_legacy(legacy_results, trials)
    target = trials[0]
    tdir = record.trial_dir(legacy_results, target.id)
    ran = dataclasses.replace(target, config=dataclasses.replace(
        target.config, train=dataclasses.replace(target.config.train, lr=1e-3)))
    (tdir / "result.json").unlink()
    _interrupted_under(tdir, ran, checkpoint=True)
    def files():  # but the driver's lock file, which every run leaves
        return sorted((p.relative_to(legacy_results), p.stat().st_mtime_ns)
                      for p in legacy_results.rglob("*") if p.name != bookkeeping.LOCK)

    before = files()
    assert main(["run", sweep, "--results", str(legacy_results)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{tdir / 'trial.json'}" in err
    assert "train.lr 0.001 -> 0.0005" in err and f"--trial {target.id}" in err
    assert files() == before  # nothing touched
    assert main(["plan", sweep, "--results", str(legacy_results), "--no-stats"]) == 0
    out = capsys.readouterr().out
    assert "1 unfinished trials have checkpoints trained under another configuration" in out
    assert f"{target.id} [" in out and "train.lr 0.001 -> 0.0005" in out
    assert "a run would: skip 1, stop 1" in out


def _as_if_the_default_lr_was(results: Path, lr: float) -> None:
    """Rewrite a results folder as a version of ablate whose default lr was ``lr`` wrote it:
    every stored configuration holds that value, under the same ids."""
    paths = [results / bookkeeping.MANIFEST, *results.glob("trials/*/trial.json")]
    for path in paths:
        obj = json.loads(path.read_text())
        for t in obj.get("trials", [obj]):
            t["config"]["train"]["lr"] = lr
        path.write_text(json.dumps(obj))


def test_a_default_changed_in_the_code_keeps_every_command_working(legacy_results, capsys):
    """The stored configurations then hold a value that is no longer the default, so they
    hash to other ids than the folders': status, resume and run refused the folder as if
    sweep.json had been edited by hand."""
    sweep = str(FIXTURE / "legacy.yaml")
    _, trials = load_plan(FIXTURE / "legacy.yaml")
    assert main(["run", sweep, "--results", str(legacy_results)]) == 0  # sweep.json, new ids
    _as_if_the_default_lr_was(legacy_results, 1e-3)
    capsys.readouterr()
    assert main(["resume", str(legacy_results)]) == 0
    out = capsys.readouterr().out
    assert "2 already finished, 0 to run" in out and "2 trials of the plan hold a value" in out
    target = trials[0]
    tdir = record.trial_dir(legacy_results, target.id)
    (tdir / "result.json").unlink()
    record.write_state(tdir, record.RUNNING)  # it was killed; its epoch is kept
    (tdir / record.CHECKPOINTS).mkdir()
    capsys.readouterr()
    assert main(["status", str(legacy_results)]) == 0
    out = capsys.readouterr().out
    assert all(t.id in out for t in trials)
    # the plan as it was made: its trials keep their ids and their configuration
    manifest = bookkeeping.read_manifest(legacy_results)
    assert [t.id for t in manifest["trials"]] == [t.id for t in trials]
    assert {t.config.train.lr for t in manifest["trials"]} == {1e-3}
    assert [t.id for t in bookkeeping.split_finished(manifest["trials"], legacy_results)[0]] \
        == [trials[1].id]
    # re-planned under today's default: the finished trial is kept and shown as changed
    assert main(["run", sweep, "--results", str(legacy_results), "--only", "local_mlp"]) == 0
    out = capsys.readouterr().out
    assert "1 already finished, 0 to run" in out and "train.lr 0.001 -> 0.0005" in out
