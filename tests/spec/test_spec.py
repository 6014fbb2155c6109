"""The sweep language: parsing, line numbers, extends, defaults and the shipped sweeps."""

import os
import textwrap
from pathlib import Path

import pytest

from ablate.config import RecipeConfig
from ablate.errors import SpecError
from ablate.spec import AXES, load_sweep

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


BASE = """\
    name: parent
    description: the parent
    base:
      model: {arch: dwnet_nano, kernel_size: 5}
      data: {name: digits}
      train: {epochs: 10, warmup_epochs: 1, lr: 1e-3}
      resources: {cpus: 2}
    grid: {model.se: [false, true]}
    arms:
      k3: {model.kernel_size: 3}
      swin: {model.arch: ablate_swin_nano, model.kernel_size: 3}
    seeds: [0, 1]
    expected:
      k3: {val/top1: 90.0}
    max_retries: 5
"""


def test_values_defaults_and_scientific_floats(tmp_path):
    sweep = load_sweep(write(tmp_path, "p.yaml", BASE))
    assert sweep.name == "parent" and sweep.results_dir == Path("results/parent")
    assert sweep.base.train.lr == 1e-3  # "1e-3" is a string to plain YAML 1.1
    assert sweep.base.train.batch_size == RecipeConfig.batch_size  # unset: the config default
    assert sweep.base.model.kernel_size == 5 and sweep.base.model.se is None
    assert (sweep.resources.cpus, sweep.resources.gpus, sweep.max_retries) == (2.0, 0.0, 5)
    assert sweep.grid == (("model.se", (False, True)),)
    assert sweep.arms[1] == ("swin", (("model.arch", "ablate_swin_nano"),
                                      ("model.kernel_size", 3)))
    assert sweep.seeds == (0, 1) and sweep.max_concurrent is None


def test_name_defaults_to_the_file_stem(tmp_path):
    sweep = load_sweep(write(tmp_path, "my_ablation.yaml", BASE.replace("    name: parent\n", "")))
    assert sweep.name == "my_ablation"


def test_where_gives_the_line_of_every_key(tmp_path):
    sweep = load_sweep(write(tmp_path, "p.yaml", BASE))
    assert sweep.where("base", "train", "lr")["line"] == 6
    assert sweep.where("arms", "swin", "model.kernel_size")["line"] == 11
    assert sweep.where("grid", "model.se", 1)["line"] == 8
    assert sweep.where("no", "such", "key")["line"] == 1  # the document itself


def test_extends_deep_merges_and_null_removes(tmp_path):
    write(tmp_path, "parent.yaml", BASE)
    child = load_sweep(write(tmp_path, "child.yaml", """\
        description: the child
        extends: parent.yaml
        base:
          train: {epochs: 2}
        arms:
          k3: {model.kernel_size: 7}
          swin: null
        expected: null
        seeds: [3]
    """))
    assert child.name == "child" and child.description == "the child"  # not inherited
    assert child.base.train.epochs == 2 and child.base.train.lr == 1e-3  # merged
    assert child.base.model.kernel_size == 5  # inherited
    assert child.arms == (("k3", (("model.kernel_size", 7),)),)
    assert child.expected == {} and child.seeds == (3,) and child.max_retries == 5
    assert child.extends == ((tmp_path / "parent.yaml").resolve(),)
    # an error in an inherited key names the file and line that set it
    assert child.where("grid", "model.se")["file"].endswith("parent.yaml")


def test_extends_a_list_merges_in_order(tmp_path):
    write(tmp_path, "parent.yaml", BASE)
    write(tmp_path, "cpu.yaml", """\
        base:
          train: {epochs: 3, batch_size: 16}
          resources: {cpus: 1}
    """)
    child = load_sweep(write(tmp_path, "c.yaml", """\
        description: both
        extends: [parent.yaml, cpu.yaml]
        base:
          train: {batch_size: 8}
    """))
    assert (child.base.train.epochs, child.base.train.batch_size) == (3, 8)
    assert child.resources.cpus == 1.0 and child.arms[0][0] == "k3"


def test_a_null_in_resources_removes_the_inherited_key_to_switch_forms(tmp_path):
    cpu = ROOT / "sweeps" / "common" / "cpu.yaml"  # the per-worker form: workers, cpus_per_...
    child = f"""\
        description: one process, two CPUs and a GPU
        extends: {cpu}
        base:
          resources: {{cpus: 2, gpus: 1, workers: null, cpus_per_worker: null,
                      gpus_per_worker: null}}
    """
    sweep = load_sweep(write(tmp_path, "c.yaml", child))
    r = sweep.resources
    assert (r.cpus, r.gpus, r.workers, r.cpus_per_worker, r.gpus_per_worker) == \
        (2.0, 1.0, 1, None, None)
    assert (r.worker_cpus, r.worker_gpus) == (2.0, 1.0)
    # without the nulls the forms mix, and the message says how to switch
    with pytest.raises(SpecError) as info:
        load_sweep(write(tmp_path, "d.yaml", child.replace("workers: null, ", "")))
    assert "'workers' cannot be combined with 'cpus'" in str(info.value)
    assert "workers: null" in info.value.hint
    # a null alone is the key's default, not "expected an integer, got null"
    sweep = load_sweep(write(tmp_path, "e.yaml", BASE.replace("{cpus: 2}",
                                                                "{cpus: 2, workers: null}")))
    assert (sweep.resources.cpus, sweep.resources.workers) == (2.0, 1)


def test_errors_in_extended_files_name_that_file(tmp_path):
    write(tmp_path, "parent.yaml", BASE.replace("lr: 1e-3", "lr: -1"))
    path = write(tmp_path, "c.yaml", "description: c\nextends: parent.yaml\n")
    with pytest.raises(SpecError) as info:
        load_sweep(path)
    assert info.value.file.endswith("parent.yaml") and info.value.line == 6
    assert info.value.key == "base.train.lr"


def test_axes_are_the_config_fields():
    from ablate.config import DataConfig, ModelConfig

    assert {a for a in AXES if a.startswith("model.")} == {
        f"model.{f}" for f in ModelConfig.__dataclass_fields__}
    assert {a for a in AXES if a.startswith("data.")} == {
        f"data.{f}" for f in DataConfig.__dataclass_fields__}
    assert {a for a in AXES if a.startswith("train.")} == {
        f"train.{f}" for f in RecipeConfig.__dataclass_fields__}


def _past(bounds: dict):
    """One value just outside each declared bound (what the schema must refuse)."""
    for op, limit in bounds.items():
        step = 1 if isinstance(limit, int) else max(1e-9, abs(limit) * 1e-9)  # a float apart
        if op in ("ge", "gt"):
            yield op, limit - step if op == "ge" else limit
        elif op in ("le", "lt"):
            yield op, limit + step if op == "le" else limit


_SECTIONS = {"model": "ModelConfig", "data": "DataConfig", "train": "RecipeConfig"}


@pytest.mark.parametrize("axis", AXES)
def test_the_schema_enforces_the_bounds_the_config_declares(axis):
    # Declared once in ablate.config: a value past any declared bound is refused for that axis,
    # and the declared default is accepted.
    import dataclasses

    import ablate.config as config
    from ablate.spec import check_value

    section, name = axis.split(".")
    f = {x.name: x for x in dataclasses.fields(getattr(config, _SECTIONS[section]))}[name]
    bounds = dict(f.metadata.get("bounds", {}))

    def err(what, *at, hint=None):
        return SpecError(what, key=".".join(map(str, at)))

    if f.default is not dataclasses.MISSING:
        assert check_value(axis, f.default, ("grid", axis), err) == f.default
    for value in bounds.pop("choices", ()):
        assert check_value(axis, value, ("grid", axis), err) == value
    bounds.pop("pattern", None)
    for op, value in _past(bounds):
        with pytest.raises(SpecError) as info:
            check_value(axis, value, ("grid", axis), err)
        assert info.value.key == f"grid.{axis}", (axis, op, value)


def test_a_bound_declared_on_a_config_field_reaches_the_schema(monkeypatch):
    # The schema is generated: declaring a new bound in the dataclass is all it takes.
    from pydantic import ValidationError

    from ablate.spec import _section_model

    field = RecipeConfig.__dataclass_fields__["epochs"]
    monkeypatch.setattr(field, "metadata", {**field.metadata, "bounds": {"ge": 1, "le": 5}})
    model = _section_model(RecipeConfig)
    assert model(epochs=5).epochs == 5
    with pytest.raises(ValidationError, match="less than or equal to 5"):
        model(epochs=6)


def test_unsafe_yaml_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = write(tmp_path, "x.yaml", BASE.replace("    seeds: [0, 1]", "    seeds: !!python/"
                 f"object/apply:os.system ['touch {marker}']"))
    with pytest.raises(SpecError, match="not allowed"):
        load_sweep(path)
    assert not marker.exists()


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*_cpu.yaml")),
                         ids=lambda p: p.name)
def test_cpu_companions_are_small_and_cpu_only(path):
    sweep = load_sweep(path)
    assert sweep.base.data.name == "digits" and sweep.base.data.img_size == 32
    assert sweep.resources.gpus == 0 and sweep.base.train.epochs <= 10
    archs = {sweep.base.model.arch} | {v for _, ov in sweep.arms for k, v in ov
                                       if k == "model.arch"}
    assert all(a.endswith("_nano") for a in archs)
    paper = load_sweep(path.with_name(path.name.replace("_cpu", "")))
    assert paper.base.data.name == "imagefolder" and paper.base.data.img_size == 224
    assert sweep.baseline == paper.baseline and sweep.extends[0] == paper.path.resolve()


def test_every_number_of_the_language_has_an_upper_bound_a_table_holds():
    # A count the plan accepted must not overflow a results table's int64 column after the
    # trial ran (keep_checkpoints: 10**23 did), nor a rate float32 once scaled (lr: 1e300).
    import dataclasses
    import typing

    import ablate.config as config
    from ablate.spec import _SweepSpec

    for cls in (config.ModelConfig, config.DataConfig, config.RecipeConfig, config.Resources):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kinds = set(typing.get_args(hints[f.name])) or {hints[f.name]}
            if kinds & {int, float} and bool not in kinds:
                le = f.metadata["bounds"].get("le", f.metadata["bounds"].get("lt"))
                assert le is not None, f"{cls.__name__}.{f.name} has no upper bound"
                assert le <= (2**63 - 1 if int in kinds else 3.4e38 / 128 / 1e15), f.name


@pytest.mark.parametrize("key", ["max_trials", "max_concurrent", "max_retries", "seeds"])
def test_top_level_counts_past_int64_are_refused(tmp_path, key):
    value = [2**63] if key == "seeds" else 2**63
    text = "".join(line for line in textwrap.dedent(BASE).splitlines(True)
                   if not line.startswith(("seeds:", "max_retries:")))
    path = tmp_path / "s.yaml"
    path.write_text(text + f"{key}: {value}\n")
    with pytest.raises(SpecError) as info:
        load_sweep(path)
    assert info.value.key.startswith(key) and "must be <=" in info.value.what


def test_a_file_past_the_node_limit_says_which_limit_without_blaming_aliases(tmp_path):
    from ablate.sweepfile import MAX_NODES

    values = ", ".join(str(i + 1) for i in range(MAX_NODES))
    path = tmp_path / "big.yaml"
    path.write_text(textwrap.dedent(BASE) + f"paired: {{model.group_size: [{values}]}}\n")
    with pytest.raises(SpecError) as info:
        load_sweep(path)
    assert f"more than {MAX_NODES:,} values" in info.value.what
    assert "alias" not in info.value.what.split("(")[0] and info.value.key == \
        "paired.model.group_size"


def test_a_pipe_or_a_device_is_refused_before_it_is_read(tmp_path):
    # reading a named pipe waited for a writer forever; /dev/zero filled the memory
    fifo = tmp_path / "sweep.yaml"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(SpecError, match="is not a regular file"):
            load_sweep(path)


def test_a_file_not_in_utf8_says_so(tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("description: café\n".encode("latin-1"))
    with pytest.raises(SpecError, match=r"not UTF-8 text \(.* at byte 16\); save the sweep"):
        load_sweep(latin)
