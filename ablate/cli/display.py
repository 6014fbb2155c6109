"""What ``ablate run`` and ``ablate resume`` print: the sorting of the plan before anything
runs, the progress while it runs (a live table on a terminal, a line per event elsewhere) and
the summary at the end."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from ablate.cli.live import duration


def warn(line: str) -> None:
    """A warning on stderr, as every command says them (stdout stays data)."""
    print(f"ablate: warning: {line}", file=sys.stderr, flush=True)


def print_triage(work: Any, trials: list, results: Path, *, name: str) -> None:
    """What the run found: finished, held and to-run counts, and trials run under another
    configuration than the plan's now."""
    print(f"ablate: sweep {name}: {len(trials)} trials, {len(work.finished)} already finished, "
          + (f"{len(work.held)} held (failed before), " if work.held else "")
          + f"{len(work.todo)} to run; results in {results}", flush=True)
    for note in work.notes:
        warn(note)
    if work.changes:
        print(f"ablate: {len(work.changes)} trials were run with another configuration "
              f"than the plan's now ({describe_changes(work.changes)}): "
              + ("rerunning them; their old records go to replaced/" if work.rerun_changed
                 else "kept; rerun them with --rerun-changed"), flush=True)


class RunDisplay:
    """On a terminal, a live table of the running trials and the totals. Elsewhere (a log file
    under nohup, sbatch or CI), one line per event: a trial's start, each epoch, its end and
    any failure or retry, so the log shows progress as it happens."""

    def __init__(self, tty: bool, trials: list | None = None, results: Path | None = None,
                 console: Any = None):
        from ablate.cli.live import LiveTable

        self.tty = tty
        self.trials = {t.id: t for t in trials or []}
        self.results = results
        self.live = LiveTable(self.trials, console) if tty else None

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks, and so this display, into state files ablate never reads
        # back; a live table (locks, a thread) cannot be pickled and need not be.
        return {**self.__dict__, "live": None}

    def on_event(self, event: Any) -> None:
        if self.live is None:
            self._log(event)
            return
        who = self._who(event.trial_id)
        if event.kind == "failed":
            self.live.note(f"ablate: trial {who} failed: {self._error_line(event.trial_id)}")
        elif event.kind == "retry":
            self.live.note(f"ablate: trial {who}: worker lost, retrying from its checkpoint")
        self.live.update(event)

    def _who(self, trial_id: str) -> str:
        t = self.trials.get(trial_id)
        return f"{trial_id} [{t.arm}] seed {t.config.seed}" if t else trial_id

    def _log(self, event: Any) -> None:
        t, who = self.trials.get(event.trial_id), self._who(event.trial_id)
        p, m = event.progress, event.metrics
        counts = f"({p.done} done, {p.running} running, {p.failed} failed, {p.left} waiting)"
        if event.kind == "start":
            line = f"start {who} {counts}"
        elif event.kind == "result" and "epoch" in m:
            of = f"/{t.config.train.epochs}" if t else ""
            top1 = m.get("val/top1")
            speed = m.get("train/img_per_s")
            line = (f"epoch {who}: {m['epoch']}{of}"
                    + (f", val/top1 {top1:.2f}" if isinstance(top1, (int, float)) else "")
                    + (f", {speed:.0f} img/s" if isinstance(speed, (int, float)) else ""))
        elif event.kind == "done":
            line = f"end   {who} {counts}"
        elif event.kind == "failed":
            line = f"fail  {who}: {self._error_line(event.trial_id)} {counts}"
        elif event.kind == "retry":
            line = f"retry {who}: worker lost, resuming from its last checkpoint"
        else:
            return
        print(f"ablate: {line}", flush=True)

    def _error_line(self, trial_id: str) -> str:
        from ablate import record

        raw = record.read_state_raw(record.trial_dir(self.results, trial_id)) \
            if self.results else None
        error = (raw or {}).get("error") or {}
        message = str(error.get("message") or "").strip().splitlines()
        return f"{error.get('type', 'error')}: {message[0] if message else ''}".strip()

    def show(self, line: str) -> None:
        """A passing message on a terminal (Ray is starting); nothing elsewhere."""
        if self.live is not None:
            self.live.status(line)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


def print_summary(summary: Any, trials: list, results: Path) -> None:
    from ablate.failures import RECURRING, group_by_first_line

    n_done = len(summary.done) + len(summary.skipped)
    print(f"ablate: {n_done} of {len(trials)} trials finished ({len(summary.done)} in this run), "
          f"{len(summary.failed)} failed, {len(summary.unfinished)} unfinished, in "
          f"{duration(summary.wall_s)}")
    arms = {t.id: t.arm for t in trials}
    if summary.retried:
        print(f"  {summary.retried} attempts lost their worker (killed, or out of memory) and "
              "were retried from their last checkpoint")
    if summary.diverged:
        print(f"  {len(summary.diverged)} diverged (a finished result, recorded as such): "
              + ", ".join(f"{i} [{arms.get(i, '?')}]" for i in summary.diverged[:5]))
    groups = group_by_first_line(summary.failed)
    for line, ids in groups:
        kind = summary.failed[ids[0]].kind
        if len(ids) == 1:
            print(f"  failed ({kind}): {ids[0]} [{arms.get(ids[0], '?')}]: {line}")
        else:
            shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
            print(f"  {len(ids)} trials failed ({kind}) with: {line}\n    {shown}")
        if summary.failed[ids[0]].hint:
            print(f"    {summary.failed[ids[0]].hint}")
    recurring = [i for i, f in summary.failed.items() if f.kind in RECURRING]
    if recurring:
        held = f" ({len(summary.held)} failed before and were not started again)" \
            if summary.held else ""
        print(f"  {len(recurring)} trials failed with an error that will recur (code, "
              f"configuration or data){held}: the next run holds them; fix the cause, then "
              f"'ablate reset {shlex.quote(str(results))} --failed', or run with --retry-failed")
    if summary.failed or summary.unfinished:
        print(f"  details: ablate status {shlex.quote(str(results))}")
        if len(recurring) < len(summary.failed) or summary.unfinished:
            print(f"  resume with: ablate resume {shlex.quote(str(results))}")


def describe_changes(changed: dict[str, dict]) -> str:
    """The distinct field changes of several trials, e.g. 'train.lr 0.0005 -> 0.001'."""
    seen = dict.fromkeys(f"{k} {old!r} -> {new!r}" for c in changed.values()
                         for k, (old, new) in sorted(c.items()))
    shown = list(seen)[:3]
    return "; ".join(shown) + ("; ..." if len(seen) > 3 else "")
