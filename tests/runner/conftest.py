"""Tiny trials and sweeps for the runner tests: nano models, synthetic 32x32 data, 3 epochs."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from ablate.config import (
    DataConfig,
    ModelConfig,
    RecipeConfig,
    Resources,
    Trial,
    TrialConfig,
)

# Small enough that an epoch takes well under a second on one core, large enough that a kill
# sent right after an epoch's report lands while the next epoch is still training.
TINY_DATA = {"name": "synthetic", "num_train": 96, "num_val": 32, "num_classes": 4}
TINY_TRAIN = {"epochs": 3, "batch_size": 16, "warmup_epochs": 0, "mixup": 0.0, "cutmix": 0.0,
              "randaugment": None, "reprob": 0.0, "workers": 0}


def tiny_trial(seed: int = 0, *, arch: str = "dwnet_nano", retries: int = 2,
               data: dict | None = None) -> Trial:
    cfg = TrialConfig(model=ModelConfig(arch=arch),
                      data=DataConfig(**{**TINY_DATA, **(data or {})}),
                      train=RecipeConfig(**TINY_TRAIN), seed=seed)
    return Trial(config=cfg, sweep="tiny", arm=f"seed{seed}",
                 resources=Resources(cpus=1, max_retries=retries))


def write_sweep(path: Path, *, seeds: list[int], arms: str = "", name: str = "tiny",
                train: dict | None = None) -> Path:
    """A sweep file of ``seeds`` repeats of the tiny baseline (plus ``arms``, YAML text);
    ``train`` replaces the tiny recipe."""
    path.write_text(textwrap.dedent(f"""\
        name: {name}
        description: tiny runner test sweep
        base:
          model: {{arch: dwnet_nano}}
          data: {json.dumps(TINY_DATA)}
          train: {json.dumps(train or TINY_TRAIN)}
          resources: {{cpus: 1}}
        seeds: {seeds}
        max_concurrent: 2
        """) + arms)
    return path


@pytest.fixture
def undecodable_image_folder(tmp_path: Path) -> Path:
    """An image folder that passes every check the planner makes (layout, names, headers) but
    whose images cannot be decoded: the trial using it fails at run time with a data error."""
    for split in ("train", "val"):
        for cls in ("a", "b"):
            folder = tmp_path / "imgs" / split / cls
            folder.mkdir(parents=True)
            for i in range(16):  # a full batch of the tiny recipe per class
                (folder / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(24))
    return tmp_path / "imgs"
