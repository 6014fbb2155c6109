"""Sliding-window aggregation without unfolding: gather over the K*K offsets of a padded input.

Two ops, both in the mixers' layout (channels last) and registered as torch custom ops so that
torch's FlopCounterMode counts them (through the formulas registered below) and so that they
run unchanged on any device:

- ``local_aggregate(x, w, K)``: y[b,i,g,c] = sum_k w[b,i,k,g] * x[b,i+d_k,g,c]
  (x: (B, H, W, C), w: (B, H, W, K*K, G) -> y: (B, H, W, C); zero padding at borders).
- ``local_correlate(q, x, K, G)``: the adjoint that produces weights,
  out[b,i,k,g] = sum_{c in g} q[b,i,g,c] * x[b,i+d_k,g,c]   -> (B, H, W, K*K, G).

The weights may have any strides; stored offset-major (a permuted (B, K*K, H, W, G) tensor,
which is what ``local_correlate`` returns and ``IDynamicDWConv.kernels`` produces) each offset's
slice is contiguous, which is several times faster on CPU. Likewise, when a group holds few
channels (3 for idynamic DWNet-T) the loops run channel-major, on whole (B, H, W, G) slabs.

Why custom backward passes: autograd through K*K shifted views would keep a full-size zero
tensor per offset for the slice gradients; here each backward loops over the offsets once and
accumulates in place, so the extra memory is one padded input plus the weight gradient, never
the (B, C, K*K, H, W) tensor an unfold implementation materialises. The backward passes are
made of the ops themselves plus a third, ``ablate::local_scatter`` (the transpose of the
aggregation in its input), so each device runs its own implementation of all of them.

Devices: the gather code below is the implementation everywhere except CUDA, where the Triton
kernels of :mod:`ablate.models.mixers.triton_ops` run (same semantics, float32 accumulation);
without triton installed, and for float64 tensors, CUDA runs the gather too.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch.utils.flop_counter import register_flop_formula


def _pad(x: torch.Tensor, p: int) -> torch.Tensor:
    return F.pad(x, (0, 0, p, p, p, p))  # (B, H+2p, W+2p, C)


def _split(x: torch.Tensor, groups: int) -> tuple[torch.Tensor, bool]:
    """(B, H, W, C) -> the loops' layout, and whether it is channel-major.

    Few channels per group (C/G = 3 for idynamic DWNet-T): (C/G, B, H, W, G), contiguous, so
    that each loop step works on whole (B, H, W, G) slabs with long contiguous rows. Otherwise
    (attention heads): the (B, H, W, G, C/G) view, broadcasting the weights over C/G.
    """
    per_group = x.shape[-1] // groups
    xg = x.reshape(*x.shape[:3], groups, per_group)
    if per_group >= groups or per_group > 8:
        return xg, False
    return xg.permute(4, 0, 1, 2, 3).contiguous(), True


def _join(y: torch.Tensor, major: bool, dtype: torch.dtype) -> torch.Tensor:
    """The inverse of _split: back to (B, H, W, C) in ``dtype``."""
    if major:
        y = y.permute(1, 2, 3, 4, 0)
    return y.reshape(*y.shape[:3], -1).to(dtype)


def _acc_zeros(ref: torch.Tensor, shape) -> torch.Tensor:
    # At least float32, so that half-precision inputs (autocast) still sum K*K terms accurately.
    return ref.new_zeros(shape, dtype=torch.promote_types(ref.dtype, torch.float32))


def _weight_major(b: int, h: int, w: int, k: int, groups: int, like: torch.Tensor):
    """An empty (B, H, W, K*K, G) tensor stored offset-major, so each offset's slice is one
    contiguous (B, H, W, G) block (the layout the loops read fastest)."""
    return like.new_empty(b, k * k, h, w, groups).permute(0, 2, 3, 1, 4)


def _gather_sum(xp: torch.Tensor, w: torch.Tensor, k: int, groups: int) -> torch.Tensor:
    """y[i] = sum_o w[i,o] * xp[i+o] for a padded input xp; returns (B, H, W, C)."""
    b, h, wd = w.shape[:3]
    xs, major = _split(xp, groups)
    y = _acc_zeros(xs, (xs.shape[0], b, h, wd, groups) if major else (b, h, wd, *xs.shape[3:]))
    for o in range(k * k):
        dy, dx = divmod(o, k)
        wo = w[:, :, :, o]  # (B, H, W, G)
        if major:
            for c in range(xs.shape[0]):
                y[c].addcmul_(xs[c, :, dy:dy + h, dx:dx + wd], wo)
        else:
            y.addcmul_(xs[:, dy:dy + h, dx:dx + wd], wo[..., None])
    return _join(y, major, xp.dtype)


def _scatter_sum(a: torch.Tensor, w: torch.Tensor, k: int, groups: int) -> torch.Tensor:
    """The transpose of _gather_sum: out[i+o] += w[i,o] * a[i]; returns (B, Hp, Wp, C)."""
    b, h, wd = a.shape[:3]
    hp, wp = h + k - 1, wd + k - 1
    as_, major = _split(a, groups)
    shape = (as_.shape[0], b, hp, wp, groups) if major else (b, hp, wp, *as_.shape[3:])
    out = _acc_zeros(as_, shape)
    for o in range(k * k):
        dy, dx = divmod(o, k)
        wo = w[:, :, :, o]
        if major:
            for c in range(as_.shape[0]):
                out[c, :, dy:dy + h, dx:dx + wd].addcmul_(as_[c], wo)
        else:
            out[:, dy:dy + h, dx:dx + wd].addcmul_(as_, wo[..., None])
    return _join(out, major, a.dtype)


def _correlate(a: torch.Tensor, xp: torch.Tensor, k: int, groups: int) -> torch.Tensor:
    """out[i,o,g] = sum_{c in g} a[i,g,c] * xp[i+o,g,c]; returns (B, H, W, K*K, G), stored
    offset-major."""
    b, h, wd = a.shape[:3]
    (as_, major), (xs, _) = _split(a, groups), _split(xp, groups)
    out = _weight_major(b, h, wd, k, groups, a)
    for o in range(k * k):
        dy, dx = divmod(o, k)
        oo = out[:, :, :, o]  # a contiguous (B, H, W, G) block
        if major:
            torch.mul(as_[0], xs[0, :, dy:dy + h, dx:dx + wd], out=oo)
            for c in range(1, as_.shape[0]):
                oo.addcmul_(as_[c], xs[c, :, dy:dy + h, dx:dx + wd])
        else:
            torch.sum(as_ * xs[:, dy:dy + h, dx:dx + wd], dim=-1, out=oo)
    return out


def _crop(xp: torch.Tensor, p: int) -> torch.Tensor:
    return xp[:, p:xp.shape[1] - p, p:xp.shape[2] - p].contiguous()


def _gather_aggregate(x: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    return _gather_sum(_pad(x, k // 2), w, k, w.shape[-1])


def _gather_scatter(a: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    return _crop(_scatter_sum(a, w, k, w.shape[-1]), k // 2)


def _gather_correlate(q: torch.Tensor, x: torch.Tensor, k: int, groups: int) -> torch.Tensor:
    return _correlate(q, _pad(x, k // 2), k, groups)


# Three ops, each the others' gradient pieces, so that a backward pass is made of the same ops
# and runs the same device's implementation (the gather here, Triton on CUDA, see below).
@torch.library.custom_op("ablate::local_aggregate", mutates_args=())
def _aggregate_op(x: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    return _gather_aggregate(x, w, k)


@torch.library.custom_op("ablate::local_scatter", mutates_args=())
def _scatter_op(a: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    """The transpose of local_aggregate in x: y[i] = sum_o w[i-d_o, o] * a[i-d_o]."""
    return _gather_scatter(a, w, k)


@torch.library.custom_op("ablate::local_correlate", mutates_args=())
def _correlate_op(q: torch.Tensor, x: torch.Tensor, k: int, groups: int) -> torch.Tensor:
    return _gather_correlate(q, x, k, groups)


# Both implementations return a new contiguous tensor, whatever the input's strides, and so must
# the fake ones (empty_like would copy a permuted input's strides, and compile would then fail).
@_aggregate_op.register_fake
def _(x, w, k):
    return x.new_empty(x.shape)


@_scatter_op.register_fake
def _(a, w, k):
    return a.new_empty(a.shape)


@_correlate_op.register_fake
def _(q, x, k, groups):
    return _weight_major(*q.shape[:3], k, groups, q)


def _setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:2])
    ctx.k = inputs[2]


def _aggregate_backward(ctx, gy):
    x, w = ctx.saved_tensors
    gx = _scatter_op(gy, w, ctx.k) if ctx.needs_input_grad[0] else None
    gw = _correlate_op(gy, x, ctx.k, w.shape[-1]) if ctx.needs_input_grad[1] else None
    return gx, gw, None


def _scatter_backward(ctx, gy):
    a, w = ctx.saved_tensors
    ga = _aggregate_op(gy, w, ctx.k) if ctx.needs_input_grad[0] else None
    gw = _correlate_op(a, gy, ctx.k, w.shape[-1]) if ctx.needs_input_grad[1] else None
    return ga, gw, None


def _correlate_backward(ctx, gout):
    q, x = ctx.saved_tensors
    gq = _aggregate_op(x, gout, ctx.k) if ctx.needs_input_grad[0] else None
    gx = _scatter_op(q, gout, ctx.k) if ctx.needs_input_grad[1] else None
    return gq, gx, None, None


_aggregate_op.register_autograd(_aggregate_backward, setup_context=_setup)
_scatter_op.register_autograd(_scatter_backward, setup_context=_setup)
_correlate_op.register_autograd(_correlate_backward, setup_context=_setup)


@functools.cache
def _triton():
    """The Triton kernels, or None where triton is not installed (the gather runs instead)."""
    try:
        from ablate.models.mixers import triton_ops
    except ImportError:
        return None
    return triton_ops


def _fast(t: torch.Tensor):
    """The Triton kernels for ``t``'s dtype, or None. They accumulate in float32, so float64
    (asked for exactness, as in the CPU/GPU agreement tests) keeps the gather's precision."""
    return None if t.dtype == torch.float64 else _triton()


# CUDA runs the Triton kernels; triton is imported on the first CUDA call, not with ablate.
# A Triton launch goes to the current CUDA device, so each is made on its tensors' device
# (cuda:1 under 'ablate train --device cuda:1'; Ray Train sets each worker's device itself).
@_aggregate_op.register_kernel("cuda")
def _(x, w, k):
    fast = _fast(x)
    if not fast:
        return _gather_aggregate(x, w, k)
    with torch.cuda.device(x.device):
        return fast.aggregate(x, w, k)


@_scatter_op.register_kernel("cuda")
def _(a, w, k):
    fast = _fast(a)
    if not fast:
        return _gather_scatter(a, w, k)
    with torch.cuda.device(a.device):
        return fast.scatter(a, w, k)


@_correlate_op.register_kernel("cuda")
def _(q, x, k, groups):
    fast = _fast(q)
    if not fast:
        return _gather_correlate(q, x, k, groups)
    with torch.cuda.device(q.device):
        return fast.correlate(q, x, k, groups)


# The public entry points: plain functions (FX names a node by its target's __name__, which a
# custom op object lacks), registered as FX leaves, so a traced caller records each as one call.
@register_notrace_function
def local_aggregate(x: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    """Channel-wise K x K aggregation with per-position weights shared by channel groups."""
    return _aggregate_op(x, w, k)


@register_notrace_function
def local_correlate(q: torch.Tensor, x: torch.Tensor, k: int, groups: int) -> torch.Tensor:
    """Per-group dot products of each position with its K x K neighbours (zero outside)."""
    return _correlate_op(q, x, k, groups)


# Multiply-adds x2 (FlopCounterMode's convention is FLOPs): one multiply-add per output element
# per offset.
@register_flop_formula(torch.ops.ablate.local_aggregate)
def _aggregate_flops(x_shape, w_shape, k, *args, out_shape=None, **kwargs) -> int:
    b, h, w, c = x_shape
    return 2 * b * h * w * c * k * k


@register_flop_formula(torch.ops.ablate.local_scatter)
def _scatter_flops(a_shape, w_shape, k, *args, out_shape=None, **kwargs) -> int:
    return _aggregate_flops(a_shape, w_shape, k)


@register_flop_formula(torch.ops.ablate.local_correlate)
def _correlate_flops(q_shape, x_shape, k, groups, *args, out_shape=None, **kwargs) -> int:
    b, h, w, c = q_shape
    return 2 * b * h * w * c * k * k
