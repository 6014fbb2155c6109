import json
import os

from ablate import record
from ablate.cli import main
from ablate.collect import load_tables


def test_collect_prints_a_summary_and_one_line_per_warning(group_sweep, capsys):
    bad = record.list_trial_dirs(group_sweep)[0] / "state.json"
    bad.write_text(json.dumps({"schema": 7, "state": "done"}))
    assert main(["collect", str(group_sweep)]) == 0
    out, err = capsys.readouterr()
    assert err.count("\n") == 1  # the warning, on stderr; the summary alone on stdout
    assert err.startswith("ablate: warning: skipped trial") and str(bad) in err
    assert out.startswith("collected 17 trials (17 new, 0 updated, 0 unchanged, 1 skipped)")
    assert out.count("\n") == 1


def test_figures_and_report_collect_first(group_sweep, capsys):
    assert main(["figures", str(group_sweep), "--format", "svg"]) == 0
    out = capsys.readouterr().out
    assert "collected 18 trials" in out and "group_size.svg" in out
    assert (group_sweep / "trials.parquet").exists()
    assert main(["report", str(group_sweep)]) == 0
    out = capsys.readouterr().out
    assert "collected" not in out  # up to date: nothing collected, nothing said
    assert (group_sweep / "tables" / "results.md").exists()


def test_a_folder_without_records_is_one_line_and_status_2(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no trial folders" in err[0] and str(tmp_path) in err[0]


def _break_line(path, number: int) -> None:
    """Overwrite one line of a file with bytes that are no JSON, keeping the others."""
    lines = path.read_bytes().split(b"\n")
    lines[number - 1] = b'{"epoch": 2, "val/to\x00\xff'
    path.write_bytes(b"\n".join(lines))


def test_a_finished_trial_that_lost_an_epoch_is_damaged_in_status_collect_and_report(
        group_sweep, factory_module, capsys):
    tdir = record.list_trial_dirs(group_sweep)[3]
    metrics = tdir / "metrics.jsonl"
    assert main(["collect", str(group_sweep)]) == 0
    _break_line(metrics, 2)
    # a running trial torn mid-append at its end is no damage
    with factory_module.fast_writes():
        running = factory_module.write_record(
            group_sweep, factory_module.make_trial("r", seed=7, epochs=4), top1=50,
            state=record.RUNNING, epochs=2)
    with open(running / "metrics.jsonl", "ab") as f:
        f.write(b'{"epoch": 3, "val/t')
    capsys.readouterr()

    assert main(["status", str(group_sweep)]) == 2
    out, err = capsys.readouterr()
    rows = {line.split()[0]: line for line in out.splitlines()[1:-1]}
    assert " damaged " in rows[tdir.name] and " 3/4 " in rows[tdir.name]
    assert " running " in rows[running.name] or " interrupted " in rows[running.name]
    assert len(err.strip().splitlines()) == 1 and f"{metrics}:2: unreadable" in err

    assert main(["collect", str(group_sweep)]) == 0
    out, err = capsys.readouterr()
    assert err.startswith(f"ablate: warning: skipped trial {tdir.name} (damaged): {metrics}:2: ")
    assert "1 skipped" in out and out.count("\n") == 1 and err.count("\n") == 1
    trials, epochs = load_tables(group_sweep)
    assert tdir.name not in set(trials["id"]) and tdir.name not in set(epochs["id"])
    assert list(epochs[epochs["id"] == running.name]["epoch"]) == [1, 2]

    assert main(["report", str(group_sweep)]) == 0  # says so again, and leaves it out
    err = capsys.readouterr().err
    assert f"ablate: warning: skipped trial {tdir.name} (damaged)" in err


def test_every_file_written_follows_the_umask_and_no_temporary_is_left(tmp_path, factory_module,
                                                                       capsys):
    results = tmp_path / "sweep"
    old = os.umask(0o027)  # group may read, others nothing: not what a private 0o600 gives
    try:
        for seed in (0, 1):
            factory_module.write_record(
                results, factory_module.make_trial("baseline", seed=seed, epochs=2,
                                                   group_size=seed + 1), top1=60)
        assert main(["figures", str(results), "--format", "svg"]) == 0
        assert main(["report", str(results)]) == 0
    finally:
        os.umask(old)
    files = [p for p in results.rglob("*") if p.is_file()]
    kinds = {p.suffix for p in files}
    assert {".json", ".jsonl", ".parquet", ".svg", ".md"} <= kinds
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == \
        {p.name: oct(0o640) for p in files}
    assert not [p for p in results.rglob("*.tmp")]
