import pandas as pd
import pytest

from ablate.collect import collect_results, load_tables
from ablate.report import (
    AGREED,
    CONTRADICTED,
    UNDECIDED,
    arm_summary,
    check_claims,
    judge,
    tex_escape,
    write_report,
)


@pytest.mark.parametrize("op, diff, spread, verdict", [
    (">", 1.0, 0.5, AGREED), (">", -1.0, 0.5, CONTRADICTED), (">", 0.3, 0.5, UNDECIDED),
    ("<", -1.0, 0.5, AGREED), ("<", 1.0, 0.5, CONTRADICTED), ("<", -0.5, 0.5, UNDECIDED),
    ("~", 0.4, 0.5, AGREED), ("~", -0.6, 0.5, CONTRADICTED),
])
def test_judge_applies_the_documented_rule(op, diff, spread, verdict):
    assert judge(op, diff, spread) == verdict


def trials_frame(values: dict[str, list[float]], expected: dict[str, str]) -> pd.DataFrame:
    """A trials table as collect writes it, for the columns the report reads."""
    rows = []
    for arm, tops in values.items():
        for seed, top1 in enumerate(tops):
            rows.append({"id": f"{arm}-{seed}", "sweep": "s", "arm": arm, "state": "done",
                         "role": "baseline" if arm == "a" else "arm", "final/val/top1": top1,
                         "best/val/top1": top1, "params": 100, "flops": 1000,
                         "expected": expected.get(arm)})
    return pd.DataFrame(rows)


def test_claims_are_agreed_contradicted_or_undecided_from_the_seeds():
    values = {"a": [70.0, 70.2, 69.8], "b": [72.0, 72.2, 71.8], "c": [70.1, 70.3, 69.9],
              "d": [75.0]}
    expected = {"b": '{"val/top1": {"op": ">", "than": "a"}}',
                "a": '{"val/top1": {"op": ">", "than": "b"}}',
                "c": '{"val/top1": {"op": "<", "than": "a"}}',
                "d": '{"val/top1": {"op": ">", "than": "a"}}'}
    claims = {c.arm: c for c in check_claims(trials_frame(values, expected))}
    assert claims["b"].verdict == AGREED and claims["b"].diff == pytest.approx(2.0)
    assert claims["a"].verdict == CONTRADICTED
    # c is 0.1 above a, inside the sum of standard errors (2 x 0.2/sqrt(3)): not decided
    assert claims["c"].verdict == UNDECIDED
    assert claims["c"].spread == pytest.approx(2 * 0.2 / 3 ** 0.5)
    assert claims["d"].verdict == UNDECIDED and claims["d"].spread is None  # one seed


def test_a_claim_of_an_arm_without_finished_trials_is_not_decided():
    frame = trials_frame({"a": [70.0, 70.2], "b": [72.0, 72.4]},
                         {"b": '{"val/top1": {"op": ">", "than": "a"}}'})
    frame.loc[frame["arm"] == "b", "state"] = "failed"
    (claim,) = check_claims(frame)
    assert (claim.arm, claim.verdict, claim.diff) == ("b", UNDECIDED, None)


def test_arm_summary_counts_only_finished_trials():
    frame = trials_frame({"a": [70.0, 72.0], "b": [60.0]}, {})
    frame.loc[1, "state"] = "failed"
    summary = arm_summary(frame).set_index("arm")
    assert summary.loc["a", "n"] == 1 and summary.loc["a", "mean"] == 70.0
    assert list(summary.index) == ["a", "b"]  # baseline first


def test_report_puts_the_paper_beside_ours(group_sweep):
    collect_results(group_sweep)
    paths = write_report(group_sweep)
    names = sorted(p.name for p in paths)
    assert names == ["group_size-arms.tex", "results.md"]
    md = (group_sweep / "tables" / "results.md").read_text()
    assert "| baseline | 3 | 70.00 ± 0.20 |" in md
    assert "arch=ablate_swin_nano, group_size=4 | 3 | 74.00 ± 0.20" in md
    tex = (group_sweep / "tables" / "group_size-arms.tex").read_text()
    assert r"70.00 $\pm$ 0.20" in tex and r"group\_size=16" in tex


def test_report_with_declared_numbers_and_directions(tmp_path, factory_module):
    results = tmp_path / "r"
    plan = {"baseline": ([80.0, 80.2, 79.8], {"val/top1": 81.2}),
            "dynamic": ([82.0, 82.2, 81.8], {"val/top1": {"op": ">", "than": "baseline"}})}
    with factory_module.fast_writes():
        for arm, (tops, expected) in plan.items():
            for seed, top1 in enumerate(tops):
                trial = factory_module.make_trial(
                    arm, seed=seed, sweep="dyn", expected=expected, epochs=2,
                    role="baseline" if arm == "baseline" else "arm",
                    arch="dwnet_nano" if arm == "baseline" else "dynamic_dwnet_nano")
                factory_module.write_record(results, trial, top1=top1)
    collect_results(results)
    write_report(results)
    md = (results / "tables" / "results.md").read_text()
    assert "| baseline | 3 | 80.00 ± 0.20 | 80.00 | 1.00M | 50.00M | 81.20 | -1.20 |" in md
    assert "| dynamic higher than baseline | val/top1 | +2.00 | 0.23 | agreed |" in md
    claims_tex = (results / "tables" / "dyn-claims.tex").read_text()
    assert "agreed" in claims_tex and r"\toprule" in claims_tex


def test_tex_escape_handles_the_special_characters():
    assert tex_escape("a_b 50% & #1 {x}") == r"a\_b 50\% \& \#1 \{x\}"


def test_report_needs_collected_tables(group_sweep):
    from ablate.errors import RecordError

    with pytest.raises(RecordError, match="ablate collect"):
        write_report(group_sweep)
    collect_results(group_sweep)
    trials, _ = load_tables(group_sweep)
    assert len(arm_summary(trials)) == 6
