import textwrap
from pathlib import Path

import pytest

MINIMAL = """\
name: t
description: a test sweep
base:
  model: {arch: dwnet_nano}
  data: {name: digits}
  train: {epochs: 2, warmup_epochs: 1}
"""


@pytest.fixture
def write_sweep(tmp_path):
    """write_sweep(extra_yaml, name="t") -> path of a sweep file: MINIMAL + extra_yaml."""

    def write(extra: str = "", name: str = "t", base: str = MINIMAL) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(base + textwrap.dedent(extra))
        return path

    return write
