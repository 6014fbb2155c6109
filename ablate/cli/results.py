"""``ablate collect|figures|report RESULTS_DIR``: trial records -> parquet, figures, tables.

``figures`` and ``report`` collect first: collecting is incremental and writes nothing when the
tables are up to date, so they always draw from the current records.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def add_parser(sub) -> None:
    def folder(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("results_dir", type=Path, metavar="RESULTS_DIR",
                       help="a sweep's results folder, e.g. results/group_size_mlp")
        return p

    p = folder(sub.add_parser(
        "collect", help="gather trial records into trials.parquet and epochs.parquet",
        description="Read every trials/<id>/ record under RESULTS_DIR and (re)write "
                    "trials.parquet (one row per trial) and epochs.parquet (one row per trial "
                    "and epoch). Incremental: only new or changed trials are read."))
    p.add_argument("--full", action="store_true",
                   help="reread every trial, not only those with a changed record file")
    p.set_defaults(func=collect_command)
    p = folder(sub.add_parser(
        "figures", help="draw the ablation figures into RESULTS_DIR/figures",
        description="Collect, then draw the figures that fit the axes the sweep varied."))
    p.add_argument("--format", dest="formats", nargs="+", default=["png", "pdf"],
                   choices=["png", "pdf", "svg"], help="file formats (default: png pdf)")
    p.set_defaults(func=figures_command)
    p = folder(sub.add_parser(
        "report", help="write paper-style tables into RESULTS_DIR/tables",
        description="Collect, then write Markdown and LaTeX tables and tables/claims.csv: the "
                    "setting, mean ± std over seeds per arm with a 95% CI against the "
                    "baseline, params, FLOPs, the paper's numbers, and each claim decided by a "
                    "named test (Welch / TOST, Holm-corrected) with the seeds it still needs."))
    p.set_defaults(func=report_command)


def _collect(results_dir: Path, quiet: bool = False, full: bool = False) -> None:
    from ablate.cli.display import warn
    from ablate.collect import collect_results

    summary = collect_results(results_dir, full=full)
    for warning in summary.warnings:
        warn(warning)
    if summary.written or not quiet:
        print(f"collected {summary.rows} trials ({summary.new} new, {summary.updated} updated, "
              f"{summary.unchanged} unchanged, {summary.skipped} skipped), "
              f"{summary.epoch_rows} epoch rows -> {results_dir}/trials.parquet, epochs.parquet")


def collect_command(args: argparse.Namespace) -> int:
    _collect(args.results_dir, full=args.full)
    return 0


def figures_command(args: argparse.Namespace) -> int:
    from ablate.figures import draw_figures

    logging.getLogger("fontTools").setLevel(logging.WARNING)  # PDF font subsetting chatter
    _collect(args.results_dir, quiet=True)
    paths = draw_figures(args.results_dir, formats=tuple(args.formats))
    for path in paths:
        print(path)
    if not paths:
        print("no figure: no finished trial yet")
    return 0


def report_command(args: argparse.Namespace) -> int:
    from ablate.cli.display import warn
    from ablate.report import write_report

    _collect(args.results_dir, quiet=True)
    for path in write_report(args.results_dir, warn=warn):
        print(path)
    return 0
