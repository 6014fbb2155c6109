"""The inhomogeneous dynamic conv's memory claim, checked with the benchmark's own meter."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from ablate.models.mixers.local_ops import local_aggregate

_spec = importlib.util.spec_from_file_location(
    "bench_mixers", Path(__file__).parents[2] / "benchmarks" / "mixers.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)
CPU = torch.device("cpu")


def test_peak_meter_sees_a_known_allocation():
    kept = []

    def fn():
        kept.append(torch.ones(1 << 20))  # 4 MiB, kept
        torch.ones(1 << 19).sum()  # 2 MiB, freed at once

    peak = bench.peak_extra_bytes(fn, CPU, reset=lambda: None)
    assert 6 << 20 <= peak < 7 << 20


def test_gather_aggregation_stays_within_twice_the_kernel_and_far_below_unfold():
    # idynamic DWNet-T's stage 1 (96 channels, G = 32, K = 7) on a smaller map.
    b, size, c, k, g = 1, 14, 96, 7, 32
    x = torch.randn(b, size, size, c, requires_grad=True)
    # stored offset-major, as the mixer predicts it (see IDynamicDWConv.kernels)
    w = torch.randn(b, k * k, size, size, g).permute(0, 2, 3, 1, 4).requires_grad_()
    gy = torch.randn(b, size, size, c)
    torch.testing.assert_close(local_aggregate(x, w, k), bench.unfold_aggregate(x, w, k))
    reset = bench.drop_grads(x, w)
    ours = bench.peak_extra_bytes(lambda: local_aggregate(x, w, k).backward(gy), CPU, reset)
    unfold = bench.peak_extra_bytes(lambda: bench.unfold_aggregate(x, w, k).backward(gy), CPU,
                                    reset)
    kernel = w.numel() * w.element_size()
    assert ours <= 2 * kernel
    assert unfold >= 5 * ours
