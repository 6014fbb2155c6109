"""Plugins extend the study without forking: a lab's mixer and model, timm's own models, and
installed entry points, through the same CLI a user runs (each in a fresh process, so the
test process's registry stays ablate's own)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from ablate.cli import main
from tests.runner.conftest import TINY_DATA, TINY_TRAIN

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "tests.plugins.lab_mixers"


def _sweep(path: Path, arms: str, plugins: str = f"plugins: [{PLUGIN}]", name: str = "lab",
           train: dict | None = None) -> Path:
    path.write_text(textwrap.dedent(f"""\
        name: {name}
        description: a lab's own arms beside ablate's
        {plugins}
        base:
          model: {{arch: dwnet_nano}}
          data: {json.dumps(TINY_DATA)}
          train: {json.dumps({**TINY_TRAIN, **(train or {})})}
          resources: {{cpus: 1}}
        max_concurrent: 2
        arms:
        """) + textwrap.indent(textwrap.dedent(arms), "  "))
    return path


def _ablate(*args: str, env: dict | None = None, timeout: int = 600):
    """The console command in a fresh process, run from the repository root (where the
    plugin is importable from the working directory, as a lab's own folder would be)."""
    return subprocess.run([sys.executable, "-m", "ablate", *args], cwd=ROOT, text=True,
                          capture_output=True, env={**os.environ, **(env or {})},
                          timeout=timeout)


@pytest.mark.slow
def test_a_plugin_mixer_plans_runs_on_ray_collects_and_plots(tmp_path):
    sweep = _sweep(tmp_path / "lab.yaml", """\
        gated: {model.mixer: gated_dwconv}
        gate_by_axis: {model.weight_source: center_gate, model.kernel_size: 5}
        gated_arch: {model.arch: gated_dwnet_nano, model.drop_path_rate: 0.1}
        resnet: {model.arch: resnet18}
        """, train={"epochs": 1})
    planned = _ablate("plan", str(sweep), "--json", "--no-stats")
    assert planned.returncode == 0, planned.stderr
    rows = json.loads(planned.stdout)["trials"]
    assert [r["label"] for r in rows] == ["baseline", "gated", "gate_by_axis", "gated_arch",
                                          "resnet"]
    # the mixer by name, by its weight source, and in a registered arch (each with one more
    # change: the same network twice would be refused as training one model again)
    assert len({r["id"] for r in rows}) == 5
    results = tmp_path / "results"
    done = _ablate("run", str(sweep), "--results", str(results))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    trials = pd.read_parquet(results / "trials.parquet")
    assert sorted(trials["arm"]) == sorted(r["label"] for r in rows)
    assert set(trials["state"]) == {"done"}
    by_arm = trials.set_index("arm")
    assert by_arm.loc["gated", "model.mixer"] == "gated_dwconv"
    # the gate adds a C x C linear map per block to DWNet's parameters
    assert by_arm.loc["gated", "params"] > by_arm.loc["baseline", "params"]
    assert by_arm.loc["gated", "params"] == by_arm.loc["gated_arch", "params"]
    assert by_arm.loc["gate_by_axis", "params"] > by_arm.loc["gated", "params"]  # 5x5 kernels
    assert by_arm.loc["resnet", "params"] > 10 * by_arm.loc["baseline", "params"]
    assert list((results / "figures").glob("*.png"))


def test_the_plugin_option_loads_a_plugin_the_sweep_does_not_name(tmp_path):
    sweep = _sweep(tmp_path / "lab.yaml", "gated: {model.mixer: gated_dwconv}\n", plugins="")
    without = _ablate("plan", str(sweep), "--no-stats")
    assert without.returncode == 2
    assert "gated_dwconv" in without.stderr and "model.mixer" in without.stderr
    assert len(without.stderr.strip().splitlines()) == 1
    with_flag = _ablate("plan", str(sweep), "--no-stats", "--plugin", PLUGIN)
    assert with_flag.returncode == 0, with_flag.stderr
    assert "gated" in with_flag.stdout


def test_a_plugin_that_cannot_be_imported_is_one_line_and_nothing_runs(tmp_path, capsys):
    sweep = _sweep(tmp_path / "lab.yaml", "x: {model.se: true}\n",
                   plugins="plugins: [no_such_lab.mixers]")
    results = tmp_path / "results"
    assert main(["run", str(sweep), "--results", str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "cannot import plugin 'no_such_lab.mixers'" in err and str(sweep) in err
    assert "plugins" in err and "run from the folder that holds it" in err
    assert not results.exists()


@pytest.mark.parametrize("module, source, says", [
    ("broken_lab", "import math\n\nraise RuntimeError('half done')\n",
     ["cannot import plugin 'broken_lab' (RuntimeError: half done)", "broken_lab.py:3"]),
    # sys.exit() at import: the exit status was 3, with nothing said
    ("exiting_lab", "import sys\n\nsys.exit(3)\n",
     ["cannot import plugin 'exiting_lab' (SystemExit: 3)"]),
    # a package named instead of its module that registers: the arm's mixer was then only
    # "not one of the allowed values", the plugin unnamed
    ("empty_lab", "import math\n", ["plugin 'empty_lab' registered no mixer, block or model",
                                    "such as my_lab.mixers"]),
])
def test_a_plugin_that_fails_on_import_names_itself_in_one_line(tmp_path, capsys, monkeypatch,
                                                                module, source, says):
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sweep = _sweep(tmp_path / "lab.yaml", "x: {model.se: true}\n",
                   plugins=f"plugins: [{module}]")
    assert main(["plan", str(sweep)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    for text in says:
        assert text in err


def test_a_plugin_that_registers_a_timm_model_of_its_own_is_an_arm(tmp_path, monkeypatch,
                                                                  capsys):
    """A lab's own timm model (timm's register_model, none of ablate's register_* calls) is a
    plugin that registers something: it must not be refused as one that registers nothing,
    nor as an unknown model in a process that listed timm's models before it was loaded."""
    from ablate.models import validate_model

    validate_model("resnet18")  # what a long-lived process (the test suite, a notebook) did
    (tmp_path / "timm_lab.py").write_text(textwrap.dedent("""\
        from timm.models import register_model, resnet

        @register_model
        def lab_resnet_tiny(pretrained=False, **kw):
            return resnet.resnet18(pretrained=pretrained, **kw)  # a lab's own would differ
        """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sweep = _sweep(tmp_path / "lab.yaml", "lab: {model.arch: lab_resnet_tiny}\n",
                   plugins="plugins: [timm_lab]")
    assert main(["plan", str(sweep), "--no-stats"]) == 0, capsys.readouterr().err
    assert "lab_resnet_tiny" in capsys.readouterr().out


def _refused_plan(tmp_path: Path, module: str, source: str, arms: str) -> str:
    """``ablate plan`` in a fresh process of a sweep whose plugin ``module`` holds ``source``:
    its one line of error, checked to be one line, exit status 2 and no traceback."""
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    sweep = _sweep(tmp_path / "lab.yaml", arms, plugins=f"plugins: [{module}]")
    out = subprocess.run([sys.executable, "-m", "ablate", "plan", str(sweep), "--no-data-check"],
                         cwd=tmp_path, text=True, capture_output=True, timeout=300)
    assert out.returncode == 2, out.stderr
    line = out.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    return line


def test_a_plugin_mixer_of_the_wrong_shape_is_blamed_not_the_image_size(tmp_path):
    """ablate's backbones take any image size, so a failing forward pass of a plugin's mixer
    is the plugin's bug: the line named data.img_size and said to change it."""
    line = _refused_plan(tmp_path, "halving_lab", """\
        from ablate.models import Mixer, register_mixer

        @register_mixer
        class Halving(Mixer):
            name = "halving"
            weight_source, window, spatial_sharing = "static", "sliding", True

            def forward(self, x):
                return x[..., : x.shape[-1] // 2]  # half the channels: the wrong shape
        """, "half: {model.mixer: halving}\n")
    assert "arms.half.model.mixer: dwnet_nano with the plugin mixer 'halving' fails its " \
           "forward pass at 32x32" in line
    assert "check the plugin's code" in line and "img_size" not in line


def test_a_plugin_mixer_that_cannot_be_built_is_blamed_in_one_line(tmp_path):
    """A mixer whose constructor does not take the contract's arguments made ``ablate plan``
    end in a traceback (exit status 1) instead of one line naming the arm and the plugin."""
    line = _refused_plan(tmp_path, "signature_lab", """\
        from ablate.models import Mixer, register_mixer

        @register_mixer
        class Positional(Mixer):
            name = "positional"
            weight_source, window, spatial_sharing = "static", "sliding", True

            def __init__(self, dim, groups, kernel):  # not the contract's keywords
                super().__init__(dim, num_groups=groups, kernel_size=kernel)

            def forward(self, x):
                return x
        """, "pos: {model.mixer: positional}\n")
    assert "arms.pos.model.mixer: dwnet_nano with the plugin mixer 'positional' cannot be " \
           "built: TypeError: " in line and "unexpected keyword argument 'num_groups'" in line
    assert "Mixer(dim, *, num_groups, kernel_size, shift)" in line


def test_register_arch_refuses_a_timm_name_and_a_model_without_its_grouping():
    """In a fresh process (a registration that got through would stay in the registries).
    A timm name was taken over with only timm's warning, so `model.arch: resnet18` built
    ablate's backbone; a model with neither group_size nor num_groups (as the README's
    example was) raised a TypeError from inside the registry."""
    code = textwrap.dedent("""\
        import timm
        from ablate.errors import ModelConfigError
        from ablate.models import register_arch, registry

        nano = dict(block="dwnet", mixer="dwconv", embed_dim=24, depths=(1, 1, 2, 1),
                    kernel_size=3, patch_size=2, img_size=32)
        for name, kw, says, key in [
                ("resnet18", {"group_size": 1}, "timm already has a model named 'resnet18'",
                 "arch"),
                ("lab_nano", {}, "sets neither group_size nor num_groups", "group_size")]:
            try:
                register_arch(name, **nano, **kw)
            except ModelConfigError as e:
                assert says in str(e) and e.key == key, (str(e), e.key)
            else:
                raise AssertionError(f"{name} was registered")
            assert name not in registry.MODEL_DEFAULTS
        assert type(timm.create_model("resnet18")).__name__ == "ResNet"
        register_arch("lab_nano", **nano, num_groups=24)  # the same, grouped: accepted
        print("ok")
        """)
    out = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code], cwd=ROOT,
                         text=True, capture_output=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_ablate_axes_on_a_timm_model_are_refused_by_name(tmp_path, capsys):
    sweep = _sweep(tmp_path / "lab.yaml", "resnet: {model.arch: resnet18, model.window: "
                   "sliding}\n", plugins="")
    assert main(["plan", str(sweep), "--no-stats"]) == 2
    err = capsys.readouterr().err.strip()
    assert "resnet18 is a timm model, not one of ablate's: window does not apply" in err
    assert "arms.resnet" in err


def test_an_installed_package_registers_through_its_entry_point(tmp_path):
    site = tmp_path / "site"
    dist = site / "lab_ep-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lab-ep\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[ablate.plugins]\nlab = lab_ep_mixers\n")
    (site / "lab_ep_mixers.py").write_text(textwrap.dedent("""\
        from ablate.models.mixers.dwconv import DWConv
        from ablate.models import register_mixer
        from ablate.models.reference import REFERENCES

        @register_mixer(reference=REFERENCES["dwconv"])
        class Renamed(DWConv):
            name = "installed_dwconv"
        """))
    sweep = _sweep(tmp_path / "lab.yaml", "ep: {model.mixer: installed_dwconv}\n", plugins="")
    out = _ablate("plan", str(sweep), "--no-stats", "--json",
                  env={"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])})
    assert out.returncode == 0, out.stderr
    labels = [r["label"] for r in json.loads(out.stdout)["trials"]]
    assert labels == ["baseline", "ep"]
