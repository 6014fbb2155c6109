"""Fast checks of how a global batch is split: the ranks' shards of an epoch, and gradient
accumulation on one process."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ablate import train
from ablate.config import RecipeConfig, batch_split_error
from ablate.data import EpochSampler
from tests.train.conftest import tiny_trial


def shards(n: int, batch: int, world: int, *, seed: int = 0, epoch: int = 1):
    out = []
    for rank in range(world):
        s = EpochSampler(n, seed=seed, shuffle=True, batch=batch, rank=rank, world=world)
        s.set_epoch(epoch)
        out.append(list(s))
        assert len(s) == len(out[-1])
    return out


@pytest.mark.parametrize("n,batch,world", [(64, 16, 2), (70, 12, 3), (10, 4, 4), (9, 8, 1)])
def test_shards_are_disjoint_and_cover_every_full_batch(n, batch, world):
    parts = shards(n, batch, world)
    indices = [k.index for part in parts for k in part]
    assert len(indices) == len(set(indices)) == (n // batch) * batch
    whole = EpochSampler(n, seed=0, shuffle=True)
    whole.set_epoch(1)
    order = list(whole)
    share = batch // world
    for step in range(n // batch):  # rank r holds the r-th slice of each global batch, in order
        global_batch = order[step * batch:(step + 1) * batch]
        assert [k for p in parts for k in p[step * share:(step + 1) * share]] == global_batch


def test_shards_depend_on_seed_and_epoch_only():
    assert shards(64, 16, 2) == shards(64, 16, 2)
    assert shards(64, 16, 2, epoch=2) != shards(64, 16, 2)
    assert shards(64, 16, 2, seed=1) != shards(64, 16, 2)
    # a sample's augmentation seed is the same whichever rank trains on it
    seeds = {k.index: k.seed for part in shards(64, 16, 2) for k in part}
    assert seeds == {k.index: k.seed for k in shards(64, 16, 1)[0]}


@pytest.mark.parametrize("n,world", [(29, 2), (7, 3), (2, 4)])
def test_validation_shards_count_every_image_once(n, world):
    seen = []
    for rank in range(world):
        s = EpochSampler(n, seed=0, shuffle=False, rank=rank, world=world)
        seen += [k.index for k in s]
        assert len(s) in (n // world, n // world + 1)
    assert seen == list(range(n))


@pytest.mark.parametrize("recipe,workers,key", [
    (dict(batch_size=30), 4, "resources.workers"),
    (dict(batch_size=16, accum_steps=16), 2, "train.accum_steps"),
    (dict(batch_size=16, accum_steps=3), 1, "train.accum_steps"),
    (dict(batch_size=24, accum_steps=4), 2, "train.batch_size"),  # micro-batch 3 with Mixup
    (dict(batch_size=24, accum_steps=4, mixup=0.0, cutmix=0.0), 2, ""),
    (dict(batch_size=1024, accum_steps=8), 1, ""),
])
def test_batch_split_errors_name_the_key_to_change(recipe, workers, key):
    why, got = batch_split_error(RecipeConfig(**recipe), workers)
    assert got == key and (why is None) == (key == "")


def _one_step(trial, batch, tdir):
    """(loss, gradients, weights after) of one optimizer step of ``trial`` on ``batch``."""
    run = train._setup(trial, tdir, "cpu")
    try:
        x, y = batch
        loss = train._train_step(run, run.prep(x, train=True), y)
        grads = {n: p.grad for n, p in run.model.named_parameters() if p.grad is not None}
        return loss, grads, run.model.state_dict()
    finally:
        run.loaders.close()


def _with(trial, *, model=None, **recipe):
    cfg = trial.config
    return dataclasses.replace(trial, config=dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, **(model or {})),
        train=dataclasses.replace(cfg.train, **recipe)))


def test_accumulating_two_micro_batches_equals_one_step_on_both(tmp_path):
    """For a LayerNorm model without random draws: accum_steps 2 == one step on the batch."""
    base = _with(tiny_trial(arch="ablate_swin_nano"), model={"drop_path_rate": 0.0},
                 mixup=0.0, cutmix=0.0, reprob=0.0, randaugment=None)
    run = train._setup(base, tmp_path / "data", "cpu")
    run.loaders.set_epoch(1)
    batch = next(iter(run.loaders.train))
    run.loaders.close()
    loss_one, grads_one, one = _one_step(base, batch, tmp_path / "one")
    loss_two, grads_two, two = _one_step(_with(base, accum_steps=2), batch, tmp_path / "two")
    assert loss_two == pytest.approx(loss_one, rel=1e-6)
    assert grads_two.keys() == grads_one.keys() and grads_one
    for name, g in grads_one.items():  # the mean over the batch, not a sum of halves
        torch.testing.assert_close(grads_two[name], g, rtol=1e-4, atol=1e-7, msg=name)
    for name, w in one.items():
        torch.testing.assert_close(two[name], w, rtol=1e-5, atol=1e-6, msg=name)
