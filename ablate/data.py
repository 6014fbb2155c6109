"""Data sets and loaders for one trial: digits, CIFAR-10/100, an image folder, or synthetic.

Every data set yields ``(uint8 image tensor, label)`` pairs through the recipe's per-sample
transforms (ablate.augment) and is addressed by :class:`AugmentKey` indices, so a sample's
augmentation is a pure function of ``(seed, epoch, index)``: identical with 0 or N workers,
with persistent workers, and after a resume from any epoch (nothing about the loader needs to
be checkpointed).

Small data sets (digits, CIFAR, synthetic) are held in memory as uint8 ``(N, H, W, 3)`` arrays;
an image folder is read lazily from disk, each file decoded to RGB by
``ablate.datafiles.read_image`` (which documents how every image mode is converted; a file it
cannot decode fails the trial as a data error naming it). CIFAR batches are read by
``ablate.datafiles.read_cifar_batch``, which never runs anything from the file.
``validate_data`` checks a configuration without loading anything and names the folder and the
expected layout when it is wrong.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image

from ablate.augment import build_transforms
from ablate.config import DataConfig, RecipeConfig
from ablate.datafiles import (
    CIFAR_FILES,
    CIFAR_LABELS,
    IMAGE_SUFFIXES,
    class_names,
    cifar_dir,
    image_files,
    DATA_NAMES,
    _LAYOUT,
    _cifar_dir,
    _folder_classes,
    read_cifar_batch,
    read_image,
    validate_data,
)
from ablate.errors import DataError


class AugmentKey(NamedTuple):
    """What the sampler yields: the sample's index and the seed of its augmentation."""

    index: int
    seed: int


@dataclass(frozen=True)
class DataSplits:
    """The train and validation sets of one DataConfig, and what identifies their content."""

    train: ImageDataset
    val: ImageDataset
    num_classes: int
    fingerprint: str  # sha256 of the content (in-memory sets) or of the file listing (folders)


class ImageDataset(torch.utils.data.Dataset):
    """(image, label) pairs from memory or files, transformed with per-sample seeded RNG."""

    def __init__(self, labels: np.ndarray, *, images: np.ndarray | None = None,
                 files: list[Path] | None = None, transform: Callable | None = None) -> None:
        self.images, self.files, self.transform = images, files, transform
        self.labels = labels.astype(np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int) -> Image.Image:
        if self.images is not None:
            return Image.fromarray(self.images[index])
        return read_image(self.files[index])

    def __getitem__(self, key: AugmentKey | int) -> tuple[torch.Tensor, int]:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[AugmentKey | int]) -> list[tuple[torch.Tensor, int]]:
        """A batch of samples (the DataLoader's batched fetch): RNG states saved once per batch."""
        with _preserved_rng():
            return [self._sample(*(k if isinstance(k, tuple) else (k, 0))) for k in keys]

    def _sample(self, index: int, seed: int) -> tuple[torch.Tensor, int]:
        img = self.load(index)
        if self.transform is not None:
            # timm's transforms draw from python's, numpy's and torch's global RNGs
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.default_generator.manual_seed(seed)  # torch.manual_seed also seeds CUDA: slow
            img = self.transform(img)
        return img, int(self.labels[index])


class _preserved_rng:
    """In the main process (workers=0), restore the global RNG states after loading a batch.

    Loading data then never perturbs Mixup's (numpy) or stochastic depth's (torch) streams;
    in a worker process there is nothing to preserve.
    """

    def __enter__(self) -> None:
        self.saved = None
        if torch.utils.data.get_worker_info() is None:
            self.saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())

    def __exit__(self, *exc: Any) -> None:
        if self.saved is not None:
            random.setstate(self.saved[0])
            np.random.set_state(self.saved[1])
            torch.set_rng_state(self.saved[2])


class EpochSampler(torch.utils.data.Sampler):
    """A shuffled (or ordered) pass over the data whose order and seeds depend on (seed, epoch).

    Call ``set_epoch`` before iterating; the permutation and every sample's augmentation seed
    are derived from it, so no sampler state has to survive a restart.

    With ``batch`` set (training), the pass covers whole global batches only, and rank ``rank``
    of ``world`` yields its contiguous share of each: samples ``[r * batch / world, (r + 1) *
    batch / world)`` of every batch of the epoch's order. The ranks' shares are disjoint, make
    up every batch, and are the micro-batches one process accumulating over ``world`` steps
    would train on, in that order. Without ``batch`` (evaluation), rank ``rank`` yields its
    contiguous share of the whole order: every sample exactly once over the ranks.
    """

    def __init__(self, n: int, *, seed: int, shuffle: bool, batch: int | None = None,
                 rank: int = 0, world: int = 1) -> None:
        if batch is not None and batch % world:
            raise ValueError(f"a batch of {batch} does not split over {world} ranks")
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0
        self.batch, self.rank, self.world = batch, rank, world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.batch is None:
            start, stop = _share(self.n, self.rank, self.world)
            return stop - start
        return (self.n // self.batch) * (self.batch // self.world)

    def positions(self) -> list[int]:
        """Which places of the epoch's order this rank yields, in order."""
        if self.batch is None:
            return list(range(*_share(self.n, self.rank, self.world)))
        share = self.batch // self.world
        return [step * self.batch + self.rank * share + i
                for step in range(self.n // self.batch) for i in range(share)]

    def __iter__(self) -> Iterator[AugmentKey]:
        g = torch.Generator().manual_seed(mix_seeds(self.seed, self.epoch))
        order = torch.randperm(self.n, generator=g) if self.shuffle else torch.arange(self.n)
        seeds = torch.randint(0, 2**62, (self.n,), generator=g).tolist()
        order = order.tolist()
        for p in self.positions():
            yield AugmentKey(order[p], seeds[order[p]])


def _share(n: int, rank: int, world: int) -> tuple[int, int]:
    """The contiguous part ``[start, stop)`` of ``n`` items that rank ``rank`` of ``world``
    takes; the parts differ in size by at most one and cover all ``n`` once."""
    return rank * n // world, (rank + 1) * n // world


def mix_seeds(*parts: int) -> int:
    """A 63-bit seed that depends on every part (e.g. seed and epoch, or seed and rank)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# -- validation --------------------------------------------------------------------------------


# -- loading -----------------------------------------------------------------------------------


def load_splits(cfg: DataConfig, recipe: RecipeConfig | None = None) -> DataSplits:
    """Load (or index) the train and validation sets of ``cfg`` with the recipe's transforms.

    The split never depends on the trial seed. ``num_train``/``num_val`` cap each split to a
    fixed (seed-independent) subset.
    """
    validate_data(cfg)
    loader = {"digits": _load_digits, "synthetic": _load_synthetic,
              "imagefolder": _load_folder}.get(cfg.name, _load_cifar)
    (tr_x, tr_y), (va_x, va_y), num_classes = loader(cfg)
    tr_x, tr_y = _cap(tr_x, tr_y, cfg.num_train)
    va_x, va_y = _cap(va_x, va_y, cfg.num_val)
    if len(tr_y) == 0 or len(va_y) == 0:
        raise DataError("a split is empty", file=cfg.root, key="data",
                        hint="check num_train/num_val and the data folder")
    train_tf, val_tf = build_transforms(cfg, recipe or RecipeConfig())
    splits = []
    for x, y, tf in ((tr_x, tr_y, train_tf), (va_x, va_y, val_tf)):
        files = x if isinstance(x, list) else None
        splits.append(ImageDataset(y, images=None if files else x, files=files, transform=tf))
    return DataSplits(splits[0], splits[1], num_classes, _fingerprint(cfg, tr_x, tr_y, va_x, va_y))


def _cap(x: Any, y: np.ndarray, n: int | None) -> tuple[Any, np.ndarray]:
    if n is None or n >= len(y):
        return x, y
    keep = np.sort(np.random.default_rng(0).permutation(len(y))[:n])
    return ([x[i] for i in keep] if isinstance(x, list) else x[keep]), y[keep]


def _load_digits(cfg: DataConfig):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    grey = torch.from_numpy(digits.images).float()[:, None] / 16.0  # (N, 1, 8, 8) in [0, 1]
    big = torch.nn.functional.interpolate(grey, size=(cfg.img_size, cfg.img_size),
                                          mode="bicubic", align_corners=False)
    rgb = (big.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1)
    x = rgb.permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, 3)
    idx = np.arange(len(x))
    tr, va = train_test_split(idx, test_size=cfg.val_fraction, stratify=digits.target,
                              random_state=0)  # fixed: the split is part of the data set
    return (x[tr], digits.target[tr]), (x[va], digits.target[va]), 10


def _load_synthetic(cfg: DataConfig):
    """A learnable toy task: one smooth random colour pattern per class, plus noise (tests only).

    The patterns are 2x2 colour fields upscaled, so random crops keep the class's colours.
    """
    k, size = cfg.num_classes or 4, cfg.img_size
    rng = np.random.default_rng(1234)
    coarse = torch.from_numpy(rng.uniform(0, 255, (k, 3, 2, 2)))
    templates = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear",
                                                align_corners=True).permute(0, 2, 3, 1).numpy()

    def make(n: int):
        y = np.arange(n) % k
        x = 0.6 * templates[y] + 0.4 * rng.uniform(0, 255, (n, size, size, 3))
        return x.astype(np.uint8), y

    return make(cfg.num_train or 256), make(cfg.num_val or 64), k


def _load_cifar(cfg: DataConfig):
    base = _cifar_dir(cfg)
    _, train, test = CIFAR_FILES[cfg.name]

    def read(files: list[str]):
        batches = [read_cifar_batch(base / f, cfg.name) for f in files]
        x = np.concatenate([b[0] for b in batches]).reshape(-1, 3, 32, 32)
        return x.transpose(0, 2, 3, 1).copy(), np.concatenate([b[1] for b in batches])

    return read(train), read(test), CIFAR_LABELS[cfg.name][1]


def _load_folder(cfg: DataConfig):
    classes = _folder_classes(cfg)["train"]
    root = Path(cfg.root).expanduser()
    out = []
    for split in ("train", "val"):
        files, labels = [], []
        for label, name in enumerate(classes):
            found = image_files(root / split / name)
            files += [root / split / name / f for f in found]
            labels += [label] * len(found)
        if not files:
            raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {split}/", file=root,
                            key="data.root", hint=f"expected layout: {_LAYOUT['imagefolder']}")
        out.append((files, np.asarray(labels)))
    return out[0], out[1], len(classes)


def _fingerprint(cfg: DataConfig, *parts: Any) -> str:
    h = hashlib.sha256(f"{cfg.name}:{cfg.img_size}".encode())
    for part in parts:
        if isinstance(part, list):  # files: the listing (names and sizes) is cheap and enough
            for p in part:
                h.update(f"{p}:{p.stat().st_size}".encode())
        else:
            h.update(np.ascontiguousarray(part).tobytes())
    return h.hexdigest()[:16]


# -- loaders --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaders:
    """The training and validation loaders of one trial."""

    train: torch.utils.data.DataLoader
    val: torch.utils.data.DataLoader

    def set_epoch(self, epoch: int) -> None:
        self.train.sampler.set_epoch(epoch)

    def close(self) -> None:
        """Stop persistent worker processes now rather than whenever the loaders are collected."""
        for loader in (self.train, self.val):
            # DataLoader keeps its persistent iterator here (no public API to stop it); an
            # epoch's iterator may outlive us in a traceback, so shut the workers down explicitly
            if getattr(loader, "_iterator", None) is not None:
                loader._iterator._shutdown_workers()
                loader._iterator = None


def checked_batches(loader: torch.utils.data.DataLoader) -> Iterator[Any]:
    """The batches of ``loader``; an error while one of its worker processes has died is
    raised as the error torch raises when it notices one gone ("DataLoader worker (pid(s)
    ...) exited unexpectedly"), so the failure is a killed process, which is retried.

    A loader process killed (by the out-of-memory killer, say) while it hands a batch over
    makes the receiving end fail with whatever the broken transfer raised (a
    ConnectionResetError, a FileNotFoundError of its socket), which read as a bug in the code
    or the data.
    """
    batches = iter(loader)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as e:
            dead = _dead_workers(batches)
            if not dead or "exited unexpectedly" in str(e):
                raise
            raise RuntimeError(f"DataLoader worker (pid(s) {', '.join(map(str, dead))}) exited "
                               f"unexpectedly ({type(e).__name__}: {e})") from None
        yield batch


def _dead_workers(batches: Any, wait_s: float = 1.0) -> list[int]:
    """The pids of the loader iterator's worker processes that have died. A process killed
    closes its sockets just before it can be seen dead: look again for up to ``wait_s``."""
    workers = getattr(batches, "_workers", None) or []
    deadline = time.monotonic() + wait_s
    while True:
        dead = [w.pid for w in workers if not w.is_alive()]
        if dead or not workers or time.monotonic() >= deadline:
            return dead
        time.sleep(0.05)


def build_loaders(splits: DataSplits, recipe: RecipeConfig, *, seed: int,
                  pin_memory: bool = False, rank: int = 0, world: int = 1) -> Loaders:
    """Training (shuffled, full global batches only) and validation loaders with
    recipe.workers, for rank ``rank`` of ``world`` data-parallel processes.

    A training batch is this rank's share of a global batch (``batch_size / world`` samples;
    see :class:`EpochSampler`); the validation loader yields this rank's share of the
    validation set, so that the ranks together see every image exactly once, in batches of
    one micro-batch (``batch_size / (world * accum_steps)``): accumulation is how a trial fits
    its device, and evaluation must fit it too. Workers are
    persistent and prefetch several batches, so the next batch is ready while the model
    computes; each loader owns a generator so creating iterators never draws from the global
    torch RNG.
    """
    if len(splits.train) < recipe.batch_size:
        raise DataError(f"{len(splits.train)} training images are fewer than one batch "
                        f"({recipe.batch_size})", key="train.batch_size",
                        hint="lower train.batch_size or raise data.num_train")
    workers = max(0, recipe.workers)
    common = dict(num_workers=workers, pin_memory=pin_memory, persistent_workers=workers > 0,
                  prefetch_factor=4 if workers else None)
    per_rank = recipe.batch_size // world
    train = torch.utils.data.DataLoader(
        splits.train, batch_size=per_rank, drop_last=True,
        sampler=EpochSampler(len(splits.train), seed=seed, shuffle=True,
                             batch=recipe.batch_size, rank=rank, world=world),
        generator=torch.Generator().manual_seed(seed), **common)
    val = torch.utils.data.DataLoader(
        splits.val, batch_size=max(1, per_rank // recipe.accum_steps), drop_last=False,
        sampler=EpochSampler(len(splits.val), seed=0, shuffle=False, rank=rank, world=world),
        generator=torch.Generator().manual_seed(0), **common)
    return Loaders(train, val)
