"""The slow oracle: every mixer as y_i = sum_j w_ij * x_j (+ b_i) with explicit weights.

For each mixer this module states, in plain Python loops over positions, which j lie in the
window of i and which of the mixer's own weights connects them, then gathers the dense weights
w[b, i, j, c] (zero outside the window) from the mixer's parameters and applies the formula.
Dynamic weights are predicted here too, from the input and the generator's parameters (the
global mean for the homogeneous conv, each position's own feature for the inhomogeneous ones),
never by the mixer's kernel code. It restates the window rules rather than importing the fast
code's helpers, so a bug in one is not copied into the other. Only for tests: memory grows
with (H*W)^2.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Pos = tuple[int, int]


def positions(h: int, w: int) -> list[Pos]:
    return [(r, c) for r in range(h) for c in range(w)]


def sliding_offset(i: Pos, j: Pos, k: int) -> int | None:
    """Index (row-major in the K x K kernel) of j's offset from i, None outside the kernel."""
    p = k // 2
    dy, dx = j[0] - i[0], j[1] - i[1]
    if abs(dy) > p or abs(dx) > p:
        return None
    return (dy + p) * k + (dx + p)


def shifted_windows(h: int, w: int, k: int, shift: bool) -> tuple[int, int]:
    """(window side, shift): the window shrinks to the map, and then does not shift."""
    if min(h, w) <= k:
        return min(h, w), 0
    return k, (k // 2 if shift else 0)


def same_window(i: Pos, j: Pos, ws: int, s: int) -> bool:
    """Windows tile the map with their corners at s + n*ws; rows/cols before s form their own."""
    return all((a - s) // ws == (b - s) // ws for a, b in zip(i, j))


def in_window_pos(j: Pos, ws: int, s: int) -> tuple[int, int]:
    return ((j[0] - s) % ws, (j[1] - s) % ws)


def index_table(h: int, w: int, rule: Callable[[Pos, Pos], int | None]) -> torch.Tensor:
    """(HW, HW) long: rule(i, j) for every pair, -1 where j is not in i's window."""
    pos = positions(h, w)
    table = [[-1 if (v := rule(i, j)) is None else v for j in pos] for i in pos]
    return torch.tensor(table, dtype=torch.long)


def apply_weights(x: torch.Tensor, wts: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """y[b,i,c] = sum_j wts[b,i,j,c] * x[b,j,c] over j with idx[i,j] >= 0; x (B, H, W, C)."""
    b, h, w, c = x.shape
    mask = (idx >= 0).to(x.dtype)[None, :, :, None]
    y = torch.einsum("bijc,bjc->bic", wts * mask, x.reshape(b, h * w, c))
    return y.view(b, h, w, c)


def _per_channel(t: torch.Tensor, c: int) -> torch.Tensor:
    """Expand a trailing group axis G to C channels (consecutive channels share a group)."""
    return t.repeat_interleave(c // t.shape[-1], dim=-1)


def _conv1x1(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution on (..., C_in) features: each output channel a weighted channel sum."""
    y = torch.einsum("...i,oi->...o", x, conv.weight.reshape(conv.weight.shape[0], -1))
    return y if conv.bias is None else y + conv.bias


def _batch_norm(bn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm over every axis but the last: batch statistics in training, running ones not."""
    if isinstance(bn, nn.Identity):
        return x
    if bn.training:
        flat = x.reshape(-1, x.shape[-1])
        mean, var = flat.mean(0), flat.var(0, unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    return (x - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias


def predict(generator: nn.Sequential, feats: torch.Tensor) -> torch.Tensor:
    """The paper's kernel generator from its parameters: 1x1 conv, BatchNorm, ReLU, 1x1 conv."""
    first, norm, _, last = generator
    return _conv1x1(last, _batch_norm(norm, _conv1x1(first, feats)).clamp(min=0))


def own_features(x: torch.Tensor) -> torch.Tensor:
    """(B, HW, C): row i is position i's own feature, what its kernel is predicted from (the
    generator's 1x1 convs act per row; only BatchNorm's batch statistics span positions)."""
    return torch.stack([x[:, r, c] for r, c in positions(*x.shape[1:3])], dim=1)


def _attention(m: nn.Module, x: torch.Tensor, idx: torch.Tensor, bias_at: torch.Tensor):
    b, h, w, c = x.shape
    heads, hd = m.num_groups, c // m.num_groups
    q, k, v = m.qkv(x).reshape(b, h * w, 3, heads, hd).unbind(2)
    logits = torch.einsum("bihd,bjhd->bijh", q * hd**-0.5, k) + bias_at
    logits = logits.masked_fill((idx < 0)[None, :, :, None], float("-inf"))
    a = _per_channel(logits.softmax(dim=2), c)  # (B, HW, HW, C)
    return m.proj(apply_weights(v.reshape(b, h, w, c), a, idx))


def window_attention(m, x):
    h, w = x.shape[1:3]
    ws, s = shifted_windows(h, w, m.kernel_size, m.shift)
    k2 = 2 * m.kernel_size - 1

    def rule(i, j):  # relative offset, as an index into the (2K-1)^2 table
        if not same_window(i, j, ws, s):
            return None
        return (i[0] - j[0] + m.kernel_size - 1) * k2 + (i[1] - j[1] + m.kernel_size - 1)

    idx = index_table(h, w, rule)
    return _attention(m, x, idx, m.relative_position_bias_table[idx.clamp(min=0)][None])


def sliding_attention(m, x):
    _, h, w, _ = x.shape
    idx = index_table(h, w, lambda i, j: sliding_offset(i, j, m.kernel_size))
    return _attention(m, x, idx, m.relative_position_bias_table[idx.clamp(min=0)][None])


def dwconv(m, x):
    _, h, w, c = x.shape
    idx = index_table(h, w, lambda i, j: sliding_offset(i, j, m.kernel_size))
    kernel = m.weight.reshape(m.num_groups, -1).t()  # (K*K, G)
    wts = _per_channel(kernel[idx.clamp(min=0)], c)[None]  # (1, HW, HW, C)
    return apply_weights(x, wts, idx) + m.bias


def dynamic_dwconv(m, x):
    b, h, w, c = x.shape
    idx = index_table(h, w, lambda i, j: sliding_offset(i, j, m.kernel_size))
    mean = x.sum(dim=(1, 2)) / (h * w)  # the global average of each channel, (B, C)
    kernel = predict(m.kernel_gen, mean).reshape(b, m.num_groups, -1).transpose(1, 2)  # (B,KK,G)
    wts = _per_channel(kernel[:, idx.clamp(min=0)], c)  # (B, HW, HW, C)
    return apply_weights(x, wts, idx) + m.bias


def idynamic_dwconv(m, x):
    b, h, w, c = x.shape
    idx = index_table(h, w, lambda i, j: sliding_offset(i, j, m.kernel_size))
    kernel = predict(m.kernel_gen, own_features(x)).reshape(b, h * w, -1, m.num_groups)
    rows = torch.arange(h * w)[:, None].expand_as(idx)
    wts = _per_channel(kernel[:, rows, idx.clamp(min=0)], c)  # (B, HW_i, HW_j, C)
    return apply_weights(x, wts, idx)


def window_idynamic(m, x):
    b, h, w, c = x.shape
    k, g = m.kernel_size, m.num_groups
    ws, s = shifted_windows(h, w, k, m.shift)

    def rule(i, j):  # j's position in the window, as an index into the K x K weights
        if not same_window(i, j, ws, s):
            return None
        r, col = in_window_pos(j, ws, s)
        return r * k + col

    idx = index_table(h, w, rule)
    kernel = predict(m.kernel_gen, own_features(x)).reshape(b, h * w, k * k, g)
    rows = torch.arange(h * w)[:, None].expand_as(idx)
    return apply_weights(x, _per_channel(kernel[:, rows, idx.clamp(min=0)], c), idx)


def local_mlp(m, x):
    _, h, w, c = x.shape
    k, g = m.kernel_size, m.num_groups
    ws, s = shifted_windows(h, w, k, m.shift)
    flat = m.weight.reshape(g, k, k, k, k)

    def rule(i, j):  # (position of i, position of j) in the window, flattened K^4 index
        if not same_window(i, j, ws, s):
            return None
        (ri, ci), (rj, cj) = in_window_pos(i, ws, s), in_window_pos(j, ws, s)
        return ((ri * k + ci) * k + rj) * k + cj

    idx = index_table(h, w, rule)
    wts = _per_channel(flat.reshape(g, -1).t()[idx.clamp(min=0)], c)[None]
    pos = [in_window_pos(i, ws, s) for i in positions(h, w)]
    bias_idx = torch.tensor([r * k + col for r, col in pos])
    bias = _per_channel(m.bias.t()[bias_idx], c).view(1, h, w, c)
    return apply_weights(x, wts, idx) + bias


REFERENCES: dict[str, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    "window_attention": window_attention,
    "sliding_attention": sliding_attention,
    "dwconv": dwconv,
    "dynamic_dwconv": dynamic_dwconv,
    "idynamic_dwconv": idynamic_dwconv,
    "window_idynamic": window_idynamic,
    "local_mlp": local_mlp,
}


def reference_forward(mixer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The output of ``mixer`` on (B, H, W, C) input ``x``, computed the slow, explicit way.

    LookupError saying how to give one if ``mixer`` was registered without a reference."""
    if mixer.name not in REFERENCES:
        raise LookupError(f"mixer {mixer.name!r} has no reference to be checked against: "
                          "register it with @register_mixer(reference=fn), fn(mixer, x) "
                          "computing its output the slow, explicit way")
    return REFERENCES[mixer.name](mixer, x)
