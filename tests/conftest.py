"""Suite-wide options: ``--plugin MODULE`` runs the registry-wide tests on a plugin's parts too.

    python -m pytest tests/models/test_mixers.py --plugin my_lab.mixers

imports ``my_lab.mixers`` before the tests are collected, so every test parametrised over the
registered mixers and models (forward and gradients against the mixer's registered reference,
the contract's checks) includes the plugin's.
"""

from __future__ import annotations

import os
import shutil
import tempfile

_CACHE = tempfile.mkdtemp(prefix="ablate-test-cache-")
# The suite, its subprocesses and its Ray workers never read or write the user's own caches.
os.environ["ABLATE_CACHE_DIR"] = _CACHE
# `ablate run` joins a RAY_ADDRESS of the environment on purpose: a user's shell that has one
# (another Ray on the machine) must not send the suite's runs there. A test that wants it sets
# it itself (monkeypatch.setenv, or a subprocess's env).
os.environ.pop("RAY_ADDRESS", None)


def pytest_addoption(parser):
    parser.addoption("--plugin", action="append", default=[], metavar="MODULE",
                     help="an ablate plugin module to load before collecting the tests")


def pytest_configure(config):
    plugins = config.getoption("--plugin")
    if plugins:
        from ablate.plugins import load_plugins

        load_plugins(plugins, source="--plugin")


def pytest_unconfigure(config):
    shutil.rmtree(_CACHE, ignore_errors=True)
