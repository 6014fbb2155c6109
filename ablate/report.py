"""Paper-style tables from trials.parquet: the setting, the arms, the claims and their tests.

``write_report(results/<sweep>)`` writes ``tables/results.md`` (everything, per sweep),
``tables/claims.csv`` (one row per claim, columns CLAIM_COLUMNS) and booktabs tabulars to
``\\input``: ``tables/<sweep>-setting.tex``, ``-arms.tex`` and ``-claims.tex``.

Only trials in state ``done`` count; a metric ``split/name`` is read from the trial's final epoch
(column ``final/split/name``). A sweep declares the paper's results per trial label in
``Trial.expected`` (see ablate/spec.py): ``{"val/top1": 81.8}`` puts 81.8 beside our mean with
the difference (ours - paper), and ``{"val/top1": {"op": ">", "than": "LABEL"}}`` claims a
direction between two arms (``"~"`` with ``"margin"``: about equal). The claims are decided in
ablate.claims, by the tests ablate.stats describes; the setting, failed trials and figure links
come from ablate.setting.

The sweep's description comes from the sweep file that ``sweep.json`` names, when it can still
be read; the arms are listed in the order of ``sweep.json``'s plan (without one: the baseline,
then natural order of the labels).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ablate import files, record, stats

# The claims' names are re-exported: callers (figures, the notebook) import them from here.
from ablate.claims import (  # noqa: F401
    AGREED,
    CLAIM_COLUMNS,
    CONTRADICTED,
    METRIC,
    NEEDS_MARGIN,
    NEEDS_SEEDS,
    UNDECIDED,
    Claim,
    _expected,
    check_claims,
    claims_csv,
    natural_key,
    plan_claims,
    seed_values,
)

_OPS = {">": "higher than", "<": "lower than", "~": "about equal to"}


def arm_summary(trials: pd.DataFrame, metric: str = METRIC,
                order: list[str] | None = None) -> pd.DataFrame:
    """One row per (sweep, arm) of finished trials: n, mean, std, sem of ``final/<metric>``
    (n counts the finite values, as the claims do).

    Also the mean best value, params and FLOPs, the role, and the arm's first ``expected``.
    Rows are sorted by sweep, then in ``order`` (arm labels; the others after it), then baseline
    first and natural order of the labels.
    """
    done = trials[trials["state"] == "done"]
    col = f"final/{metric}"
    values = pd.to_numeric(done[col], errors="coerce") if col in done else pd.Series(
        float("nan"), index=done.index)
    best = f"best/{metric}"
    frame = pd.DataFrame({
        "sweep": done["sweep"], "arm": done["arm"],
        "value": values.astype(float).where(lambda v: v.abs() < float("inf")),
        "best": done[best].astype(float) if best in done else float("nan"),
        "params": done["params"].astype(float), "flops": done["flops"].astype(float),
        "baseline": done["role"] == "baseline", "expected": done["expected"]})
    g = frame.groupby(["sweep", "arm"], sort=False)
    out = g.agg(n=("value", "count"), mean=("value", "mean"), std=("value", "std"),
                best=("best", "mean"), params=("params", "median"), flops=("flops", "median"),
                baseline=("baseline", "any"), expected=("expected", "first")).reset_index()
    out["sem"] = out["std"] / out["n"].pow(0.5)
    rank = {arm: i for i, arm in enumerate(order or [])}
    keys = [(out["sweep"][i], rank.get(out["arm"][i], len(rank)), not out["baseline"][i],
             natural_key(out["arm"][i])) for i in range(len(out))]
    return out.iloc[sorted(range(len(out)), key=keys.__getitem__)].reset_index(drop=True)


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


# --- display -------------------------------------------------------------------------------


def _num(x, fmt: str = "{:.2f}", signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return (("+" if x >= 0 else "") if signed else "") + fmt.format(x)


def _p(p: float | None, alpha: float) -> str:
    """p to 3 decimals, or more where 3 would put it on the other side of ``alpha`` (0.0496
    would show as 0.050 beside "agreed")."""
    if p is None:
        return "–"
    if p < 0.001:
        return "< 0.001"
    digits = 3
    while digits < 12 and (float(f"{p:.{digits}f}") < alpha) != (p < alpha):
        digits += 1
    return f"{p:.{digits}f}"


def _count(x) -> str:
    """1234567 -> '1.23M', 4.5e9 -> '4.50G' (multiply-adds for FLOPs, as the paper counts)."""
    if x is None or math.isnan(x):
        return "–"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"


def varied_columns(trials: pd.DataFrame) -> tuple[list[str], dict[str, dict]]:
    """(axes in first-seen order, arm -> {axis: value}) from the ``varied`` column."""
    axes: dict[str, None] = {}
    by_arm: dict[str, dict] = {}
    for arm, raw in zip(trials["arm"], trials["varied"]):
        varied = json.loads(raw) if isinstance(raw, str) and raw else {}
        by_arm.setdefault(arm, varied)
        axes.update(dict.fromkeys(varied))
    return list(axes), by_arm


def _against_baseline(summary: pd.DataFrame, values: dict) -> dict[str, str]:
    """arm -> 'diff [low, high]' of mean(arm) - mean(baseline), Welch 95% CI."""
    base = summary[summary["baseline"]]
    if base.empty:
        return {}
    b = values.get((base["sweep"].iloc[0], base["arm"].iloc[0]), [])
    out = {}
    for r in summary[~summary["baseline"]].itertuples():
        a = values.get((r.sweep, r.arm), [])
        if not a or not b:
            continue
        diff = sum(a) / len(a) - sum(b) / len(b)
        if min(len(a), len(b)) < stats.MIN_SEEDS:
            out[r.arm] = _num(diff, signed=True)
            continue
        low, high = stats.welch_ci(pd.Series(a).to_numpy(), pd.Series(b).to_numpy())
        out[r.arm] = f"{_num(diff, signed=True)} [{_num(low, signed=True)}, " \
                     f"{_num(high, signed=True)}]"
    return out


def arm_table(summary: pd.DataFrame, papers: pd.DataFrame, trials: pd.DataFrame | None = None):
    """(header, rows) of display strings for one sweep's arms, in ``summary``'s order."""
    paper = {r.arm: r for r in papers[papers["metric"] == METRIC].itertuples()}
    axes, by_arm = varied_columns(trials) if trials is not None else ([], {})
    versus = _against_baseline(summary, seed_values(trials)) if trials is not None else {}
    header = ["arm", *[a.split(".", 1)[-1] for a in axes], "n", "top-1 (%)",
              "vs baseline (95% CI)", "best top-1 (%)", "params", "FLOPs (mult-adds)",
              "paper top-1 (%)", "ours - paper"]
    rows = []
    for r in summary.itertuples():
        p = paper.get(r.arm)
        tag = " (baseline)" if r.baseline and r.arm != "baseline" else ""
        rows.append([r.arm + tag, *[_cell(by_arm.get(r.arm, {}).get(a)) for a in axes],
                     str(r.n), f"{_num(r.mean)} ± {_num(r.std)}" if r.n > 1 else _num(r.mean),
                     "baseline" if r.baseline else versus.get(r.arm, "–"),
                     _num(r.best), _count(r.params), _count(r.flops),
                     _num(p.paper) if p else "", _num(p.diff, signed=True) if p else ""])
    if not paper:  # the sweep declared no numbers: no empty columns
        header, rows = header[:-2], [r[:-2] for r in rows]
    return header, rows


def _cell(v) -> str:
    return "–" if v is None else {True: "true", False: "false"}.get(v, str(v)) \
        if isinstance(v, bool) else str(v)


def claim_table(claims: list[Claim]):
    """(header, rows) of display strings for the claims."""
    header = ["claim", "metric", "n", "difference (95% CI)", "test", "p (Holm)", "verdict",
              "seeds needed per arm", "smallest detectable"]
    rows = []
    for c in claims:
        claim = f"{c.arm} {_OPS[c.op]} {c.than}" + (f" ± {c.margin:g}" if c.margin else "")
        ci = f" [{_num(c.ci_low, signed=True)}, {_num(c.ci_high, signed=True)}]" \
            if c.ci_low is not None else ""
        needed = "" if c.verdict in (AGREED, CONTRADICTED, NEEDS_MARGIN) else \
            str(c.seeds_needed) if c.seeds_needed else f"more than {stats.MAX_SEEDS}"
        if c.verdict == NEEDS_SEEDS:
            needed = f"at least {stats.MIN_SEEDS}"
        rows.append([claim, c.metric, f"{c.n_arm} vs {c.n_than}",
                     _num(c.diff, signed=True) + ci, c.test or "–", _p(c.p, c.alpha), c.verdict,
                     needed, "" if c.detectable is None else
                     "none yet" if math.isinf(c.detectable) else _num(c.detectable)])
    return header, rows


# what Markdown would read as markup in a table cell: an error message's "<class 'int'>" is an
# HTML tag to a renderer, and would vanish. "<" only where it can open a tag, "]" only where it
# closes a link's text, "_" only where it can open or close emphasis (not in dwnet_nano)
_MD_MARKUP = re.compile(r"[\\`*|~]|<(?=[A-Za-z/!?])|\](?=\()|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")


def md_escape(text: str) -> str:
    """``text`` as it should read in a Markdown table cell (markup characters escaped)."""
    return _MD_MARKUP.sub(lambda m: "\\" + m.group(0), text)


def to_markdown(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table of plain-text cells (escaped); columns of numbers are right-aligned,
    the first and text ones left."""
    def line(cells):
        return "| " + " | ".join(map(md_escape, cells)) + " |"

    def numeric(j: int) -> bool:
        cells = [r[j] for r in rows if r[j] not in ("", "–", "baseline")]
        return bool(cells) and all(_NUMBER.match(c) for c in cells)

    aligns = ["---"] + ["--:" if numeric(j) else "---" for j in range(1, len(header))]
    return "\n".join([line(header), "| " + " | ".join(aligns) + " |", *map(line, rows)]) + "\n"


_NUMBER = re.compile(r"^([-+<]|at least |more than )?\s*[0-9]")


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", ">": r"$>$",
        "<": r"$<$"}


def tex_escape(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)


def to_latex(header: list[str], rows: list[list[str]], comment: str = "") -> str:
    """A booktabs tabular; cells are escaped except the ± sign, which becomes $\\pm$.

    ``comment`` lines come first, as LaTeX comments (where the table came from).
    """
    def line(cells):
        return " & ".join(tex_escape(c).replace("±", r"$\pm$") for c in cells) + r" \\"

    spec = "l" + "r" * (len(header) - 1)
    head = [f"% {c}" for c in comment.splitlines()]
    return "\n".join([*head, rf"\begin{{tabular}}{{{spec}}}", r"\toprule", line(header),
                      r"\midrule", *map(line, rows), r"\bottomrule", r"\end{tabular}"]) + "\n"


# --- the report ----------------------------------------------------------------------------

_METHOD = (
    "Each claim is tested on the final-epoch metric of every finished seed. `>` and `<`: "
    "Welch's t-test, one-sided in the claimed direction (agreed when it is significant, "
    "contradicted when the opposite one-sided test is). `~ ± M`: two one-sided Welch tests "
    "(TOST; agreed when the difference is shown to lie within ±M, contradicted when it is "
    "shown to lie above M or below -M, each side at alpha / 2). The tests are unpaired "
    "although arms share seeds: a seed fixes "
    "the data order, but different models draw different weights from it, and an unpaired "
    "test stays valid when seed sets differ. alpha = {alpha:g}; p is Holm-adjusted across "
    "the {k} tested claims of this sweep. The confidence interval of a difference uses "
    "Welch-Satterthwaite degrees of freedom. Where neither arm has any spread, each "
    "one-sided test is the exact permutation test (p = 1 / C(n_a + n_b, n_a)). For an "
    "undecided claim: the seeds per arm that would decide it with 80% power (at the observed "
    "difference and spread; for `~` at a true difference of zero), and the smallest "
    "difference (for `~`: margin) the current seeds decide with 80% power, both at "
    "alpha / {k}, the level Holm holds the first claim to; power is Welch's exact power for "
    "normally distributed seeds.\n")


def write_report(results_dir: str | Path,
                 warn: Callable[[str], None] | None = None) -> list[Path]:
    """Write the Markdown, CSV and LaTeX tables of a collected results folder; return paths.

    Needs trials.parquet (run collect_results first); raises RecordError when it is missing.
    ``warn`` is given each warning the report states (``pooling_warnings``), for a console.
    """
    from ablate.collect import load_tables
    from ablate.setting import sweep_info

    results_dir = Path(results_dir)
    trials, _ = load_tables(results_dir)
    out = results_dir / "tables"
    files.output_dir(out)  # RecordError when a file is in the way
    info = sweep_info(results_dir)
    summary, claims = arm_summary(trials, order=list(info.order)), check_claims(trials)
    papers = paper_numbers(summary, trials)
    md, written = [], []
    for line in pooling_warnings(trials) if warn is not None else []:
        warn(line)
    for sweep in sorted(trials["sweep"].unique()):
        mine = trials[trials["sweep"] == sweep]
        parts, tex = _sweep_section(sweep, mine, summary[summary["sweep"] == sweep],
                                    papers[papers["sweep"] == sweep],
                                    [c for c in claims if c.sweep == sweep], info, results_dir)
        md += parts
        written += [_write(out / name, text) for name, text in tex.items()]
    written.insert(0, _write(out / "claims.csv", claims_csv(claims)))
    return [_write(out / "results.md", "\n".join(md))] + written


def _sweep_section(sweep: str, trials: pd.DataFrame, summary: pd.DataFrame,
                   papers: pd.DataFrame, claims: list[Claim], info, results_dir: Path):
    """(Markdown parts, {tex file name: text}) of one sweep."""
    from ablate.setting import figure_links, setting_rows, unfinished_rows

    description = info.description if info.name == sweep else None
    md = [f"# {sweep}\n", f"{description}\n" if description else "",
          "## Setting\n"]
    setting = (["setting", "value"], setting_rows(trials, results_dir))
    md.append(to_markdown(*setting))
    note = f"{sweep}: {description}" if description else sweep
    tex = {f"{sweep}-setting.tex": to_latex(*setting, comment=note)}
    md.append("## Arms\n")
    md += [f"**Warning:** {line}\n" for line in pooling_warnings(trials)]
    if summary.empty:
        md.append("No finished trial yet.\n")
    else:
        md.append("Final-epoch top-1 accuracy (%) on the validation split, mean ± standard "
                  "deviation over the n finished seeds; the difference from the baseline's mean "
                  "with its 95% confidence interval (Welch); FLOPs count multiply-adds of one "
                  "forward pass.\n")
        arms = arm_table(summary, papers, trials)
        md.append(to_markdown(*arms))
        tex[f"{sweep}-arms.tex"] = to_latex(*arms, comment=note)
    if claims:
        k = sum(c.p is not None for c in claims)
        method = _METHOD.format(alpha=claims[0].alpha, k=k) if k else \
            "No claim can be tested yet: each needs two finished seeds in both of its arms.\n"
        md += ["## Claims\n", method,
               to_markdown(*claim_table(claims))]
        tex[f"{sweep}-claims.tex"] = to_latex(*claim_table(claims), comment=note)
    failed = unfinished_rows(trials, results_dir)
    if failed:
        md += ["## Trials that did not finish\n",
               to_markdown(["trial", "arm", "seed", "state", "reason"], failed)]
    links = figure_links(results_dir)
    md += ["## Figures\n", "\n".join(links) + "\n" if links else
           "None drawn yet: `ablate figures RESULTS_DIR` draws them into figures/.\n"]
    return [m for m in md if m], tex


def pooling_warnings(trials: pd.DataFrame) -> list[str]:
    """A line for each arm whose finished seeds ran more than one configuration."""
    from ablate.claims import pooled_configurations

    return [f"arm '{arm}' of sweep {sweep} pools finished trials of several configurations "
            f"({what}): its mean, claims and figures mix them; 'ablate reset RESULTS_DIR "
            "--trial ID' the ones not meant, or run the other configuration into its own "
            "results folder (--results)"
            for (sweep, arm), what in pooled_configurations(trials).items()]


def _write(path: Path, text: str) -> Path:
    with files.atomic_file(path) as f:
        f.write(text)
    return path
