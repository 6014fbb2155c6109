"""Device check: is the GPU path correct and fast? One run, one table (issue 10, section 3).

    python benchmarks/gpu.py            # on a machine with one CUDA GPU, under 8 minutes
    python benchmarks/gpu.py --check    # the correctness checks on CPU, Triton's interpreter

Needs only torch, timm, triton and ablate's pure-Python dependencies (pytest for the first
row): Ray is never imported, and every subprocess it starts runs with Ray blocked.

GPU rows:
- the GPU-marked tests (``pytest -m gpu``, on the test files that hold such tests);
- CPU and GPU logits of every paper model agree, float32, TF32 off, eval mode, 224x224:
  relative L2 error under 1e-4;
- train images/s (forward, backward, AdamW step; bf16 autocast; batch 128; 224x224; synthetic
  data; channels-last, as ``ablate train`` on CUDA) of Swin-T, DWNet-T, dynamic DWNet-T and
  inhomogeneous dynamic DWNet-T, eager and ``torch.compile``;
- the Triton aggregation against the gather path at T stage-1 shape (batch 128, 56x56, C=96,
  K=7, G=32 as in idynamic DWNet-T; bfloat16): forward+backward time and peak memory;
- one ``ablate train`` of DWNet-T on synthetic ImageNet-shaped data (1000 classes, 224x224),
  2 epochs, and the files of its record.
Targets (yes/NO in the table): DWNet-T >= 1.2x Swin-T images/s, idynamic DWNet-T >= 0.6x
Swin-T (eager), Triton aggregation >= 5x faster than the gather at no more peak memory.

``--check`` runs the same checks where a CPU can: the Triton kernels (interpreted) against the
slow reference and the gather, forward and gradients, at small shapes (the test file
tests/models/test_triton_ops.py); the nano models' logits and gradients with the Triton kernels
against the gather; a 2-epoch ``ablate train`` of a nano model on small synthetic data. It sets
``TRITON_INTERPRET=1`` before anything imports triton. Speed rows are GPU-only.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and "--check" in sys.argv:
    os.environ["TRITON_INTERPRET"] = "1"  # must precede the kernels' definition

import argparse
import json
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ablate.models import MODEL_NAMES, create_model  # noqa: E402
from ablate.models.mixers import local_ops  # noqa: E402

PAPER = [n for n in MODEL_NAMES if not n.endswith("_nano")]
NANO = [n for n in MODEL_NAMES if n.endswith("_nano")]
SPEED = {"Swin-T": "ablate_swin_tiny", "DWNet-T": "dwnet_tiny",
         "dynamic DWNet-T": "dynamic_dwnet_tiny", "idynamic DWNet-T": "idynamic_dwnet_tiny"}
LOGIT_TOL = 1e-4  # relative L2, float32 both sides, TF32 off
NO_RAY = "import sys; sys.modules['ray'] = None; "  # any 'import ray' now raises ImportError

Row = tuple[str, str, str, str]  # (check, result, target, met)


def _child_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def _met(ok: bool | None) -> str:
    return "" if ok is None else ("yes" if ok else "NO")


def run_pytest(args: list[str], label: str, timeout: int) -> Row:
    """Run pytest in a child process (Ray blocked); one row with its counts."""
    code = NO_RAY + "import pytest; sys.exit(pytest.main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, "-q", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, env=_child_env(), capture_output=True, text=True,
                          timeout=timeout)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-200:]
    if proc.returncode not in (0, 5):
        print(proc.stdout[-4000:], proc.stderr[-2000:], sep="\n")
    # all skipped is a failure too: on a GPU machine the GPU tests must run
    return label, tail.strip("= "), "all pass", _met(proc.returncode == 0 and "passed" in tail)


def gpu_test_files() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                  if "mark.gpu" in p.read_text())


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def logits_rows(archs: list[str], size: int, run_other: Callable, label: str) -> list[Row]:
    """One row per model: relative error of its logits computed two ways (same weights)."""
    rows = []
    for arch in archs:
        torch.manual_seed(0)
        model = create_model(arch, num_classes=1000 if arch in PAPER else 10).eval()
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            ref = model(x)
        err = _rel(run_other(model, x), ref)
        rows.append((f"logits {label}: {arch}", f"{err:.1e}", f"< {LOGIT_TOL:g}",
                     _met(err < LOGIT_TOL)))
    return rows


def on_cuda(model, x):
    with torch.no_grad():
        return model.cuda()(x.cuda())


def train_speed(arch: str, compile_: bool, steps: int = 10, batch: int = 128) -> float:
    """Images/s of forward+backward+AdamW under bf16 autocast, synthetic 224x224 batches."""
    torch.manual_seed(0)
    model = create_model(arch, num_classes=1000).cuda().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    step_fn = torch.compile(model) if compile_ else model
    x = torch.randn(batch, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(step_fn(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):  # warm-up (and compilation)
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def speed_rows(compile_modes: list[bool]) -> list[Row]:
    rows, ips = [], {}
    for compile_ in compile_modes:
        mode = "compile" if compile_ else "eager"
        for name, arch in SPEED.items():
            ips[name, mode] = train_speed(arch, compile_)
            torch.cuda.empty_cache()
        swin = ips["Swin-T", mode]
        for name in SPEED:
            ratio = ips[name, mode] / swin
            target, ok = {"DWNet-T": (">= 1.2x Swin-T", ratio >= 1.2),
                          "idynamic DWNet-T": (">= 0.6x Swin-T", ratio >= 0.6)}.get(
                              name, ("", None))
            rows.append((f"train img/s {mode}: {name}",
                         f"{ips[name, mode]:.0f} ({ratio:.2f}x Swin-T)", target, _met(ok)))
    return rows


class _GatherOnly:
    """Inside the block, the ops' CUDA implementation is the gather code (triton unseen)."""

    def __enter__(self):
        self._saved = local_ops._triton
        local_ops._triton = lambda: None

    def __exit__(self, *exc):
        local_ops._triton = self._saved


def _aggregate_cost(x, w, k, repeats: int = 10) -> tuple[float, float]:
    """(median ms, peak MiB above the inputs) of local_aggregate forward+backward."""
    gy = torch.randn_like(x)
    times = []
    for i in range(repeats + 2):
        xg, wg = x.detach().requires_grad_(), w.detach().requires_grad_()
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        local_ops.local_aggregate(xg, wg, k).backward(gy)
        torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        del xg, wg
    return 1e3 * sorted(times)[len(times) // 2], peak


def kernel_rows(b=128, h=56, c=96, k=7, g=32) -> list[Row]:
    torch.manual_seed(0)
    x = torch.randn(b, h, h, c, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(b, k * k, h, h, g, device="cuda", dtype=torch.bfloat16).permute(0, 2, 3, 1, 4)
    fast_ms, fast_mb = _aggregate_cost(x, w, k)
    with _GatherOnly():
        slow_ms, slow_mb = _aggregate_cost(x, w, k)
    speedup = slow_ms / fast_ms
    shape = f"B={b} {h}x{h} C={c} K={k} G={g} bf16, fwd+bwd"
    return [(f"aggregate Triton vs gather ({shape})",
             f"{fast_ms:.1f} ms vs {slow_ms:.1f} ms: {speedup:.1f}x", ">= 5x", _met(speedup >= 5)),
            ("aggregate peak memory Triton vs gather", f"{fast_mb:.0f} vs {slow_mb:.0f} MiB",
             "no more", _met(fast_mb <= slow_mb))]


def train_row(arch: str, device: str, data: dict, train: dict, timeout: int) -> Row:
    """``ablate train`` on a trial file, in a child process with Ray blocked: its last line and
    the files of the record it wrote."""
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp, "trial.yaml")
        cfg.write_text(yaml.safe_dump({"model": {"arch": arch}, "data": data, "train": train}))
        out = Path(tmp, "trial")
        code = NO_RAY + "from ablate.cli import main; sys.exit(main(sys.argv[1:]))"
        proc = subprocess.run([sys.executable, "-c", code, "train", str(cfg), "--out", str(out),
                               "--device", device], cwd=ROOT, env=_child_env(),
                              capture_output=True, text=True, timeout=timeout)
        files = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
    last = re.sub(r";? record in \S+", "", lines[-1]) if lines else proc.stderr[-200:]
    return (f"ablate train {arch}, {train['epochs']} epochs, {device}",
            f"{last} | record: {', '.join(files)}", "done, record written",
            _met(proc.returncode == 0 and bool(files)))


def _cpu_kernels(use_triton: bool) -> None:
    """Make the (interpreted) Triton kernels, or the gather, the ops' CPU implementation."""
    from ablate.models.mixers import triton_ops

    for name, fast, gather in [
            ("local_aggregate", triton_ops.aggregate, local_ops._gather_aggregate),
            ("local_scatter", triton_ops.scatter, local_ops._gather_scatter),
            ("local_correlate", triton_ops.correlate, local_ops._gather_correlate)]:
        torch.library.register_kernel(f"ablate::{name}", "cpu", fast if use_triton else gather)


def _uses_local_ops(model, x) -> bool:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    ops = {str(op) for per_module in counter.get_flop_counts().values() for op in per_module}
    return any(op.startswith("ablate.") for op in ops)


def nano_triton_rows(size: int = 24) -> list[Row]:
    """Nano models' logits and gradients: gather (as built) against the interpreted kernels."""
    rows = []
    for arch in NANO:
        _cpu_kernels(use_triton=False)
        torch.manual_seed(0)
        model = create_model(arch, num_classes=10, drop_path_rate=0.0).eval()
        x = torch.randn(2, 3, size, size)
        if not _uses_local_ops(model, x):
            continue
        results = []
        for use_triton in (False, True):
            _cpu_kernels(use_triton)
            model.zero_grad(set_to_none=True)
            logits = model(x)
            logits.square().sum().backward()
            grad = torch.cat([p.grad.flatten() for p in model.parameters()])
            results.append((logits.detach(), grad))
        lerr, gerr = _rel(results[1][0], results[0][0]), _rel(results[1][1], results[0][1])
        rows.append((f"nano {arch}: Triton (interpreted) vs gather, logits / grads",
                     f"{lerr:.1e} / {gerr:.1e}", f"< {LOGIT_TOL:g}",
                     _met(max(lerr, gerr) < LOGIT_TOL)))
    return rows


def import_row() -> Row:
    """Importing the models and the training step must not import Ray."""
    code = ("import sys, ablate.models, ablate.train, ablate.cli; "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_child_env(),
                          capture_output=True, text=True, timeout=300)
    found = proc.stdout.strip()
    ok = proc.returncode == 0 and found == "[]"
    result = "no ray module loaded" if ok else (found or proc.stderr.strip()[-200:])
    return ("ablate.models, ablate.train, ablate.cli import without ray", result,
            "no ray module", _met(ok))


def print_table(rows: list[Row]) -> None:
    head = ("check", "result", "target", "met")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(4)]
    for r in [head, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())


def check_rows() -> list[Row]:
    return [import_row(),
            run_pytest(["tests/models/test_triton_ops.py"], "Triton kernels (interpreted) vs "
                       "reference, fwd + grads (test_triton_ops.py)", timeout=300),
            *nano_triton_rows(),
            train_row("idynamic_dwnet_nano", "cpu",
                      {"name": "synthetic", "img_size": 32, "num_train": 64, "num_val": 32,
                       "num_classes": 10},
                      {"epochs": 2, "batch_size": 16, "warmup_epochs": 1, "workers": 0},
                      timeout=300)]


def gpu_rows(compile_modes: list[bool]) -> list[Row]:
    torch.backends.cuda.matmul.allow_tf32 = False  # the logits rows compare float32 to float32
    torch.backends.cudnn.allow_tf32 = False
    rows = [import_row(), run_pytest(["-m", "gpu", *gpu_test_files()], "GPU-marked tests",
                                     timeout=240)]
    rows += logits_rows(PAPER, 224, on_cuda, "CPU vs GPU")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    rows += kernel_rows()
    torch.cuda.empty_cache()
    rows += speed_rows(compile_modes)
    rows.append(train_row("dwnet_tiny", "cuda",
                          {"name": "synthetic", "img_size": 224, "num_train": 1024,
                           "num_val": 256, "num_classes": 1000},
                          {"epochs": 2, "batch_size": 128, "warmup_epochs": 1, "workers": 8},
                          timeout=300))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="CPU only: correctness through Triton's interpreter, small shapes")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile speeds")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    start = time.perf_counter()
    if args.check:
        rows = check_rows()
    elif not torch.cuda.is_available():
        print("no CUDA device: run with --check for the CPU correctness checks", file=sys.stderr)
        return 2
    else:
        rows = gpu_rows([False] if args.no_compile else [False, True])
    print(f"\n{torch.cuda.get_device_name() if not args.check else 'CPU (interpreter)'}, "
          f"torch {torch.__version__}, {time.perf_counter() - start:.0f} s")
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if all(r[3] != "NO" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
