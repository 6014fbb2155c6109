"""Registered models: names, axes, errors, counts, any input size (exact parameter counts of
the paper models: test_init.py)."""

from __future__ import annotations

import pytest
import timm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ablate  # registers the models
import ablate.models
from ablate.errors import ModelConfigError
from ablate.models import (
    MIXER_TABLE,
    MODEL_NAMES,
    axis_values,
    count_flops,
    count_params,
    create_model,
    input_error,
    model_stats,
    validate_model,
)
from ablate.models.mixers import MIXERS
from ablate.models.registry import AXES, resolve

NANO = [n for n in MODEL_NAMES if n.endswith("_nano")]


def test_contract_names_are_registered_with_timm():
    expected = {"ablate_swin_tiny", "ablate_swin_base", "dwnet_tiny", "dwnet_base",
                "dynamic_dwnet_tiny", "dynamic_dwnet_base", "idynamic_dwnet_tiny",
                "idynamic_dwnet_base", "local_mlp_tiny", "ablate_swin_nano", "sliding_attn_nano",
                "dwnet_nano", "dynamic_dwnet_nano", "idynamic_dwnet_nano", "window_idynamic_nano",
                "local_mlp_nano"}
    assert expected <= set(MODEL_NAMES)
    assert expected <= set(timm.list_models("*"))
    # every mixer has a small CPU model
    assert {resolve(n).mixer for n in NANO} == set(MIXERS)


def test_swin_tiny_is_timms_swin_tiny():
    """Same parameters under the same names, and the same function once timm's are loaded."""
    torch.manual_seed(0)
    theirs = timm.create_model("swin_tiny_patch4_window7_224").eval()
    ours = create_model("ablate_swin_tiny", num_classes=1000).eval()
    state = {k.replace(".attn.", ".mixer."): v for k, v in theirs.state_dict().items()
             if not k.endswith(("relative_position_index", "attn_mask"))}
    ours.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", NANO)
def test_nano_models_train_at_several_input_sizes(arch):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=5)
    for size in (32, 20):
        x = torch.randn(2, 3, size, size)
        out = model(x)
        assert out.shape == (2, 5) and torch.isfinite(out).all()
        out.square().mean().backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        model.zero_grad()


@pytest.mark.parametrize("source", axis_values()["weight_source"])
@pytest.mark.parametrize("window", axis_values()["window"])
def test_every_axis_combination_resolves_or_is_rejected(source, window):
    if (source, window) in MIXER_TABLE:
        spec = resolve("dwnet_nano", weight_source=source, window=window)
        assert spec.mixer == MIXER_TABLE[(source, window)] and spec.block == "dwnet"
    else:
        with pytest.raises(ModelConfigError, match=f"supported windows for {source}") as err:
            validate_model("dwnet_nano", weight_source=source, window=window)
        assert err.value.key == "window"


def test_axes_reach_the_built_model():
    model = create_model("dwnet_nano", num_classes=3, window="shifted", group_size=4, se=True,
                         kernel_size=5, drop_path_rate=0.1)
    block = model.layers[2].blocks[1]
    assert type(block.mixer).__name__ == "LocalMLP" and block.mixer.kernel_size == 5
    assert block.mixer.num_groups == 96 // 4 and block.mixer.shift
    assert type(block.se).__name__ == "SqueezeExcite"
    assert model.layers[-1].blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)
    assert isinstance(model.layers[0].blocks[0].drop_path1, torch.nn.Identity)
    attn = create_model("dwnet_nano", num_classes=3, mixer="window_attention", block="swin")
    assert type(attn.layers[0].blocks[0]).__name__ == "SwinBlock"


def test_group_size_and_num_groups_set_groups_per_stage():
    assert resolve("ablate_swin_tiny").groups == (3, 6, 12, 24)
    assert resolve("idynamic_dwnet_tiny").groups == (32, 32, 32, 32)
    assert resolve("dwnet_tiny", group_size=3).groups == (32, 64, 128, 256)


@pytest.mark.parametrize(
    "arch,axes,key,text",
    [
        ("dwnet_tiyn", {}, "arch", "did you mean 'dwnet_tiny'"),
        ("dwnet_nano", {"groupsize": 2}, "groupsize", "did you mean 'group_size'"),
        ("dwnet_nano", {"weight_source": "pooled"}, "weight_source", "pooled_linear"),
        ("dwnet_nano", {"weight_source": "pooled_linear", "window": "shifted"}, "window",
         "supported windows for pooled_linear: sliding"),
        ("dwnet_nano", {"group_size": 5}, "group_size", "does not divide"),
        ("dwnet_nano", {"num_groups": 64}, "num_groups", "does not divide"),
        ("dwnet_nano", {"group_size": 2, "num_groups": 4}, "group_size", "both set"),
        ("dwnet_nano", {"group_size": 0}, "group_size", "positive integer"),
        ("dwnet_nano", {"kernel_size": 4}, "kernel_size", "odd"),
        ("dwnet_nano", {"kernel_size": -1}, "kernel_size", "positive odd"),
        ("dwnet_nano", {"sharing": "channel"}, "sharing", "gives spatial"),
        ("dwnet_nano", {"sharing": "spatial", "group_size": 2}, "sharing", "gives both"),
        ("dwnet_nano", {"sharing": "global"}, "sharing", "valid:"),
        ("dwnet_nano", {"se": "yes"}, "se", "boolean"),
        ("dwnet_nano", {"drop_path_rate": 1.5}, "drop_path_rate", "[0, 1)"),
        ("dwnet_nano", {"mixer": "local_mlp", "window": "sliding"}, "mixer", "conflicting"),
        ("dwnet_nano", {"mixer": "attention"}, "mixer", "did you mean 'window_attention'"),
        ("dwnet_nano", {"block": "resnet"}, "block", "valid: dwnet, swin"),
    ],
)
def test_impossible_configurations_raise_our_error(arch, axes, key, text):
    with pytest.raises(ModelConfigError) as err:
        validate_model(arch, **axes)
    assert err.value.key == key and text in str(err.value)
    with pytest.raises(ModelConfigError):
        create_model(arch, num_classes=10, **axes)
    if arch in MODEL_NAMES:  # timm itself reports unknown names; known ones reach our checks
        with pytest.raises(ModelConfigError):
            timm.create_model(arch, num_classes=10, **axes)


def test_consistent_sharing_is_accepted():
    validate_model("dwnet_nano", sharing="both", group_size=2)
    validate_model("local_mlp_nano", sharing="none", group_size=1)
    validate_model("ablate_swin_tiny", sharing="channel")
    validate_model("idynamic_dwnet_tiny", sharing="channel")


def test_pretrained_weights_are_refused():
    with pytest.raises(ModelConfigError, match="no pretrained weights"):
        timm.create_model("dwnet_nano", pretrained=True)


def test_model_stats_match_a_real_model_and_are_cached(monkeypatch):
    model = create_model("idynamic_dwnet_nano", num_classes=7, group_size=4)
    stats = model_stats("idynamic_dwnet_nano", num_classes=7, img_size=32, group_size=4)
    assert stats.params == count_params(model)
    assert stats.flops == count_flops(model, 32)
    assert model_stats("idynamic_dwnet_nano", num_classes=7, img_size=32, group_size=4) is stats
    # The plan's input check counts the model it runs, so its counts then build nothing.
    model = create_model("dwnet_nano", num_classes=5, kernel_size=5)
    expected = (count_params(model), count_flops(model, 48))
    assert input_error("dwnet_nano", img_size=48, num_classes=5, kernel_size=5) is None

    def no_second_build(*args, **kwargs):
        raise AssertionError("the model was built again")

    monkeypatch.setattr(ablate.models, "create_model", no_second_build)
    again = model_stats("dwnet_nano", num_classes=5, img_size=48, kernel_size=5)
    assert (again.params, again.flops) == expected


def test_flops_scale_with_the_map_and_count_the_custom_ops():
    # Everything but the classifier scales with the number of positions.
    head = resolve("dwnet_nano").widths[-1] * 10
    small = model_stats("dwnet_nano", num_classes=10, img_size=32).flops - head
    large = model_stats("dwnet_nano", num_classes=10, img_size=64).flops - head
    assert large == 4 * small
    # The gather aggregation is a custom op; its multiply-adds must be counted.
    mixer = MIXERS["idynamic_dwconv"](16, num_groups=4, kernel_size=3).eval()
    x = torch.zeros(1, 5, 6, 16)
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        mixer(x)
    generator = 30 * (16 * 4 + 4 * 9 * 4)
    assert counter.get_total_flops() // 2 == generator + 30 * 16 * 9


def test_paper_flops_are_close_to_the_published_ones():
    # Published multiply-adds (the paper's tables): DWNet-T 3.8G, Swin-T 4.5G, Swin-B 15.4G.
    for arch, published in [("dwnet_tiny", 3.8e9), ("ablate_swin_tiny", 4.5e9),
                            ("ablate_swin_base", 15.4e9)]:
        flops = model_stats(arch, num_classes=1000, img_size=224).flops
        assert abs(flops - published) / published < 0.05, arch


@pytest.mark.parametrize("arch", NANO)
def test_nano_models_run_under_autocast(arch):
    """Mixed precision (as on a GPU with AMP) must not break any mixer's dtype handling."""
    torch.manual_seed(0)
    model = create_model(arch, num_classes=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 3, 32, 32))
    out.float().square().mean().backward()
    assert torch.isfinite(out.float()).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("arch", NANO)
def test_nano_models_agree_on_cpu_and_gpu(arch):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=5).eval().double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
        got = model.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-9)


_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 200), st.floats(-1, 2),
                    st.text(max_size=12), st.lists(st.integers(), max_size=2),
                    st.sampled_from([*axis_values()["weight_source"], *axis_values()["window"],
                                     *axis_values()["sharing"], *MIXERS, "swin", "dwnet"]))


@settings(max_examples=200, deadline=None)
@given(arch=st.sampled_from([*MODEL_NAMES, "nope"]),
       axes=st.dictionaries(st.sampled_from([*AXES, "heads"]), _values, max_size=4))
def test_any_axes_resolve_or_raise_our_error(arch, axes):
    try:
        spec = resolve(arch, **axes)
    except ModelConfigError as err:
        assert err.key and str(err)
    else:
        assert all(w % g == 0 for w, g in zip(spec.widths, spec.groups))
        assert spec.kernel_size % 2 == 1 and spec.mixer in MIXERS


def test_timm_optimizer_factory_exempts_norms_biases_and_position_tables():
    from timm.optim import create_optimizer_v2

    model = create_model("ablate_swin_nano", num_classes=3)
    opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in model.named_parameters():
        exempt = p.ndim <= 1 or name.endswith(".bias") or "relative_position" in name
        assert (id(p) in decayed) != exempt, name
