"""The paper models start from the authors' distributions, and have the paper's sizes.

Per layer type: the DWNet family's 1x1 convs and kernel generators are ``nn.Conv2d`` with
PyTorch's default initialisation (uniform in +-1/sqrt(fan_in), biases too); Linear layers have
Swin's trunc-normal (std 0.02) weights and zero biases; norms start at identity.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ablate.models import count_params, create_model
from ablate.models.layers import Conv1x1

PAPER_PARAMS = {  # 1000 classes; computed from the authors' code and timm
    "ablate_swin_tiny": 28_288_354,
    "dwnet_tiny": 24_172_744,
    "dynamic_dwnet_tiny": 51_131_752,
    "idynamic_dwnet_tiny": 26_244_280,
    "ablate_swin_base": 87_768_224,
    "dwnet_base": 74_347_112,
    "dynamic_dwnet_base": 161_597_928,
    "idynamic_dwnet_base": 80_253_608,
}
DWNET_FAMILY = ["dwnet_tiny", "dynamic_dwnet_tiny", "idynamic_dwnet_tiny"]


@pytest.mark.parametrize("arch", sorted(PAPER_PARAMS))
def test_paper_models_have_the_paper_parameter_count(arch):
    with torch.device("meta"):  # shapes only: a B model costs nothing to count
        model = create_model(arch, num_classes=1000)
    assert count_params(model) == PAPER_PARAMS[arch]


def test_local_mlp_tiny_is_swin_tiny_with_the_attention_swapped_for_window_mlps():
    """No published count: derive it from Swin-T's. Each block drops its attention (qkv and
    output Linear with biases, a 13x13 relative-position table per head) and gains, per group of
    32 channels, a 49x49 spatial weight and a 49 bias; the norms, FFN, stem and head stay."""
    depths, dims = (2, 2, 6, 2), (96, 192, 384, 768)
    attention = sum(d * (4 * c * c + 4 * c + 13 * 13 * (c // 32)) for d, c in zip(depths, dims))
    window_mlp = sum(d * (c // 32) * (49 * 49 + 49) for d, c in zip(depths, dims))
    with torch.device("meta"):
        model = create_model("local_mlp_tiny", num_classes=1000)
    assert count_params(model) == PAPER_PARAMS["ablate_swin_tiny"] - attention + window_mlp


def _uniform_like_default(t: torch.Tensor, bound: float) -> bool:
    """Within +-bound, with the spread of a uniform there (std bound/sqrt(3))."""
    std = t.std().item()
    return t.abs().max().item() <= bound and abs(std - bound / math.sqrt(3)) < 0.1 * std


@pytest.fixture(scope="module", params=DWNET_FAMILY)
def paper_model(request) -> nn.Module:
    torch.manual_seed(0)
    return create_model(request.param, num_classes=1000)


def test_dwnet_convs_and_generators_keep_pytorchs_default_init(paper_model):
    convs = [m for m in paper_model.modules() if isinstance(m, Conv1x1)]
    blocks = [b for stage in paper_model.layers for b in stage.blocks]
    assert len(convs) >= 2 * len(blocks)  # the branch's two, plus the generator's if dynamic
    assert all(isinstance(b.conv1, nn.Conv2d) and b.conv1.weight.shape[2:] == (1, 1)
               for b in blocks)
    generators = [m.mixer.kernel_gen for m in blocks if hasattr(m.mixer, "kernel_gen")]
    assert all(isinstance(layer, nn.Conv2d) for g in generators for layer in (g[0], g[-1]))
    for conv in convs:
        bound = 1 / math.sqrt(conv.in_channels)
        assert _uniform_like_default(conv.weight, bound), conv
        if conv.bias is not None and conv.bias.numel() >= 64:  # enough values for a spread
            assert _uniform_like_default(conv.bias, bound), conv


def test_linear_layers_have_swins_init_and_norms_start_at_identity(paper_model):
    linears = [m for m in paper_model.modules() if isinstance(m, nn.Linear)]
    assert linears
    for layer in linears:
        # timm's trunc_normal_ cuts at +-2 (absolute), far out: the std stays 0.02
        assert abs(layer.weight.std().item() - 0.02) < 0.002, layer
        assert layer.bias is None or not layer.bias.any()
    for norm in paper_model.modules():
        if isinstance(norm, (nn.LayerNorm, nn.BatchNorm2d)):
            assert (norm.weight == 1).all() and not norm.bias.any()


def test_old_linear_shaped_checkpoints_load_into_the_conv_layout():
    torch.manual_seed(0)
    conv = Conv1x1(6, 4)
    old = {"weight": torch.randn(4, 6), "bias": torch.randn(4)}  # ablate 0.1: nn.Linear
    conv.load_state_dict(old)
    x = torch.randn(2, 3, 5, 6)
    torch.testing.assert_close(conv(x), nn.functional.linear(x, old["weight"], old["bias"]))
    # and it is the convolution it claims to be, on the channels-first view
    ref = nn.functional.conv2d(x.permute(0, 3, 1, 2), conv.weight, conv.bias)
    torch.testing.assert_close(conv(x), ref.permute(0, 2, 3, 1))
