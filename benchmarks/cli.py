"""Benchmark: how fast the command line answers (issue 11 §5, on 2 CPU cores).

    python benchmarks/cli.py [--repeat 5]

Each command runs in a fresh interpreter, as a user's shell runs it; the median of the repeats
is reported. Targets: ``ablate --help`` < 0.5 s; ``ablate status`` of a 12-trial results
folder < 1 s; ``ablate plan sweeps/quickstart.yaml`` < 3 s once the model counts are cached
(the first plan, which fills the cache in a fresh cache folder, is reported too, untargeted).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("results_factory",
                                               ROOT / "tests" / "results" / "factory.py")
factory = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(factory)


def seconds(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ablate", *argv], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ablate-bench-cli-"))
    env = {**os.environ, "ABLATE_CACHE_DIR": str(root / "cache")}
    try:
        results = root / "results"
        with factory.fast_writes():
            factory.write_grid(results, 12, epochs=10, axes=("arch", "group_size", "window"))
        quick = str(ROOT / "sweeps" / "quickstart.yaml")
        first = seconds(["plan", quick], env)  # fills the cache
        rows = [("ablate --help", ["--help"], 0.5),
                ("ablate status (12 trials)", ["status", str(results)], 1.0),
                ("ablate plan sweeps/quickstart.yaml, cached", ["plan", quick], 3.0)]
        print(f"{'command':<44} {'median s':>9} {'target':>7}  ok")
        print(f"{'ablate plan sweeps/quickstart.yaml, first':<44} {first:9.2f} {'':>7}")
        for name, argv, target in rows:
            secs = statistics.median(seconds(argv, env) for _ in range(args.repeat))
            print(f"{name:<44} {secs:9.2f} {target:7.1f}  {'yes' if secs < target else 'NO'}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
