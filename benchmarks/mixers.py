"""Mixer benchmark: forward+backward time and peak memory of every mixer, in one table.

    python benchmarks/mixers.py            # T stage-1 shape and the nano shape, every mixer
    python benchmarks/mixers.py --quick    # fewer repeats (a smoke run, noisier numbers)
    python benchmarks/mixers.py --device cuda

Shapes: T stage 1 (96 channels, 56x56, batch 8, K=7) and the nano models' first stage (24
channels, 16x16, batch 64, K=3), each mixer with the grouping of its paper (or nano) model.
Times are medians of repeated forward+backward passes; ratios are against shifted-window
attention. Peak memory is the extra memory allocated during forward+backward (inputs, output
gradient and parameters already allocated): torch.cuda.max_memory_allocated on CUDA, and on
CPU the running total of the allocator events recorded by torch.profiler(profile_memory=True).
Further sections: the inhomogeneous dynamic conv's aggregation (gather) against an unfold
implementation and against the size of its kernel tensor; the DWNet block against the Swin
block; training throughput of the nano models (batch 64, forward+backward+AdamW step).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

from ablate.models import MODEL_NAMES, create_model
from ablate.models.blocks import DWNetBlock, SwinBlock
from ablate.models.mixers import MIXERS
from ablate.models.mixers.local_ops import local_aggregate
from ablate.models.registry import resolve

# The paper model whose first-stage grouping each mixer is benchmarked with.
TINY_ARCH = {"window_attention": "ablate_swin_tiny", "sliding_attention": "ablate_swin_tiny",
             "local_mlp": "local_mlp_tiny", "dwconv": "dwnet_tiny",
             "dynamic_dwconv": "dynamic_dwnet_tiny", "idynamic_dwconv": "idynamic_dwnet_tiny",
             "window_idynamic": "idynamic_dwnet_tiny"}
NANO_ARCH = {resolve(n).mixer: n for n in MODEL_NAMES if n.endswith("_nano")}
_nano = resolve("dwnet_nano")  # the nano models' first stage on 32x32 images
SHAPES = {"T-stage1": (8, 96, 56, 7, TINY_ARCH),
          "nano": (64, _nano.embed_dim, 32 // _nano.patch_size, _nano.kernel_size, NANO_ARCH)}
MB = 2**20


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_time(fn: Callable[[], None], device, warmup: int, repeats: int,
                reset: Callable[[], None] = lambda: None) -> float:
    """Median wall time of ``fn`` (``reset`` runs before each call, untimed)."""
    for _ in range(warmup):
        reset()
        fn()
    times = []
    for _ in range(repeats):
        reset()
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def peak_extra_bytes(fn: Callable[[], None], device, reset: Callable[[], None]) -> int:
    """Peak of the memory allocated while ``fn`` runs, above what was allocated before.

    ``reset`` runs first, outside the measurement (it drops the previous run's gradients, so
    that freeing them does not hide part of this run's peak).
    """
    reset()
    if device.type == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        ev = stack.pop()
        if ev.tag == _EventType.Allocation:  # alloc_size < 0 for a free
            events.append((ev.start_time_ns, ev.extra_fields.alloc_size))
        stack.extend(ev.children)
    total = peak = 0
    for _, size in sorted(events):
        total += size
        peak = max(peak, total)
    return peak


def drop_grads(*tensors_or_modules) -> Callable[[], None]:
    def reset():
        for t in tensors_or_modules:
            if isinstance(t, torch.Tensor):
                t.grad = None
            else:
                t.zero_grad(set_to_none=True)
    return reset


def fwd_bwd(module, x, gy) -> Callable[[], None]:
    def run():
        module(x).backward(gy)
    return run


def mixer_rows(device, warmup, repeats) -> list[tuple]:
    rows = []
    for shape_name, (b, c, size, k, archs) in SHAPES.items():
        for name in MIXERS:
            groups = resolve(archs[name], mixer=name).groups[0]
            mixer = MIXERS[name](c, num_groups=groups, kernel_size=k, shift=True).to(device)
            x = torch.randn(b, size, size, c, device=device, requires_grad=True)
            gy = torch.randn(b, size, size, c, device=device)
            run, reset = fwd_bwd(mixer, x, gy), drop_grads(mixer, x)
            t = median_time(run, device, warmup, repeats, reset)
            rows.append((shape_name, name, groups, t, peak_extra_bytes(run, device, reset)))
    return rows


def unfold_aggregate(x: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    """The materialising implementation, for comparison only: unfold to (B, C, K*K, H, W)."""
    b, h, wd, c = x.shape
    g = w.shape[-1]
    xu = F.unfold(x.permute(0, 3, 1, 2), k, padding=k // 2).view(b, g, c // g, k * k, h, wd)
    wk = w.permute(0, 4, 3, 1, 2).unsqueeze(2)  # (B, G, 1, K*K, H, W)
    return (xu * wk).sum(3).view(b, c, h, wd).permute(0, 2, 3, 1)


def aggregation_rows(device, warmup, repeats) -> list[tuple]:
    b, c, size, k, g = 8, 96, 56, 7, 32  # T stage 1 of idynamic DWNet-T (G = 32)
    x = torch.randn(b, size, size, c, device=device, requires_grad=True)
    # stored offset-major, as IDynamicDWConv.kernels predicts it
    w = torch.randn(b, k * k, size, size, g, device=device).permute(0, 2, 3, 1, 4)
    w.requires_grad_()
    gy = torch.randn(b, size, size, c, device=device)
    torch.testing.assert_close(local_aggregate(x, w, k), unfold_aggregate(x, w, k),
                               rtol=1e-4, atol=1e-4)
    rows = []
    for label, op in (("gather (ours)", local_aggregate), ("unfold", unfold_aggregate)):
        def run(op=op):
            op(x, w, k).backward(gy)
        t = median_time(run, device, warmup, repeats, drop_grads(x, w))
        rows.append((label, t, peak_extra_bytes(run, device, drop_grads(x, w))))
    return rows, w.numel() * w.element_size()


def block_rows(device, warmup, repeats) -> list[tuple]:
    b, c, size, k = 8, 96, 56, 7
    x = torch.randn(b, size, size, c, device=device, requires_grad=True)
    gy = torch.randn_like(x)
    blocks = {"Swin block (window attention)": SwinBlock(c, MIXERS["window_attention"],
                                                         num_groups=3, kernel_size=k, shift=True),
              "DWNet block (dwconv)": DWNetBlock(c, MIXERS["dwconv"], num_groups=c, kernel_size=k),
              "DWNet block (idynamic, G=32)": DWNetBlock(c, MIXERS["idynamic_dwconv"],
                                                        num_groups=32, kernel_size=k)}
    return [(label, median_time(fwd_bwd(blk.to(device), x, gy), device, warmup, repeats,
                                drop_grads(blk, x)))
            for label, blk in blocks.items()]


def nano_rows(device, steps) -> list[tuple]:
    """(arch, img/s by wall time, img/s by this process's CPU time / threads) per nano model.

    The second number is what the wall number would be on otherwise idle cores (if the
    threads kept busy), which matters when the machine is shared.
    """
    rows = []
    for arch in sorted(n for n in MODEL_NAMES if n.endswith("_nano")):
        model = create_model(arch, num_classes=10).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = torch.randn(64, 3, 32, 32, device=device)
        y = torch.randint(0, 10, (64,), device=device)

        def step(model=model, opt=opt, x=x, y=y):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        cpu = time.process_time()
        wall = median_time(step, device, 3, steps)
        cpu_per_step = (time.process_time() - cpu) / (steps + 3) / torch.get_num_threads()
        rows.append((arch, 64 / wall, 64 / cpu_per_step))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["mixers", "aggregation", "blocks", "nano"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    warmup, repeats, steps = (1, 3, 5) if args.quick else (2, 10, 20)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"repeats {repeats}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if "mixers" not in args.skip:
        print_mixers(mixer_rows(device, warmup, repeats))
    if "aggregation" not in args.skip:
        print_aggregation(*aggregation_rows(device, warmup, repeats))
    if "blocks" not in args.skip:
        rows = block_rows(device, warmup, repeats)
        print("\n| block at T stage 1 (fwd+bwd) | ms | vs Swin block |\n|---|---|---|")
        for label, t in rows:
            print(f"| {label} | {t * 1e3:.1f} | {t / rows[0][1]:.2f}x |")
    if "nano" not in args.skip:
        print("\n| nano model (32x32, batch 64, train step) | img/s (wall) | img/s (CPU time) |"
              "\n|---|---|---|")
        for arch, ips, cpu_ips in nano_rows(device, steps):
            print(f"| {arch} | {ips:.0f} | {cpu_ips:.0f} |")


def print_mixers(rows) -> None:
    print("\n| shape | mixer | groups | fwd+bwd ms | vs window attn | peak MB | vs window attn |")
    print("|---|---|---|---|---|---|---|")
    base = {r[0]: r for r in rows if r[1] == "window_attention"}
    for shape, name, groups, t, mem in rows:
        bt, bm = base[shape][3], base[shape][4]
        print(f"| {shape} | {name} | {groups} | {t * 1e3:.1f} | {t / bt:.2f}x | "
              f"{mem / MB:.1f} | {mem / bm:.2f}x |")


def print_aggregation(rows, kernel_bytes) -> None:
    print(f"\n| idynamic aggregation, T stage 1, G=32 (kernel tensor {kernel_bytes / MB:.0f} MB)"
          " | fwd+bwd ms | extra peak MB | vs kernel tensor |\n|---|---|---|---|")
    for label, t, mem in rows:
        print(f"| {label} | {t * 1e3:.1f} | {mem / MB:.0f} | {mem / kernel_bytes:.2f}x |")
    print(f"unfold / gather extra peak memory: {rows[1][2] / rows[0][2]:.1f}x")


if __name__ == "__main__":
    main()
