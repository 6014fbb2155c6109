"""Fixtures: small results folders written through ablate.record (see factory.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

# pytest runs with --import-mode=importlib, so the factory is loaded by path, once.
_spec = importlib.util.spec_from_file_location("results_factory",
                                               Path(__file__).with_name("factory.py"))
factory = sys.modules.setdefault("results_factory", importlib.util.module_from_spec(_spec))
if not hasattr(factory, "write_record"):
    _spec.loader.exec_module(factory)

ARCHS = ("local_mlp_nano", "ablate_swin_nano")
GROUPS = (1, 4, 16)
SEEDS = (0, 1, 2)


def group_top1(arch: str, group: int, seed: int) -> float:
    """A made-up result: larger groups help, attention is 2 points better, seeds spread 0.2."""
    return 70 + 2 * GROUPS.index(group) + 2 * ARCHS.index(arch) + 0.2 * (seed - 1)


@pytest.fixture
def factory_module():
    return factory


@pytest.fixture
def group_sweep(tmp_path) -> Path:
    """A channel-sharing sweep: 2 mixers x 3 group sizes x 3 seeds, 4 epochs each."""
    results = tmp_path / "group_size"
    with factory.fast_writes():
        for arch in ARCHS:
            for group in GROUPS:
                for seed in SEEDS:
                    base = arch == ARCHS[0] and group == 1
                    trial = factory.make_trial(
                        "baseline" if base else f"arch={arch}, group_size={group}",
                        sweep="group_size", role="baseline" if base else "arm", seed=seed,
                        epochs=4, arch=arch, group_size=group)
                    factory.write_record(results, trial, top1=group_top1(arch, group, seed),
                                         params=10_000 * (1 + ARCHS.index(arch)) + group,
                                         flops=1_000_000 * (2 + group))
    return results


@pytest.fixture
def source_sweep(tmp_path) -> Path:
    """A dynamic-weight sweep: 3 weight sources x 2 window schemes x 2 seeds."""
    results = tmp_path / "weights"
    with factory.fast_writes():
        for i, source in enumerate(("static", "dot_product", "center_linear")):
            for window in ("shifted", "sliding"):
                for seed in (0, 1):
                    base = source == "static" and window == "shifted"
                    trial = factory.make_trial(
                        "baseline" if base else f"weight_source={source}, window={window}",
                        sweep="weights", role="baseline" if base else "arm", seed=seed, epochs=3,
                        arch="window_idynamic_nano", weight_source=source, window=window)
                    factory.write_record(results, trial, top1=75 + i + 0.3 * seed)
    return results
