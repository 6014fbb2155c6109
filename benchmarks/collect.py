"""Benchmark: collecting 10,000 trials x 100 epochs, re-collecting after 100 more, drawing.

    python benchmarks/collect.py [--trials 10000] [--epochs 100] [--more 100] [--keep DIR]

Records are generated through ablate.record by tests/results/factory.py (fsync off while
generating; generation is not timed). Targets (issue 7, on 2 CPU cores): full collect < 15 s,
re-collect after 100 more finished trials < 2 s, all figures (PNG + PDF) < 10 s.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import tempfile
import time
from pathlib import Path

from ablate.collect import collect_results
from ablate.figures import draw_figures

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("results_factory",
                                               ROOT / "tests" / "results" / "factory.py")
factory = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(factory)

# A channel-sharing ablation: 4 mixers x 5 group sizes x 2 window schemes = 40 arms.
AXES = ("arch", "group_size", "window")


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--more", type=int, default=100)
    parser.add_argument("--keep", type=Path, help="generate here and keep it (default: a temp dir)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="ablate-bench-"))
    results = root / "bench"
    try:
        with factory.fast_writes():
            gen, _ = timed(lambda: factory.write_grid(results, args.trials, epochs=args.epochs,
                                                      axes=AXES))
        print(f"generated {args.trials} trials x {args.epochs} epochs in {gen:.1f} s")
        rows = []
        full, s = timed(lambda: collect_results(results))
        rows.append((f"collect {s.rows} trials, {s.epoch_rows} epoch rows", full, 15.0))
        same, s = timed(lambda: collect_results(results))
        rows.append(("re-collect, nothing changed", same, None))
        with factory.fast_writes():
            factory.write_grid(results, args.more, epochs=args.epochs, axes=AXES,
                               first_seed=1_000_000)
        more, s = timed(lambda: collect_results(results))
        rows.append((f"re-collect after {s.new} more finished trials", more, 2.0))
        draw, paths = timed(lambda: draw_figures(results))
        rows.append((f"draw {len(paths)} figure files (png + pdf)", draw, 10.0))
        print(f"\n{'step':<52} {'seconds':>8} {'target':>8}  ok")
        for name, secs, target in rows:
            ok = "" if target is None else ("yes" if secs < target else "NO")
            print(f"{name:<52} {secs:8.2f} {target or '':>8}  {ok}")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
