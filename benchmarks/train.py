"""Training throughput and data-wait fraction of the nano models on digits (rerunnable).

Runs ``ablate.train.train_trial`` (the runner's code path) for a couple of epochs per model on
scikit-learn's digits at 32x32, batch 64, with the paper's full augmentation recipe (RandAugment
m9, random erasing 0.25, Mixup 0.8 / CutMix 1.0), and reports what the trial itself measured in
its last epoch: ``train/img_per_s`` and ``train/data_wait_frac``. The target is a data wait
under 10% of step time on 2 CPU cores.

    python benchmarks/train.py                       # every nano model, workers 0 and 2
    python benchmarks/train.py --models dwnet_nano --workers 2 --threads 2 --epochs 2

Numbers depend on whatever else runs on the machine; the script prints the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from ablate.config import DataConfig, ModelConfig, RecipeConfig, Trial, TrialConfig
from ablate.models import MODEL_NAMES
from ablate.train import train_trial

NANO = tuple(n for n in MODEL_NAMES if n.endswith("_nano"))


def measure(arch: str, *, workers: int, epochs: int) -> dict:
    cfg = TrialConfig(model=ModelConfig(arch=arch), data=DataConfig(name="digits", img_size=32),
                      train=RecipeConfig(epochs=epochs, batch_size=64, warmup_epochs=1,
                                         workers=workers))
    with tempfile.TemporaryDirectory() as tdir:
        result = train_trial(Trial(config=cfg, sweep="benchmark", arm=arch), Path(tdir),
                             device="cpu")
    last = result["final"]  # epoch 1 includes worker start-up; the last epoch is steady state
    return {"arch": arch, "workers": workers, "img_per_s": last["train/img_per_s"],
            "data_wait_frac": last["train/data_wait_frac"], "epoch_s": last["time/epoch_s"],
            "peak_mb": last["mem/peak_mb"], "params": result["params"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(NANO), choices=NANO)
    ap.add_argument("--workers", nargs="+", type=int, default=[0, 2])
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (CPU cores)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, load average {os.getloadavg()[0]:.2f}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(f"{'model':22} {'workers':>7} {'img/s':>8} {'data wait':>9} {'epoch s':>8}")
    rows = []
    for arch in args.models:
        for workers in args.workers:
            row = measure(arch, workers=workers, epochs=args.epochs)
            rows.append(row)
            print(f"{arch:22} {workers:>7} {row['img_per_s']:>8.0f} "
                  f"{100 * row['data_wait_frac']:>8.1f}% {row['epoch_s']:>8.1f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
