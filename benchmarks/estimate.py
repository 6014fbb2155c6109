"""How close ``ablate plan --estimate`` comes to a real run: estimate vs actual, per trial.

Runs ``ablate plan SWEEP --estimate --json`` (default: the quickstart), then reads a finished
results folder of that sweep, or runs the sweep into a temporary one when none is given, and
prints per trial the estimated and the actual training time (result.json's ``wall_time_s``:
its epochs, without process start and data set loading, as the estimate's ``train_s``) and
their ratio (and, less sensitive to a busy machine, the trial's fastest epoch times its epochs
over the estimate), then the sweep's wall time: estimated by the schedule, actual from the
first trial's record to the last one's result. Target: every ratio within a factor of 1.5.

    python benchmarks/estimate.py --results /tmp/est-qs      # an existing run of the sweep
    python benchmarks/estimate.py                            # runs the quickstart (6-10 min)

Both sides depend on what else runs on the machine; the load average is printed before and
after, and an estimate made on a quiet machine under-predicts a run made on a busy one.
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

TARGET = 1.5


def ablate(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "ablate", *args], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        sys.exit(f"ablate {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def actual(results: Path) -> dict[str, dict]:
    """Trial id -> its wall time and start/end, from the records of a finished run."""
    out = {}
    for tdir in sorted((results / "trials").iterdir()):
        result = tdir / "result.json"
        if not result.exists():
            continue
        r = json.loads(result.read_text())
        trial = json.loads((tdir / "trial.json").read_text())
        epochs = [json.loads(line)["time/epoch_s"]
                  for line in (tdir / "metrics.jsonl").read_text().splitlines() if line]
        out[trial["id"]] = {"wall_s": r["wall_time_s"], "state": r["state"],
                            "fastest_s": min(epochs) * len(epochs),
                            "start": (tdir / "trial.json").stat().st_mtime,
                            "end": result.stat().st_mtime}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", nargs="?", default="sweeps/quickstart.yaml")
    ap.add_argument("--results", type=Path, help="a finished results folder of SWEEP "
                    "(default: run the sweep into a temporary folder)")
    ap.add_argument("--steps", type=int, default=5, help="steps timed per model")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    print(f"load average before {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    report = json.loads(ablate("plan", args.sweep, "--estimate", "--json", "--no-stats",
                               "--estimate-steps", str(args.steps)))
    est = report["estimate"]
    with tempfile.TemporaryDirectory(prefix="ablate-bench-") as tmp:
        results = args.results
        if results is None:
            results = Path(tmp) / "run"
            ablate("run", args.sweep, "--results", str(results))
        real = actual(results)
    print(f"load average after  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = [{"id": r["id"], "arm": r["arm"], "seed": r["seed"], "estimate_s": r["train_s"],
             "actual_s": real[r["id"]]["wall_s"],
             "ratio": real[r["id"]]["wall_s"] / r["train_s"],
             "fastest_ratio": real[r["id"]]["fastest_s"] / r["train_s"]}
            for r in est["trials"] if r["id"] in real]
    missing = [r["id"] for r in est["trials"] if r["id"] not in real]
    print(f"\n{'id':12} {'arm':22} {'seed':>4} {'estimate s':>10} {'actual s':>9} "
          f"{'actual/est':>10} {'fastest/est':>11}")
    for r in rows:
        flag = "" if 1 / TARGET <= r["ratio"] <= TARGET else "  outside 1.5x"
        print(f"{r['id']:12} {r['arm']:22} {r['seed']:>4} {r['estimate_s']:>10.1f} "
              f"{r['actual_s']:>9.1f} {r['ratio']:>10.2f} {r['fastest_ratio']:>11.2f}{flag}")
    print("fastest/est: the trial's fastest epoch x its epochs, over the estimate: what the "
          "run took without the epochs another process slowed down")
    if missing:
        print(f"{len(missing)} trials have no result in {results}: {', '.join(missing)}")
    if rows:
        span = max(v["end"] for v in real.values()) - min(v["start"] for v in real.values())
        est_sum, act_sum = sum(r["estimate_s"] for r in rows), sum(r["actual_s"] for r in rows)
        inside = sum(1 / TARGET <= r["ratio"] <= TARGET for r in rows)
        print(f"\nsum of trial times: estimate {est_sum:.0f} s, actual {act_sum:.0f} s "
              f"(ratio {act_sum / est_sum:.2f})")
        print(f"sweep wall time: estimate {est['makespan_s']:.0f} s (with model builds; "
              f"at most {est['machine']['max_concurrent']} at once), actual {span:.0f} s "
              "(first trial record to last result: with process start and data loading)")
        print(f"{inside} of {len(rows)} trials within a factor of {TARGET}")
    if args.json:
        args.json.write_text(json.dumps({"estimate": est, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
