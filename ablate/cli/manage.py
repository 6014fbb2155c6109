"""``ablate reset`` and ``ablate prune``: delete chosen trials, or finished trials' checkpoints.

Both hold the results folder's driver lock (the one ``ablate run`` holds) while they look and
delete, so they refuse to work under a running sweep. Reset lists what it will delete and asks
first (``--yes`` skips the question; without a terminal, ``--yes`` is required).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reset", help="delete chosen trials' records and checkpoints, to run them from scratch",
        description="Delete the record and checkpoints of the chosen trials of RESULTS_DIR, "
                    "after listing them and asking; the next 'ablate run' or 'ablate resume' "
                    "runs them from their first epoch. The filters combine: a trial is reset "
                    "when it matches every one given.")
    p.add_argument("results", type=Path, metavar="RESULTS_DIR")
    p.add_argument("--trial", action="append", default=[], metavar="ID",
                   help="a trial id or a unique prefix of one (repeatable)")
    p.add_argument("--arm", action="append", default=[], metavar="LABEL[,LABEL...]",
                   help="trials with this label, or a part of it such as the arm or "
                   "axis=value, as --only takes them (repeatable)")
    p.add_argument("--failed", action="store_true", help="trials whose state is failed")
    p.add_argument("--yes", action="store_true", help="delete without asking")
    p.set_defaults(func=reset_command)

    p = sub.add_parser(
        "prune", help="delete the checkpoints of finished trials, except the best",
        description="Delete the epoch checkpoints of every finished (done or diverged) trial "
                    "of RESULTS_DIR; each keeps best.pt, the weights of its best val/top1. "
                    "Unfinished trials keep theirs: they resume from them.")
    p.add_argument("results", type=Path, metavar="RESULTS_DIR")
    p.add_argument("--keep-last", action="store_true",
                   help="also keep each trial's newest epoch checkpoint")
    p.add_argument("--dry-run", action="store_true", help="list what would go; delete nothing")
    p.set_defaults(func=prune_command)


def reset_command(args: argparse.Namespace) -> int:
    from ablate import bookkeeping, manage
    from ablate.errors import TrialError

    manage.check_filters(tuple(args.trial), tuple(args.arm), args.failed)
    manage.check_results_dir(args.results)
    with bookkeeping.driver_lock(args.results):
        chosen = manage.choose_trials(args.results, ids=tuple(args.trial),
                                      arms=tuple(args.arm), failed=args.failed)
        if not chosen:
            print("ablate: no trial folder matches; nothing to reset")
            return 0
        total = f"{len(chosen)} trial folders ({_mb(sum(t.bytes for t in chosen))})"
        if not args.yes and not sys.stdin.isatty():
            raise TrialError(f"reset would delete {total}, and asks first, but stdin is not "
                             "a terminal", key="reset", hint="pass --yes to delete them")
        print(f"ablate: reset deletes the records and checkpoints of {len(chosen)} trials:")
        for t in chosen:
            print(f"  {t.folder}  [{t.arm}] {t.state}: {t.files} files, {t.checkpoints} "
                  f"checkpoints, {_mb(t.bytes)}")
        if not args.yes and not _confirm(f"delete {total}? [y/N] "):
            print("ablate: nothing deleted")
            return 1
        freed = manage.reset_trials(args.results, chosen)
    print(f"ablate: reset {len(chosen)} trials, freed {_mb(freed)}; the next 'ablate run' "
          f"or 'ablate resume {args.results}' runs them from scratch")
    return 0


def prune_command(args: argparse.Namespace) -> int:
    from ablate import bookkeeping, manage

    manage.check_results_dir(args.results)
    with bookkeeping.driver_lock(args.results):
        found, unfinished = manage.prunable(args.results, keep_last=args.keep_last)
        for p in found:
            print(f"  {p.id} [{p.arm}]: {len(p.delete)} files, {_mb(p.bytes)}; keeps "
                  f"{', '.join(p.keep) or 'nothing'}")
        freed = sum(p.bytes for p in found) if args.dry_run else manage.prune_checkpoints(found)
    verb = "would free" if args.dry_run else "freed"
    print(f"ablate: prune {verb} {_mb(freed)} in {len(found)} finished trials"
          + (f"; {unfinished} unfinished trials keep their checkpoints" if unfinished else ""))
    return 0


def _confirm(question: str) -> bool:
    try:
        answer = input(question)
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
