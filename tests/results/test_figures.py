import matplotlib
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
    points = {c.get_label(): c.lines[0] for c in ax.containers}
    # one series per window scheme, each over the sources; means over 2 seeds
    for name in ("shifted windows", "sliding windows"):
        assert [round(y, 2) for y in points[name].get_ydata()] == [75.15, 76.15, 77.15]
    # the compared axis keeps its colour: shifted blue, sliding orange, in every figure
    assert points["shifted windows"].get_color() == figures.VALUE_COLORS["shifted"]
    assert points["sliding windows"].get_color() == figures.VALUE_COLORS["sliding"]
    # error bars are 95% CIs of 2 seeds (t(1) quantile 12.71 x std 0.212 / sqrt 2), and say so
    segments = [c.lines[2][0].get_segments() for c in ax.containers][0]
    assert segments[0][1][1] - segments[0][0][1] == pytest.approx(2 * 12.706 * 0.3 / 2, rel=1e-3)
    assert fig_legend_title(ax) == "mean ± 95% CI, n = 2 seeds"


def fig_legend_title(ax) -> str:
    return ax.figure.legends[0].get_title().get_text()


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
    (points,) = ax.containers
    assert list(points.lines[0].get_ydata()) == [73.0, 72.0, 71.0, 70.0, 74.0]
    assert fig_legend_title(ax).endswith("(n = 1: no interval)")
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
    assert means["arms"] == [70.0, 75.0]
    assert figures.plot_cost(frame(rows[:1]), "params") is None  # one cost: nothing to plot


def test_a_window_only_sweep_gets_bars_by_window():
    rows = [{"arm": w, "model.window": w, "model.weight_source": "dot_product",
             "final/val/top1": v} for w, v in [("sliding", 71.0), ("shifted", 70.0)]]
    ax = figures.plot_weight_source(frame(rows)).axes[0]
    assert ax.get_xlabel() == "window scheme"
    ticks = [t.get_text().replace("\n", " ") for t in ax.get_xticklabels()]
    assert ticks == ["shifted windows", "sliding windows"]
    assert figures.plot_group_size(frame(rows)) is None


MAIN = [("swin_t", 28.3e6, 81.3), ("dwnet_t", 24.1e6, 81.2), ("dynamic_dwnet_t", 51.5e6, 81.8),
        ("idynamic_dwnet_t", 24.2e6, 81.8), ("swin_b", 87.8e6, 83.5), ("dwnet_b", 74.3e6, 83.2),
        ("dynamic_dwnet_b", 162.2e6, 83.2), ("idynamic_dwnet_b", 74.5e6, 83.4)]


def main_comparison_rows(seeds: int = 3) -> list[dict]:
    """main_comparison's arms with made-up accuracies: several points nearly on top of
    each other (idynamic_dwnet_t beside dwnet_t, the two B DWNets)."""
    return [{"arm": a, "role": "baseline" if a == "swin_t" else "arm", "params": p,
             "flops": 160 * p, "model.arch": a, "final/val/top1": acc + 0.2 * (s - 1)}
            for a, p, acc in MAIN for s in range(seeds)]


@pytest.mark.parametrize("cost", ["params", "flops"])
def test_cost_scatter_labels_never_overlap(cost):
    fig = figures.plot_cost(frame(main_comparison_rows()), cost)
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert len(boxes) == len(MAIN)
    for i, a in enumerate(boxes):
        assert ax.get_window_extent(renderer).contains(a.x0, a.y0)
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), "two labels overlap"
    # and no label covers a point
    for x, y in [(p if cost == "params" else 160 * p, acc) for _, p, acc in MAIN]:
        px, py = ax.transData.transform((x, y))
        assert not any(b.contains(px, py) for b in boxes)


def test_a_crowded_cost_scatter_numbers_its_points_and_keys_them_below():
    # 30 arms with long names in a narrow range: the names cannot all sit beside their points
    rows = [{"arm": f"idynamic_dwnet_group_size_{i:02d}_center_linear",
             "role": "baseline" if i == 0 else "arm", "params": 1e6 + 9e5 * ((7 * i) % 30),
             "flops": 1e8, "final/val/top1": 70.0 + (11 * i) % 12 + 0.2 * s}
            for i in range(30) for s in range(2)]
    with matplotlib.rc_context(figures.STYLE):
        fig = figures.plot_cost(frame(rows), "params")
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    frame_box = ax.get_window_extent(renderer)
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert sorted(int(t.get_text()) for t in ax.texts) == list(range(1, 31))
    for i, a in enumerate(boxes):
        assert frame_box.contains(a.x0, a.y0) and frame_box.contains(a.x1, a.y1)
        assert not any(a.overlaps(b) for b in boxes[i + 1:]), "two numbers overlap"
    key = next(lg for lg in fig.legends if lg.get_title().get_text() == "points")
    entries = [t.get_text() for t in key.get_texts()]
    assert entries[:2] == ["1  idynamic_dwnet_group_size_00_center_linear",
                           "2  idynamic_dwnet_group_size_01_center_linear"]
    # each number sits at its own arm's point
    number_at = {t.get_text(): t.xy for t in ax.texts}
    name_of = dict(e.split("  ") for e in entries)
    for r in rows[::2]:
        k = next(k for k, n in name_of.items() if n == r["arm"])
        assert number_at[k][0] == r["params"]
    whole = fig.bbox
    for legend in fig.legends:  # the key fits in the figure
        b = legend.get_window_extent(renderer)
        assert whole.contains(b.x0, b.y0) and whole.contains(b.x1, b.y1)


def test_a_label_with_no_free_spot_takes_the_least_bad_one_inside_or_gives_up():
    from matplotlib.figure import Figure

    from ablate.labels import place_labels

    def crowded():  # ten points on one spot at the right edge: ten labels cannot all be free
        fig = Figure(figsize=(3, 2), layout="constrained")
        ax = fig.add_subplot()
        ax.plot([0.0, 1.0], [0.0, 1.0], "o")
        return fig, ax, [1.0] * 10, [0.5] * 10, [f"a long label number {k}" for k in range(10)]

    fig, ax, xs, ys, names = crowded()
    placed = place_labels(fig, ax, xs, ys, names)
    renderer = fig.canvas.get_renderer()
    frame_box = ax.get_window_extent(renderer)
    boxes = [t.get_window_extent(renderer) for t in placed]
    assert sorted(t.get_text() for t in placed) == sorted(names)
    assert any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])  # crowded
    # at the right edge every label still reads leftwards, inside the axes, not off them
    assert all(frame_box.contains(b.x0, b.y0) and frame_box.contains(b.x1, b.y1) for b in boxes)
    fig, ax, xs, ys, names = crowded()
    assert place_labels(fig, ax, xs, ys, names, or_none=True) is None and not ax.texts


def test_an_architecture_only_sweep_gets_a_per_arm_figure(tmp_path):
    rows = main_comparison_rows()
    ax = figures.plot_arms(frame(rows)).axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[0] == "swin_t" and sorted(ticks) == sorted(a for a, _, _ in MAIN)
    colors = {c.get_label(): c.lines[0].get_color() for c in ax.containers}
    assert colors["baseline"] == "black"
    assert fig_legend_title(ax) == "mean ± 95% CI, n = 3 seeds"
    assert "arms" in figures.make_figures(frame(rows), frame(rows).iloc[:0].assign(epoch=1))
    grouped = [dict(r, **{"model.group_size": i % 2 + 1}) for i, r in enumerate(rows)]
    assert figures.plot_arms(frame(grouped)) is None  # another axis varies: not this figure


def test_learning_curves_show_the_seed_spread_as_a_band(group_sweep):
    collect_results(group_sweep)
    trials, epochs = load_tables(group_sweep)
    ax = figures.plot_learning_curves(trials, epochs).axes[0]
    bands = ax.collections
    assert len(bands) == 6  # one per arm
    # seeds differ by 0.2 points at the end: the band at the last epoch spans 2 std
    ys = bands[0].get_paths()[0].vertices[:, 1]
    assert ys.max() - ys.min() > 0
    assert "band: ± 1 std over 3 seeds" in fig_legend_title(ax)


def test_arms_of_two_sweeps_sharing_labels_are_drawn_apart(tmp_path, factory_module):
    """The curves grouped by arm alone: each sweep's baseline was drawn as the mean of both
    sweeps' trials, twice, under one name."""
    with factory_module.fast_writes():
        for sweep, top1 in (("a", 60.0), ("b", 70.0)):
            for arm, group, extra in (("baseline", 1, 0.0), ("g4", 4, 2.0)):
                for seed in (0, 1):
                    trial = factory_module.make_trial(
                        arm, sweep=sweep, seed=seed, epochs=2, group_size=group,
                        kernel_size=3 if sweep == "a" else 5,
                        role="baseline" if arm == "baseline" else "arm")
                    factory_module.write_record(tmp_path, trial, top1=top1 + extra + seed,
                                                params=1000 * group)
    collect_results(tmp_path)
    trials, epochs = load_tables(tmp_path)
    ax = figures.plot_learning_curves(trials, epochs).axes[0]
    last = {line.get_label(): line.get_ydata()[-1] for line in ax.get_lines()}
    assert last == pytest.approx({"a: baseline": 60.5, "b: baseline": 70.5, "a: g4": 62.5,
                                  "b: g4": 72.5})
    ax = figures.plot_cost(trials, "params").axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["a: baseline", "a: g4", "b: baseline",
                                                       "b: g4"]


def test_a_long_arm_label_is_wrapped_in_the_legend_and_leaves_the_axes_their_room(
        tmp_path, factory_module):
    """On one line, the legend was wider than the figure: the layout gave up, and the legend
    covered the curves (or, with several, squeezed the axes to a sliver)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    long = " ".join(["group size 4 with the pooled feature and a window of seven by seven"] * 2)
    with factory_module.fast_writes():
        for arm, group in (("baseline", 1), (long, 4)):
            factory_module.write_record(tmp_path, factory_module.make_trial(
                arm, epochs=2, group_size=group, role="baseline" if group == 1 else "arm"),
                top1=60.0 + group)
    collect_results(tmp_path)
    fig = figures.plot_learning_curves(*load_tables(tmp_path))
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    [wrapped] = [t for t in texts if t != "baseline"]
    assert wrapped.replace("\n", " ") == long and "\n" in wrapped
    assert all(len(line) <= figures.LEGEND_WIDTH for t in texts for line in t.split("\n"))
    renderer = canvas.get_renderer()
    axes, legend = (a.get_window_extent(renderer) for a in (fig.axes[0], fig.legends[0]))
    assert axes.width > 0.4 * fig.bbox.width  # the layout had collapsed: legend over the data
    assert axes.x1 <= legend.x0 and legend.x1 <= fig.bbox.x1
