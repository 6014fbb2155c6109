"""Overhead of running trials through ablate on Ray Tune, on this machine's CPUs.

Three measurements (python benchmarks/runner.py; about 5 minutes on 2 cores):

1. Bare Ray Tune: N trials of ``--busy`` seconds of busy work each, on 2 CPUs, with and
   without actor reuse; reported as fit time / ideal (N x busy / 2).
2. ablate: N small-model trials (nano model, synthetic data) run by ``ablate.runner`` on
   2 CPUs; reported as wall time / (sum of the trials' own training time / 2 + Ray start-up).
   The trials' own time is ``wall_time_s`` of their result.json (the epochs, not the setup).
3. A rerun of that finished sweep with the ``ablate run`` command: it must start no trial and
   return in under 15 s.

Results go to stdout and, with ``--json FILE``, to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CPUS = 2
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no Tune console tables in the output


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def bare_tune(n: int, seconds: float, reuse: bool) -> dict:
    """N busy trials on bare Ray Tune (1 CPU each): fit time over the ideal N*s/CPUS."""
    import ray
    from ray import tune

    def trainable(config):
        busy(config["seconds"])
        tune.report({"done_work": 1})

    t0 = time.perf_counter()
    ray.init(num_cpus=CPUS, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    start_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as storage:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space={"seconds": seconds, "i": tune.grid_search(list(range(n)))},
            tune_config=tune.TuneConfig(reuse_actors=reuse),
            run_config=tune.RunConfig(storage_path=storage, verbose=0))
        t1 = time.perf_counter()
        tuner.fit()
        fit_s = time.perf_counter() - t1
    ray.shutdown()
    ideal = n * seconds / CPUS
    return {"trials": n, "busy_s": seconds, "reuse_actors": reuse, "ray_start_s": start_s,
            "fit_s": fit_s, "ideal_s": ideal, "ratio": fit_s / ideal}


SWEEP = """\
name: bench
description: runner overhead benchmark
base:
  model: {{arch: dwnet_nano}}
  data: {{name: synthetic, num_train: {num_train}, num_val: 64, num_classes: 4}}
  train: {{epochs: {epochs}, batch_size: 32, warmup_epochs: 0, mixup: 0.0, cutmix: 0.0,
          randaugment: null, reprob: 0.0, workers: 0}}
  resources: {{cpus: 1}}
seeds: {seeds}
max_trials: 1000
"""


def ablate_sweep(folder: Path, n: int, epochs: int, num_train: int) -> dict:
    """N small-model trials through ablate.runner: wall time over own compute / CPUS + start."""
    from ablate import record, runner
    from ablate.plan import load_plan

    sweep = folder / "bench.yaml"
    sweep.write_text(SWEEP.format(seeds=list(range(n)), epochs=epochs, num_train=num_train))
    _, trials = load_plan(sweep)
    results = folder / "results"
    t0 = time.perf_counter()
    summary = runner.run_plan(trials, results, name="bench", num_cpus=CPUS)
    wall = time.perf_counter() - t0
    assert len(summary.done) == n, summary
    own = sum(record.read_result(record.trial_dir(results, t.id))["wall_time_s"] for t in trials)
    ideal = own / CPUS + summary.ray_start_s
    return {"trials": n, "epochs": epochs, "wall_s": wall, "ray_start_s": summary.ray_start_s,
            "own_compute_s": own, "ideal_s": ideal, "ratio": wall / ideal,
            "sweep": str(sweep), "results": str(results)}


def rerun(sweep: str, results: str) -> dict:
    """``ablate run`` on the finished sweep: seconds, and whether any trial record changed."""
    files = sorted(p for p in Path(results, "trials").rglob("*") if p.is_file())
    before = [p.stat().st_mtime_ns for p in files]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ablate", "run", sweep, "--results", results],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    untouched = before == [p.stat().st_mtime_ns for p in files]
    return {"wall_s": wall, "exit": proc.returncode, "records_untouched": untouched,
            "started_none": "0 to run" in proc.stdout, "output": proc.stdout.splitlines()[:2]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--busy", type=float, default=4.0, help="seconds of work per bare trial")
    ap.add_argument("--epochs", type=int, default=4, help="epochs per ablate trial")
    ap.add_argument("--num-train", type=int, default=512, help="images per ablate epoch")
    ap.add_argument("--skip-bare", action="store_true")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    out: dict = {}
    if not args.skip_bare:
        for reuse in (True, False):
            r = bare_tune(args.trials, args.busy, reuse)
            out[f"bare_tune_reuse_{reuse}"] = r
            print(f"bare Tune, reuse_actors={reuse}: {r['fit_s']:.1f} s for {r['ideal_s']:.1f} s "
                  f"ideal -> {r['ratio']:.2f}x (Ray start {r['ray_start_s']:.1f} s)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        r = ablate_sweep(Path(tmp), args.trials, args.epochs, args.num_train)
        out["ablate"] = r
        print(f"ablate: {r['wall_s']:.1f} s for {r['trials']} trials, own compute "
              f"{r['own_compute_s']:.1f} s / {CPUS} + Ray start {r['ray_start_s']:.1f} s = "
              f"{r['ideal_s']:.1f} s -> {r['ratio']:.2f}x (target <= 1.25x)", flush=True)
        r = rerun(r["sweep"], r["results"])
        out["rerun"] = r
        print(f"rerun of the finished sweep: {r['wall_s']:.1f} s (target < 15 s), exit "
              f"{r['exit']}, no trial started: {r['started_none'] and r['records_untouched']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
