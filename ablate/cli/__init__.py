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
import sys

from ablate.errors import AblateError

# Order is the order of --help: the researcher's workflow.
COMMAND_MODULES = ("plan", "run", "train", "results")


def add_plugin_option(p: argparse.ArgumentParser) -> None:
    """``--plugin MODULE`` (repeatable): modules that register mixers, blocks or models."""
    p.add_argument("--plugin", metavar="MODULE", action="append", default=[],
                   help="import MODULE first (repeatable): a plugin that registers mixers, "
                   "block styles or models, importable from the working directory or "
                   "installed; the sweep file's 'plugins:' list does the same")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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


if __name__ == "__main__":
    sys.exit(main())
