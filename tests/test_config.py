import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from ablate.config import (
    DataConfig,
    ModelConfig,
    RecipeConfig,
    Resources,
    Trial,
    TrialConfig,
    flatten,
)


def make(**model):
    return TrialConfig(model=ModelConfig(arch="dwnet_nano", **model),
                       data=DataConfig(name="digits"), train=RecipeConfig(epochs=3), seed=1)


def test_trial_id_is_stable_and_depends_on_every_result_relevant_field():
    base = make(group_size=4)
    assert base.trial_id() == make(group_size=4).trial_id()
    assert len(base.trial_id()) == 12
    changed = [
        make(group_size=8),
        dataclasses.replace(base, seed=2),
        dataclasses.replace(base, train=RecipeConfig(epochs=4)),
        dataclasses.replace(base, data=DataConfig(name="digits", img_size=64)),
    ]
    ids = {c.trial_id() for c in changed}
    assert base.trial_id() not in ids and len(ids) == len(changed)


def test_bookkeeping_does_not_change_the_trial_id():
    cfg = make()
    a = Trial(config=cfg, sweep="a", arm="baseline", role="baseline")
    b = Trial(config=cfg, sweep="b", arm="renamed", resources=Resources(cpus=4, gpus=0.5))
    assert a.id == b.id == cfg.trial_id()


@given(group=st.one_of(st.none(), st.integers(1, 64)), seed=st.integers(0, 10**6),
       se=st.one_of(st.none(), st.booleans()))
def test_trial_round_trips_through_dict(group, seed, se):
    trial = Trial(config=dataclasses.replace(make(group_size=group, se=se), seed=seed),
                  sweep="s", arm="x", varied={"model.group_size": group}, role="arm",
                  expected={"val/top1": 80.0})
    back = Trial.from_dict(trial.to_dict())
    assert back == trial and back.id == trial.id


def test_axes_leave_out_unset_values_and_the_arch():
    assert ModelConfig(arch="x", window="sliding", se=False).axes() == {
        "window": "sliding", "se": False}


def test_flatten_makes_dotted_columns():
    flat = flatten(make(group_size=4).to_dict())
    assert flat["model.arch"] == "dwnet_nano"
    assert flat["model.group_size"] == 4
    assert flat["train.epochs"] == 3 and flat["seed"] == 1
    assert not any(isinstance(v, dict) for v in flat.values())


def test_int_and_float_spellings_of_a_float_field_are_one_trial():
    a = TrialConfig(model=ModelConfig(arch="x"), train=RecipeConfig(warmup_epochs=1, lr=1))
    b = TrialConfig(model=ModelConfig(arch="x"), train=RecipeConfig(warmup_epochs=1.0, lr=1.0))
    assert a.trial_id() == b.trial_id()
    c = TrialConfig(model=ModelConfig(arch="x"), train=RecipeConfig(warmup_epochs=2, lr=1))
    assert c.trial_id() != a.trial_id()
