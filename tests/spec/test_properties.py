"""Property tests: any malformed sweep raises SpecError, never KeyError/TypeError/pydantic's
ValidationError; grid counts; ids unique and stable."""

import copy
import math
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ablate.errors import SpecError
from ablate.plan import load_plan

VALID = {
    "name": "prop",
    "description": "a sweep mutated by hypothesis",
    "base": {"model": {"arch": "dwnet_nano", "kernel_size": 3},
             "data": {"name": "digits", "img_size": 32},
             "train": {"epochs": 2, "warmup_epochs": 1, "lr": 1e-3},
             "resources": {"cpus": 1, "gpus": 0}},
    "grid": {"train.epochs": [2, 3]},
    "paired": {"train.lr": [1e-3, 2e-3], "train.batch_size": [16, 32]},
    "arms": {"se": {"model.se": True}, "k5": {"model.kernel_size": 5}},
    "exclude": [{"model.se": True, "train.epochs": 3}],
    "seeds": [0, 1],
    "expected": {"se, epochs=2, lr=0.001, batch_size=16": {"val/top1": "> baseline, epochs=2, "
                                                             "lr=0.001, batch_size=16"}},
    "max_trials": 64,
}
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 300),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                    st.sampled_from(["dwnet_nano", "sliding", "shifted", "static", "both",
                                     "model.se", "train.epochs", "> baseline", "digits"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8) | st.sampled_from(
        ["model", "arch", "model.se", "train.lr", "epochs"]), inner, max_size=3)),
    max_leaves=6)


def paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from paths(v, prefix + (i,))


@st.composite
def mutated(draw):
    doc = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(list(paths(doc))[1:]))
        parent = doc
        for p in where[:-1]:
            parent = parent[p]
        action = draw(st.sampled_from(["set", "delete", "add"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[where[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = draw(values)
        else:
            parent[where[-1]] = draw(values)
        if not isinstance(doc, dict):
            break
    return doc


def plan_text(text: str):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "prop.yaml"
        path.write_text(text)
        return load_plan(path)


def only_spec_errors(text: str) -> None:
    try:
        plan_text(text)
    except SpecError as e:
        assert "\n" not in str(e) and e.file
    # anything else (KeyError, TypeError, ValidationError, ...) fails the test


def test_the_unmutated_document_is_valid():
    _, trials = plan_text(yaml.safe_dump(VALID, sort_keys=False))
    # 3 arms x 2 epochs x 2 paired x 2 seeds, minus the 2 x 2 'se, epochs=3' trials
    assert len(trials) == 3 * 2 * 2 * 2 - 4


@SETTINGS
@given(mutated())
def test_any_mutation_raises_spec_error_or_plans(doc):
    only_spec_errors(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))


@SETTINGS
@given(st.text(max_size=200))
def test_any_text_raises_spec_error_or_plans(text):
    only_spec_errors(text)


@SETTINGS
@given(st.lists(st.sampled_from(["name: x", "description: d", "base:", "  model:",
                                 "    arch: dwnet_nano", "  train: {epochs: 2}", "grid:",
                                 "  model.se: [true, false]", "- 1", "  - a", "arms: {a: 1}",
                                 "seeds: [0", "extends: prop.yaml", "&a x: *a", "\t", ": :",
                                 "exclude: [{}]", "expected: {a: {b: c}}"]), max_size=10))
def test_any_line_soup_raises_spec_error_or_plans(lines):
    only_spec_errors("\n".join(lines))


axis_values = {
    "train.epochs": st.lists(st.integers(1, 50), min_size=1, max_size=3, unique=True),
    "train.batch_size": st.lists(st.integers(1, 256).map(lambda n: 2 * n), min_size=1, max_size=3,
                                 unique=True),  # even: the recipe mixes pairs
    "train.weight_decay": st.lists(st.floats(0, 1), min_size=1, max_size=3, unique=True),
    "model.se": st.lists(st.booleans(), min_size=1, max_size=2, unique=True),
    "model.kernel_size": st.lists(st.sampled_from([3, 5, 7]), min_size=1, max_size=3,
                                  unique=True),
}


@SETTINGS
@given(st.dictionaries(st.sampled_from(sorted(axis_values)), st.just(None), min_size=1,
                       max_size=4).flatmap(lambda keys: st.fixed_dictionaries(
                           {k: axis_values[k] for k in keys})),
       st.lists(st.integers(0, 10**6), min_size=1, max_size=3, unique=True),
       st.randoms())
def test_grid_count_ids_and_order(grid, seeds, rnd):
    doc = copy.deepcopy(VALID)
    for key in ("paired", "arms", "exclude", "expected"):
        del doc[key]
    doc["base"]["train"]["warmup_epochs"] = 0
    doc |= {"grid": grid, "seeds": seeds, "max_trials": 10**6}
    _, trials = plan_text(yaml.safe_dump(doc, sort_keys=False))
    assert len(trials) == math.prod(len(v) for v in grid.values()) * len(seeds)
    assert len({t.id for t in trials}) == len(trials)
    assert all(t.id == t.config.trial_id() for t in trials)
    assert [t.config.seed for t in trials] == sorted(
        (t.config.seed for t in trials), key=seeds.index)
    per_seed = len(trials) // len(seeds)
    assert [t.role for t in trials] == (["baseline"] + ["arm"] * (per_seed - 1)) * len(seeds)
    # the same sweep planned again, or with its grid keys and values shuffled, keeps the ids
    again = plan_text(yaml.safe_dump(doc, sort_keys=False))[1]
    assert [t.id for t in again] == [t.id for t in trials]
    keys = list(grid)
    rnd.shuffle(keys)
    doc["grid"] = {k: rnd.sample(grid[k], len(grid[k])) for k in keys}
    shuffled = plan_text(yaml.safe_dump(doc, sort_keys=False))[1]
    assert {t.id for t in shuffled} == {t.id for t in trials}
