"""The live table of a run on a terminal, fed by runner events (no Ray); none off a terminal."""

from __future__ import annotations

import io
import pickle
import re
import sys

from rich.console import Console

from ablate import record, runner
from ablate.cli import main
from ablate.cli.display import RunDisplay
from tests.runner.conftest import tiny_trial, write_sweep

P = runner.Progress
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=120), out


def last_frame(out: io.StringIO) -> str:
    """What the terminal shows now: the text after the last redraw's erasing of lines."""
    frames = [ANSI.sub("", f) for f in out.getvalue().split("\x1b[2K")]
    return next(f for f in reversed(frames) if f.strip())


def row_of(frame: str, trial_id: str) -> list[str]:
    [line] = [line for line in frame.splitlines() if trial_id in line]
    return line.split()


def test_the_table_shows_running_trials_with_epoch_and_metric_and_the_totals():
    a, b = tiny_trial(seed=0), tiny_trial(seed=1)
    console, out = terminal()
    display = RunDisplay(tty=True, trials=[a, b], console=console)
    now = [100.0]
    display.live.clock = lambda: now[0]
    display.show("starting Ray and the first trials ...")
    assert "starting Ray" in last_frame(out)
    display.on_event(runner.Event("start", a.id, P(2, running=1, elapsed_s=3.0)))
    display.on_event(runner.Event("start", b.id, P(2, running=2, elapsed_s=4.0)))
    assert row_of(last_frame(out), b.id) == ["seed1", "1", b.id, "-", "-", "-"]
    display.on_event(runner.Event("result", a.id, P(2, running=2, elapsed_s=9.0), metrics={
        "epoch": 2, "val/top1": 81.25, "train/img_per_s": 412.4, "train/loss": 1.5}))
    frame = last_frame(out)
    assert frame.split()[:6] == ["arm", "seed", "trial", "epoch", "val/top1", "img/s"]
    assert row_of(frame, a.id) == ["seed0", "0", a.id, "2/3", "81.25", "412"]
    assert row_of(frame, b.id)[3:] == ["-", "-", "-"]
    assert "[0m09s] 0 done, 0 failed, 2 running, 0 waiting" in frame
    assert "starting Ray" not in frame
    display.on_event(runner.Event("done", a.id, P(2, done=1, running=1, elapsed_s=20.0,
                                                  eta_s=15.0)))
    frame = last_frame(out)
    assert a.id not in frame and b.id in frame
    assert "[0m20s] 1 done, 0 failed, 1 running, 0 waiting, about 0m15s left" in frame
    # between events the clock runs on: elapsed up, time left down
    now[0] += 5.0
    display.live._live.refresh()
    assert "[0m25s] 1 done, 0 failed, 1 running, 0 waiting, about 0m10s left" in last_frame(out)
    display.close()
    assert display.live._live is None


def test_a_failure_prints_its_first_line_above_the_table(tmp_path):
    t = tiny_trial(seed=0)
    tdir = record.trial_dir(tmp_path, t.id)
    tdir.mkdir(parents=True)
    record.write_state(tdir, record.FAILED, error={"type": "ValueError", "message": "boom\nmore"})
    console, out = terminal()
    display = RunDisplay(tty=True, trials=[t], results=tmp_path, console=console)
    display.on_event(runner.Event("start", t.id, P(1, running=1)))
    display.on_event(runner.Event("failed", t.id, P(1, failed=1)))
    display.close()
    text = ANSI.sub("", out.getvalue())
    assert f"ablate: trial {t.id} [seed0] seed 0 failed: ValueError: boom\n" in text
    assert "0 done, 1 failed, 0 running, 0 waiting" in text


def _fake_run_plan(trials, results, *, on_event, **kw):
    """Stands in for the runner: one trial starts, reports an epoch and is left unfinished."""
    t = trials[0]
    on_event(runner.Event("start", t.id, P(len(trials), running=1)))
    on_event(runner.Event("result", t.id, P(len(trials), running=1),
                          metrics={"epoch": 1, "val/top1": 55.5, "train/img_per_s": 99.0}))
    return runner.RunSummary(results, skipped=[], done=[], diverged=[], failed={},
                             unfinished=[x.id for x in trials], wall_s=1.0, ray_start_s=0.0)


def _run(tmp_path, monkeypatch, capsys, *, tty: bool) -> str:
    sweep = write_sweep(tmp_path / "s.yaml", seeds=[0])
    monkeypatch.setattr(runner, "run_plan", _fake_run_plan)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: tty, raising=False)
    assert main(["run", str(sweep), "--results", str(tmp_path / "r")]) == 1
    return capsys.readouterr().out


def test_a_run_off_a_terminal_prints_lines_and_no_table(tmp_path, monkeypatch, capsys):
    out = _run(tmp_path, monkeypatch, capsys, tty=False)
    assert "\x1b[" not in out and "img/s  " not in out and "val/top1  " not in out
    lines = out.splitlines()
    assert any(line.startswith("ablate: start ") for line in lines)
    assert any(line.startswith("ablate: epoch ") and ": 1/3, val/top1 55.50, 99 img/s" in line
               for line in lines)
    assert "0 of 1 trials finished" in out


def test_a_run_on_a_terminal_draws_the_table_then_the_summary(tmp_path, monkeypatch, capsys):
    out = _run(tmp_path, monkeypatch, capsys, tty=True)
    assert "ablate: epoch " not in out
    table = ANSI.sub("", out)
    assert "val/top1" in table and "55.50" in table and "1/3" in table
    summary = out.index("0 of 1 trials finished")
    assert summary > out.rindex("55.50")  # the table is over when the summary prints


def test_a_live_display_can_be_pickled_as_tune_pickles_its_callbacks():
    """Tune saves its callbacks (ours reports to the display) with pickle at the start."""
    t = tiny_trial(seed=0)
    console, _ = terminal()
    display = RunDisplay(tty=True, trials=[t], console=console)
    display.on_event(runner.Event("start", t.id, P(1, running=1)))
    try:
        copy = pickle.loads(pickle.dumps(display.on_event)).__self__
    finally:
        display.close()
    assert copy.trials == display.trials and copy.live is None
