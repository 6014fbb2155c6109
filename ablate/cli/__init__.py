"""The ``ablate`` command line. The only layer that prints.

Each command group lives in its own module with ``add_parser(subparsers)``, which registers
its subcommands and sets ``func`` (``args -> exit status``). Modules import heavy libraries
(torch, ray, pandas) inside their handlers, so ``ablate --help`` stays fast.

The project's own errors (:class:`ablate.errors.AblateError`) become one line on stderr and
exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import NoReturn

from ablate.errors import AblateError

# Order is the order of --help: the researcher's workflow.
COMMAND_MODULES = ("plan", "run", "train", "results", "manage")


def add_plugin_option(p: argparse.ArgumentParser) -> None:
    """``--plugin MODULE`` (repeatable): modules that register mixers, blocks or models."""
    p.add_argument("--plugin", metavar="MODULE", action="append", default=[],
                   help="import MODULE first (repeatable): a plugin that registers mixers, "
                   "block styles or models, importable from the working directory or "
                   "installed; the sweep file's 'plugins:' list does the same")


def add_override_options(p: argparse.ArgumentParser, *, select: bool = True) -> None:
    """``--set KEY=VALUE`` (repeatable) and, with ``select``, ``--only`` and ``--seeds``."""
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                   help="override a key of the sweep file after its extends (repeatable): "
                   "train.epochs=1 (= base.train.epochs), data.root=/scratch/x, seeds=[0,1], "
                   "max_concurrent=2; VALUE is read as YAML and checked as in the file. On a "
                   "model/data/train key, V1,V2 makes a grid axis (quote a value holding a "
                   "comma: 'data.root=\"/a,b\"')")
    if select:
        p.add_argument("--only", metavar="LABEL[,LABEL...]", action="append", default=[],
                       help="keep only the trials with these labels (repeatable); a label's "
                       "part selects every trial that has it: an arm, or axis=value")
        p.add_argument("--seeds", metavar="S[,S...]",
                       help="keep only the trials of these seeds of the sweep, e.g. 0,1")


def plan_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of ``ablate.plan.load_plan`` that the override options give."""
    out = {"overrides": tuple(args.overrides)}
    if hasattr(args, "only"):
        out |= {"only": tuple(args.only), "seeds": _seeds(args.seeds)}
    return out


def override_flags(args: argparse.Namespace) -> list[str]:
    """The override options as given, e.g. ["--set train.epochs=1", "--only se"] (recorded
    with the plan in sweep.json)."""
    flags = [f"--set {o}" for o in args.overrides]
    flags += [f"--only {o}" for o in getattr(args, "only", [])]
    if getattr(args, "seeds", None):
        flags.append(f"--seeds {args.seeds}")
    return flags


def _seeds(text: str | None) -> tuple[int, ...]:
    from ablate.errors import SpecError

    if text is None:
        return ()
    try:
        seeds = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise SpecError("expected seeds as whole numbers joined by commas", key=f"--seeds {text}",
                        hint="e.g. --seeds 0,1") from None
    return tuple(dict.fromkeys(seeds))


class Parser(argparse.ArgumentParser):
    """argparse's parser, with a misused command line reported as the project's errors are:
    one line (argparse puts its usage block first), exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}; see '{self.prog} --help'", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="ablate",
        description=(
            "Run ablation studies of vision models (local attention vs dynamic depth-wise "
            "convolution): declare a sweep in YAML, plan it, run it on Ray Tune with "
            "crash-safe resume, and turn the trial records into parquet tables, figures "
            "and paper-style tables."
        ),
        epilog=(
            "workflow: ablate plan sweeps/NAME.yaml -> ablate run sweeps/NAME.yaml -> "
            "ablate status results/NAME -> ablate figures results/NAME. "
            "Run 'ablate COMMAND --help' for each command's options."
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"ablate.cli.{name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Other libraries speak only of problems (matplotlib's font cache, fontTools' PDF subsetting
    # and the like log at INFO); ablate's own progress is INFO, everything is DEBUG with -v.
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("ablate").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not args.verbose:
        logging.getLogger("fontTools").setLevel(logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except AblateError as err:
        print(f"ablate: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ablate: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader stopped early ('| head'): quietly, as cat would
        _stdout_to_devnull()
        return 141  # 128 + SIGPIPE, the status a shell shows for a command killed this way


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null, so that Python's final flush at exit does not raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file descriptor (a test's capture)
        pass
    finally:
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
