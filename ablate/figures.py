"""The ablation figures, drawn from trials.parquet / epochs.parquet alone.

``make_figures(trials, epochs)`` picks the figures that fit the axes that vary among the finished
trials (not the sweep file): accuracy against channel-sharing group size, bars of dynamic-weight
source by window scheme, spatial versus channel sharing, accuracy against parameters and FLOPs,
learning curves. Each ``plot_*`` function takes DataFrames (as ``ablate.collect.load_tables``
returns them) and returns a matplotlib Figure, or None when the data do not call for it; the
notebook calls the same functions. Points are means over seeds with error bars of one standard
deviation; the baseline is marked. ``draw_figures`` saves them under ``figures/`` as PNG and PDF
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
from matplotlib.ticker import EngFormatter, MaxNLocator

from ablate import record
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
MAX_CURVES = 12  # learning curves beyond this many arms are unreadable: baseline + the best


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
    stats = frame.groupby(by, dropna=False)["value"].agg(["mean", "std", "count"]).reset_index()
    keys = [tuple(category_key(v) for v in row) for row in stats[by].itertuples(index=False)]
    return stats.iloc[sorted(range(len(stats)), key=keys.__getitem__)].reset_index(drop=True)


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


def _finish(fig: Figure, ax) -> Figure:
    """Put the legend outside the axes, on the right, so it never hides data."""
    handles, names = ax.get_legend_handles_labels()
    if handles:
        ncol = 1 if len(handles) <= 20 else 2
        rows = -(-len(handles) // ncol)
        width, height = STYLE["figure.figsize"]
        fig.set_size_inches(width + 3 * (ncol - 1), max(height, 0.14 * rows + 1))
        fig.legend(handles, names, loc="outside right upper", frameon=False, ncol=ncol)
    return fig


def plot_group_size(trials: pd.DataFrame, metric: str = METRIC, x: str = "model.group_size"):
    """Accuracy against channel-sharing group size (log2 axis), one line per mixer/variant."""
    if x not in varied_axes(trials):
        return None
    series = _series_axes(trials, x)
    stats = seed_stats(trials, [*series, x], metric).dropna(subset=[x])
    fig, ax = _new_axes(f"{label(metric)} vs {label(x)}")
    groups = stats.groupby(series, sort=False, dropna=False) if series else [((), stats)]
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        name = ", ".join(_series_label(a, v) for a, v in zip(series, key)) or "all"
        ax.errorbar(part[x].astype(float), part["mean"], yerr=part["std"].fillna(0),
                    marker="o", capsize=3, label=name)
    _mark_baseline(ax, trials, metric)
    ax.set_xscale("log", base=2)
    ticks = sorted(stats[x].astype(int).unique())
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel(label(x))
    ax.set_ylabel(label(metric))
    return _finish(fig, ax)


def plot_bars(trials: pd.DataFrame, x: str, metric: str = METRIC, hue: str | None = None):
    """Grouped bars: one group per value of ``x``, one bar per value of ``hue`` (and variants)."""
    series = [hue] if hue and hue in varied_axes(trials) else []
    series += [a for a in _series_axes(trials, x) if a not in series]
    stats = seed_stats(trials, [x, *series], metric)
    for col in (x, *series):  # an axis left unset in some arms is its own category
        stats[col] = stats[col].astype(object).where(stats[col].notna(), "default")
    xs = list(dict.fromkeys(stats[x]))
    names = sorted({tuple(r) for r in stats[series].itertuples(index=False)},
                   key=lambda t: [category_key(v) for v in t]) if series else [()]
    width = 0.8 / len(names)
    fig, ax = _new_axes(f"{label(metric)} by {label(x)}"
                        + (f" and {label(hue)}" if hue in series else ""))
    for j, name in enumerate(names):
        sel = stats
        for axis, value in zip(series, name):
            sel = sel[sel[axis] == value]
        pos = [xs.index(v) + (j - (len(names) - 1) / 2) * width for v in sel[x]]
        ax.bar(pos, sel["mean"], width, yerr=sel["std"].fillna(0), capsize=2,
               label=", ".join(_series_label(a, v) for a, v in zip(series, name)) or None)
    _mark_baseline(ax, trials, metric)
    ax.set_xticks(range(len(xs)), [textwrap.fill(value_label(v), 16) for v in xs])
    ax.set_xlabel(label(x))
    ax.set_ylabel(label(metric))
    lo = stats["mean"].min() - 2 * stats["std"].fillna(0).max()
    ax.set_ylim(bottom=max(0.0, lo - 1))
    return _finish(fig, ax)


def plot_weight_source(trials: pd.DataFrame, metric: str = METRIC):
    """Bars of dynamic-weight source grouped by window scheme; None unless either varies."""
    axes = varied_axes(trials)
    if "model.weight_source" not in axes and "model.window" not in axes:
        return None
    if "model.weight_source" not in axes:
        return plot_bars(trials, "model.window", metric)
    return plot_bars(trials, "model.weight_source", metric, hue="model.window")


def plot_sharing(trials: pd.DataFrame, metric: str = METRIC):
    """Bars of spatial / channel / both / no sharing; None unless sharing varies."""
    if "model.sharing" not in varied_axes(trials):
        return None
    return plot_bars(trials, "model.sharing", metric)


def plot_cost(trials: pd.DataFrame, cost: str = "params", metric: str = METRIC):
    """Accuracy against parameters or FLOPs, one labelled point per arm, the baseline a star."""
    summary = arm_summary(trials, metric).dropna(subset=[cost, "mean"])
    if summary[cost].nunique() < 2:  # every arm costs the same: nothing to plot against
        return None
    fig, ax = _new_axes(f"{label(metric)} vs {label(cost)}")
    ax.errorbar(summary[cost], summary["mean"], yerr=summary["std"].fillna(0), fmt="o",
                capsize=3, color="C0", label="arms (mean ± std over seeds)")
    base = summary[summary["baseline"]]
    ax.plot(base[cost], base["mean"], "*", color="black", markersize=12, label="baseline",
            zorder=3)
    if len(summary) <= 30:  # beyond that the labels cover the points
        for r in summary.itertuples():
            ax.annotate(r.arm, (getattr(r, cost), r.mean), xytext=(4, 3),
                        textcoords="offset points", fontsize=6)
    if summary[cost].max() > 10 * summary[cost].min():
        ax.set_xscale("log")
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 24M, 3.8G rather than 1e7 offsets
    ax.set_xlabel(label(cost))
    ax.set_ylabel(label(metric))
    return _finish(fig, ax)


def plot_learning_curves(trials: pd.DataFrame, epochs: pd.DataFrame, metric: str = METRIC):
    """``metric`` against epoch per arm, mean over seeds; baseline in black.

    Beyond MAX_CURVES arms, only the baseline and the arms with the best final means are drawn.
    """
    summary = arm_summary(trials, metric)
    if summary.empty or metric not in epochs:
        return None
    chosen = summary[summary["baseline"]]["arm"].tolist()
    ranked = summary[~summary["baseline"]].sort_values("mean", ascending=False, kind="stable")
    chosen += ranked["arm"].head(MAX_CURVES - len(chosen)).tolist()
    done = finished(trials)
    arm_of = done.loc[done["arm"].isin(chosen), ["id", "arm"]]
    rows = epochs[["id", "epoch", metric]].merge(arm_of, on="id")
    curves = rows.groupby(["arm", "epoch"])[metric].mean().reset_index()
    title = f"{label(metric)} per epoch"
    if len(summary) > len(chosen):
        title += f" (baseline and best {len(chosen) - 1} of {len(summary)} arms)"
    fig, ax = _new_axes(title)
    for i, arm in enumerate(sorted(chosen, key=natural_key)):
        part = curves[curves["arm"] == arm]
        base = arm in summary[summary["baseline"]]["arm"].tolist()
        ax.plot(part["epoch"].astype(int), part[metric],
                color="black" if base else f"C{i % 10}", linewidth=2 if base else 1,
                label=arm if not base or arm == "baseline" else f"{arm} (baseline)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(label("epoch"))
    ax.set_ylabel(label(metric))
    return _finish(fig, ax)


def make_figures(trials: pd.DataFrame, epochs: pd.DataFrame, metric: str = METRIC) -> dict:
    """Name -> Figure for every figure the varied axes call for, in a fixed order."""
    candidates = {
        "group_size": lambda: plot_group_size(trials, metric),
        "num_groups": lambda: plot_group_size(trials, metric, x="model.num_groups"),
        "weight_source_by_window": lambda: plot_weight_source(trials, metric),
        "sharing": lambda: plot_sharing(trials, metric),
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
    with matplotlib.rc_context(STYLE), record.atomic_file(path, "wb") as f:
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
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in make_figures(trials, epochs).items():
        paths += [save_figure(fig, out / f"{name}.{fmt}") for fmt in formats]
    return sorted(paths)
