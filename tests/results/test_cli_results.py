import json
import os

from ablate import record
from ablate.cli import main


def test_collect_prints_a_summary_and_one_line_per_warning(group_sweep, capsys):
    bad = record.list_trial_dirs(group_sweep)[0] / "state.json"
    bad.write_text(json.dumps({"schema": 7, "state": "done"}))
    assert main(["collect", str(group_sweep)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert out[0].startswith("warning: skipped trial") and str(bad) in out[0]
    assert out[1].startswith("collected 17 trials (17 new, 0 updated, 0 unchanged, 1 skipped)")


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
