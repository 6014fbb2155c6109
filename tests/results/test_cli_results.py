import json

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
