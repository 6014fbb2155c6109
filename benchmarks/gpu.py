"""Device check: is the GPU path correct and fast? One run, one table (issue 10, section 3).

    python benchmarks/gpu.py            # on a machine with one CUDA GPU, under 8 minutes
    python benchmarks/gpu.py --check    # the correctness checks on CPU, Triton's interpreter
    python benchmarks/gpu.py --dry-run  # every GPU row's code on CPU, toy sizes, before a GPU

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

``--dry-run`` runs every GPU row's code on the CPU instead, at toy sizes (nano models, 32x32,
batch 4, interpreted Triton kernels, GPU tests collected rather than run): its figures mean
nothing, but a script that gets through it will not stop on a GPU for a typo, so a lent GPU's
few minutes are not lost. A row that raises becomes a NO row with the error and the rest go
on; each row is printed (and written to ``--json``) as soon as it is measured, so a run cut
short by a time limit keeps what it had. The compiled speeds come last, after the 2-epoch
train, and no compiled model starts in the last minute of ``--budget-s`` (default 450 s): one
not started is a "skipped" row, and the exit status is 1.

``--check`` runs the same checks where a CPU can: the Triton kernels (interpreted) against the
slow reference and the gather, forward and gradients, at small shapes (the test file
tests/models/test_triton_ops.py); the nano models' logits and gradients with the Triton kernels
against the gather; a 2-epoch ``ablate train`` of a nano model on small synthetic data. It sets
``TRITON_INTERPRET=1`` before anything imports triton. Speed rows are GPU-only.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and ("--check" in sys.argv or "--dry-run" in sys.argv):
    os.environ["TRITON_INTERPRET"] = "1"  # must precede the kernels' definition

import argparse
import json
import re
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Sizes:
    """What the GPU rows run on: the device and the shapes (the real run, or the dry run)."""

    device: str = "cuda"
    logit_models: tuple[str, ...] = tuple(PAPER)
    logit_img: int = 224
    speed_models: dict[str, str] = field(default_factory=lambda: dict(SPEED))
    img: int = 224
    batch: int = 128
    steps: int = 10
    warmup: int = 3
    kernel: dict[str, int] = field(default_factory=lambda: dict(b=128, h=56, c=96, k=7, g=32))
    kernel_repeats: int = 10
    train_arch: str = "dwnet_tiny"
    train_data: dict = field(default_factory=lambda: {
        "name": "synthetic", "img_size": 224, "num_train": 1024, "num_val": 256,
        "num_classes": 1000})
    train_train: dict = field(default_factory=lambda: {
        "epochs": 2, "batch_size": 128, "warmup_epochs": 1, "workers": 8})


GPU = Sizes()
DRY = Sizes(device="cpu", logit_models=("dwnet_nano", "idynamic_dwnet_nano"), logit_img=32,
            speed_models={name: arch.replace("_tiny", "_nano") for name, arch in SPEED.items()},
            img=32, batch=4, steps=1, warmup=1, kernel=dict(b=2, h=6, c=12, k=3, g=4),
            kernel_repeats=1, train_arch="dwnet_nano",
            train_data={"name": "synthetic", "img_size": 32, "num_train": 16, "num_val": 8,
                        "num_classes": 10},
            train_train={"epochs": 2, "batch_size": 4, "warmup_epochs": 1, "workers": 0})


class Table:
    """The rows so far: each printed as it comes (and the JSON file rewritten), so a run cut
    short still shows, and keeps, what it measured."""

    def __init__(self, json_path: Path | None = None) -> None:
        self.rows: list[Row] = []
        self.json_path = json_path

    def add(self, rows: Iterable[Row]) -> None:
        for row in rows:
            self.rows.append(row)
            print("  ".join(row).rstrip(), flush=True)
            if self.json_path is not None:
                self.json_path.write_text(json.dumps(self.rows, indent=1))

    def run(self, label: str, make: Callable[[], Iterable[Row]]) -> None:
        """The rows ``make`` gives, or one NO row with its error: one failing check (an out of
        memory, a compiler error) does not cost the rows after it."""
        try:
            self.add(list(make()))
        except Exception as e:  # noqa: BLE001 - reported in the table, the run goes on
            first = (str(e).strip().splitlines() or [""])[0][:160]
            self.add([(label, f"error: {type(e).__name__}: {first}", "no error", "NO")])
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def _child_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def _met(ok: bool | None) -> str:
    return "" if ok is None else ("yes" if ok else "NO")


def _judged(ok: bool | None, sizes: Sizes) -> str:
    """A speed target's verdict; none in the dry run, whose toy figures on a CPU judge nothing."""
    return "" if sizes.device == "cpu" else _met(ok)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_pytest(args: list[str], label: str, timeout: int, collect_only: bool = False) -> Row:
    """Run pytest in a child process (Ray blocked); one row with its counts. ``collect_only``
    (the dry run, whose CPU skips the GPU tests): they must be collected, not run."""
    code = NO_RAY + "import pytest; sys.exit(pytest.main(sys.argv[1:]))"
    extra = ["--collect-only"] if collect_only else []
    proc = subprocess.run([sys.executable, "-c", code, "-q", "-p", "no:cacheprovider", *extra,
                           *args], cwd=ROOT, env=_child_env(), capture_output=True, text=True,
                          timeout=timeout)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-200:]
    if proc.returncode not in (0, 5):
        print(proc.stdout[-4000:], proc.stderr[-2000:], sep="\n")
    if collect_only:
        return label, tail.strip("= "), "collected", _met(proc.returncode == 0)
    # all skipped is a failure too: on a GPU machine the GPU tests must run
    return label, tail.strip("= "), "all pass", _met(proc.returncode == 0 and "passed" in tail)


def gpu_test_files() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                  if "mark.gpu" in p.read_text())


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def logits_rows(archs: Iterable[str], size: int, run_other: Callable, label: str) -> list[Row]:
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


def on_device(device: str) -> Callable:
    def run(model, x):
        with torch.no_grad():
            return model.to(device)(x.to(device))
    return run


def train_speed(arch: str, compile_: bool, sizes: Sizes) -> float:
    """Images/s of forward+backward+AdamW under bf16 autocast, synthetic square batches."""
    dev = sizes.device
    torch.manual_seed(0)
    model = create_model(arch, num_classes=1000).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    if compile_:
        # Each model compiles afresh and for its one shape: the blocks' code is shared by the
        # four models, and what dynamo kept from the one before would recompile it with
        # symbolic shapes (torch 2.14's inductor then failed on the window models' padding).
        torch._dynamo.reset()
        step_fn = torch.compile(model, dynamic=False)
        # dynamo traces through the windows' lru_cache helpers, whose results depend only on
        # the (fixed) shapes, and says so once per helper: a page of noise above the table
        warnings.filterwarnings("ignore", message=".*functools.lru_cache.*wrapped function")
    else:
        step_fn = model
    x = torch.randn(sizes.batch, 3, sizes.img, sizes.img, device=dev)
    x = x.to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (sizes.batch,), device=dev)

    def step():
        with torch.autocast(dev, dtype=torch.bfloat16):
            loss = F.cross_entropy(step_fn(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(sizes.warmup):  # warm-up (and compilation)
        step()
    _sync(dev)
    start = time.perf_counter()
    for _ in range(sizes.steps):
        step()
    _sync(dev)
    return sizes.steps * sizes.batch / (time.perf_counter() - start)


def speed_rows(compile_: bool, sizes: Sizes, deadline: float | None = None) -> list[Row]:
    """Images/s of each speed model and its ratio to Swin-T. A model whose turn comes less
    than a minute before ``deadline`` (perf_counter seconds) is not started: its row says
    skipped, so the table still comes out within the script's time."""
    mode = "compile" if compile_ else "eager"
    ips: dict[str, float | None] = {}
    for name, arch in sizes.speed_models.items():
        late = deadline is not None and time.perf_counter() > deadline - 60
        ips[name] = None if late else train_speed(arch, compile_, sizes)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    swin = ips["Swin-T"]
    rows = []
    for name, value in ips.items():
        label = f"train img/s {mode}: {name}"
        target, judge = {"DWNet-T": (">= 1.2x Swin-T", 1.2),
                         "idynamic DWNet-T": (">= 0.6x Swin-T", 0.6)}.get(name, ("", None))
        if value is None or swin is None:
            rows.append((label, "skipped: the time budget (--budget-s) was spent" if value is None
                         else f"{value:.0f} (Swin-T skipped)", target, "skipped"))
            continue
        ratio = value / swin
        rows.append((label, f"{value:.0f} ({ratio:.2f}x Swin-T)", target,
                     _judged(None if judge is None else ratio >= judge, sizes)))
    return rows


class _GatherOnly:
    """Inside the block, the ops' CUDA implementation is the gather code (triton unseen)."""

    def __enter__(self):
        self._saved = local_ops._triton
        local_ops._triton = lambda: None

    def __exit__(self, *exc):
        local_ops._triton = self._saved


def _aggregate_cost(x, w, k, repeats: int) -> tuple[float, float | None]:
    """(median ms, peak MiB above the inputs, None off CUDA) of local_aggregate fwd+bwd."""
    cuda = x.device.type == "cuda"
    gy = torch.randn_like(x)
    times, peak = [], None
    for i in range(repeats + 2):
        xg, wg = x.detach().requires_grad_(), w.detach().requires_grad_()
        _sync(x.device.type)
        if cuda:
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        local_ops.local_aggregate(xg, wg, k).backward(gy)
        _sync(x.device.type)
        if i >= 2:
            times.append(time.perf_counter() - start)
        if cuda:
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        del xg, wg
    return 1e3 * sorted(times)[len(times) // 2], peak


def kernel_rows(sizes: Sizes) -> list[Row]:
    b, h, c, k, g = (sizes.kernel[n] for n in "bhckg")
    dev = sizes.device
    torch.manual_seed(0)
    x = torch.randn(b, h, h, c, device=dev, dtype=torch.bfloat16)
    w = torch.randn(b, k * k, h, h, g, device=dev, dtype=torch.bfloat16).permute(0, 2, 3, 1, 4)
    if dev == "cpu":  # the dry run: the interpreted kernels, then the gather, on the CPU
        _cpu_kernels(use_triton=True)
        fast_ms, fast_mb = _aggregate_cost(x, w, k, sizes.kernel_repeats)
        _cpu_kernels(use_triton=False)
        slow_ms, slow_mb = _aggregate_cost(x, w, k, sizes.kernel_repeats)
    else:
        fast_ms, fast_mb = _aggregate_cost(x, w, k, sizes.kernel_repeats)
        with _GatherOnly():
            slow_ms, slow_mb = _aggregate_cost(x, w, k, sizes.kernel_repeats)
    speedup = slow_ms / fast_ms
    shape = f"B={b} {h}x{h} C={c} K={k} G={g} bf16, fwd+bwd"
    memory = (f"{fast_mb:.0f} vs {slow_mb:.0f} MiB", _met(fast_mb <= slow_mb)) \
        if fast_mb is not None and slow_mb is not None else ("not measured off CUDA", "")
    return [(f"aggregate Triton vs gather ({shape})",
             f"{fast_ms:.1f} ms vs {slow_ms:.1f} ms: {speedup:.1f}x", ">= 5x",
             _judged(speedup >= 5, sizes)),
            ("aggregate peak memory Triton vs gather", memory[0], "no more", memory[1])]


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


def check_rows(table: Table) -> None:
    table.run("ray-free import", lambda: [import_row()])
    table.run("Triton kernels (interpreted)", lambda: [run_pytest(
        ["tests/models/test_triton_ops.py"], "Triton kernels (interpreted) vs reference, fwd + "
        "grads (test_triton_ops.py)", timeout=300)])
    table.run("nano models: Triton (interpreted) vs gather", nano_triton_rows)
    table.run("ablate train idynamic_dwnet_nano", lambda: [train_row(
        "idynamic_dwnet_nano", "cpu", {"name": "synthetic", "img_size": 32, "num_train": 64,
                                       "num_val": 32, "num_classes": 10},
        {"epochs": 2, "batch_size": 16, "warmup_epochs": 1, "workers": 0}, timeout=300)])


def gpu_rows(table: Table, compile_modes: list[bool], sizes: Sizes = GPU,
             deadline: float | None = None) -> None:
    """The GPU run's rows into ``table``; with ``sizes`` = DRY the same code on the CPU. No
    compiled model starts in the last minute before ``deadline`` (perf_counter seconds)."""
    dry = sizes.device == "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False  # the logits rows compare float32 to float32
    torch.backends.cudnn.allow_tf32 = False
    table.run("ray-free import", lambda: [import_row()])
    table.run("GPU-marked tests", lambda: [run_pytest(
        ["-m", "gpu", *gpu_test_files()], "GPU-marked tests", timeout=240, collect_only=dry)])
    table.run("logits CPU vs GPU", lambda: logits_rows(
        sizes.logit_models, sizes.logit_img, on_device(sizes.device), "CPU vs GPU"))
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    table.run("aggregate Triton vs gather", lambda: kernel_rows(sizes))
    if dry:
        _cpu_kernels(use_triton=False)  # the models' speed rows: the gather, as shipped
    if False in compile_modes:
        table.run("train img/s eager", lambda: speed_rows(False, sizes))
    table.run(f"ablate train {sizes.train_arch}", lambda: [train_row(
        sizes.train_arch, sizes.device, sizes.train_data, sizes.train_train, timeout=300)])
    if True in compile_modes:  # last: compiling takes the longest, and the budget may end it
        table.run("train img/s compile", lambda: speed_rows(True, sizes, deadline))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="CPU only: correctness through Triton's interpreter, small shapes")
    mode.add_argument("--dry-run", action="store_true",
                      help="CPU only: every GPU row's code at toy sizes (its figures mean "
                      "nothing; it proves the script runs through before a GPU is spent)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile speeds")
    ap.add_argument("--json", type=Path, help="also write the rows here, as they come")
    ap.add_argument("--budget-s", type=float, default=450, metavar="S",
                    help="start no compiled model in the last minute of S seconds (default "
                    "450: the table comes out within the 8 minutes the check is meant to take)")
    args = ap.parse_args()
    start = time.perf_counter()
    deadline = start + args.budget_s
    table = Table(args.json)
    compile_modes = [False] if args.no_compile else [False, True]
    if args.check:
        where = "CPU (interpreter)"
        check_rows(table)
    elif args.dry_run:
        where = "CPU dry run of the GPU rows (toy sizes: figures mean nothing)"
        gpu_rows(table, compile_modes, DRY, deadline)
    elif not torch.cuda.is_available():
        print("no CUDA device: run with --check for the CPU correctness checks, or --dry-run "
              "to rehearse the GPU rows", file=sys.stderr)
        return 2
    else:
        where = torch.cuda.get_device_name()
        gpu_rows(table, compile_modes, GPU, deadline)
    print(f"\n{where}, torch {torch.__version__}, {time.perf_counter() - start:.0f} s")
    print_table(table.rows)
    return 0 if all(r[3] in ("yes", "") for r in table.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
