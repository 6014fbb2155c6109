"""Provenance is best-effort: no git checkout or a missing package gives None, never an error."""

from __future__ import annotations

import subprocess

import torch

from ablate import provenance


def test_outside_a_git_checkout_commit_and_dirty_are_none(tmp_path):
    assert provenance.git_state(tmp_path) == (None, None)


def test_inside_a_git_checkout_commit_and_dirty_flag(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    commit, dirty = provenance.git_state(tmp_path)
    assert len(commit) == 40 and dirty is False
    (tmp_path / "a.py").write_text("x = 2\n")
    assert provenance.git_state(tmp_path) == (commit, True)


def test_versions_and_device():
    prov = provenance.collect_provenance(device=torch.device("cpu"), data_fingerprint="f",
                                         seed=3, params=10, flops=20)
    assert prov["torch"] == torch.__version__ and prov["seed"] == 3
    assert prov["device"].startswith("cpu") and prov["host"]
    assert provenance.package_version("no-such-package-xyz") is None


def test_the_source_digest_follows_the_code_not_where_it_is_installed(tmp_path):
    import shutil

    copy = tmp_path / "elsewhere" / "ablate"
    shutil.copytree(provenance.PACKAGE_DIR, copy,
                    ignore=shutil.ignore_patterns("__pycache__"))
    here = provenance.source_digest()
    assert len(here) == 12 and provenance.source_digest(copy) == here
    (copy / "__pycache__").mkdir(exist_ok=True)
    (copy / "__pycache__" / "x.pyc").write_bytes(b"compiled")  # not source
    assert provenance.source_digest(copy) == here
    edited = copy / "models" / "layers.py"
    edited.write_text(edited.read_text() + "\n# an edit\n")
    edited_digest = provenance.source_digest(copy)
    assert edited_digest != here
    (copy / "errors.py").rename(copy / "errs.py")  # the same bytes under another name
    assert provenance.source_digest(copy) not in (here, edited_digest)
