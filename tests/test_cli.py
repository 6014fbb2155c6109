import os
import subprocess
import sys
from pathlib import Path

import pytest

from ablate import cli
from ablate.errors import SpecError


def test_help_lists_every_command_group(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("plan", "run", "resume", "status", "train", "collect", "figures", "report"):
        assert command in out, command


def test_project_error_is_one_line_and_exit_status_2(monkeypatch, capsys):
    parser = cli.build_parser()

    def failing(args):
        raise SpecError("unknown key 'modle'", file="sweeps/x.yaml", line=3, key="modle",
                        hint="did you mean 'model'?")

    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser.set_defaults(func=failing)
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert err == ("ablate: error: sweeps/x.yaml:3: modle: unknown key 'modle'; "
                   "did you mean 'model'?\n")


@pytest.mark.parametrize("argv, text", [
    (["plan"], "ablate plan: error: the following arguments are required: sweep"),
    (["figures", "results/x", "--format", "jpg"], "argument --format: invalid choice: 'jpg'"),
    (["bogus"], "invalid choice: 'bogus'"),
    (["plan", "sweeps/x.yaml", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_a_misused_command_line_is_one_line_and_exit_status_2(argv, text, capsys):
    # argparse prints its usage block first; the one line says where the usage is instead
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and text in err and "--help'" in err


def test_a_bug_keeps_its_traceback(monkeypatch):
    parser = cli.build_parser()
    parser.set_defaults(func=lambda args: {}["missing"])
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    with pytest.raises(KeyError):
        cli.main([])


def test_a_reader_that_stops_early_is_no_traceback():
    """'ablate plan ... --json | head' once ended in a BrokenPipeError traceback."""
    sweep = Path(__file__).resolve().parents[1] / "sweeps" / "main_comparison_cpu.yaml"
    proc = subprocess.Popen([sys.executable, "-m", "ablate", "plan", str(sweep), "--json",
                             "--no-stats", "--no-data-check"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the child, still importing, writes a byte
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert err == ""


HEAVY = ("torch", "timm", "ray", "pandas", "matplotlib")


def _loaded_after(argv: list[str]) -> list[str]:
    """Which heavy libraries a fresh interpreter has loaded after ``ablate ARGV``."""
    code = ("import sys; from ablate import cli\n"
            f"try: cli.main({argv!r})\n"
            "except SystemExit: pass\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return eval(out.stdout.strip().splitlines()[-1])


def test_help_imports_no_heavy_library():
    # torch and timm alone take seconds to import: --help must answer at once
    assert _loaded_after(["--help"]) == []
    assert _loaded_after(["run", "--help"]) == []


def test_status_reads_records_without_torch_or_ray(tmp_path):
    import shutil

    results = tmp_path / "results"
    shutil.copytree(Path(__file__).parent / "fixtures" / "results_v1" / "results", results)
    assert _loaded_after(["status", str(results)]) == []


def _fabricated_results(tmp_path: Path) -> Path:
    """A results folder of 4 finished trials, written by the results tests' factory."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "results_factory", Path(__file__).parent / "results" / "factory.py")
    factory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(factory)
    factory.write_grid(tmp_path / "results", 4, epochs=3, axes=("group_size",))
    return tmp_path / "results"


@pytest.mark.parametrize("command", ["collect", "figures", "report"])
def test_results_commands_load_neither_torch_nor_timm_nor_ray(tmp_path, command):
    results = _fabricated_results(tmp_path)
    loaded = _loaded_after([command, str(results)])
    assert not {"torch", "timm", "ray"} & set(loaded)
    assert (results / "trials.parquet").is_file()  # the command did its work


@pytest.mark.parametrize("first", ["ablate", "timm"])
def test_models_are_registered_with_timm_whichever_is_imported_first(first):
    second = "timm" if first == "ablate" else "ablate"
    code = (f"import sys, {first}, {second}, timm\n"
            "print('dwnet_nano' in timm.list_models(), type(timm.create_model('dwnet_nano'))"
            ".__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "Backbone"]


def test_other_libraries_info_lines_do_not_reach_the_user(tmp_path):
    # A fresh matplotlib config folder makes matplotlib build its font cache and say so at INFO.
    results = _fabricated_results(tmp_path)
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}
    out = subprocess.run([sys.executable, "-m", "ablate", "figures", str(results)],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert list((results / "figures").glob("*.png"))
    assert (tmp_path / "mpl").is_dir()  # matplotlib did build its cache in this run
    assert "matplotlib" not in out.stderr and "INFO" not in out.stderr.replace("INFO ablate", "")
