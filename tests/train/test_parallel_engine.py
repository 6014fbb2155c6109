"""The data-parallel engine on 2 CPU processes (gloo), started here without Ray.

Each test spawns two processes that join one gloo process group and call
:func:`ablate.train.train_trial` as ranks 0 and 1, the way Ray Train's workers do, and compares
the outcome with one process (accumulating over the same micro-batches).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from ablate import checkpoint, record, train
from ablate.config import Resources, Trial
from tests.train.conftest import tiny_trial

pytestmark = pytest.mark.slow

# A LayerNorm model with every per-process random draw off: Mixup/CutMix, stochastic depth,
# random erasing (on the device, from the global RNG). Augmentations are seeded per sample.
LN_RECIPE = dict(mixup=0.0, cutmix=0.0, reprob=0.0, randaugment=None, label_smoothing=0.0)


def _ln_trial(*, workers: int = 1, accum_steps: int = 1, epochs: int = 1) -> Trial:
    t = tiny_trial(epochs=epochs, arch="ablate_swin_nano", accum_steps=accum_steps,
                   **LN_RECIPE)
    cfg = dataclasses.replace(t.config, model=dataclasses.replace(t.config.model,
                                                                  drop_path_rate=0.0))
    return dataclasses.replace(t, config=cfg, resources=Resources(workers=workers))


def _rank_main(rank: int, world: int, rendezvous: str, trial_dict: dict, tdir: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{rendezvous}",
                                         rank=rank, world_size=world)
    try:
        rows = []
        result = train.train_trial(Trial.from_dict(trial_dict), Path(tdir),
                                   report=rows.append, device="cpu")
        Path(tdir, f"rank{rank}.json").write_text(json.dumps({"rows": rows,
                                                              "result": result}))
    finally:
        torch.distributed.destroy_process_group()


def train_on_two_ranks(trial: Trial, tdir: Path) -> list[dict]:
    """Train ``trial`` as 2 gloo ranks in ``tdir``; each rank's reported rows and result."""
    tdir.mkdir(parents=True, exist_ok=True)
    mp.start_processes(_rank_main, args=(2, str(tdir.parent / f"{tdir.name}.rdv"),
                                         trial.to_dict(), str(tdir)),
                       nprocs=2, join=True, start_method="spawn")
    return [json.loads((tdir / f"rank{r}.json").read_text()) for r in range(2)]


def model_rows(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in train.TIMING_KEYS} for r in rows]


def final_weights(tdir: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load_latest(tdir / "checkpoints")["model"]


def test_two_workers_equal_one_worker_accumulating_two_micro_batches(tmp_path):
    ranks = train_on_two_ranks(_ln_trial(workers=2), tmp_path / "two")
    single = []
    train.train_trial(_ln_trial(accum_steps=2), tmp_path / "one", report=single.append,
                      device="cpu")
    two_rows, one_rows = model_rows(ranks[0]["rows"]), model_rows(single)
    assert model_rows(ranks[1]["rows"]) == two_rows  # both ranks report the same rows
    assert len(two_rows) == len(one_rows) == 1
    for key, value in one_rows[0].items():
        assert two_rows[0][key] == pytest.approx(value, rel=1e-5, abs=1e-5), key
    two, one = final_weights(tmp_path / "two"), final_weights(tmp_path / "one")
    assert two.keys() == one.keys()
    moved = 0
    for name, w in one.items():
        torch.testing.assert_close(two[name], w, rtol=1e-5, atol=1e-5, msg=name)
        moved += int(not torch.equal(w, torch.zeros_like(w)))
    assert moved > 0
    # rank 0 alone wrote the record; rank 1 returned without one
    assert record.read_state(tmp_path / "two") == record.DONE
    assert ranks[1]["result"] == {"state": record.DONE}
    assert len(record.read_metrics(tmp_path / "two")) == 1


def _uneven_val(t: Trial) -> Trial:
    """29 validation images: rank shares of 14 and 15, neither a whole number of batches of 8."""
    data = dataclasses.replace(t.config.data, num_val=29)
    return dataclasses.replace(t, config=dataclasses.replace(t.config, data=data))


def test_gathered_evaluation_equals_one_process_on_the_same_checkpoint(tmp_path):
    ranks = train_on_two_ranks(_uneven_val(_ln_trial(workers=2)), tmp_path / "two")
    state = final_weights(tmp_path / "two")
    single = _uneven_val(_ln_trial())
    run = train._setup(single, tmp_path / "eval", "cpu")
    run.model.load_state_dict(state)
    alone = train.evaluate(run)
    run.loaders.close()
    gathered = ranks[0]["rows"][-1]
    assert gathered["val/top1"] == alone["val/top1"]
    assert gathered["val/top5"] == alone["val/top5"]
    assert gathered["val/loss"] == pytest.approx(alone["val/loss"], rel=1e-6)


def test_a_two_worker_trial_in_one_process_is_refused(tmp_path):
    from ablate.errors import TrialError

    with pytest.raises(TrialError, match="2 workers, but 1 processes"):
        train.train_trial(_ln_trial(workers=2), tmp_path / "t", device="cpu")
    assert not (tmp_path / "t").exists()



def _rank_buffers(rank: int) -> torch.nn.Module:
    """A model whose buffers are this rank's own: BatchNorm statistics of its own batch (and
    the int64 num_batches_tracked), and one non-contiguous buffer."""
    torch.manual_seed(rank)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4),
                                torch.nn.BatchNorm1d(3))
    model[1](torch.randn(8, 4, 2, 2))
    model[2].running_var = torch.rand(3, 2)[:, 0]  # stride 2
    return model


def _buffers_main(rank: int, rendezvous: str, out: str) -> None:
    from ablate import distributed

    torch.distributed.init_process_group("gloo", init_method=f"file://{rendezvous}",
                                         rank=rank, world_size=2)
    try:
        model = _rank_buffers(rank)
        distributed.broadcast_buffers(model)
        torch.save(dict(model.named_buffers()), f"{out}.{rank}")
    finally:
        torch.distributed.destroy_process_group()


def test_buffers_are_rank_zeros_on_every_rank(tmp_path):
    out = str(tmp_path / "buffers")
    mp.start_processes(_buffers_main, args=(str(tmp_path / "rdv"), out), nprocs=2, join=True,
                       start_method="spawn")
    want = dict(_rank_buffers(0).named_buffers())
    assert not torch.equal(want["1.running_mean"], _rank_buffers(1)[1].running_mean)
    for rank in range(2):
        got = torch.load(f"{out}.{rank}")
        assert got.keys() == want.keys() and len(want) == 6
        for name, b in want.items():
            assert torch.equal(got[name], b) and got[name].dtype == b.dtype, (rank, name)
