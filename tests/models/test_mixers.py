"""Every registered mixer against the slow explicit-weights oracle, forward and gradients."""

from __future__ import annotations

import pytest
import torch

from ablate.errors import ModelConfigError
from ablate.models.mixers import MIXERS, get_mixer
from ablate.models.mixers.local_ops import local_aggregate, local_correlate
from ablate.models.reference import REFERENCES, reference_forward
from ablate.models.registry import MIXER_TABLE

# (batch, H, W, K): a map that is not a multiple of the window; a map smaller than the window
# (batch 1); a multiple of the window; a non-square map whose short side equals the window.
SHAPES = [(2, 5, 7, 3), (1, 4, 4, 5), (2, 6, 6, 3), (1, 7, 5, 5)]


def _grads(module, x, y, gy):
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.autograd.grad((y * gy).sum(), [x, *params], allow_unused=True)


@pytest.mark.parametrize("name", sorted(MIXERS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("shift", [False, True], ids=["plain", "shift"])
@pytest.mark.parametrize("groups", [2, 8], ids=["g2", "g8"])
def test_mixer_matches_reference(name, shape, shift, groups):
    torch.manual_seed(0)
    b, h, w, k = shape
    mixer = get_mixer(name)(8, num_groups=groups, kernel_size=k, shift=shift).double()
    if b == 1:
        mixer.eval()  # batch statistics of a single pooled vector are undefined
    with torch.no_grad():  # non-trivial biases, so a dropped bias term would show
        for p in mixer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(b, h, w, 8, dtype=torch.float64, requires_grad=True)
    fast, slow = mixer(x), reference_forward(mixer, x)
    assert fast.shape == x.shape
    torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-9)
    gy = torch.randn_like(fast)
    for gf, gs in zip(_grads(mixer, x, fast, gy), _grads(mixer, x, slow, gy)):
        if gf is None or gs is None:
            assert gf is None and gs is None
            continue
        torch.testing.assert_close(gf, gs, rtol=1e-8, atol=1e-9)


def test_every_mixer_has_a_reference_and_its_axes_select_a_mixer():
    assert set(REFERENCES) >= set(MIXERS)
    for name, cls in MIXERS.items():  # the axes pick this mixer, or an earlier one of theirs
        assert (cls.weight_source, cls.window) in MIXER_TABLE, name
    for (source, window), name in MIXER_TABLE.items():
        cls = MIXERS[name]
        assert (cls.weight_source, cls.window) == (source, window)


def test_a_mixer_without_a_reference_is_told_how_to_give_one():
    """A plugin mixer registered without ``reference=`` failed its contract test with a bare
    KeyError of its name."""
    mixer = get_mixer("dwconv")(8, num_groups=8, kernel_size=3)
    mixer.name = "unreferenced"  # as a plugin's class registered without one
    with pytest.raises(LookupError, match=r"'unreferenced' has no reference.*"
                                          r"register_mixer\(reference=fn\)"):
        reference_forward(mixer, torch.randn(1, 3, 3, 8))


def test_shift_changes_shifted_window_mixers_only():
    torch.manual_seed(0)
    x = torch.randn(1, 9, 9, 8)
    for name, cls in MIXERS.items():
        torch.manual_seed(1)
        plain = cls(8, num_groups=2, kernel_size=3, shift=False).eval()
        shifted = cls(8, num_groups=2, kernel_size=3, shift=True).eval()
        shifted.load_state_dict(plain.state_dict())
        differs = not torch.allclose(plain(x), shifted(x))
        assert differs == (cls.window == "shifted"), name


@pytest.mark.parametrize(
    "name,group_size,sharing",
    [("dwconv", 1, "spatial"), ("dwconv", 4, "both"), ("local_mlp", 4, "channel"),
     ("local_mlp", 1, "none"), ("window_attention", 32, "channel"),
     ("dynamic_dwconv", 1, "spatial"), ("idynamic_dwconv", 3, "channel")],
)
def test_sharing_follows_spatial_sharing_and_group_size(name, group_size, sharing):
    assert MIXERS[name].sharing(group_size) == sharing


@pytest.mark.parametrize("kernel_size", [0, -3, 4, 2.5, True])
def test_bad_kernel_is_rejected_at_construction(kernel_size):
    with pytest.raises(ModelConfigError) as err:
        MIXERS["dwconv"](8, num_groups=8, kernel_size=kernel_size)
    assert err.value.key == "kernel_size"


def test_groups_must_divide_channels():
    with pytest.raises(ModelConfigError, match="divisor of 8") as err:
        MIXERS["idynamic_dwconv"](8, num_groups=3, kernel_size=3)
    assert err.value.key == "num_groups"


def test_unknown_mixer_names_the_closest():
    with pytest.raises(ModelConfigError, match="did you mean 'dwconv'"):
        get_mixer("dwconvv")


def test_local_ops_gradcheck():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 4, 5, 9, 3, dtype=torch.float64, requires_grad=True)
    q = torch.randn(2, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: local_aggregate(x, w, 3), (x, w))
    assert torch.autograd.gradcheck(lambda q, x: local_correlate(q, x, 3, 3), (q, x))


@pytest.mark.parametrize("layout", ["contiguous", "permuted"])
def test_local_ops_pass_torch_opcheck(layout):
    """torch's own checks of a custom op: schema, autograd registration, and that the fake
    (meta) implementation gives the real output's shape and strides, which torch.compile
    relies on; a permuted (dense, not contiguous) input once made the fakes' strides wrong."""
    torch.manual_seed(0)
    b, h, w, c, g, k = 2, 4, 5, 6, 3, 3
    if layout == "permuted":  # channels first in memory, as a plugin's NCHW tensor permuted
        x, q, a = (torch.randn(b, c, h, w).permute(0, 2, 3, 1) for _ in range(3))
        wt = torch.randn(b, k * k, g, h, w).permute(0, 3, 4, 1, 2)
    else:
        x, q, a = (torch.randn(b, h, w, c) for _ in range(3))
        wt = torch.randn(b, h, w, k * k, g)
    ops = torch.ops.ablate
    for op, args in [(ops.local_aggregate, (x, wt, k)), (ops.local_scatter, (a, wt, k)),
                     (ops.local_correlate, (q, x, k, g))]:
        args = tuple(t.requires_grad_() if torch.is_tensor(t) else t for t in args)
        torch.library.opcheck(op.default, args)
