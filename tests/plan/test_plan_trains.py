"""What the plan accepts must run: sweeps drawn over the model axes, the batch split and the
recipe either are refused by ``load_plan`` (one SpecError) or train an epoch to the end."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ablate.errors import SpecError
from ablate.inprocess import train_here
from ablate.models import MODEL_NAMES
from ablate.plan import load_plan

NANO = [n for n in MODEL_NAMES if n.endswith("_nano")]
MODEL = st.fixed_dictionaries({"arch": st.sampled_from(NANO)}, optional={
    "weight_source": st.sampled_from(["static", "dot_product", "center_linear", "pooled_linear"]),
    "window": st.sampled_from(["shifted", "sliding"]),
    "sharing": st.sampled_from(["spatial", "channel", "both", "none"]),
    "group_size": st.sampled_from([1, 2, 3, 4, 6, 8, 12, 24]),
    "num_groups": st.sampled_from([1, 2, 3, 4, 6, 8]),
    "kernel_size": st.sampled_from([1, 3, 5, 7, 9, 11]),
    "se": st.booleans(),
    "drop_path_rate": st.sampled_from([0.0, 0.5]),
    "mixer": st.sampled_from(["dwconv", "dynamic_dwconv", "idynamic_dwconv", "local_mlp",
                              "sliding_attention", "window_attention", "window_idynamic"]),
    "block": st.sampled_from(["swin", "dwnet"]),
})
RECIPE = st.fixed_dictionaries({
    "epochs": st.just(1), "warmup_epochs": st.sampled_from([0, 0.5, 1]),
    "batch_size": st.sampled_from([1, 2, 3, 4, 6, 8]), "workers": st.just(0),
    "mixup": st.sampled_from([0.0, 0.0, 0.8]), "cutmix": st.sampled_from([0.0, 0.0, 1.0]),
}, optional={
    "accum_steps": st.sampled_from([1, 2, 3]),
    "label_smoothing": st.sampled_from([0.0, 0.1]),
    "clip_grad": st.sampled_from([None, 1.0]),
    "randaugment": st.sampled_from([None, "rand-m9-mstd0.5-inc1"]),
    "reprob": st.sampled_from([0.0, 0.5]),
    "mixup_switch_prob": st.sampled_from([0.0, 1.0]),
})
DATA = st.fixed_dictionaries({
    "name": st.just("synthetic"), "num_classes": st.sampled_from([2, 5]),
    "img_size": st.sampled_from([8, 9, 15, 16, 23, 32, 40]),  # down to 1x1 last maps
    "num_train": st.sampled_from([8, 16, 24]), "num_val": st.sampled_from([1, 3]),
})


# derandomized: the same examples on every run, so CI cannot pass by luck one day and fail
# the next; the search behind it (1,500 examples, 656 that planned) found the micro-batches
# of one that BatchNorm cannot train on, now refused by the plan
@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(model=MODEL, recipe=RECIPE, data=DATA)
def test_a_trial_the_plan_accepts_trains_to_the_end(tmp_path_factory, model, recipe, data):
    tmp = tmp_path_factory.mktemp("sweep")
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "prop", "description": "drawn", "base": {
        "model": model, "data": data, "train": recipe}}))
    try:
        _, trials = load_plan(str(path))
    except SpecError as e:
        assert "\n" not in str(e)
        return
    result = train_here(trials[0], tmp / "trial", device="cpu", propagate=True)
    assert result["state"] in ("done", "diverged")
    assert result["epochs"] == 1
