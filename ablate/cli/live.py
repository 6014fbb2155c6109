"""The live table ``ablate run`` and ``ablate resume`` show on a terminal.

One row per running trial (arm, seed, trial id, epoch of epochs, its latest val/top1 and
images per second) under a line of totals (done, failed, running, waiting) and the time left,
redrawn in place by rich twice a second, so the clock moves between events. Messages that
must stay (a failure, a retry) print above the table. The table is erased when the run ends,
for the summary to take its place.
"""

from __future__ import annotations

import threading
import time
from typing import Any


def duration(s: float | None) -> str:
    """Seconds as 4m05s, or 2h07m from an hour on."""
    s = int(round(s or 0))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class LiveTable:
    """The running trials and totals of a run, kept up to date from the runner's events.

    ``trials``: the plan's trials by id (for arm, seed and epochs); ``console``: where to draw
    (default: a rich Console on stdout). Drawing starts at the first :meth:`update` or
    :meth:`status` and ends at :meth:`stop`.
    """

    def __init__(self, trials: dict[str, Any], console: Any = None) -> None:
        self.trials, self.console = trials, console
        self.running: dict[str, dict[str, Any]] = {}  # id -> latest epoch, val/top1, img/s
        self.progress: Any = None  # the last event's runner.Progress
        self.clock = time.monotonic  # replaceable, for tests
        self.since = self.clock()  # when the last event came: the clock runs on from there
        self.message = ""
        self._live: Any = None
        self._lock = threading.Lock()  # rich redraws from a thread of its own

    def update(self, event: Any) -> None:
        """Take in one runner Event and redraw."""
        with self._lock:
            m = event.metrics
            if event.kind in ("start", "retry"):
                self.running.setdefault(event.trial_id, {})
            elif event.kind == "result" and "epoch" in m:
                self.running.setdefault(event.trial_id, {}).update(
                    epoch=m["epoch"], top1=m.get("val/top1"), speed=m.get("train/img_per_s"))
            elif event.kind in ("done", "failed"):
                self.running.pop(event.trial_id, None)
            self.progress, self.since, self.message = event.progress, self.clock(), ""
        self._start().refresh()

    def status(self, message: str) -> None:
        """A line shown under the table until the next event (e.g. Ray is starting)."""
        with self._lock:
            self.message = message
        self._start().refresh()

    def note(self, line: str) -> None:
        """A line printed above the table, to stay after the run."""
        self._start().console.print(line, markup=False, highlight=False)

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def render(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, header_style="bold", pad_edge=False)
        for name in ("arm", "seed", "trial", "epoch", "val/top1", "img/s"):
            table.add_column(name, justify="left" if name in ("arm", "trial") else "right",
                             overflow="ellipsis", no_wrap=True)
        with self._lock:
            rows, p = list(self.running.items()), self.progress
            ran, message = self.clock() - self.since, self.message
        for tid, row in rows:
            t = self.trials.get(tid)
            of = f"/{t.config.train.epochs}" if t else ""
            table.add_row(t.arm if t else "?", str(t.config.seed) if t else "?", tid,
                          f"{row['epoch']}{of}" if "epoch" in row else "-",
                          _number(row.get("top1"), "{:.2f}"), _number(row.get("speed"), "{:.0f}"))
        lines = [table] if rows else []
        if p is not None:
            eta = f", about {duration(max(p.eta_s - ran, 0.0))} left" \
                if p.eta_s is not None else ""
            lines.append(Text(f"[{duration(p.elapsed_s + ran)}] {p.done} done, {p.failed} "
                              f"failed, {p.running} running, {p.left} waiting{eta}"))
        if message:
            lines.append(Text(message))
        return Group(*lines)

    def _start(self) -> Any:
        if self._live is None:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(console=self.console or Console(), get_renderable=self.render,
                              refresh_per_second=2, transient=True)
            self._live.start()
        return self._live


def _number(value: Any, form: str) -> str:
    return form.format(value) if isinstance(value, (int, float)) else "-"
