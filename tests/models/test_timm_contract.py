"""timm's model contract, for every registered model: what timm's own model tests ask of theirs.

Default cfgs, classifier handling, ``features_only`` (each feature class), intermediates,
pruning, gradient checkpointing and FX tracing. The paper-size models are only built on the
meta device (cheap); everything that computes runs on the nano models.
"""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import get_notrace_functions, get_notrace_modules
from timm.models import create_feature_extractor, get_graph_node_names
from torch import nn

import ablate  # noqa: F401  (registers the models)
from ablate.models import MODEL_NAMES
from ablate.models.mixers import MIXERS
from ablate.models.mixers.local_ops import local_aggregate
from ablate.models.registry import MODEL_DEFAULTS

NANO = [n for n in MODEL_NAMES if n.endswith("_nano")]
# torchvision notes that eval-mode graphs are a subsequence of train-mode ones; known, and fine
pytestmark = pytest.mark.filterwarnings("ignore:NOTE. The nodes obtained by tracing")


def _nano(arch: str, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(arch, **kwargs)


def _image(arch: str, batch: int = 2) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(batch, *timm.get_pretrained_cfg(arch).input_size)


@pytest.mark.parametrize("arch", MODEL_NAMES)
def test_timm_knows_each_models_default_cfg(arch):
    cfg = timm.get_pretrained_cfg(arch)
    spec = MODEL_DEFAULTS[arch]
    assert cfg is not None and cfg.architecture == arch
    assert cfg.input_size == (3, spec.img_size, spec.img_size)
    assert cfg.interpolation == "bicubic"
    assert cfg.crop_pct == (0.875 if spec.img_size == 224 else 1.0)
    assert (cfg.mean, cfg.std) == (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
    assert cfg.num_classes == 1000 and not cfg.has_weights
    assert "2106.04263" in cfg.paper_ids and "Dynamic Depth-wise Convolution" in cfg.paper_name


@pytest.mark.parametrize("arch", MODEL_NAMES)
def test_cfg_names_real_layers_and_the_features_it_promises(arch):
    with torch.device("meta"):  # no memory, no arithmetic: cheap even for the B models
        model = timm.create_model(arch).eval()
    cfg = model.pretrained_cfg
    feats = model.forward_features(torch.empty(1, *cfg["input_size"], device="meta"))
    params = dict(model.named_parameters())
    assert f"{cfg['first_conv']}.weight" in params and f"{cfg['classifier']}.weight" in params
    assert params[f"{cfg['classifier']}.weight"].shape == (1000, model.num_features)
    assert model.output_fmt == "NHWC"
    assert feats.shape == (1, *cfg["pool_size"], model.num_features)
    assert model.num_features == model.head_hidden_size == model.feature_info[-1]["num_chs"]
    spec = MODEL_DEFAULTS[arch]
    assert [f["num_chs"] for f in model.feature_info] == list(spec.widths)
    assert [f["reduction"] for f in model.feature_info] == [spec.patch_size * 2**i
                                                            for i in range(4)]
    modules = dict(model.named_modules())
    assert all(f["module"] in modules for f in model.feature_info)


@pytest.mark.parametrize("arch", NANO)
def test_features_then_head_is_forward_and_pre_logits_is_the_pooled_map(arch):
    model, x = _nano(arch, num_classes=7).eval(), _image(arch)
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        torch.testing.assert_close(model.forward_head(feats), model(x))
    torch.testing.assert_close(pre, feats.mean(dim=(1, 2)))
    assert pre.shape == (2, model.head_hidden_size)
    assert model.get_classifier() is model.head.fc and model.get_classifier().out_features == 7


@pytest.mark.parametrize("arch", NANO)
def test_reset_classifier_and_global_pool(arch):
    model, x = _nano(arch, num_classes=7).eval(), _image(arch)
    with torch.no_grad():
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
        model.reset_classifier(0)
        assert model.num_classes == 0
        torch.testing.assert_close(model(x), pre)
        model.reset_classifier(0, "")
        torch.testing.assert_close(model(x), model.forward_features(x))  # the unpooled map
        model.reset_classifier(4)  # the pooling asked for last is kept
        assert model(x).shape == (2, *model.pretrained_cfg["pool_size"], 4)
        model.reset_classifier(3, "avg")
        assert model(x).shape == (2, 3) and model.num_classes == 3
        fresh = _nano(arch, num_classes=0, global_pool="")
        assert fresh.eval()(x).shape == (2, *model.pretrained_cfg["pool_size"], fresh.num_features)
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(3, "max")


@pytest.mark.parametrize("arch", NANO)
def test_forward_intermediates(arch):
    model, x = _nano(arch).eval(), _image(arch)
    info = model.feature_info
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        assert [t.shape[1] for t in inter] == [f["num_chs"] for f in info]  # NCHW
        assert [t.shape[2] for t in inter] == [32 // f["reduction"] for f in info]
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert [t.shape for t in last_two] == [t.shape for t in inter[2:]]
        normed = model.forward_intermediates(x, indices=[3], norm=True, output_fmt="NHWC",
                                             intermediates_only=True)
        torch.testing.assert_close(normed[0], final)  # the final norm on the last stage
        early, picked = model.forward_intermediates(x, indices=[0, 1], stop_early=True)
        assert early.shape[-1] == info[1]["num_chs"]  # no stage after the last one asked for
        for a, b in zip(picked, inter[:2]):
            torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NLC")


@pytest.mark.parametrize("arch", NANO)
def test_prune_intermediate_layers_keeps_what_is_needed(arch):
    model, x = _nano(arch).eval(), _image(arch)
    with torch.no_grad():
        wanted = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        assert model.prune_intermediate_layers([0, 1]) == [0, 1]
        assert len(model.layers) == 2 and model.num_classes == 0
        assert model.num_features == model.feature_info[1]["num_chs"]
        for a, b in zip(model.forward_intermediates(x, intermediates_only=True), wanted):
            torch.testing.assert_close(a, b)
        assert model(x).shape[-1] == model.num_features


@pytest.mark.parametrize("arch", NANO)
@pytest.mark.parametrize("feature_cls", ["list", "dict", "hook", "getter", "fx"])
def test_features_only_gives_the_stage_outputs(arch, feature_cls):
    x = _image(arch, batch=1)
    plain = _nano(arch).eval()
    feats = _nano(arch, features_only=True, feature_cls=feature_cls, out_indices=(1, 3)).eval()
    assert feats.feature_info.channels() == [plain.feature_info[i]["num_chs"] for i in (1, 3)]
    assert feats.feature_info.reduction() == [plain.feature_info[i]["reduction"]
                                              for i in (1, 3)]
    with torch.no_grad():
        want = plain.forward_intermediates(x, indices=[1, 3], intermediates_only=True)
        got = feats(x)
    got = list(got.values()) if isinstance(got, dict) else got
    if feature_cls != "getter":  # the getter asks forward_intermediates for NCHW itself
        got = [t.permute(0, 3, 1, 2) for t in got]
    assert len(got) == 2
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)  # same seed, same weights: the same features


def test_features_only_defaults_to_all_four_stages():
    feats = _nano("dwnet_nano", features_only=True)
    assert len(feats(_image("dwnet_nano"))) == 4 == len(feats.feature_info)


@pytest.mark.parametrize("arch", NANO)
def test_grad_checkpointing_recomputes_and_changes_nothing(arch):
    plain = _nano(arch, num_classes=5, drop_path_rate=0.2).train()
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing()
    calls = []
    ckpt.layers[1].blocks[0].register_forward_pre_hook(lambda *_: calls.append(1))
    x = _image(arch)
    outs = []
    for model in (plain, ckpt):
        torch.manual_seed(3)  # the same drop-path draws for both
        out = model(x)
        out.square().mean().backward()
        outs.append(out)
    assert len(calls) == 2  # the block was entered again in backward: checkpointing is on
    torch.testing.assert_close(outs[1], outs[0])
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(b.grad, a.grad, msg=name)
    ckpt.set_grad_checkpointing(False)
    assert not any(stage.grad_checkpointing for stage in ckpt.layers)


@pytest.mark.parametrize("arch", NANO)
def test_group_matcher_groups_parameters_by_depth(arch):
    """What timm's layer-wise learning-rate decay reads: the stem first, then each block in
    depth order (a stage's patch merging with its first block, the final norm with the last
    block), the head last; coarse, one group per stage."""
    from timm.models import group_parameters

    model = _nano(arch)
    names = [n for n, _ in model.named_parameters()]
    fine = group_parameters(model, model.group_matcher())
    assert sorted(n for group in fine.values() for n in group) == sorted(names)
    blocks = [(i, j) for i, stage in enumerate(model.layers) for j in range(len(stage.blocks))]
    assert len(fine) == 1 + len(blocks) + 1
    groups = list(fine.values())
    assert all(n.startswith("patch_embed.") for n in groups[0])
    for (i, j), group in zip(blocks, groups[1:-1]):
        own = {n for n in group if n.startswith(f"layers.{i}.blocks.{j}.")}
        merging = {n for n in group if n.startswith(f"layers.{i}.downsample.")}
        final = {n for n in group if n.startswith("norm.")}
        assert own and set(group) == own | merging | final, (i, j)
        assert bool(merging) == (j == 0 and i > 0) and bool(final) == ((i, j) == blocks[-1])
    assert all(n.startswith("head.") for n in groups[-1])
    coarse = group_parameters(model, model.group_matcher(coarse=True))
    assert len(coarse) == 1 + len(model.layers) + 1


@pytest.mark.parametrize("arch", NANO)
def test_fx_traced_model_gives_the_same_output(arch):
    model, x = _nano(arch, num_classes=5).eval(), _image(arch, batch=1)
    _, eval_nodes = get_graph_node_names(model)
    mixers = [n for n in eval_nodes if n.endswith(".mixer")]
    assert len(mixers) == sum(len(s.blocks) for s in model.layers)  # each mixer one leaf node
    traced = create_feature_extractor(model, return_nodes={eval_nodes[-1]: "out"})
    with torch.no_grad():
        assert torch.equal(traced(x)["out"], model(x))


@pytest.mark.parametrize("arch", NANO)
def test_fx_traced_model_trains(arch):
    model = _nano(arch, num_classes=5, drop_path_rate=0.1).train()
    train_nodes, _ = get_graph_node_names(model)
    traced = create_feature_extractor(model, return_nodes={train_nodes[-1]: "out"})
    out = traced(_image(arch))["out"]
    assert out.shape == (2, 5)
    out.square().mean().backward()
    missing = [n for n, p in traced.named_parameters() if p.grad is None]
    assert not missing


@pytest.mark.parametrize("arch", NANO)
@pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")
def test_dynamo_captures_the_whole_model_in_one_graph(arch):
    """torch.compile sees each model whole: a graph break (a data-dependent op, say) would cut
    it into compiled pieces with eager Python between them, on every step."""
    model = _nano(arch, num_classes=5).train()
    x = torch.randn(2, 3, 40, 40)  # a 10x10 first stage: windows padded, shifted and masked
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0, [str(b.reason).splitlines()[0]
                                              for b in explained.break_reasons]
    assert explained.graph_count == 1


def test_every_mixer_and_the_local_ops_are_fx_leaves():
    assert set(MIXERS.values()) <= set(get_notrace_modules())

    class Aggregate(nn.Module):  # a traceable layer of one's own that uses a local op
        def forward(self, x, w):
            return local_aggregate(x, w, 3) * 2

    graph = torch.fx.Tracer(autowrap_functions=tuple(get_notrace_functions())).trace(
        Aggregate())
    calls = [n.target for n in graph.nodes if n.op == "call_function"]
    assert local_aggregate in calls  # one leaf call, not traced into
    x, w = torch.randn(1, 4, 4, 6), torch.randn(1, 4, 4, 9, 3)
    module = torch.fx.GraphModule(Aggregate(), graph)
    torch.testing.assert_close(module(x, w), Aggregate()(x, w))


def test_a_plugins_model_and_mixer_keep_the_contract():
    """In a fresh process (the plugin must not join this process's registry)."""
    import subprocess
    import sys
    from pathlib import Path

    code = """
import timm, torch
import tests.plugins.lab_mixers
from timm.models import create_feature_extractor, get_graph_node_names
cfg = timm.get_pretrained_cfg("gated_dwnet_nano")
assert cfg.input_size == (3, 32, 32) and "2106.04263" in cfg.paper_ids, cfg
model = timm.create_model("gated_dwnet_nano", num_classes=3).eval()
_, nodes = get_graph_node_names(model)
assert "layers.0.blocks.0.mixer" in nodes, nodes
x = torch.randn(1, 3, 32, 32)
with torch.no_grad():
    traced = create_feature_extractor(model, return_nodes={nodes[-1]: "out"})
    assert torch.equal(traced(x)["out"], model(x))
    feats = timm.create_model("gated_dwnet_nano", features_only=True).eval()(x)
assert [f.shape[-1] for f in feats] == [24, 48, 96, 192]
print("ok")
"""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
