"""Point labels for scatter plots that cover no other label, no point and stay in the axes.

Each label tries a few offsets around its point, nearest first, then the same directions
farther out with a leader line. Placement measures the rendered text, so the figure's layout is
fixed first (and then frozen): what is checked is what is saved.
"""

from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

# Offsets (points) tried for a label, nearest first; then farther out, with a leader line.
OFFSETS = [(5, 4), (5, -10), (-5, 4), (-5, -10), (0, 10), (0, -16)]
SPOTS = [(dx, dy, step) for step in range(1, 6) for dx, dy in OFFSETS]  # step: how far out
POINT_PX = 8  # the box around a point that no label may cover


def place_labels(fig: Figure, ax, xs: list, ys: list, names: list[str],
                 or_none: bool = False) -> list | None:
    """Annotate each point (xs[i], ys[i]) with names[i] where it is free; returns the
    annotations.

    A label with no free spot takes the one inside the axes that overlaps least; with
    ``or_none``, the figure is left without labels instead and None is returned (the caller
    then labels the points another way).
    """
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    fig.set_layout_engine("none")
    renderer = canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    taken = [Bbox.from_bounds(px - POINT_PX / 2, py - POINT_PX / 2, POINT_PX, POINT_PX)
             for px, py in (ax.transData.transform((x, y)) for x, y in zip(xs, ys))]

    def annotate(i: int, dx: float, dy: float, step: int):
        """The label at one candidate spot, and its cost: (outside the axes, overlaps, step)."""
        text = ax.annotate(names[i], (xs[i], ys[i]), xytext=(dx * step, dy * step),
                           textcoords="offset points", fontsize=6,
                           ha="left" if dx >= 0 else "right",
                           arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.5"}
                           if step > 1 else None)
        box = text.get_window_extent(renderer)
        outside = not (frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1))
        return text, (outside, sum(box.overlaps(t) for t in taken), step)

    placed = []
    for i in sorted(range(len(names)), key=lambda i: (-ys[i], xs[i])):  # top-left first
        chosen, least_bad = None, None
        for dx, dy, step in SPOTS:
            text, cost = annotate(i, dx, dy, step)
            if cost[:2] == (False, 0):  # inside, over nothing
                chosen = text
                break
            text.remove()
            least_bad = min(least_bad or (cost, dx, dy, step), (cost, dx, dy, step))
        if chosen is None:
            if or_none:
                for text in placed:
                    text.remove()
                return None
            chosen = annotate(i, *least_bad[1:])[0]
        taken.append(chosen.get_window_extent(renderer))
        placed.append(chosen)
    return placed
