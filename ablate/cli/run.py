"""``ablate run``, ``ablate resume`` and ``ablate status``: run a sweep on Ray and watch it.

The runner (``ablate.runner``) does the work and reports through events, which
``ablate.cli.display`` shows (a live table on a terminal, a line per event otherwise, and the
summary); this module holds the commands, their checks before launch and the status table.
``run`` and ``resume`` exit 0 when every trial finished, 1 when some failed or are unfinished,
2 on a user's mistake (nothing written), and 130 or 143 after the summary when stopped by
SIGINT (Ctrl-C) or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ablate.cli import add_override_options, add_plugin_option, override_flags, plan_options
from ablate.cli.live import duration as _duration
from ablate.cli.plan import add_deep_check_option


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a sweep on Ray Tune (skips trials already done)",
                       description="Plan SWEEP.yaml and run every trial not done yet as a Ray "
                       "Tune trial; finished trials in the results folder are never rerun.")
    p.add_argument("sweep", metavar="SWEEP.yaml", help="the sweep file")
    p.add_argument("--results", metavar="DIR", help="results folder (default results/<name>)")
    _ray_options(p)
    p.add_argument("--yes", action="store_true",
                   help="confirm a plan above max_trials, or reusing another sweep's folder")
    p.add_argument("--rerun-changed", action="store_true",
                   help="rerun finished trials whose stored configuration differs from the "
                   "plan's (a default changed in the code); their old records are kept under "
                   "RESULTS/replaced/")
    _retry_option(p)
    _debug_option(p)
    add_deep_check_option(p)
    add_plugin_option(p)
    add_override_options(p)
    p.set_defaults(func=run_command)

    p = sub.add_parser("resume", help="finish what is left of a sweep's results folder",
                       description="Run the plan stored in RESULTS_DIR/sweep.json again: done "
                       "trials are skipped, interrupted and failed ones continue from their "
                       "last checkpoint.")
    p.add_argument("results", metavar="RESULTS_DIR")
    _ray_options(p)
    _retry_option(p)
    _debug_option(p)
    add_deep_check_option(p)
    p.set_defaults(func=resume_command)

    p = sub.add_parser("status", help="show every trial's state (also during a run)")
    p.add_argument("results", metavar="RESULTS_DIR")
    p.add_argument("--json", action="store_true", help="one JSON object per trial, as a list")
    p.set_defaults(func=status_command)


def _retry_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--retry-failed", action="store_true",
                   help="start again the trials whose last attempt failed in a way that would "
                   "recur (bad code, configuration or data); without it they are held until "
                   "fixed and reset with 'ablate reset DIR --failed'")


def _debug_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true",
                   help="no Ray: run the trials one after another in this process, and let the "
                   "first error raise with its traceback, so a debugger can stop there "
                   "(python -m pdb -m ablate run SWEEP.yaml --debug); no concurrency, no "
                   "retries, --address and --max-concurrent unused")


def _ray_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", metavar="ADDR",
                   help="join this Ray cluster (e.g. ray://head:10001 or auto) instead of "
                   "starting a local Ray; its nodes must see the results folder (default: "
                   "the RAY_ADDRESS environment variable when it is set)")
    p.add_argument("--max-concurrent", type=_positive_int, metavar="N",
                   help="at most N trials at once (default: the sweep's max_concurrent)")
    p.add_argument("--callback", metavar="MODULE:FACTORY", action="append", default=[],
                   help="attach Ray Tune callbacks (repeatable): import MODULE (from the "
                   "working directory or installed) and pass what FACTORY() returns, a "
                   "ray.tune.Callback or a list of them, to Tune (an MLflow or W&B logger)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of trials >= 1, got {text!r}")
    return value


# ------------------------------------------------------------------------------ run / resume


def run_command(args: argparse.Namespace) -> int:
    from ablate.plan import load_plan

    callbacks = _load_callbacks(args)
    sweep, trials = load_plan(args.sweep, confirm=args.yes, plugins=tuple(args.plugin),
                              **plan_options(args))
    results = Path(args.results) if args.results else Path(sweep.results_dir)
    check_results_folder(results, "--results" if args.results else "results_dir")
    _check_folder_owner(results, sweep.name, args.yes)
    return _execute(trials, results, name=sweep.name, source=str(sweep.path),
                    description=sweep.description,
                    max_concurrent=args.max_concurrent or sweep.max_concurrent,
                    address=args.address, rerun_changed=args.rerun_changed,
                    retry_failed=args.retry_failed, overrides=override_flags(args),
                    callbacks=callbacks, debug=args.debug,
                    check_data=_data_check(unchanged=False, deep=args.deep_data_check))


def resume_command(args: argparse.Namespace) -> int:
    from ablate import bookkeeping

    callbacks = _load_callbacks(args)
    results = Path(args.results)
    check_results_folder(results, "RESULTS_DIR")
    manifest = bookkeeping.read_manifest(results)
    if recorded := [t for t in manifest["trials"] if t.recorded_id]:
        print(f"ablate: {len(recorded)} trials of the plan hold a value that is no longer the "
              "default (a default changed in ablate since the plan was made): they run under "
              "their configuration and id as planned; 'ablate run SWEEP.yaml' plans them under "
              "today's defaults", flush=True)
    return _execute(manifest["trials"], results, name=manifest["name"],
                    source=manifest.get("source"), description=manifest.get("description"),
                    max_concurrent=args.max_concurrent or manifest.get("max_concurrent"),
                    address=args.address, retry_failed=args.retry_failed,
                    callbacks=callbacks, debug=args.debug,
                    check_data=_data_check(unchanged=True, deep=args.deep_data_check))


def _data_check(*, unchanged: bool, deep: bool) -> Callable[[list], None] | None:
    """The data check of the trials a run is about to start, once it knows which they are.

    ``unchanged`` (resume, which does not plan again): each data folder still exists with the
    file list its trials' ids were planned with. ``deep`` (``--deep-data-check``): every image
    of those folders decodes. Finished trials are not checked: nothing reads their data again.
    """
    if not (unchanged or deep):
        return None

    def check(todo: list) -> None:
        from ablate.cli.plan import deep_check_data
        from ablate.datafiles import check_data_unchanged

        if unchanged:
            check_data_unchanged(todo)
        if deep:
            deep_check_data(todo)

    return check


def _load_callbacks(args: argparse.Namespace) -> list:
    """The ``--callback`` flags' Tune callbacks; refused with ``--debug``, which has no Tune."""
    from ablate.cli.callbacks import FLAG, CallbackError, load_callbacks

    if args.debug and args.callback:
        raise CallbackError("Tune callbacks need a Ray run, and --debug runs the trials here "
                            "without Ray", key=FLAG, hint="drop --callback or --debug")
    return load_callbacks(args.callback)


def check_results_folder(results: Path, key: str) -> None:
    """TrialError unless ``results`` is, or can be made, a folder this user may write into.

    Checked before anything is written, so a typo costs nothing: a file in the way, a name
    longer than the file system takes, an ancestor that is not a folder or not writable.
    """
    from ablate.errors import TrialError

    path = Path(os.path.abspath(results))
    existing = next(p for p in (*path.parents[::-1], path)[::-1] if _exists(p))
    limit = os.pathconf(existing, "PC_NAME_MAX")
    too_long = [part for part in path.relative_to(existing).parts
                if len(os.fsencode(part)) > limit]
    if too_long or len(os.fsencode(str(path))) > os.pathconf(existing, "PC_PATH_MAX") - 100:
        raise TrialError(f"name too long for the file system (at most {limit} bytes a name)",
                         file=results, key=key, hint="pass a shorter results folder")
    check_not_a_file(results, key, existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise TrialError(f"{existing} is not writable by this user", file=results, key=key,
                         hint="pass a results folder you can write to")


def check_not_a_file(results: Path, key: str, existing: Path | None = None) -> None:
    """TrialError when ``results``, or the nearest of its ancestors that exists, is a file."""
    from ablate.errors import TrialError

    path = Path(os.path.abspath(results))
    if existing is None:
        existing = next(p for p in (*path.parents[::-1], path)[::-1] if _exists(p))
    if existing == path and not path.is_dir():
        from ablate.record import folder_hint

        hint = folder_hint(results) if Path(results).suffix in (".yaml", ".yml") else \
            "pass a folder (it is created if missing)"
        raise TrialError("is a file, not a results folder", file=results, key=key, hint=hint)
    if not existing.is_dir():
        raise TrialError(f"{existing} is a file, so no folder can be made under it",
                         file=results, key=key, hint="pass another results folder")


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long to look up: it does not exist
        return False


def _join_from_env(address: str | None, announce: bool = True) -> tuple[str | None, str]:
    """The cluster to join: --address, else RAY_ADDRESS (joined, and said so), else none."""
    if address is not None and not address.strip():  # an empty shell variable, say
        from ablate.errors import ClusterError

        raise ClusterError("empty cluster address", key="--address",
                           hint="give HOST:PORT, ray://HOST:PORT or auto; leave --address out "
                           "for a local Ray")
    if address:
        return address, "--address"
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if not env:
        return None, "--address"
    if announce:
        _announce_join(env)
    return env, "RAY_ADDRESS"


def _announce_join(address: str) -> None:
    print(f"ablate: joining the Ray cluster at {address} from RAY_ADDRESS (unset RAY_ADDRESS to "
          "start a local Ray instead)", flush=True)


def _check_folder_owner(results: Path, name: str, yes: bool) -> None:
    from ablate import bookkeeping
    from ablate.errors import TrialError

    other = None if yes else bookkeeping.other_sweep(results, name)
    if other is not None:
        raise TrialError(f"this results folder holds sweep '{other}', not '{name}'",
                         file=results, hint="pass another --results folder, or --yes to add "
                         "this sweep's trials to it")


def _execute(trials: list, results: Path, debug: bool = False,
             check_data: Callable[[list], None] | None = None, **kw: Any) -> int:
    """Run the plan with a progress display, print the summary, then tables and figures.

    ``debug``: the in-process backend, errors propagating (for pdb), instead of Ray.
    ``check_data``: called with the trials to run once the runner has sorted the plan (under
    its lock, before any backend starts); its error stops the run with nothing launched.
    """
    from ablate import runner
    from ablate.cli.display import RunDisplay, print_summary, print_triage

    if debug:
        from ablate.inprocess import InProcessBackend

        kw.pop("callbacks", None)  # none: _load_callbacks refused them with --debug
        kw["backend"], joining = InProcessBackend(propagate=True), None
    else:
        kw["address"], kw["address_from"] = _join_from_env(kw.get("address"), announce=False)
        joining = kw["address"] if kw["address_from"] == "RAY_ADDRESS" else None
    display = RunDisplay(tty=sys.stdout.isatty(), trials=trials, results=results)

    def on_triage(work: Any) -> None:  # the runner's sorting of the plan, before anything runs
        print_triage(work, trials, results, name=kw["name"])
        if work.todo and check_data is not None:
            check_data(work.todo)
        if work.todo and joining:
            _announce_join(joining)
        if work.todo and display.tty:
            display.show("running the first trial here ..." if debug
                         else "starting Ray and the first trials ...")

    try:
        summary = runner.run_plan(trials, results, on_event=display.on_event,
                                  on_triage=on_triage, **kw)
    finally:
        display.close()
    print_summary(summary, trials, results)
    if summary.interrupted:
        print(f"ablate: stopped by {signal.Signals(summary.interrupted).name}; tables and "
              "figures not updated", flush=True)
        return 128 + summary.interrupted  # the shell's convention: 130 for SIGINT, 143 SIGTERM
    if summary.done or (summary.skipped and not _results_up_to_date(results)):
        _make_results(results)
    elif summary.skipped:
        print(f"ablate: tables and figures in {results} are up to date")
    return 1 if summary.failed or summary.unfinished else 0


def _results_up_to_date(results: Path) -> bool:
    """Whether the collected tables are newer than every trial record (nothing to redo)."""
    from ablate import record

    table = results / "trials.parquet"
    if not table.exists():
        return False
    newest = max((p.stat().st_mtime for d in record.list_trial_dirs(results)
                  for p in d.glob("*.json*")), default=0.0)
    return newest < table.stat().st_mtime


def _make_results(results: Path) -> None:
    """Collect the tables, draw the figures, write the report; say where each went."""
    from ablate.cli.display import warn
    from ablate.collect import collect_results
    from ablate.errors import AblateError
    from ablate.figures import draw_figures
    from ablate.report import write_report

    try:
        summary = collect_results(results)
    except AblateError as err:
        print(f"ablate: no tables: {err}", file=sys.stderr)
        return
    for warning in summary.warnings:
        warn(warning)
    print(f"ablate: tables: {results / 'trials.parquet'}, {results / 'epochs.parquet'} "
          f"({summary.rows} trials)")
    for what, make in (("figures", draw_figures),
                       ("report", lambda path: write_report(path, warn=warn))):
        try:
            paths = make(results)
        except AblateError as err:
            print(f"ablate: no {what}: {err}", file=sys.stderr)
            continue
        folders = sorted({str(Path(p).parent) for p in paths})
        print(f"ablate: {what}: {len(paths)} files in {', '.join(folders) or results}")


# ------------------------------------------------------------------------------ status


def status_command(args: argparse.Namespace) -> int:
    import dataclasses

    from ablate import bookkeeping

    rows = bookkeeping.sweep_status(Path(args.results))
    if args.json:
        out = []
        for r in rows:
            d = dataclasses.asdict(r)
            d["error"] = r.error.first_line if r.error else None
            out.append(d)
        print(json.dumps(out, indent=1))
        return 0
    now = time.time()
    table = [("id", "arm", "state", "epochs", "best val/top1", "updated")]
    for r in rows:
        top1 = f"{r.best_top1:.2f}" if r.best_top1 is not None else "-"
        age = f"{_duration(now - r.updated)} ago" if r.updated else "-"
        table.append((r.id, _clip(r.arm, 40), r.state, f"{r.epochs_done}/{r.epochs}", top1, age))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    print(", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    for r in rows:
        if r.error:
            print(f"{r.id} failed ({r.error.kind}): {r.error.first_line}")
    corrupt = [r for r in rows if r.problem]
    for r in corrupt:
        print(f"ablate: error: {r.problem}", file=sys.stderr)
    return 2 if corrupt else 0


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"
