"""The Triton kernels of the local ops, checked on CPU through Triton's interpreter.

``TRITON_INTERPRET=1`` only takes effect if it is set before the kernels are defined (when
``ablate.models.mixers.triton_ops`` is imported), and a pytest process may already have imported
it or triton without it. So the checks run in one child process: this file run as a script
(``python tests/models/test_triton_ops.py``) sets the variable first, registers the Triton
launchers as the CPU implementation of the ops (so the ops' real backward passes run the
kernels), computes every case and prints the errors as JSON; the tests below assert on them.

Each case compares against a slow reference written here from the formulas (pad, shift,
multiply, sum; float64 and plain autograd): the forward of the three primitives and the
gradients of both public ops.
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    os.environ["TRITON_INTERPRET"] = "1"  # before anything imports the kernels

import importlib.util
import json
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

# (batch, height, width, channels, groups, K, weight layout, dtype): the mixer tests' shapes
# (odd sizes, maps smaller than the kernel, batch 1) at two group counts, K = 3, 5, 7, the
# paper models' group sizes (3 channels per group; 32-channel heads), both weight layouts.
CASES = [
    (b, h, w, 8, g, k, "offset", "float32")
    for (b, h, w, k) in [(2, 5, 7, 3), (1, 4, 4, 5), (2, 6, 6, 3), (1, 7, 5, 5)]
    for g in (2, 8)
] + [
    (1, 3, 5, 12, 4, 7, "offset", "float32"),  # map smaller than the kernel
    (2, 9, 8, 24, 8, 7, "position", "float32"),  # position-major weights (any strides)
    (1, 6, 7, 96, 32, 7, "offset", "float32"),  # idynamic DWNet-T stage 1: 3 channels a group
    (2, 5, 5, 64, 2, 3, "position", "float32"),  # sliding attention: 32-channel heads
    (1, 8, 8, 48, 16, 7, "offset", "bfloat16"),  # half precision, float32 accumulation
]


def case_id(case) -> str:
    b, h, w, c, g, k, layout, dtype = case
    return f"{b}x{h}x{w}x{c}-g{g}-k{k}-{layout}-{dtype}"


def ref_aggregate(x: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    """y[i] = sum_o w[i, o, g] * x[i + d_o], zeros outside."""
    b, h, wd, c = x.shape
    xp = F.pad(x, (0, 0, k // 2, k // 2, k // 2, k // 2))
    per_channel = w.repeat_interleave(c // w.shape[-1], dim=-1)  # (B, H, W, K*K, C)
    return sum(xp[:, o // k:o // k + h, o % k:o % k + wd] * per_channel[:, :, :, o]
               for o in range(k * k))


def ref_correlate(q: torch.Tensor, x: torch.Tensor, k: int, groups: int) -> torch.Tensor:
    """out[i, o, g] = sum_{c in g} q[i, c] * x[i + d_o, c], zeros outside."""
    b, h, wd, c = q.shape
    xp = F.pad(x, (0, 0, k // 2, k // 2, k // 2, k // 2))
    taps = [(q * xp[:, o // k:o // k + h, o % k:o % k + wd]).view(b, h, wd, groups, -1).sum(-1)
            for o in range(k * k)]
    return torch.stack(taps, dim=3)


def _inputs(case, gen):
    b, h, w, c, g, k, layout, dtype = case
    dt = getattr(torch, dtype)
    x, q, gy = (torch.randn(b, h, w, c, generator=gen).to(dt) for _ in range(3))
    wt = torch.randn(b, h, w, k * k, g, generator=gen).to(dt)
    if layout == "offset":  # as IDynamicDWConv.kernels and local_correlate store them
        wt = wt.permute(0, 3, 1, 2, 4).contiguous().permute(0, 2, 3, 1, 4)
    return x, q, wt, gy


def _err(got: torch.Tensor, want: torch.Tensor) -> float:
    """Largest error relative to the element's own size (plus a floor of 1e-3 of the scale)."""
    got, want = got.double().cpu(), want.double()
    floor = 1e-3 * want.abs().max().item() + 1e-12
    return ((got - want).abs() / (want.abs() + floor)).max().item()


def _run_case(case, ops, device: str = "cpu") -> dict[str, float]:
    from ablate.models.mixers.local_ops import local_aggregate, local_correlate

    k, g = case[5], case[4]
    cpu = _inputs(case, torch.Generator().manual_seed(zlib.crc32(case_id(case).encode())))
    x64, q64, w64 = (t.double().requires_grad_() for t in cpu[:3])
    x, q, wt, gy = (t.to(device) for t in cpu)
    errs = {"aggregate": _err(ops.aggregate(x, wt, k), ref_aggregate(x64, w64, k)),
            "correlate": _err(ops.correlate(q, x, k, g), ref_correlate(q64, x64, k, g))}
    (want,) = torch.autograd.grad(ref_aggregate(x64, w64, k), x64, cpu[3].double())
    errs["scatter"] = _err(ops.scatter(gy, wt, k), want)
    if case[7] != "float32":
        return errs
    xg, qg, wg = (t.clone().requires_grad_() for t in (x, q, wt))
    got = torch.autograd.grad(local_aggregate(xg, wg, k), (xg, wg), gy)
    want = torch.autograd.grad(ref_aggregate(x64, w64, k), (x64, w64), cpu[3].double())
    errs["aggregate.grad_x"], errs["aggregate.grad_w"] = map(_err, got, want)
    gout = torch.randn(want[1].shape, generator=torch.Generator().manual_seed(1))
    got = torch.autograd.grad(local_correlate(qg, xg, k, g), (qg, xg), gout.to(device))
    want = torch.autograd.grad(ref_correlate(q64, x64, k, g), (q64, x64), gout.double())
    errs["correlate.grad_q"], errs["correlate.grad_x"] = map(_err, got, want)
    return errs


def interpret_all() -> dict[str, dict[str, float]]:
    """Every case through the interpreter; call only with TRITON_INTERPRET=1 set before import."""
    from ablate.models.mixers import triton_ops

    # The ops' CPU implementation becomes the kernels, so autograd runs them in the backward.
    for name, fn in [("local_aggregate", triton_ops.aggregate),
                     ("local_scatter", triton_ops.scatter),
                     ("local_correlate", triton_ops.correlate)]:
        torch.library.register_kernel(f"ablate::{name}", "cpu", fn)
    out = {case_id(case): _run_case(case, triton_ops) for case in CASES}
    out[REFUSALS] = _refusals(triton_ops)
    return out


REFUSALS = "refused"
BAD_SHAPES = {  # the kernels read without bounds checks: shapes the gather refuses, refused
    "aggregate: channels not a multiple of groups": ("aggregate", (1, 4, 4, 7), (1, 4, 4, 9, 2)),
    "aggregate: weights of another map": ("aggregate", (1, 4, 4, 8), (1, 4, 5, 9, 2)),
    "correlate: q and x differ": ("correlate", (1, 4, 4, 8), (1, 4, 5, 8)),
    "correlate: channels not a multiple of groups": ("correlate", (1, 4, 4, 8), (1, 4, 4, 8)),
}


def _refusals(ops) -> dict[str, bool]:
    refused = {}
    for name, (op, a, b) in BAD_SHAPES.items():
        args = (torch.randn(a), torch.randn(b), 3) + ((3,) if op == "correlate" else ())
        try:
            getattr(ops, op)(*args)
            refused[name] = False
        except ValueError:
            refused[name] = True
    return refused


# float32 kernels against a float64 reference: a few ulps of float32 over at most 49 * 32 terms.
# bfloat16 outputs: one conversion of the float32 sum, at most one bfloat16 ulp (2^-7 relative;
# the interpreter truncates where a GPU rounds to nearest). Accumulating the 49 taps in
# bfloat16 instead misses this bound by about 100x at this shape.
TOLERANCE = {"float32": 1e-4, "bfloat16": 2**-7}


@pytest.fixture(scope="module")
def interpreted():
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed: the CUDA path falls back to the gather code")
    root = Path(__file__).resolve().parents[2]
    path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.run([sys.executable, __file__], capture_output=True, text=True, env=env,
                          cwd=root, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_triton_kernels_match_the_reference(interpreted, case):
    errs = interpreted[case_id(case)]
    expected = {"aggregate", "correlate", "scatter"}
    if case[7] == "float32":
        expected |= {"aggregate.grad_x", "aggregate.grad_w", "correlate.grad_q", "correlate.grad_x"}
    assert set(errs) == expected
    bad = {name: e for name, e in errs.items() if not e <= TOLERANCE[case[7]]}
    assert not bad, f"relative errors above {TOLERANCE[case[7]]}: {bad}"


def test_triton_kernels_refuse_shapes_they_would_read_out_of_bounds(interpreted):
    assert interpreted[REFUSALS] == {name: True for name in BAD_SHAPES}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_triton_kernels_on_cuda_match_the_reference(case):
    """Compiled for the GPU this time; the gradients go through the ops' CUDA registration."""
    pytest.importorskip("triton")
    from ablate.models.mixers import triton_ops

    errs = _run_case(case, triton_ops, device="cuda")
    bad = {name: e for name, e in errs.items() if not e <= TOLERANCE[case[7]]}
    assert not bad, f"relative errors above {TOLERANCE[case[7]]}: {bad}"


def test_cuda_runs_the_triton_kernels_and_falls_back_without_triton(monkeypatch):
    from ablate.models.mixers import local_ops

    for name in ("local_aggregate", "local_scatter", "local_correlate"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"ablate::{name}", "CUDA"), name
    local_ops._triton.cache_clear()
    monkeypatch.setitem(sys.modules, "triton", None)  # import triton now raises ImportError
    monkeypatch.delitem(sys.modules, "ablate.models.mixers.triton_ops", raising=False)
    try:
        assert local_ops._triton() is None
    finally:
        local_ops._triton.cache_clear()


def test_float64_runs_the_gather_on_cuda_too(monkeypatch):
    """The kernels accumulate in float32; float64 is asked for exactness (the CPU/GPU
    agreement of the nano models is checked in it), so it keeps the gather."""
    from ablate.models.mixers import local_ops

    kernels = object()  # stands for the triton_ops module (not imported here: see the top)
    monkeypatch.setattr(local_ops, "_triton", lambda: kernels)
    assert local_ops._fast(torch.zeros(1, dtype=torch.float64)) is None
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        assert local_ops._fast(torch.zeros(1, dtype=dtype)) is kernels


if __name__ == "__main__":
    print(json.dumps(interpret_all()))
