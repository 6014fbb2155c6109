import subprocess
import sys

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


def test_a_bug_keeps_its_traceback(monkeypatch):
    parser = cli.build_parser()
    parser.set_defaults(func=lambda args: {}["missing"])
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    with pytest.raises(KeyError):
        cli.main([])


def test_console_script_is_installed_and_fast_to_start():
    # --help must not import torch or ray (heavy imports live inside the handlers)
    code = ("import sys; from ablate import cli\n"
            "try: cli.main(['--help'])\n"
            "except SystemExit: pass\n"
            "print(sorted(m for m in ('ray', 'pandas', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
