"""The malformed-sweep corpus: each file in bad/ gives exactly the error on its first line.

A corpus file starts with ``# error: MESSAGE``; MESSAGE is ``str(SpecError)`` with paths
relative to bad/. Files in bad/parts/ are only extended by corpus files. To add a case, write
the file with the message you expect; the test shows the actual one when they differ.
"""

from pathlib import Path

import pytest

from ablate.errors import SpecError
from ablate.plan import load_plan

BAD = Path(__file__).parent / "bad"
CASES = sorted(BAD.glob("*.yaml"))


def test_corpus_is_large_enough():
    assert len(CASES) >= 50


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_malformed_sweep_gives_its_error(path, monkeypatch):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# error: "), f"{path.name}: first line must be '# error: ...'"
    monkeypatch.chdir(BAD)  # errors name files relative to the working directory
    with pytest.raises(SpecError) as info:
        load_plan(path.name)
    assert str(info.value) == first.removeprefix("# error: ")
    assert "\n" not in str(info.value)
