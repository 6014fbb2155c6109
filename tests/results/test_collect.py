import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from ablate import collect, record
from ablate.cli import main
from ablate.collect import collect_results, load_tables
from ablate.errors import RecordError

GOLDEN = Path(__file__).with_name("golden_schema.json")


def schema_of(results_dir: Path) -> dict:
    out = {}
    for name in (collect.TRIALS_FILE, collect.EPOCHS_FILE):
        schema = pq.read_schema(results_dir / name)
        out[name] = {"metadata": {k.decode(): v.decode() for k, v in schema.metadata.items()},
                     "columns": {f.name: str(f.type) for f in schema}}
    return out


def test_schema_matches_the_golden_file(group_sweep):
    collect_results(group_sweep)
    got = schema_of(group_sweep)
    if os.environ.get("ABLATE_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())
    for name in golden:  # same columns, types, metadata, and column order
        assert got[name] == golden[name] and list(got[name]["columns"]) == list(
            golden[name]["columns"]), "schema changed: bump TABLE_SCHEMA, then rerun " \
            "with ABLATE_UPDATE_GOLDEN=1"
    assert set(got) == set(golden)


def test_one_row_per_trial_with_typed_axis_columns(group_sweep):
    summary = collect_results(group_sweep)
    assert (summary.rows, summary.epoch_rows, summary.new, summary.skipped) == (18, 72, 18, 0)
    trials, epochs = load_tables(group_sweep)
    assert trials["id"].is_unique and len(trials) == 18
    assert str(trials["model.group_size"].dtype) == "Int64"
    assert trials["model.window"].isna().all()  # unset axis: a null, not "None"
    assert str(trials["provenance.git_dirty"].dtype) == "boolean"
    row = trials[(trials["model.arch"] == "ablate_swin_nano") & (trials["model.group_size"] == 4)
                 & (trials["seed"] == 2)].iloc[0]
    assert row["final/val/top1"] == pytest.approx(74.2)
    assert row["best/epoch"] == 4 and row["epochs"] == 4 and row["state"] == "done"
    assert json.loads(row["varied"]) == {"model.group_size": 4, "model.arch": "ablate_swin_nano"}
    assert row["throughput_img_per_s"] == pytest.approx(1002.5)  # mean of 1001..1004
    assert row["provenance.git_commit"] == "0123abc"
    assert list(epochs.groupby("id")["epoch"].apply(list).iloc[0]) == [1, 2, 3, 4]


def test_collect_twice_writes_nothing_the_second_time(group_sweep):
    collect_results(group_sweep)
    before = {n: (group_sweep / n).read_bytes() for n in (collect.TRIALS_FILE,
                                                          collect.EPOCHS_FILE)}
    again = collect_results(group_sweep)
    assert not again.written and again.unchanged == 18 and again.new == 0
    for name, data in before.items():
        assert (group_sweep / name).read_bytes() == data


def test_incremental_collect_equals_a_full_collect(group_sweep, factory_module, tmp_path):
    collect_results(group_sweep)
    changed = record.list_trial_dirs(group_sweep)[3]
    record.append_metrics(changed, {**factory_module.curve(99.0, 5, 4), "epoch": 5})
    extra = factory_module.make_trial("extra", seed=7, sweep="group_size", epochs=4,
                                      arch="local_mlp_nano", group_size=64)
    with factory_module.fast_writes():
        factory_module.write_record(group_sweep, extra, top1=50.0)
    shutil.rmtree(record.list_trial_dirs(group_sweep)[0])
    summary = collect_results(group_sweep)
    assert (summary.new, summary.updated, summary.unchanged) == (1, 1, 16)
    copy = tmp_path / "copy"
    shutil.copytree(group_sweep / "trials", copy / "trials")
    assert collect_results(copy).new == 18
    for name in (collect.TRIALS_FILE, collect.EPOCHS_FILE):
        assert (group_sweep / name).read_bytes() == (copy / name).read_bytes()
    trials, epochs = load_tables(group_sweep)
    assert trials.set_index("id").loc[changed.name, "epochs"] == 5
    assert extra.id in set(trials["id"]) and len(epochs[epochs["id"] == extra.id]) == 4


def test_a_resumed_trial_keeps_one_row_per_epoch(group_sweep):
    tdir = record.list_trial_dirs(group_sweep)[0]
    record.append_metrics(tdir, {"epoch": 3, "val/top1": 1.0})  # re-ran epoch 3 after a resume
    record.append_metrics(tdir, {"epoch": 4, "val/top1": 2.0})
    collect_results(group_sweep)
    _, epochs = load_tables(group_sweep)
    mine = epochs[epochs["id"] == tdir.name]
    assert list(mine["epoch"]) == [1, 2, 3, 4]
    assert list(mine["val/top1"])[2:] == [1.0, 2.0]
    assert mine["train/loss"].isna().tolist() == [False, False, True, True]


def test_a_truncated_last_line_is_ignored(group_sweep):
    tdir = record.list_trial_dirs(group_sweep)[0]
    with open(tdir / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 5, "val/to')
    summary = collect_results(group_sweep)
    _, epochs = load_tables(group_sweep)
    assert summary.warnings == () and len(epochs[epochs["id"] == tdir.name]) == 4


def replace(path: Path, text: str) -> None:
    """Swap in a new file by rename, as every writer of records does."""
    tmp = path.with_name(".damage.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.mark.parametrize("damage, name, text", [
    ("corrupt", "result.json", '{"state": "do'),
    ("future", "provenance.json", json.dumps({"schema": 99})),
    ("malformed", "trial.json", json.dumps({"schema": 1, "sweep": "s"})),
])
def test_an_unreadable_trial_is_skipped_with_a_warning_naming_the_file(group_sweep, damage,
                                                                        name, text):
    collect_results(group_sweep)
    tdir = record.list_trial_dirs(group_sweep)[5]
    replace(tdir / name, text)
    summary = collect_results(group_sweep)
    assert summary.skipped == 1 and summary.rows == 17 and summary.unchanged == 17
    assert len(summary.warnings) == 1 and str(tdir / name) in summary.warnings[0]
    trials, epochs = load_tables(group_sweep)
    assert tdir.name not in set(trials["id"]) and tdir.name not in set(epochs["id"])


@pytest.mark.parametrize("edit", ["shorter", "same size, later"])
def test_a_record_corrupted_in_place_is_seen_by_an_incremental_collect(group_sweep, capsys,
                                                                       edit):
    assert main(["collect", str(group_sweep)]) == 0
    tdir = record.list_trial_dirs(group_sweep)[5]
    state, folder = tdir / "state.json", tdir.stat()
    text = state.read_text()
    broken = text[:10] if edit == "shorter" else "{" * len(text)
    with open(state, "r+") as f:  # in place: same inode, the folder is not touched
        f.write(broken)
        f.truncate()
    if edit != "shorter":  # same size: only the file's time tells, as a later edit's would
        st = state.stat()
        os.utime(state, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    os.utime(tdir, ns=(folder.st_atime_ns, folder.st_mtime_ns))
    capsys.readouterr()
    assert main(["collect", str(group_sweep)]) == 0
    out, err = capsys.readouterr()
    assert err.startswith(f"ablate: warning: skipped trial {tdir.name}: {state}: corrupt JSON")
    assert err.count("\n") == 1 and "17 unchanged, 1 skipped" in out
    trials, epochs = load_tables(group_sweep)
    assert tdir.name not in set(trials["id"]) and tdir.name not in set(epochs["id"])


def test_a_failure_mid_write_leaves_the_previous_tables(group_sweep, factory_module,
                                                        monkeypatch):
    collect_results(group_sweep)
    before = {n: (group_sweep / n).read_bytes() for n in (collect.TRIALS_FILE,
                                                          collect.EPOCHS_FILE)}
    with factory_module.fast_writes():
        factory_module.write_record(group_sweep, factory_module.make_trial("new", seed=9),
                                    top1=1.0)
    real = collect._write_parquet
    calls = []

    def crash_on_second(table, where):
        calls.append(where)
        if len(calls) == 2:  # trials.parquet's temp is written; die while writing epochs
            where.write(b"PAR1 half a file")
            raise KeyboardInterrupt
        real(table, where)

    monkeypatch.setattr(collect, "_write_parquet", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        collect_results(group_sweep)
    monkeypatch.setattr(collect, "_write_parquet", real)
    assert len(calls) == 2
    for name, data in before.items():
        assert (group_sweep / name).read_bytes() == data
    assert not [p for p in group_sweep.iterdir() if p.name.endswith(".tmp")]
    assert collect_results(group_sweep).new == 1


def test_tables_replaced_behind_its_back_trigger_a_full_collect(group_sweep):
    collect_results(group_sweep)
    (group_sweep / collect.EPOCHS_FILE).unlink()
    summary = collect_results(group_sweep)
    assert summary.written and summary.new == 18


def test_unfinished_and_failed_trials_have_rows(group_sweep, factory_module):
    with factory_module.fast_writes():
        failed = factory_module.make_trial("f", seed=1)
        factory_module.write_record(group_sweep, failed, top1=10, state=record.FAILED, epochs=2)
        running = factory_module.make_trial("r", seed=2)
        factory_module.write_record(group_sweep, running, top1=10, state=record.RUNNING,
                                    epochs=1)
    collect_results(group_sweep)
    trials = load_tables(group_sweep)[0].set_index("id")
    assert trials.loc[failed.id, "state"] == "failed"
    assert trials.loc[failed.id, "error_type"] == "RuntimeError"
    assert pd.isna(trials.loc[failed.id, "final/val/top1"])
    assert trials.loc[running.id, "state"] == "running" and trials.loc[running.id, "epochs"] == 1


def test_metrics_of_the_wrong_type_become_null(group_sweep):
    tdir = record.list_trial_dirs(group_sweep)[0]
    with open(tdir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 5, "val/top1": "n/a", "val/loss": float("nan")}) + "\n")
    collect_results(group_sweep)
    _, epochs = load_tables(group_sweep)
    last = epochs[epochs["id"] == tdir.name].iloc[-1]
    assert last["epoch"] == 5 and pd.isna(last["val/top1"]) and pd.isna(last["val/loss"])


def test_a_folder_without_trials_is_a_record_error(tmp_path):
    with pytest.raises(RecordError, match="no trial folders"):
        collect_results(tmp_path)
    with pytest.raises(RecordError, match="trials.parquet"):
        load_tables(tmp_path)


def test_tables_of_another_schema_version_are_refused(group_sweep):
    collect_results(group_sweep)
    path = group_sweep / collect.TRIALS_FILE
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({collect.SCHEMA_KEY: b"0"}), path)
    with pytest.raises(RecordError, match="table schema 0"):
        load_tables(group_sweep)


@pytest.mark.parametrize("engine", ["polars", "duckdb"])
def test_other_engines_read_the_tables(group_sweep, engine):
    mod = pytest.importorskip(engine)
    collect_results(group_sweep)
    trials_path = str(group_sweep / collect.TRIALS_FILE)
    epochs_path = str(group_sweep / collect.EPOCHS_FILE)
    trials, epochs = load_tables(group_sweep)
    group_sum = int(trials["model.group_size"].sum())
    if engine == "polars":
        frame = mod.read_parquet(trials_path)
        assert frame.height == len(trials) == 18
        assert frame["model.group_size"].dtype == mod.Int64
        assert frame["model.group_size"].sum() == group_sum
        assert mod.read_parquet(epochs_path).height == len(epochs)
    else:
        [(n, total)] = mod.sql(f"select count(*), sum(\"model.group_size\") "
                               f"from read_parquet('{trials_path}')").fetchall()
        assert (n, total) == (18, group_sum)
        [(rows,)] = mod.sql(f"select count(*) from read_parquet('{epochs_path}')").fetchall()
        assert rows == len(epochs)


def test_a_damaged_manifest_means_a_full_collect(group_sweep):
    collect_results(group_sweep)
    (group_sweep / collect.MANIFEST_FILE).write_text('{"table_schema": 1, "trials": [1, 2]}')
    summary = collect_results(group_sweep)
    assert summary.written and summary.new == 18


def test_a_state_json_of_no_known_state_is_refused_like_a_corrupt_one(group_sweep):
    tdir = record.list_trial_dirs(group_sweep)[2]
    raw = json.loads((tdir / "state.json").read_text())
    replace(tdir / "state.json", json.dumps({**raw, "state": "finished"}))
    summary = collect_results(group_sweep)
    assert summary.skipped == 1 and "unknown state 'finished'" in summary.warnings[0]
    assert str(tdir / "state.json") in summary.warnings[0]


def test_a_data_parallel_trial_has_its_workers_in_the_table(tmp_path):
    import dataclasses

    from ablate.config import Resources
    from tests.results.factory import make_trial, write_record

    one = make_trial("a")
    two = dataclasses.replace(one, resources=Resources(workers=2, cpus_per_worker=1))
    assert one.id != two.id  # per-device BatchNorm statistics: another experiment
    for t in (one, two):
        write_record(tmp_path, t, top1=50.0)
    collect_results(tmp_path)
    trials, _ = load_tables(tmp_path)
    assert dict(zip(trials["id"], trials["resources.workers"])) == {one.id: 1, two.id: 2}


@pytest.mark.parametrize("kept", [2, 0, None])  # None: metrics.jsonl deleted
def test_a_finished_trial_with_fewer_epochs_than_its_result_counts_is_left_out(group_sweep,
                                                                             kept):
    """status calls it damaged; collect put it in the tables as done with 2 (or 0) epochs."""
    collect_results(group_sweep)
    tdir = record.list_trial_dirs(group_sweep)[4]
    metrics = tdir / "metrics.jsonl"
    if kept is None:
        metrics.unlink()
    else:
        replace(metrics, "".join(metrics.read_text().splitlines(True)[:kept]))
    summary = collect_results(group_sweep)
    kept = kept or 0
    assert summary.skipped == 1 and summary.rows == 17 and summary.epoch_rows == 68
    assert summary.warnings == (f"skipped trial {tdir.name} (damaged): {metrics}: holds {kept} "
                                f"of the 4 epochs result.json counts; restore it, or 'ablate "
                                f"reset {group_sweep} --trial {tdir.name}' to train the trial "
                                f"again",)
    trials, epochs = load_tables(group_sweep)
    assert tdir.name not in set(trials["id"]) and tdir.name not in set(epochs["id"])
    assert (epochs.groupby("id").size() == 4).all()
    full = collect_results(group_sweep, full=True)
    assert (full.rows, full.epoch_rows, full.skipped) == (17, 68, 1)


@pytest.mark.parametrize("then", ["deleted", "rerun without them"])
def test_columns_only_a_removed_trial_had_leave_the_tables_as_a_full_collect_would(
        group_sweep, factory_module, tmp_path, then):
    """An incremental collect kept them, all null, where a collect from scratch had none."""
    tdir = record.list_trial_dirs(group_sweep)[0]
    with open(tdir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 5, "val/ema_top1": 1.0}) + "\n")
    prov = json.loads((tdir / "provenance.json").read_text())
    replace(tdir / "provenance.json", json.dumps({**prov, "cluster": "old", "git_commit": None}))
    collect_results(group_sweep)
    assert {"val/ema_top1"} <= set(load_tables(group_sweep)[1])
    if then == "deleted":
        shutil.rmtree(tdir)
    else:
        trial = record.read_trial(tdir)
        shutil.rmtree(tdir)
        with factory_module.fast_writes():
            factory_module.write_record(group_sweep, trial, top1=60.0)
    collect_results(group_sweep)
    copy = tmp_path / "copy"
    shutil.copytree(group_sweep / "trials", copy / "trials")
    collect_results(copy)
    for name in (collect.TRIALS_FILE, collect.EPOCHS_FILE):
        assert pq.read_schema(group_sweep / name).names == pq.read_schema(copy / name).names
        assert (group_sweep / name).read_bytes() == (copy / name).read_bytes()
    trials, epochs = load_tables(group_sweep)
    assert "val/ema_top1" not in epochs and "provenance.cluster" not in trials
    assert "provenance.git_commit" in trials  # still filled by the other trials


@pytest.mark.parametrize("name", [collect.TRIALS_FILE, collect.EPOCHS_FILE])
def test_a_previous_table_damaged_in_place_is_rebuilt_from_the_records(group_sweep, name):
    """Same size and time, so the manifest vouched for it: the merge raised a traceback."""
    collect_results(group_sweep)
    path, changed = group_sweep / name, record.list_trial_dirs(group_sweep)[0]
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(st.st_size // 2)
        f.write(b"\0" * 200)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with open(changed / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 5, "val/top1": 1.0}) + "\n")
    summary = collect_results(group_sweep)
    assert summary.written and (summary.rows, summary.epoch_rows) == (18, 73)
    trials, epochs = load_tables(group_sweep)
    assert len(trials) == 18 and len(epochs) == 73
    assert trials.set_index("id").loc[changed.name, "epochs"] == 5
