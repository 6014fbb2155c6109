"""Paper-style tables from trials.parquet: per arm mean ± std over seeds, the paper beside ours.

``write_report(results/<sweep>)`` writes ``tables/results.md`` (every table, per sweep) and
``tables/<sweep>-arms.tex`` / ``tables/<sweep>-claims.tex`` (booktabs tabulars to ``\\input``).

Only trials in state ``done`` count; a metric ``split/name`` is read from the trial's final epoch
(column ``final/split/name``). A sweep declares the paper's results per trial label in
``Trial.expected`` (see ablate/spec.py): ``{"val/top1": 81.8}`` puts 81.8 beside our mean with
the difference (ours - paper), and ``{"val/top1": {"op": ">", "than": "LABEL"}}`` claims a
direction between two arms.

The rule for a claimed direction, with d = mean(arm) - mean(LABEL) and
spread = sem(arm) + sem(LABEL) (sem: standard deviation over seeds / sqrt(n)):
- ``>``: agreed when d > spread, contradicted when d < -spread, otherwise not decided;
- ``<``: the mirror image;
- ``~`` (about equal): contradicted when |d| > spread, otherwise agreed;
- not decided whenever either arm has fewer than two finished seeds (no spread to judge by).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ablate import record

METRIC = "val/top1"
AGREED, CONTRADICTED, UNDECIDED = "agreed", "contradicted", "not decided"
_OPS = {">": "higher than", "<": "lower than", "~": "about equal to"}


@dataclass(frozen=True)
class Claim:
    """One claimed direction between two arms, and what our trials say about it."""

    sweep: str
    arm: str
    metric: str
    op: str  # ">", "<" or "~"
    than: str
    diff: float | None  # mean(arm) - mean(than); None when an arm has no finished trial
    spread: float | None  # sem(arm) + sem(than)
    verdict: str  # AGREED | CONTRADICTED | UNDECIDED


def natural_key(text: str) -> list:
    """Sort key putting 'group_size=2' before 'group_size=16'."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", str(text))]


def arm_summary(trials: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """One row per (sweep, arm) of finished trials: n, mean, std, sem of ``final/<metric>``.

    Also the mean best value, params and FLOPs, the role, and the arm's first ``expected``.
    Rows are sorted: baseline first, then arms in natural order of their labels.
    """
    done = trials[trials["state"] == "done"]
    col = f"final/{metric}"
    values = pd.to_numeric(done[col], errors="coerce") if col in done else pd.Series(
        float("nan"), index=done.index)
    best = f"best/{metric}"
    frame = pd.DataFrame({
        "sweep": done["sweep"], "arm": done["arm"], "value": values.astype(float),
        "best": done[best].astype(float) if best in done else float("nan"),
        "params": done["params"].astype(float), "flops": done["flops"].astype(float),
        "baseline": done["role"] == "baseline", "expected": done["expected"]})
    g = frame.groupby(["sweep", "arm"], sort=False)
    out = g.agg(n=("value", "count"), mean=("value", "mean"), std=("value", "std"),
                best=("best", "mean"), params=("params", "median"), flops=("flops", "median"),
                baseline=("baseline", "any"), expected=("expected", "first")).reset_index()
    out["sem"] = out["std"] / out["n"].pow(0.5)
    order = sorted(range(len(out)), key=lambda i: (out["sweep"][i], not out["baseline"][i],
                                                   natural_key(out["arm"][i])))
    return out.iloc[order].reset_index(drop=True)


def _expected(raw) -> dict:
    return json.loads(raw) if isinstance(raw, str) and raw else {}


def paper_numbers(summary: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """(sweep, arm, metric, paper, ours, diff) for every number the sweep declared."""
    rows = []
    for r in summary.itertuples():
        for metric, value in _expected(r.expected).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                ours = r.mean if metric == METRIC else _mean_of(trials, r.sweep, r.arm, metric)
                diff = ours - value if ours is not None and not math.isnan(ours) else None
                rows.append({"sweep": r.sweep, "arm": r.arm, "metric": metric,
                             "paper": float(value), "ours": ours, "diff": diff})
    return pd.DataFrame(rows, columns=["sweep", "arm", "metric", "paper", "ours", "diff"])


def _mean_of(trials: pd.DataFrame, sweep: str, arm: str, metric: str) -> float | None:
    col = f"final/{metric}"
    if col not in trials:
        return None
    sel = (trials["sweep"] == sweep) & (trials["arm"] == arm) & (trials["state"] == "done")
    return float(trials.loc[sel, col].astype(float).mean())


def judge(op: str, diff: float, spread: float) -> str:
    """The verdict on a claim ``arm OP than`` given the difference of means and the spread."""
    if op == "~":
        return CONTRADICTED if abs(diff) > spread else AGREED
    sign = 1 if op == ">" else -1
    if sign * diff > spread:
        return AGREED
    return CONTRADICTED if sign * diff < -spread else UNDECIDED


def check_claims(trials: pd.DataFrame) -> list[Claim]:
    """Every claimed direction the sweep declared, judged by the rule in the module docstring.

    Claims of arms without finished trials are listed too, as not decided.
    """
    summaries: dict[str, dict] = {}

    def stats(metric: str, sweep: str, arm: str):
        if metric not in summaries:
            summaries[metric] = {(r.sweep, r.arm): r
                                 for r in arm_summary(trials, metric).itertuples()}
        return summaries[metric].get((sweep, arm))

    declared = trials.dropna(subset=["expected"]).drop_duplicates(["sweep", "arm"])
    declared = declared.iloc[sorted(range(len(declared)), key=lambda i: (
        declared["sweep"].iloc[i], natural_key(declared["arm"].iloc[i])))]
    claims = []
    for r in declared.itertuples():
        for metric, value in _expected(r.expected).items():
            if isinstance(value, dict):
                a, b = stats(metric, r.sweep, r.arm), stats(metric, r.sweep, value["than"])
                claims.append(_claim(r.sweep, r.arm, metric, value, a, b))
    return claims


def _claim(sweep: str, arm: str, metric: str, value: dict, a, b) -> Claim:
    diff = spread = None
    verdict = UNDECIDED
    if a is not None and b is not None and a.n and b.n:
        diff = float(a.mean - b.mean)
        if a.n >= 2 and b.n >= 2:
            spread = float(a.sem + b.sem)
            verdict = judge(value["op"], diff, spread)
    return Claim(sweep, arm, metric, value["op"], value["than"], diff, spread, verdict)


def _num(x, fmt: str = "{:.2f}", signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return (("+" if x >= 0 else "") if signed else "") + fmt.format(x)


def _count(x) -> str:
    """1234567 -> '1.23M', 4.5e9 -> '4.50G' (multiply-adds for FLOPs, as the paper counts)."""
    if x is None or math.isnan(x):
        return "–"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"


def arm_table(summary: pd.DataFrame, papers: pd.DataFrame):
    """(header, rows) of display strings for one sweep's arms."""
    paper = {r.arm: r for r in papers[papers["metric"] == METRIC].itertuples()}
    header = ["arm", "n", "top-1 (%)", "best top-1 (%)", "params", "FLOPs", "paper top-1 (%)",
              "ours - paper"]
    rows = []
    for r in summary.itertuples():
        p = paper.get(r.arm)
        tag = " (baseline)" if r.baseline and r.arm != "baseline" else ""
        rows.append([r.arm + tag, str(r.n),
                     f"{_num(r.mean)} ± {_num(r.std)}" if r.n > 1 else _num(r.mean),
                     _num(r.best), _count(r.params), _count(r.flops),
                     _num(p.paper) if p else "", _num(p.diff, signed=True) if p else ""])
    if not paper:  # the sweep declared no numbers: no empty columns
        header, rows = header[:-2], [r[:-2] for r in rows]
    return header, rows


def claim_table(claims: list[Claim]):
    """(header, rows) of display strings for claimed directions."""
    header = ["claim", "metric", "ours: difference of means", "spread (sum of s.e.)", "verdict"]
    rows = [[f"{c.arm} {_OPS[c.op]} {c.than}", c.metric, _num(c.diff, signed=True),
             _num(c.spread), c.verdict] for c in claims]
    return header, rows


def to_markdown(header: list[str], rows: list[list[str]]) -> str:
    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    aligns = ["---"] + ["--:" if h not in ("claim", "metric", "verdict") else "---"
                        for h in header[1:]]
    return "\n".join([line(header), "| " + " | ".join(aligns) + " |", *map(line, rows)]) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)


def to_latex(header: list[str], rows: list[list[str]]) -> str:
    """A booktabs tabular; cells are escaped except the ± sign, which becomes $\\pm$."""
    def line(cells):
        return " & ".join(tex_escape(c).replace("±", r"$\pm$") for c in cells) + r" \\"

    spec = "l" + "r" * (len(header) - 1)
    return "\n".join([rf"\begin{{tabular}}{{{spec}}}", r"\toprule", line(header), r"\midrule",
                      *map(line, rows), r"\bottomrule", r"\end{tabular}"]) + "\n"


def write_report(results_dir: str | Path) -> list[Path]:
    """Write the Markdown and LaTeX tables of a collected results folder; return their paths.

    Needs trials.parquet (run collect_results first); raises RecordError when it is missing.
    """
    from ablate.collect import load_tables

    results_dir = Path(results_dir)
    trials, _ = load_tables(results_dir)
    out = results_dir / "tables"
    out.mkdir(parents=True, exist_ok=True)
    summary, claims = arm_summary(trials), check_claims(trials)
    papers = paper_numbers(summary, trials)
    md = [f"# Results: {results_dir.name}\n",
          "Mean ± standard deviation over seeds of the final-epoch metric; n finished seeds. "
          "A claimed direction is decided only when the difference of means exceeds the sum of "
          "the two arms' standard errors.\n"]
    written = []
    for sweep in sorted(trials["sweep"].unique()):
        md.append(f"## {sweep}\n")
        mine = [c for c in claims if c.sweep == sweep]
        if (summary["sweep"] == sweep).any():
            arms = arm_table(summary[summary["sweep"] == sweep], papers[papers["sweep"] == sweep])
            md.append(to_markdown(*arms))
            written.append(_write(out / f"{sweep}-arms.tex", to_latex(*arms)))
        else:
            md.append("No finished trial yet.\n")
        if mine:
            md += ["### Claimed directions\n", to_markdown(*claim_table(mine))]
            written.append(_write(out / f"{sweep}-claims.tex", to_latex(*claim_table(mine))))
    return [_write(out / "results.md", "\n".join(md))] + written


def _write(path: Path, text: str) -> Path:
    with record.atomic_file(path) as f:
        f.write(text)
    return path
