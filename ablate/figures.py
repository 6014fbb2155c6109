"""The ablation figures, drawn from trials.parquet / epochs.parquet alone.

``make_figures(trials, epochs)`` picks the figures that fit the axes that vary among the finished
trials (not the sweep file): accuracy against channel-sharing group size, bars of dynamic-weight
source by window scheme, spatial versus channel sharing, accuracy against parameters and FLOPs,
learning curves, and a per-arm comparison when only the architecture varies. Each ``plot_*``
function takes DataFrames (as ``ablate.collect.load_tables`` returns them) and returns a
matplotlib Figure, or None when the data do not call for it; the notebook calls the same
functions. Points are means over seeds with error bars of the mean's 95% confidence interval
(Student t over the n seeds), and the legend says so and gives n; learning curves show the mean
with a band of one standard deviation over seeds. Accuracies are drawn as points, not bars, so
the axis need not start at zero. A value of the compared axis keeps one colour in every figure
(shifted windows blue, sliding windows orange, ...); the baseline is black. Labels of the cost
scatter are placed so that they overlap neither each other nor the points; legend entries are
wrapped at LEGEND_WIDTH characters. ``draw_figures`` saves them under ``figures/`` as PNG and PDF
(or SVG), byte-identical from one run to the next (fixed style, sorted categories, no dates).

Figures are built with ``matplotlib.figure.Figure`` (no pyplot), so no backend or global state
is touched; saving goes through Agg.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import EngFormatter, MaxNLocator
from scipy.stats import t as student_t

from ablate import files
from ablate.labels import place_labels
from ablate.report import METRIC, arm_summary, natural_key

LABELS = {
    "model.group_size": "channel-sharing group size", "model.num_groups": "groups per stage",
    "model.weight_source": "dynamic-weight source", "model.window": "window scheme",
    "model.sharing": "weight sharing", "model.arch": "model", "model.kernel_size": "kernel size",
    "model.se": "squeeze-excitation", "val/top1": "top-1 accuracy (%)",
    "val/top5": "top-5 accuracy (%)", "val/loss": "validation loss", "params": "parameters",
    "flops": "FLOPs (multiply-adds)", "epoch": "epoch",
}
VALUE_LABELS = {
    "static": "static", "dot_product": "dot product (attention)",
    "center_linear": "linear, centre feature", "pooled_linear": "linear, pooled feature",
    "shifted": "shifted windows", "sliding": "sliding windows", "spatial": "spatial",
    "channel": "channel", "both": "spatial + channel", "none": "none",
}
# Axes a figure may split its series by, in the order their names appear in a legend.
CATEGORICAL = ("model.arch", "model.weight_source", "model.window", "model.sharing", "model.se",
               "model.kernel_size")
STYLE = {
    "figure.figsize": (8.0, 4.5), "figure.dpi": 100, "savefig.dpi": 150, "font.size": 9,
    "font.family": "DejaVu Sans", "axes.titlesize": 10, "legend.fontsize": 7,
    "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
    "svg.hashsalt": "ablate", "svg.fonttype": "path", "pdf.fonttype": 42,
    "image.cmap": "viridis",
}
METADATA = {"png": {"Software": None}, "pdf": {"Creator": None, "Producer": None,
                                              "CreationDate": None},
            "svg": {"Creator": None, "Date": None}}
LEGEND_WIDTH = 40  # characters of a legend entry's line
MAX_CURVES = 12  # learning curves beyond this many arms are unreadable: baseline + the best
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f")
# Values that keep their colour in every figure; other values take the palette in order.
VALUE_COLORS = {"shifted": PALETTE[0], "sliding": PALETTE[1]}
MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def label(key: str) -> str:
    """Human name of a dotted column or metric key."""
    return LABELS.get(key, key)


def value_label(value) -> str:
    return VALUE_LABELS.get(value, str(value))


def category_key(value) -> tuple:
    """Sort key: the paper's order for known values (static before dynamic...), then natural."""
    order = list(VALUE_LABELS)
    return (order.index(value) if value in order else len(order), natural_key(value))


def _series_label(axis: str, value) -> str:
    """'arch' values speak for themselves; numbers need their axis ('group size 4')."""
    short = {"model.group_size": "group size", "model.num_groups": "groups",
             "model.kernel_size": "kernel", "model.se": "SE"}
    return f"{short[axis]} {value}" if axis in short else value_label(value)


def finished(trials: pd.DataFrame) -> pd.DataFrame:
    return trials[trials["state"] == "done"]


def varied_axes(trials: pd.DataFrame) -> list[str]:
    """Model axes taking more than one value among the finished trials."""
    done = finished(trials)
    return [c for c in (*CATEGORICAL, "model.group_size", "model.num_groups")
            if c in done and done[c].dropna().nunique() > 1]


def _series_axes(trials: pd.DataFrame, x: str) -> list[str]:
    """The varied axes, besides ``x``, that are not already fixed by ``x``'s value.

    A figure draws one series per combination of them, so that nothing varied is averaged over.
    """
    done = finished(trials)
    return [a for a in varied_axes(trials) if a != x
            and done.groupby(x, dropna=False)[a].nunique().max() > 1]


def seed_stats(trials: pd.DataFrame, by: list[str], metric: str = METRIC) -> pd.DataFrame:
    """Mean, std and n of the final ``metric`` over finished trials grouped by ``by``."""
    done = finished(trials)
    frame = done[by].copy()
    frame["value"] = done[f"final/{metric}"].astype(float)
    out = frame.groupby(by, dropna=False)["value"].agg(["mean", "std", "count"]).reset_index()
    out["ci"] = ci_half_width(out["std"], out["count"])
    keys = [tuple(category_key(v) for v in row) for row in out[by].itertuples(index=False)]
    return out.iloc[sorted(range(len(out)), key=keys.__getitem__)].reset_index(drop=True)


def ci_half_width(std: pd.Series, n: pd.Series) -> pd.Series:
    """Half width of the 95% confidence interval of a mean (Student t); 0 for one seed."""
    n = n.astype(float)
    t = pd.Series(student_t.ppf(0.975, (n - 1).where(n > 1)), index=n.index)
    return (t * std / n.pow(0.5)).fillna(0.0)


def interval_note(n: pd.Series) -> str:
    """Legend title saying what the error bars are: '95% CI of the mean, n = 3 seeds'."""
    lo, hi = int(n.min()), int(n.max())
    seeds = f"{lo}" if lo == hi else f"{lo}-{hi}"
    return f"mean ± 95% CI, n = {seeds} seeds" + (" (n = 1: no interval)" if lo == 1 else "")


def colors_for(values) -> dict:
    """A colour per value of one axis: VALUE_COLORS for known ones, the palette in order."""
    free = [c for c in PALETTE if c not in VALUE_COLORS.values()]
    out, i = {}, 0
    for v in sorted(dict.fromkeys(values), key=category_key):
        if v in VALUE_COLORS:
            out[v] = VALUE_COLORS[v]
        else:
            out[v], i = free[i % len(free)], i + 1
    return out


def arm_names(summary: pd.DataFrame) -> list[str]:
    """The arms of an arm_summary as a figure names them: 'sweep: arm' when there are several
    sweeps, whose arms may share labels."""
    if summary["sweep"].nunique() > 1:
        return [f"{s}: {a}" for s, a in zip(summary["sweep"], summary["arm"])]
    return summary["arm"].tolist()


def _mark_baseline(ax, trials: pd.DataFrame, metric: str) -> None:
    base = arm_summary(trials[trials["role"] == "baseline"], metric)
    for r in base.itertuples():
        ax.axhline(r.mean, color="black", linestyle="--", linewidth=0.8,
                   label="baseline" if r.arm == "baseline" else f"baseline ({r.arm})")


def _new_axes(title: str):
    fig = Figure(layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title)
    return fig, ax


def _finish(fig: Figure, ax, note: str | None = None) -> Figure:
    """Put the legend outside the axes, on the right, so it never hides data; ``note`` (what
    the error bars are) is its title."""
    handles, names = ax.get_legend_handles_labels()
    if handles:
        # a long label is wrapped: on one line it would squeeze the axes to a sliver
        names = [textwrap.fill(n, LEGEND_WIDTH, break_long_words=True) for n in names]
        ncol = 1 if len(handles) <= 20 else 2
        rows = -(-sum(n.count("\n") + 1 for n in names) // ncol)
        width, height = STYLE["figure.figsize"]
        fig.set_size_inches(width + 3 * (ncol - 1), max(height, 0.14 * rows + 1))
        fig.legend(handles, names, loc="outside right upper", frameon=False, ncol=ncol,
                   title=note, title_fontsize=7, alignment="left")
    return fig


def _series(stats_: pd.DataFrame, series: list[str]) -> list[tuple]:
    """The series' keys in the paper's order, with (colour, marker) from their first axis."""
    keys = sorted({tuple(r) for r in stats_[series].itertuples(index=False)},
                  key=lambda t: [category_key(v) for v in t]) if series else [()]
    colors = colors_for(k[0] for k in keys) if series else {}
    rest = list(dict.fromkeys(k[1:] for k in keys))
    return [(k, colors.get(k[0], PALETTE[0]) if k else PALETTE[0],
             MARKERS[rest.index(k[1:]) % len(MARKERS)]) for k in keys]


def _select(frame: pd.DataFrame, axes: list[str], key: tuple) -> pd.DataFrame:
    for axis, value in zip(axes, key):
        frame = frame[frame[axis] == value]
    return frame


def plot_group_size(trials: pd.DataFrame, metric: str = METRIC, x: str = "model.group_size"):
    """Accuracy against channel-sharing group size (log2 axis), one line per mixer/variant."""
    if x not in varied_axes(trials):
        return None
    series = _series_axes(trials, x)
    means = seed_stats(trials, [*series, x], metric).dropna(subset=[x])
    fig, ax = _new_axes(f"{label(metric)} vs {label(x)}")
    for key, color, marker in _series(means, series):
        part = _select(means, series, key)
        name = ", ".join(_series_label(a, v) for a, v in zip(series, key)) or "all"
        ax.errorbar(part[x].astype(float), part["mean"], yerr=part["ci"], marker=marker,
                    color=color, capsize=3, label=name)
    _mark_baseline(ax, trials, metric)
    ax.set_xscale("log", base=2)
    ticks = sorted(means[x].astype(int).unique())
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel(label(x))
    ax.set_ylabel(label(metric))
    return _finish(fig, ax, interval_note(means["count"]))


def plot_bars(trials: pd.DataFrame, x: str, metric: str = METRIC, hue: str | None = None):
    """Means with 95% CIs: one group per value of ``x``, one point per value of ``hue`` (and
    variants), side by side; points, not bars, so the accuracy axis need not start at zero."""
    series = [hue] if hue and hue in varied_axes(trials) else []
    series += [a for a in _series_axes(trials, x) if a not in series]
    means = seed_stats(trials, [x, *series], metric)
    for col in (x, *series):  # an axis left unset in some arms is its own category
        means[col] = means[col].astype(object).where(means[col].notna(), "default")
    xs = list(dict.fromkeys(means[x]))
    keys = _series(means, series)
    width = 0.6 / len(keys)
    fig, ax = _new_axes(f"{label(metric)} by {label(x)}"
                        + (f" and {label(hue)}" if hue in series else ""))
    for j, (key, color, marker) in enumerate(keys):
        sel = _select(means, series, key)
        pos = [xs.index(v) + (j - (len(keys) - 1) / 2) * width for v in sel[x]]
        ax.errorbar(pos, sel["mean"], yerr=sel["ci"], fmt=marker, color=color, capsize=3,
                    label=", ".join(_series_label(a, v) for a, v in zip(series, key)) or None)
    _mark_baseline(ax, trials, metric)
    ax.set_xticks(range(len(xs)), [textwrap.fill(value_label(v), 16) for v in xs])
    ax.set_xlim(-0.5, len(xs) - 0.5)
    ax.set_xlabel(label(x))
    ax.set_ylabel(label(metric))
    return _finish(fig, ax, interval_note(means["count"]))


def plot_weight_source(trials: pd.DataFrame, metric: str = METRIC):
    """Weight source grouped by window scheme (one colour per scheme); None unless either
    varies."""
    axes = varied_axes(trials)
    if "model.weight_source" not in axes and "model.window" not in axes:
        return None
    if "model.weight_source" not in axes:
        return plot_bars(trials, "model.window", metric)
    return plot_bars(trials, "model.weight_source", metric, hue="model.window")


def plot_sharing(trials: pd.DataFrame, metric: str = METRIC):
    """Spatial / channel / both / no sharing; None unless sharing varies."""
    if "model.sharing" not in varied_axes(trials):
        return None
    return plot_bars(trials, "model.sharing", metric)


def plot_arms(trials: pd.DataFrame, metric: str = METRIC):
    """One point (mean, 95% CI) per arm, baseline first, when nothing but the architecture
    varies (the main comparison); None otherwise."""
    summary = arm_summary(trials, metric).dropna(subset=["mean"])
    if len(summary) < 2 or set(varied_axes(trials)) - {"model.arch"}:
        return None
    ci = ci_half_width(summary["std"], summary["n"])
    fig, ax = _new_axes(f"{label(metric)} per arm")
    base = summary["baseline"].to_numpy()
    pos = list(range(len(summary)))
    for mask, color, name in ((~base, PALETTE[0], "arms"), (base, "black", "baseline")):
        if mask.any():
            ax.errorbar([p for p, m in zip(pos, mask) if m], summary["mean"][mask],
                        yerr=ci[mask], fmt="o", color=color, capsize=3, label=name)
    ax.set_xticks(pos, arm_names(summary), fontsize=7, rotation=30, ha="right",
                  rotation_mode="anchor")
    ax.set_xlim(-0.5, len(pos) - 0.5)
    ax.set_ylabel(label(metric))
    return _finish(fig, ax, interval_note(summary["n"]))


def plot_cost(trials: pd.DataFrame, cost: str = "params", metric: str = METRIC):
    """Accuracy against parameters or FLOPs, one labelled point per arm, the baseline a star.

    Each point carries its arm's name where the names fit without covering each other, a point
    or the axes' edge; where they do not (many arms, long names), each point carries a number
    and the legend is the key from numbers to names.
    """
    summary = arm_summary(trials, metric).dropna(subset=[cost, "mean"])
    if summary[cost].nunique() < 2:  # every arm costs the same: nothing to plot against
        return None
    xs, ys, names = summary[cost].tolist(), summary["mean"].tolist(), arm_names(summary)
    fig, ax = _cost_axes(summary, cost, metric, key=None)
    if not place_labels(fig, ax, xs, ys, names, or_none=True):
        numbers = [str(k) for k in range(1, len(names) + 1)]
        fig, ax = _cost_axes(summary, cost, metric,
                             key=[f"{k}  {name}" for k, name in zip(numbers, names)])
        place_labels(fig, ax, xs, ys, numbers)
    return fig


def _cost_axes(summary: pd.DataFrame, cost: str, metric: str, key: list[str] | None):
    """The cost scatter without its point labels; ``key`` adds legend entries (no marker)."""
    fig, ax = _new_axes(f"{label(metric)} vs {label(cost)}")
    ax.errorbar(summary[cost], summary["mean"], yerr=ci_half_width(summary["std"], summary["n"]),
                fmt="o", capsize=3, color=PALETTE[0], label="arms")
    base = summary[summary["baseline"]]
    ax.plot(base[cost], base["mean"], "*", color="black", markersize=12, label="baseline",
            zorder=3)
    if summary[cost].max() > 10 * summary[cost].min():
        ax.set_xscale("log")
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 24M, 3.8G rather than 1e7 offsets
    ax.set_xlabel(label(cost))
    ax.set_ylabel(label(metric))
    _finish(fig, ax, interval_note(summary["n"]))
    if key:  # below the axes, in as many columns as the figure's width holds
        width, height = fig.get_size_inches()
        longest = max(len(k) for k in key)
        ncol = max(1, min(len(key), int(width / (0.05 * longest + 0.2))))  # 6 pt: ~0.05 in
        rows = -(-len(key) // ncol)
        fig.set_size_inches(width, height + 0.11 * rows + 0.3)
        fig.legend([Line2D([], [], linestyle="none")] * len(key), key, loc="outside lower center",
                   ncol=ncol, fontsize=6, handlelength=0, handletextpad=0, frameon=False,
                   columnspacing=1.5, title="points", title_fontsize=7, alignment="left")
    return fig, ax


def plot_learning_curves(trials: pd.DataFrame, epochs: pd.DataFrame, metric: str = METRIC):
    """``metric`` against epoch per arm: mean over seeds, a band of ± one standard deviation;
    baseline in black.

    Beyond MAX_CURVES arms, only the baseline and the arms with the best final means are drawn.
    """
    summary = arm_summary(trials, metric)
    if summary.empty or metric not in epochs:
        return None
    chosen = list(zip(*(summary[summary["baseline"]][c] for c in ("sweep", "arm"))))
    ranked = summary[~summary["baseline"]].sort_values("mean", ascending=False, kind="stable")
    chosen += list(zip(ranked["sweep"], ranked["arm"]))[:MAX_CURVES - len(chosen)]
    done = finished(trials)
    rows = epochs[["id", "epoch", metric]].merge(done[["id", "sweep", "arm"]], on="id")
    curves = rows.groupby(["sweep", "arm", "epoch"])[metric].agg(
        ["mean", "std", "count"]).reset_index()
    title = f"{label(metric)} per epoch"
    if len(summary) > len(chosen):
        title += f" (baseline and best {len(chosen) - 1} of {len(summary)} arms)"
    fig, ax = _new_axes(title)
    bases = set(zip(*(summary[summary["baseline"]][c] for c in ("sweep", "arm"))))
    names = dict(zip(zip(summary["sweep"], summary["arm"]), arm_names(summary)))
    for i, (sweep, arm) in enumerate(sorted(chosen, key=lambda k: (natural_key(k[1]), k[0]))):
        part = curves[(curves["sweep"] == sweep) & (curves["arm"] == arm)]
        base = (sweep, arm) in bases
        color = "black" if base else PALETTE[i % len(PALETTE)]
        x = part["epoch"].astype(int)
        name = names[sweep, arm]
        ax.plot(x, part["mean"], color=color, linewidth=2 if base else 1,
                label=name if not base or arm == "baseline" else f"{name} (baseline)")
        spread = part["std"].fillna(0)
        ax.fill_between(x, part["mean"] - spread, part["mean"] + spread, color=color,
                        alpha=0.15, linewidth=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(label("epoch"))
    ax.set_ylabel(label(metric))
    n = summary[[k in set(chosen) for k in zip(summary["sweep"], summary["arm"])]]["n"]
    lo, hi = int(n.min()), int(n.max())
    return _finish(fig, ax, f"line: mean; band: ± 1 std over {lo if lo == hi else f'{lo}-{hi}'}"
                   " seeds")


def make_figures(trials: pd.DataFrame, epochs: pd.DataFrame, metric: str = METRIC) -> dict:
    """Name -> Figure for every figure the varied axes call for, in a fixed order."""
    candidates = {
        "group_size": lambda: plot_group_size(trials, metric),
        "num_groups": lambda: plot_group_size(trials, metric, x="model.num_groups"),
        "weight_source_by_window": lambda: plot_weight_source(trials, metric),
        "sharing": lambda: plot_sharing(trials, metric),
        "arms": lambda: plot_arms(trials, metric),
        "accuracy_vs_params": lambda: plot_cost(trials, "params", metric),
        "accuracy_vs_flops": lambda: plot_cost(trials, "flops", metric),
        "learning_curves": lambda: plot_learning_curves(trials, epochs, metric),
    }
    with matplotlib.rc_context(STYLE):
        figures = {name: make() for name, make in candidates.items()}
    return {name: fig for name, fig in figures.items() if fig is not None}


def save_figure(fig: Figure, path: Path) -> Path:
    """Save ``fig`` to ``path`` (format from the suffix) without dates or version stamps."""
    fmt = path.suffix.lstrip(".")
    with matplotlib.rc_context(STYLE), files.atomic_file(path, "wb") as f:
        fig.savefig(f, format=fmt, metadata=METADATA.get(fmt))
    return path


def draw_figures(results_dir: str | Path, formats=("png", "pdf")) -> list[Path]:
    """Draw every fitting figure of a collected results folder into ``figures/``.

    Needs trials.parquet and epochs.parquet (collect first); raises RecordError when missing.
    Returns the written paths, sorted.
    """
    from ablate.collect import load_tables

    results_dir = Path(results_dir)
    trials, epochs = load_tables(results_dir)
    out = results_dir / "figures"
    files.output_dir(out)  # RecordError when a file is in the way
    paths = []
    for name, fig in make_figures(trials, epochs).items():
        paths += [save_figure(fig, out / f"{name}.{fmt}") for fmt in formats]
    return sorted(paths)
