"""Shared fixtures for the trial tests: a tiny model and a tiny, learnable data set."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ablate.config import DataConfig, ModelConfig, RecipeConfig, Trial, TrialConfig

ARCH = "dwnet_nano"  # the cheapest registered model of the paper's family


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: the CI machine has 2 cores, shared by test and loader processes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_trial():
    return tiny_trial


def tiny_trial(*, epochs: int = 3, workers: int = 0, seed: int = 0, arch: str = ARCH,
               **recipe) -> Trial:
    """A trial that trains in about a second per epoch: 64 synthetic 32x32 images."""
    train = RecipeConfig(epochs=epochs, batch_size=16, warmup_epochs=1, lr=2e-3, workers=workers,
                         keep_checkpoints=2)
    cfg = TrialConfig(
        model=ModelConfig(arch=arch, drop_path_rate=0.1),
        data=DataConfig(name="synthetic", img_size=32, num_train=64, num_val=32, num_classes=4),
        train=dataclasses.replace(train, **recipe), seed=seed)
    return Trial(config=cfg, sweep="test", arm="tiny")
