import pytest

from ablate import figures
from ablate.collect import collect_results, load_tables


def drawn(results_dir, formats=("png",)) -> set[str]:
    collect_results(results_dir)
    return {p.name for p in figures.draw_figures(results_dir, formats=formats)}


def test_a_group_size_sweep_gets_the_group_size_figure_and_not_the_window_one(group_sweep):
    names = drawn(group_sweep, formats=("png", "pdf"))
    assert names == {f"{n}.{fmt}" for fmt in ("png", "pdf") for n in
                     ("group_size", "accuracy_vs_params", "accuracy_vs_flops", "learning_curves")}
    assert all((group_sweep / "figures" / n).stat().st_size > 1000 for n in names)


def test_a_weight_source_sweep_gets_the_bars_and_not_the_group_size_figure(source_sweep):
    # every arm has the same params and FLOPs here: no cost scatter either
    assert drawn(source_sweep) == {"weight_source_by_window.png", "learning_curves.png"}


def test_figures_are_byte_identical_from_run_to_run(group_sweep):
    collect_results(group_sweep)
    first = {p: p.read_bytes() for p in figures.draw_figures(group_sweep)}
    second = figures.draw_figures(group_sweep)
    assert sorted(first) == second
    for path in second:
        assert path.read_bytes() == first[path], path.name
        assert b"CreationDate" not in first[path] and b"Software" not in first[path]


def test_svg_is_byte_identical_too(group_sweep, tmp_path):
    collect_results(group_sweep)
    fig = figures.plot_group_size(load_tables(group_sweep)[0])
    a = figures.save_figure(fig, tmp_path / "a.svg").read_bytes()
    assert figures.save_figure(fig, tmp_path / "b.svg").read_bytes() == a


def test_group_size_figure_draws_means_over_seeds_per_mixer(group_sweep):
    collect_results(group_sweep)
    trials, _ = load_tables(group_sweep)
    fig = figures.plot_group_size(trials)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "channel-sharing group size"
    assert ax.get_ylabel() == "top-1 accuracy (%)"
    lines = {c.get_label(): c.lines[0] for c in ax.containers}
    assert set(lines) == {"local_mlp_nano", "ablate_swin_nano"}
    assert list(lines["ablate_swin_nano"].get_xdata()) == [1, 4, 16]
    assert list(lines["ablate_swin_nano"].get_ydata()) == pytest.approx([72.0, 74.0, 76.0])
    baseline = [line for line in ax.get_lines() if line.get_label() == "baseline"]
    assert baseline and baseline[0].get_ydata()[0] == pytest.approx(70.0)


def test_bars_follow_the_papers_order_and_use_human_labels(source_sweep):
    collect_results(source_sweep)
    trials, _ = load_tables(source_sweep)
    ax = figures.plot_weight_source(trials).axes[0]
    ticks = [t.get_text().replace("\n", " ") for t in ax.get_xticklabels()]
    assert ticks == ["static", "dot product (attention)", "linear, centre feature"]
    assert ax.get_xlabel() == "dynamic-weight source"
    heights = [round(b.get_height(), 2) for b in ax.patches]
    # series by series (shifted, then sliding), each over the sources; means over 2 seeds
    assert heights == [75.15, 76.15, 77.15] * 2


def test_learning_curves_average_the_seeds_per_arm(group_sweep, factory_module):
    collect_results(group_sweep)
    trials, epochs = load_tables(group_sweep)
    ax = figures.plot_learning_curves(trials, epochs).axes[0]
    curves = {line.get_label(): line for line in ax.get_lines()}
    assert len(curves) == 6
    want = [factory_module.curve(72.0, e, 4)["val/top1"] for e in range(1, 5)]
    assert list(curves["arch=ablate_swin_nano, group_size=1"].get_ydata()) == pytest.approx(want)
    assert curves["baseline"].get_color() == "black"


def test_nothing_is_drawn_before_any_trial_finishes(group_sweep):
    collect_results(group_sweep)
    trials, epochs = load_tables(group_sweep)
    trials["state"] = "running"
    assert figures.make_figures(trials, epochs) == {}


def frame(rows: list[dict]):
    import pandas as pd

    base = {"state": "done", "sweep": "s", "role": "arm", "params": 1, "flops": 1,
            "expected": None, "best/val/top1": 0.0}
    return pd.DataFrame([{**base, "id": f"t{i}", **r} for i, r in enumerate(rows)])


def test_sharing_bars_in_the_papers_order_with_an_unset_axis_as_default():
    rows = [{"arm": s or "baseline", "model.sharing": s, "final/val/top1": 70.0 + i,
             "role": "baseline" if s is None else "arm"}
            for i, s in enumerate(["none", "both", "channel", "spatial", None])]
    ax = figures.plot_sharing(frame(rows)).axes[0]
    ticks = [t.get_text().replace("\n", " ") for t in ax.get_xticklabels()]
    assert ticks == ["spatial", "channel", "spatial + channel", "none", "default"]
    assert [b.get_height() for b in ax.patches] == [73.0, 72.0, 71.0, 70.0, 74.0]
    assert ax.get_xlabel() == "weight sharing"


def test_cost_scatter_labels_each_arm_and_stars_the_baseline():
    rows = [{"arm": a, "role": "baseline" if a == "base" else "arm", "params": p,
             "flops": 10 * p, "final/val/top1": acc}
            for a, p, acc in [("base", 100, 70.0), ("big", 400, 74.0), ("big", 400, 76.0)]]
    ax = figures.plot_cost(frame(rows), "params").axes[0]
    assert ax.get_xlabel() == "parameters"
    assert sorted(t.get_text() for t in ax.texts) == ["base", "big"]
    star = [line for line in ax.get_lines() if line.get_marker() == "*"]
    assert list(star[0].get_xdata()) == [100] and list(star[0].get_ydata()) == [70.0]
    means = {c.get_label(): list(c.lines[0].get_ydata()) for c in ax.containers}
    assert means["arms (mean ± std over seeds)"] == [70.0, 75.0]
    assert figures.plot_cost(frame(rows[:1]), "params") is None  # one cost: nothing to plot


def test_a_window_only_sweep_gets_bars_by_window():
    rows = [{"arm": w, "model.window": w, "model.weight_source": "dot_product",
             "final/val/top1": v} for w, v in [("sliding", 71.0), ("shifted", 70.0)]]
    ax = figures.plot_weight_source(frame(rows)).axes[0]
    assert ax.get_xlabel() == "window scheme"
    ticks = [t.get_text().replace("\n", " ") for t in ax.get_xticklabels()]
    assert ticks == ["shifted windows", "sliding windows"]
    assert figures.plot_group_size(frame(rows)) is None
