"""The report: claims decided from the seeds, the tables, claims.csv, and a golden report.

The golden report is made from a fixed synthetic results folder (written through ablate.record,
no Ray). Regenerate after an intended change with
``ABLATE_UPDATE_GOLDEN=1 python -m pytest tests/results/test_report.py`` and review the diff.
"""

import csv
import io
import json
import os
import re
import types
from pathlib import Path

import pandas as pd
import pytest

from ablate import bookkeeping, record
from ablate.cli import main
from ablate.collect import collect_results, load_tables
from ablate.report import (
    AGREED,
    CLAIM_COLUMNS,
    CONTRADICTED,
    NEEDS_MARGIN,
    NEEDS_SEEDS,
    UNDECIDED,
    Claim,
    arm_summary,
    check_claims,
    claim_table,
    tex_escape,
    to_markdown,
    write_report,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "reports" / "demo"


def trials_frame(values: dict[str, list[float]], expected: dict[str, dict]) -> pd.DataFrame:
    """A trials table as collect writes it, for the columns the report reads."""
    rows = []
    for arm, tops in values.items():
        for seed, top1 in enumerate(tops):
            rows.append({"id": f"{arm}-{seed}", "sweep": "s", "arm": arm, "state": "done",
                         "role": "baseline" if arm == "a" else "arm", "final/val/top1": top1,
                         "best/val/top1": top1, "params": 100, "flops": 1000,
                         "expected": json.dumps({"val/top1": expected[arm]})
                         if arm in expected else None})
    return pd.DataFrame(rows)


def test_claims_are_decided_together_from_the_seeds():
    # variance 2 per arm, 2 seeds: Welch with 2 df (see test_stats.py for the numbers)
    values = {"a": [0.0, 2.0], "b": [5.0, 7.0], "c": [1.0, 3.0], "d": [9.0], "e": [0.5, 1.5]}
    expected = {"b": {"op": ">", "than": "a"}, "c": {"op": "<", "than": "a"},
                "d": {"op": ">", "than": "a"}, "e": {"op": "~", "than": "a"}}
    claims = {c.arm: c for c in check_claims(trials_frame(values, expected))}
    # b > a alone has p 0.036; with c < a beside it Holm doubles it past 0.05
    assert claims["b"].verdict == UNDECIDED and claims["b"].p == pytest.approx(0.0715, abs=1e-3)
    assert claims["b"].diff == pytest.approx(5.0) and claims["b"].n_arm == 2
    assert claims["c"].verdict == UNDECIDED and claims["c"].seeds_needed > 2
    assert 2 < claims["b"].seeds_needed < claims["c"].seeds_needed  # 5 points vs 1 point
    assert claims["b"].detectable > 5.0  # 2 seeds do not have the power for 5 points
    assert claims["d"].verdict == NEEDS_SEEDS and claims["d"].p is None  # one seed
    assert claims["e"].verdict == NEEDS_MARGIN  # a record written before margins existed


def test_flat_arms_plan_seeds_by_the_permutation_test_whatever_their_value():
    # 0.1 repeated: a sum-based sd would be 1e-17, not 0, and the plan Welch's at that spread
    (claim,) = check_claims(trials_frame({"a": [0.1] * 3, "b": [0.7] * 2},
                                         {"b": {"op": ">", "than": "a"}}))
    assert claim.verdict == UNDECIDED and claim.test.startswith("no spread")
    assert claim.detectable == float("inf") and claim.seeds_needed == 4


def test_a_single_clear_claim_is_agreed_and_its_mirror_contradicted():
    values = {"a": [0.0, 2.0], "b": [5.0, 7.0]}
    (claim,) = check_claims(trials_frame(values, {"b": {"op": ">", "than": "a"}}))
    assert claim.verdict == AGREED and claim.seeds_needed is None
    (claim,) = check_claims(trials_frame(values, {"b": {"op": "<", "than": "a"}}))
    assert claim.verdict == CONTRADICTED


def test_the_sweeps_alpha_is_used():
    values = {"a": [0.0, 2.0], "b": [5.0, 7.0], "c": [1.0, 3.0]}
    expected = {"b": {"op": ">", "than": "a", "alpha": 0.1},
                "c": {"op": "<", "than": "a", "alpha": 0.1}}
    claims = {c.arm: c for c in check_claims(trials_frame(values, expected))}
    assert claims["b"].verdict == AGREED and claims["b"].alpha == 0.1  # 0.072 < 0.1


def test_a_claim_of_an_arm_without_finished_trials_needs_seeds():
    frame = trials_frame({"a": [70.0, 70.2], "b": [72.0, 72.4]},
                         {"b": {"op": ">", "than": "a"}})
    frame.loc[frame["arm"] == "b", "state"] = "failed"
    (claim,) = check_claims(frame)
    assert (claim.arm, claim.verdict, claim.diff, claim.n_arm) == ("b", NEEDS_SEEDS, None, 0)


def test_an_infinite_final_value_is_left_out_as_a_nan_is():
    # an evaluation can overflow (val/loss inf) in a trial whose training loss stayed finite
    values = {"a": [0.0, 1.0, 2.0, 1.0], "b": [5.0, 6.0, 7.0, 8.0],
              "c": [float("inf"), 1.0, 2.0, float("nan")]}
    expected = {"b": {"op": ">", "than": "a"}, "c": {"op": "<", "than": "a"}}
    claims = {c.arm: c for c in check_claims(trials_frame(values, expected))}
    assert claims["c"].n_arm == 2 and claims["c"].diff == pytest.approx(0.5)
    # b > a (p 0.00038 alone) stays agreed beside it, Holm-adjusted over the two claims
    assert claims["b"].verdict == AGREED
    assert claims["b"].p == pytest.approx(2 * 0.00037963, rel=1e-3)


def test_arm_summary_counts_only_finished_trials_and_follows_the_plan_order():
    frame = trials_frame({"a": [70.0, 72.0], "b": [60.0], "c": [61.0]}, {})
    frame.loc[1, "state"] = "failed"
    summary = arm_summary(frame).set_index("arm")
    assert summary.loc["a", "n"] == 1 and summary.loc["a", "mean"] == 70.0
    assert list(summary.index) == ["a", "b", "c"]  # baseline first
    assert list(arm_summary(frame, order=["c", "a", "b"])["arm"]) == ["c", "a", "b"]


def test_a_p_value_is_never_rounded_across_alpha():
    def cell(p: float, verdict: str) -> str:
        claim = Claim(sweep="s", arm="b", metric="val/top1", op=">", than="a", margin=None,
                      alpha=0.05, n_arm=3, n_than=3, diff=1.0, ci_low=0.1, ci_high=1.9, p=p,
                      test="Welch t, one-sided (>)", verdict=verdict)
        header, (row,) = claim_table([claim])
        return row[header.index("p (Holm)")]

    assert cell(0.0496, AGREED) == "0.0496"  # not 0.050 beside "agreed" at alpha 0.05
    assert cell(0.0504, UNDECIDED) == "0.050" and cell(0.1394, UNDECIDED) == "0.139"


def test_markdown_cells_read_back_as_the_text_they_hold():
    # a renderer (markdown-it, GitHub's flavour of tables and strikethrough) shows each cell as
    # written: an error message's <class 'int'> is not swallowed as an HTML tag, *x* and _x_
    # are not emphasis, [a](b) is not a link, a | does not split the cell
    from html import unescape

    from markdown_it import MarkdownIt

    cells = ["TypeError: expected <class 'int'>, got <b>", "*x* and _y_ in dwnet_nano",
             "see [a](b) or `c` \\ ~d~", "a | b", "+0.60 [-0.70, +1.90]", "< 0.001"]
    html = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(
        to_markdown(["reason"], [[c] for c in cells]))
    shown = [unescape(td) for td in re.findall(r"<td>(.*?)</td>", html)]
    assert shown == cells
    assert to_markdown(["arm"], [["dwnet_nano"]]).endswith("| dwnet_nano |\n")  # left as it is


def test_tex_escape_handles_the_special_characters():
    assert tex_escape("a_b 50% & #1 {x} > y") == r"a\_b 50\% \& \#1 \{x\} $>$ y"


def test_report_needs_collected_tables(group_sweep):
    from ablate.errors import RecordError

    with pytest.raises(RecordError, match="ablate collect"):
        write_report(group_sweep)
    collect_results(group_sweep)
    trials, _ = load_tables(group_sweep)
    assert len(arm_summary(trials)) == 6


def test_about_equal_without_margin_is_one_line_and_status_2(tmp_path, capsys):
    sweep = tmp_path / "s.yaml"
    sweep.write_text("description: d\nbase: {model: {arch: dwnet_nano}}\n"
                     "arms: {se: {model.se: true}}\nexpected: {se: {val/top1: '~ baseline'}}\n")
    assert main(["plan", str(sweep), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expected.se.val/top1" in err[0] and "± 0.5" in err[0]
    assert not (tmp_path / "r").exists()


# --- the golden report ---------------------------------------------------------------------

SWEEP_YAML = """\
description: a made-up ablation of the weight source (for the golden report)
base:
  model: {arch: dwnet_nano, weight_source: static}
  data: {name: digits, img_size: 32}
  train: {epochs: 3, batch_size: 64, warmup_epochs: 1}
baseline: static
arms:
  attention: {model.arch: sliding_attn_nano, model.weight_source: dot_product}
  linear: {model.arch: idynamic_dwnet_nano, model.weight_source: center_linear}
  pooled: {model.arch: dynamic_dwnet_nano, model.weight_source: pooled_linear}
seeds: [0, 1, 2]
expected:
  static: {val/top1: 80.0}
  linear: {val/top1: "> attention"}
  pooled: {val/top1: "~ static ± 1.0"}
  attention: {val/top1: "> static"}
"""
TOP1 = {"static": [80.0, 80.6, 79.4], "attention": [80.4, 80.8, 79.4],
        "linear": [84.0, 84.3, 83.7], "pooled": [80.1, 80.3, 79.9]}


def make_demo(root: Path, monkeypatch) -> Path:
    """The fixed folder: 4 arms x 3 seeds, one attention seed failed, one pooled diverged."""
    from ablate.plan import load_plan

    sweep_file = root / "demo.yaml"
    sweep_file.write_text(SWEEP_YAML)
    sweep, trials = load_plan(sweep_file)
    results = root / "demo"
    clock = iter(range(1_780_000_000, 1_780_100_000, 60))
    monkeypatch.setattr(record, "time", types.SimpleNamespace(time=lambda: next(clock)))
    for t in trials:
        top1 = TOP1[t.arm][t.config.seed]
        state = "failed" if (t.arm, t.config.seed) == ("attention", 2) else \
            "diverged" if (t.arm, t.config.seed) == ("pooled", 2) else "done"
        factory_write(results, t, top1, state)
    bookkeeping.write_manifest(results, name=sweep.name, source=str(sweep_file), trials=trials,
                               max_concurrent=None, description=sweep.description)
    return results


def factory_write(results: Path, trial, top1: float, state: str) -> None:
    import results_factory as factory

    with factory.fast_writes():
        tdir = factory.write_record(results, trial, top1=top1, state=state,
                                    params=10_000 + 100 * len(trial.arm),
                                    flops=2_000_000 + 10_000 * len(trial.arm))
    if state == "diverged":
        result = record.read_result(tdir)
        record.write_result(tdir, {**result, "diverged": "loss is nan at epoch 2"})


def test_report_matches_golden(tmp_path, monkeypatch):
    results = make_demo(tmp_path, monkeypatch)
    collect_results(results)
    (results / "figures").mkdir()
    (results / "figures" / "weight_source.png").write_bytes(b"")  # linked, not drawn here
    paths = write_report(results)
    names = sorted(p.name for p in paths)
    assert names == ["claims.csv", "demo-arms.tex", "demo-claims.tex", "demo-setting.tex",
                     "results.md"]
    if os.environ.get("ABLATE_UPDATE_GOLDEN"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for p in paths:
            (GOLDEN / p.name).write_text(p.read_text())
    for p in paths:
        assert p.read_text() == (GOLDEN / p.name).read_text(), f"{p.name} differs from golden"


def test_report_content_follows_the_data(tmp_path, monkeypatch):
    """What the golden files must say, stated apart so that a regeneration cannot hide it."""
    results = make_demo(tmp_path, monkeypatch)
    collect_results(results)
    write_report(results)
    md = (results / "tables" / "results.md").read_text()
    assert md.startswith("# demo\n\na made-up ablation of the weight source")
    assert md.index("| static |") < md.index("| attention |") < md.index("| linear |")
    assert "| data set | digits |" in md and "| seeds | 0, 1, 2 (3 per arm) |" in md
    assert "2026-05-28" in md  # the fixed clock's dates
    assert "loss is nan at epoch 2" in md and "RuntimeError: boom" in md
    assert "[weight source](../figures/weight_source.png)" not in md  # none drawn here
    rows = list(csv.DictReader(io.StringIO((results / "tables" / "claims.csv").read_text())))
    assert tuple(rows[0]) == CLAIM_COLUMNS
    verdicts = {r["arm"]: r for r in rows}
    assert verdicts["linear"]["verdict"] == AGREED  # +3.6 over attention (2 seeds)
    assert verdicts["attention"]["verdict"] == UNDECIDED and int(
        verdicts["attention"]["seeds_needed"]) > 3
    assert verdicts["pooled"]["margin"] == "1" and verdicts["pooled"]["n_arm"] == "2"


def test_plan_with_results_shows_the_seeds_an_undecided_claim_needs(tmp_path, capsys,
                                                                     monkeypatch):
    results = make_demo(tmp_path, monkeypatch)
    sweep = str(tmp_path / "demo.yaml")
    assert main(["plan", sweep, "--results", str(results), "--no-stats"]) == 0
    out = capsys.readouterr().out
    assert not (results / "trials.parquet").exists()  # plan reads records, writes nothing
    want = {c.arm: c for c in check_claims(_collected(results))}
    line = next(x for x in out.splitlines() if x.startswith("  attention > static"))
    assert f"{want['attention'].seeds_needed} seeds per arm would decide it" in line
    assert "  linear > attention (val/top1, n 3 vs 2): agreed" in out
    assert main(["plan", sweep, "--results", str(results), "--no-stats", "--json"]) == 0
    claims = json.loads(capsys.readouterr().out)["claims"]
    assert [c["verdict"] for c in claims] == [want[c["arm"]].verdict for c in claims]


def _collected(results: Path) -> pd.DataFrame:
    collect_results(results)
    return load_tables(results)[0]


def test_an_arm_whose_seeds_ran_two_configurations_is_said_to_pool_them(tmp_path, monkeypatch,
                                                                         capsys):
    """A run with --set into the sweep's own folder (train.epochs 7 for one seed of static):
    the arm's mean and claims pooled the two recipes in silence."""
    import dataclasses

    from ablate.plan import load_plan

    results = make_demo(tmp_path, monkeypatch)
    _, trials = load_plan(tmp_path / "demo.yaml")
    static0 = next(t for t in trials if (t.arm, t.config.seed) == ("static", 0))
    longer = dataclasses.replace(static0, config=dataclasses.replace(
        static0.config, seed=5, train=dataclasses.replace(static0.config.train, epochs=7)))
    factory_write(results, longer, 81.0, "done")
    assert main(["report", str(results)]) == 0
    err = capsys.readouterr().err
    default = static0.config.train.epochs
    warned = [line for line in err.splitlines() if "pools finished trials" in line]
    assert len(warned) == 1 and "arm 'static' of sweep demo" in warned[0]
    assert f"train.epochs {default} (x3), 7 (x1)" in warned[0]
    assert "pools finished trials" in (results / "tables" / "results.md").read_text()
    shutil_rmtree = __import__("shutil").rmtree
    shutil_rmtree(record.trial_dir(results, longer.id))  # the one not meant, reset
    assert main(["report", str(results)]) == 0
    assert "pools" not in capsys.readouterr().err
    assert "pools" not in (results / "tables" / "results.md").read_text()


def test_an_infinite_final_value_is_not_a_seed_of_the_arm_summary():
    """An overflowed evaluation: the figures dropped its point but the legend and the arms
    table still counted it in n, and the mean was inf."""
    summary = arm_summary(trials_frame({"a": [1.0, 3.0, float("inf")]}, {}))
    assert summary.loc[0, "n"] == 2 and summary.loc[0, "mean"] == pytest.approx(2.0)


def test_a_claim_between_arms_without_spread_detects_nothing_until_the_seeds_suffice(
        tmp_path, capsys, monkeypatch):
    # every seed of static and of attention gave the same top-1: the permutation test needs
    # C(n_a + n_b, n_a) > 20 at alpha 0.05, and 2 vs 3 seeds give only 10 splits
    monkeypatch.setitem(TOP1, "static", [80.0, 80.0, 80.0])
    monkeypatch.setitem(TOP1, "attention", [80.5, 80.5, 80.5])  # seed 2 failed: n 2
    results = make_demo(tmp_path, monkeypatch)
    claims = {c.arm: c for c in check_claims(_collected(results))}
    flat = claims["attention"]
    assert flat.verdict == UNDECIDED and flat.test.startswith("no spread in either arm")
    assert flat.detectable == float("inf") and flat.seeds_needed == 4
    header, rows = claim_table([flat])
    assert rows[0][header.index("smallest detectable")] == "none yet"
    sweep = str(tmp_path / "demo.yaml")
    assert main(["plan", sweep, "--results", str(results), "--no-stats"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines()
                if x.startswith("  attention > static"))
    assert line.endswith("4 seeds per arm would decide it, the current ones detect no difference")
    assert main(["plan", sweep, "--results", str(results), "--no-stats", "--json"]) == 0
    out = capsys.readouterr().out
    assert "Infinity" not in out  # strict JSON
    by_arm = {c["arm"]: c for c in json.loads(out)["claims"]}
    assert by_arm["attention"]["detectable"] is None
