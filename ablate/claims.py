"""The claims a sweep declares, decided from the per-seed results of a sweep's trials.

A claim is a trial label's ``expected`` entry ``{metric: {"op": ">", "than": LABEL}}`` (op
``>``, ``<``, or ``~`` with ``"margin"``; ``"alpha"`` when the sweep set one), as the planner
writes it into each Trial (ablate/spec.py). ``check_claims`` decides them from a trials table
(trials.parquet's columns), ``plan_claims`` from the records of a planned sweep; how a claim is
tested, corrected for multiplicity (Holm, over the claims of one sweep) and given a number of
seeds is ablate.stats' docstring.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ablate import stats

METRIC = "val/top1"
AGREED, CONTRADICTED, UNDECIDED = stats.AGREED, stats.CONTRADICTED, stats.UNDECIDED
NEEDS_SEEDS = f"needs at least {stats.MIN_SEEDS} seeds per arm"
NEEDS_MARGIN = "needs a margin (~ LABEL ± M)"
CLAIM_COLUMNS = ("sweep", "arm", "op", "than", "margin", "metric", "n_arm", "n_than", "diff",
                 "ci_low", "ci_high", "p", "test", "verdict", "seeds_needed", "detectable",
                 "alpha")


@dataclass(frozen=True)
class Claim:
    """One claim between two arms, and what our trials say about it.

    ``p`` is Holm-adjusted over the sweep's k tested claims; ``seeds_needed`` (per arm, power
    0.8 at alpha / k, never fewer than one more than either arm has) and ``detectable``
    (smallest true difference, for ``~`` the margin, decided with power 0.8 at alpha / k by the
    current seeds) are given for undecided claims only; ``seeds_needed`` is None when even
    stats.MAX_SEEDS would not do.
    """

    sweep: str
    arm: str
    metric: str
    op: str  # ">", "<" or "~"
    than: str
    margin: float | None
    alpha: float
    n_arm: int
    n_than: int
    diff: float | None  # mean(arm) - mean(than); None when an arm has no finished trial
    ci_low: float | None
    ci_high: float | None
    p: float | None
    test: str
    verdict: str
    seeds_needed: int | None = None
    detectable: float | None = None


def natural_key(text: str) -> list:
    """Sort key putting 'group_size=2' before 'group_size=16'."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", str(text))]


def seed_values(trials: pd.DataFrame, metric: str = METRIC) -> dict[tuple[str, str], list]:
    """(sweep, arm) -> the final ``metric`` of each finished seed (NaN and infinite values left
    out: no test can use them)."""
    col = f"final/{metric}"
    done = trials[trials["state"] == "done"]
    if col not in done:
        return {}
    frame = done[["sweep", "arm"]].assign(value=pd.to_numeric(done[col], errors="coerce"))
    frame = frame[np.isfinite(frame["value"].astype(float))]
    return {key: part["value"].astype(float).tolist()
            for key, part in frame.groupby(["sweep", "arm"], sort=False)}


def pooled_configurations(trials: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(sweep, arm) -> what differs between the configurations its finished trials ran, as
    'train.epochs 6 (x3), 8 (x1)' (most trials first), for each arm whose seeds did not all
    run one configuration but their seed (a run with --set into the sweep's results folder, a default changed
    between runs). Their mean, claims and figures pool those configurations."""
    done = trials[trials["state"].isin(["done", "diverged"])]
    keys = [k for k in _config_keys() if k in done]
    out = {}
    for (sweep, arm), part in done.groupby(["sweep", "arm"], sort=False):
        differ = []
        for k in keys:
            counts: dict[str, int] = {}
            for v in part[k].tolist():
                shown = "null" if v is None or (isinstance(v, float) and math.isnan(v)) \
                    else str(v)
                counts[shown] = counts.get(shown, 0) + 1
            if len(counts) > 1:
                common = sorted(counts.items(), key=lambda vn: (-vn[1], natural_key(vn[0])))
                differ.append(f"{k} " + ", ".join(f"{v} (x{n})" for v, n in common))
        if differ:
            out[(sweep, arm)] = "; ".join(differ)
    return out


def _config_keys() -> list[str]:
    """The trials table's columns that make a trial's configuration, but its seed."""
    from ablate.config import TrialConfig

    return [*TrialConfig.result_keys(), "resources.workers"]


def _expected(raw) -> dict:
    return json.loads(raw) if isinstance(raw, str) and raw else {}


def check_claims(trials: pd.DataFrame) -> list[Claim]:
    """Every claim the sweep declared, tested and decided as ablate.stats describes.

    Holm's correction runs over the claims of one sweep that could be tested. Claims of arms
    with fewer than two finished seeds get the verdict NEEDS_SEEDS.
    """
    values: dict[str, dict] = {}
    declared = trials.dropna(subset=["expected"]).drop_duplicates(["sweep", "arm"])
    declared = declared.iloc[sorted(range(len(declared)), key=lambda i: (
        declared["sweep"].iloc[i], natural_key(declared["arm"].iloc[i])))]
    pending = []  # (sweep, arm, metric, claim dict, samples a, samples b)
    for r in declared.itertuples():
        for metric, value in _expected(r.expected).items():
            if isinstance(value, dict):
                if metric not in values:
                    values[metric] = seed_values(trials, metric)
                pending.append((r.sweep, r.arm, metric, value,
                                values[metric].get((r.sweep, r.arm), []),
                                values[metric].get((r.sweep, value["than"]), [])))
    claims = []
    for sweep in dict.fromkeys(p[0] for p in pending):
        claims += _decide_sweep([p for p in pending if p[0] == sweep])
    return claims


def _decide_sweep(pending: list) -> list[Claim]:
    """The claims of one sweep, tested, then decided together (Holm)."""
    tests = {}
    for i, (_, _, _, value, a, b) in enumerate(pending):
        margin = value.get("margin")
        if min(len(a), len(b)) >= stats.MIN_SEEDS and (value["op"] != "~" or margin):
            tests[i] = stats.claim_test(value["op"], a, b, margin)
    alpha = next((p[3].get("alpha") for p in pending if "alpha" in p[3]), stats.ALPHA)
    verdicts = dict(zip(tests, stats.decide(list(tests.values()), alpha)))
    out = []
    for i, (sweep, arm, metric, value, a, b) in enumerate(pending):
        op, margin = value["op"], value.get("margin")
        head = dict(sweep=sweep, arm=arm, metric=metric, op=op, than=value["than"],
                    margin=margin, alpha=alpha, n_arm=len(a), n_than=len(b))
        if i not in tests:
            diff = sum(a) / len(a) - sum(b) / len(b) if a and b else None
            verdict = NEEDS_MARGIN if op == "~" and not margin else NEEDS_SEEDS
            out.append(Claim(**head, diff=diff, ci_low=None, ci_high=None, p=None, test="",
                             verdict=verdict,
                             seeds_needed=stats.MIN_SEEDS if verdict == NEEDS_SEEDS else None))
            continue
        t, (verdict, p) = tests[i], verdicts[i]
        needed = found = None
        if verdict == UNDECIDED:  # planned at alpha / k: the level Holm holds the first claim to
            sa, sb, level = _sd(a), _sd(b), alpha / len(tests)
            needed = stats.seeds_needed(op, t.diff, sa, sb, margin, level)
            needed = None if needed is None else max(needed, len(a) + 1, len(b) + 1)
            found = stats.detectable(op, sa, sb, len(a), len(b), level)
        out.append(Claim(**head, diff=t.diff, ci_low=t.ci_low, ci_high=t.ci_high, p=p,
                         test=t.test, verdict=verdict, seeds_needed=needed, detectable=found))
    return out


def plan_claims(trials: list, results_dir: str | Path) -> list[Claim]:
    """The claims of a planned sweep (its current ``expected``), decided from the records of
    its finished trials under ``results_dir``; reads records only, writes nothing.

    A trial whose record cannot be read counts as not finished (``ablate status`` names it).
    """
    from ablate import record
    from ablate.errors import RecordError
    from ablate.rows import read_trial_row

    rows = []
    for t in trials:
        tdir = record.trial_folder(results_dir, t)
        row = {"id": t.id, "state": record.NEW}
        try:
            if record.read_state(tdir) == record.DONE:
                row = read_trial_row(tdir)
        except RecordError:
            pass
        rows.append({**row, "sweep": t.sweep, "arm": t.arm, "role": t.role,
                     "expected": json.dumps(t.expected, sort_keys=True) if t.expected else None})
    return check_claims(pd.DataFrame(rows)) if rows else []


def _sd(x: list[float]) -> float:
    return math.sqrt(stats.variance(np.asarray(x, dtype=float)))


def claims_csv(claims: list[Claim]) -> str:
    """tables/claims.csv: one row per claim, columns CLAIM_COLUMNS; numbers to 6 digits.

    ``p`` is Holm-adjusted (decided when below ``alpha``); ``seeds_needed`` is per arm, empty
    for decided claims and "more than 1000" beyond stats.MAX_SEEDS; ``detectable`` is the
    smallest true difference (for ``~``: margin) the current seeds decide with power 0.8.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CLAIM_COLUMNS)
    for c in claims:
        row = {k: getattr(c, k) for k in CLAIM_COLUMNS}
        if c.verdict == UNDECIDED and c.seeds_needed is None:
            row["seeds_needed"] = f"more than {stats.MAX_SEEDS}"
        writer.writerow(["" if v is None else f"{v:.6g}" if isinstance(v, float) else v
                         for v in row.values()])
    return buf.getvalue()
