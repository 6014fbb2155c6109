"""Triton kernels for the local ops: the CUDA implementation of ``ablate::local_*``.

Same semantics as the gather code in :mod:`ablate.models.mixers.local_ops` (channels-last
(B, H, W, C) maps, (B, H, W, K*K, G) weights of any strides, zero padding at the borders,
float32 accumulation whatever the input dtype). Three primitives cover the forward and backward
passes of both ops, with d_o the offset of kernel tap o (row-major, centred):

- ``aggregate(x, w, k)``:      y[p, c]    = sum_o w[p, o, g(c)] * x[p + d_o, c]
- ``scatter(a, w, k)``:        y[p, c]    = sum_o w[p - d_o, o, g(c)] * a[p - d_o, c]
  (the transpose of ``aggregate`` in x, written as a gather so that no atomics are needed)
- ``correlate(q, x, k, g)``:   out[p, o, g] = sum_{c in g} q[p, c] * x[p + d_o, c]

Each program owns a tile of positions (and of channels or groups) and loops over the K*K taps,
so every output element is written once and nothing of size K*K*C is materialised.

Importing this module imports triton; ``local_ops`` does it only on the first call on a CUDA
tensor. With ``TRITON_INTERPRET=1`` set before the import, the kernels run on CPU tensors
through Triton's interpreter (how the tests check them without a GPU).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_TILE = 4096  # elements per program: 32 per thread at 4 warps


@triton.jit
def _aggregate_kernel(a_ptr, w_ptr, out_ptr, n_pos, H, W, C, CG,
                      swb, swh, sww, swo, swg,
                      K: tl.constexpr, TRANSPOSE: tl.constexpr,
                      BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    p = (tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    pmask = p < n_pos
    cmask = c < C
    b = p // (H * W)
    i = (p // W) % H
    j = p % W
    wg = (c // CG).to(tl.int64) * swg
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for o in tl.static_range(K * K):
        dy = o // K - K // 2
        dx = o % K - K // 2
        if TRANSPOSE:  # read the tap that lands on p: source p - d_o, its weight there
            si = i - dy
            sj = j - dx
        else:
            si = i + dy
            sj = j + dx
        inside = pmask & (si >= 0) & (si < H) & (sj >= 0) & (sj < W)
        m = inside[:, None] & cmask[None, :]
        src = (b * H + si) * W + sj
        val = tl.load(a_ptr + src[:, None] * C + c[None, :], mask=m, other=0.0)
        if TRANSPOSE:
            wpos = b * swb + si * swh + sj * sww
        else:
            wpos = b * swb + i * swh + j * sww
        wt = tl.load(w_ptr + (wpos + o * swo)[:, None] + wg[None, :], mask=m, other=0.0)
        acc += val.to(tl.float32) * wt.to(tl.float32)
    out = out_ptr + p[:, None] * C + c[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=pmask[:, None] & cmask[None, :])


@triton.jit
def _correlate_kernel(q_ptr, x_ptr, out_ptr, n_pos, H, W, C, G, CG,
                      sob, soh, sow, soo, sog,
                      K: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_G: tl.constexpr,
                      BLOCK_CG: tl.constexpr):
    p = (tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)).to(tl.int64)
    g = tl.program_id(1) * BLOCK_G + tl.arange(0, BLOCK_G)
    cc = tl.arange(0, BLOCK_CG)
    pmask = p < n_pos
    gmask = g < G
    b = p // (H * W)
    i = (p // W) % H
    j = p % W
    ch = g[:, None] * CG + cc[None, :]  # (BLOCK_G, BLOCK_CG) channel of each lane
    chmask = gmask[:, None] & (cc[None, :] < CG)
    qm = pmask[:, None, None] & chmask[None, :, :]
    qv = tl.load(q_ptr + p[:, None, None] * C + ch[None, :, :], mask=qm, other=0.0)
    qv = qv.to(tl.float32)
    opos = b * sob + i * soh + j * sow
    om = pmask[:, None] & gmask[None, :]
    for o in tl.static_range(K * K):
        si = i + (o // K - K // 2)
        sj = j + (o % K - K // 2)
        inside = pmask & (si >= 0) & (si < H) & (sj >= 0) & (sj < W)
        src = (b * H + si) * W + sj
        xv = tl.load(x_ptr + src[:, None, None] * C + ch[None, :, :],
                     mask=inside[:, None, None] & chmask[None, :, :], other=0.0)
        s = tl.sum(qv * xv.to(tl.float32), axis=2)  # (BLOCK_P, BLOCK_G)
        tl.store(out_ptr + (opos + o * soo)[:, None] + g[None, :].to(tl.int64) * sog,
                 s.to(out_ptr.dtype.element_ty), mask=om)


def _check(x: torch.Tensor, w: torch.Tensor, k: int) -> None:
    """The kernels index without bounds checks, so shapes the gather would refuse are refused."""
    if (x.dim() != 4 or w.dim() != 5 or w.shape[:3] != x.shape[:3] or w.shape[3] != k * k
            or x.shape[3] % w.shape[4]):
        raise ValueError(f"local op shapes: x {tuple(x.shape)}, w {tuple(w.shape)}, K={k}")


def _check_pair(q: torch.Tensor, x: torch.Tensor, groups: int) -> None:
    if q.dim() != 4 or q.shape != x.shape or groups < 1 or q.shape[3] % groups:
        raise ValueError(f"local correlate shapes: q {tuple(q.shape)}, x {tuple(x.shape)}, "
                         f"{groups} groups")


def _run_aggregate(a: torch.Tensor, w: torch.Tensor, k: int, transpose: bool) -> torch.Tensor:
    _check(a, w, k)
    a = a.contiguous()
    b, h, wd, c = a.shape
    out = torch.empty_like(a)
    block_c = min(128, triton.next_power_of_2(c))
    block_p = _TILE // block_c
    n_pos = b * h * wd
    grid = (triton.cdiv(n_pos, block_p), triton.cdiv(c, block_c))
    _aggregate_kernel[grid](a, w, out, n_pos, h, wd, c, c // w.shape[4], *w.stride(),
                            K=k, TRANSPOSE=transpose, BLOCK_P=block_p, BLOCK_C=block_c)
    return out


def aggregate(x: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    """``local_aggregate``: (B, H, W, C) and (B, H, W, K*K, G) -> (B, H, W, C), x's dtype."""
    return _run_aggregate(x, w, k, transpose=False)


def scatter(a: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    """The transpose of ``aggregate`` in its input (its gradient wrt x): (B, H, W, C)."""
    return _run_aggregate(a, w, k, transpose=True)


def correlate(q: torch.Tensor, x: torch.Tensor, k: int, groups: int) -> torch.Tensor:
    """``local_correlate``: (B, H, W, C) twice -> (B, H, W, K*K, G) stored offset-major."""
    _check_pair(q, x, groups)
    q, x = q.contiguous(), x.contiguous()
    b, h, wd, c = q.shape
    out = q.new_empty(b, k * k, h, wd, groups).permute(0, 2, 3, 1, 4)  # as the fake op
    block_cg = triton.next_power_of_2(c // groups)
    block_g = min(triton.next_power_of_2(groups), max(1, 128 // block_cg))
    block_p = max(1, _TILE // (block_g * block_cg))
    n_pos = b * h * wd
    grid = (triton.cdiv(n_pos, block_p), triton.cdiv(groups, block_g))
    _correlate_kernel[grid](q, x, out, n_pos, h, wd, c, groups, c // groups, *out.stride(),
                            K=k, BLOCK_P=block_p, BLOCK_G=block_g, BLOCK_CG=block_cg)
    return out
