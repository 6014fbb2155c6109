"""Data sets, transforms and loaders: fixed splits, reproducible augmentation, clear errors."""

from __future__ import annotations

import multiprocessing
import pickle
import random

import numpy as np
import pytest
import torch
from PIL import Image

from ablate.augment import build_transforms
from ablate.config import DataConfig, RecipeConfig
from ablate.data import (
    AugmentKey,
    EpochSampler,
    build_loaders,
    load_splits,
    validate_data,
)
from ablate.errors import DataError

SYNTH = DataConfig(name="synthetic", img_size=32, num_train=32, num_val=16, num_classes=4)


@pytest.fixture(scope="module")
def digits():
    return load_splits(DataConfig(name="digits", img_size=32))


def test_digits_split_is_fixed_stratified_and_in_memory(digits):
    tr, va = digits.train, digits.val
    assert (len(tr), len(va), digits.num_classes) == (1437, 360, 10)
    assert tr.images.dtype == np.uint8 and tr.images.shape[1:] == (32, 32, 3)
    assert np.array_equal(tr.images[..., 0], tr.images[..., 2])  # grey in 3 channels
    assert np.bincount(va.labels).min() >= 35  # stratified: every digit ~20% held out
    again = load_splits(DataConfig(name="digits", img_size=32, val_fraction=0.2))
    assert np.array_equal(again.val.labels, va.labels)
    assert again.fingerprint == digits.fingerprint
    other = load_splits(DataConfig(name="digits", img_size=32, val_fraction=0.3))
    assert other.fingerprint != digits.fingerprint and len(other.val) == 540


def test_digits_images_are_upscaled_to_img_size():
    small = load_splits(DataConfig(name="digits", img_size=16, num_train=8, num_val=4))
    assert small.train.images.shape == (8, 16, 16, 3) and small.train.images.max() > 200
    x, _ = small.val[0]
    assert x.shape == (3, 16, 16)


def test_augmentation_is_a_function_of_the_sample_key(digits):
    a, _ = digits.train[AugmentKey(5, 123)]
    b, _ = digits.train[AugmentKey(5, 123)]
    c, _ = digits.train[AugmentKey(5, 124)]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_loading_in_the_main_process_leaves_global_rng_untouched(digits):
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    expected = (torch.rand(1).item(), np.random.rand(), random.random())
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    digits.train[AugmentKey(3, 99)]
    assert (torch.rand(1).item(), np.random.rand(), random.random()) == expected


def test_sampler_order_depends_on_seed_and_epoch_only():
    def order(seed, epoch):
        s = EpochSampler(50, seed=seed, shuffle=True)
        s.set_epoch(epoch)
        return list(s)

    assert order(0, 1) == order(0, 1)
    assert order(0, 1) != order(0, 2) and order(0, 1) != order(1, 1)
    assert sorted(k.index for k in order(0, 1)) == list(range(50))
    fixed = EpochSampler(5, seed=0, shuffle=False)
    assert [k.index for k in fixed] == [0, 1, 2, 3, 4]


def test_batches_are_identical_with_and_without_workers():
    splits = load_splits(SYNTH)
    batches = []
    for workers in (0, 2):
        loaders = build_loaders(splits, RecipeConfig(batch_size=8, workers=workers), seed=3)
        loaders.set_epoch(2)
        batches.append([x for x, _ in loaders.train])
    assert len(batches[0]) == 4
    assert all(torch.equal(a, b) for a, b in zip(*batches))


@pytest.mark.parametrize("world,accum,micro", [(1, 1, 8), (1, 4, 2), (2, 2, 2)])
def test_validation_batches_are_one_micro_batch(world, accum, micro):
    """Accumulation is how a global batch fits one device; evaluating the rank's whole share
    at once would need the memory accumulation saved (1024 images for paper_1gpu.yaml)."""
    recipe = RecipeConfig(batch_size=8, accum_steps=accum, workers=0)
    seen = []
    for rank in range(world):
        loaders = build_loaders(load_splits(SYNTH), recipe, seed=0, rank=rank, world=world)
        sizes = [len(y) for _, y in loaders.val]
        assert max(sizes) == micro
        seen += [int(i) for _, y in loaders.val for i in y]
    assert len(seen) == SYNTH.num_val  # every image once, over the ranks


def test_close_stops_persistent_workers_even_with_a_live_iterator():
    loaders = build_loaders(load_splits(SYNTH), RecipeConfig(batch_size=8, workers=2), seed=0)
    batches = iter(loaders.train)  # as an epoch's iterator kept alive by a traceback
    next(batches)
    assert len(multiprocessing.active_children()) == 2
    loaders.close()
    assert multiprocessing.active_children() == []


def test_randaugment_at_full_magnitude_posterizes_to_zero_bits():
    # "inc1" posterize keeps 0 bits at magnitude 10, which Pillow >= 11 refuses.
    tf, _ = build_transforms(SYNTH, RecipeConfig(randaugment="rand-n3-m10-inc1", reprob=0))
    img = Image.fromarray(np.full((32, 32, 3), 200, np.uint8))
    for seed in range(40):
        random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
        assert tf(img).shape == (3, 32, 32)


def test_fewer_images_than_a_batch_is_an_error():
    with pytest.raises(DataError, match="batch_size"):
        build_loaders(load_splits(SYNTH), RecipeConfig(batch_size=64, workers=0), seed=0)


def write_cifar(root, name="cifar10", n=6):
    folder, files, key = (("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)]
                           + ["test_batch"], b"labels") if name == "cifar10" else
                          ("cifar-100-python", ["train", "test"], b"fine_labels"))
    base = root / folder
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for f in files:
        batch = {b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                 key: list(rng.integers(0, 10, n))}
        (base / f).write_bytes(pickle.dumps(batch))
    return base


@pytest.mark.parametrize("name,train_files", [("cifar10", 5), ("cifar100", 1)])
def test_cifar_from_the_extracted_pickle_folder(tmp_path, name, train_files):
    base = write_cifar(tmp_path, name)
    for root in (tmp_path, base):  # the parent folder or the extracted folder itself
        splits = load_splits(DataConfig(name=name, root=str(root)))
        assert len(splits.train) == 6 * train_files and len(splits.val) == 6
        assert splits.num_classes == (10 if name == "cifar10" else 100)
        assert splits.train.images.shape[1:] == (32, 32, 3)


def test_cifar_errors_name_the_missing_files(tmp_path):
    base = write_cifar(tmp_path)
    (base / "test_batch").unlink()
    with pytest.raises(DataError, match="test_batch") as info:
        validate_data(DataConfig(name="cifar10", root=str(tmp_path)))
    assert "cifar-10-batches-py" in str(info.value)
    (base / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="not a CIFAR python batch"):
        load_splits(DataConfig(name="cifar10", root=str(tmp_path)))


def make_folder(root, classes=("cat", "dog"), per_class=3):
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (20, 24), (40 * i, 80, 120)).save(root / split / c / f"{i}.png")


def test_image_folder(tmp_path):
    make_folder(tmp_path)
    splits = load_splits(DataConfig(name="imagefolder", root=str(tmp_path), img_size=16))
    assert (len(splits.train), len(splits.val), splits.num_classes) == (6, 6, 2)
    x, y = splits.val[4]
    assert x.shape == (3, 16, 16) and y == 1
    (tmp_path / "train" / "dog" / "3.png").write_bytes((tmp_path / "train/dog/0.png").read_bytes())
    again = load_splits(DataConfig(name="imagefolder", root=str(tmp_path), img_size=16))
    assert again.fingerprint != splits.fingerprint


@pytest.mark.parametrize("breakage,message", [
    ("missing", "does not exist"),
    ("no_val", "no val/ folder"),
    ("no_classes", "no class folders"),
    ("different_classes", "different class folders"),
    ("no_images", "no images"),
    ("one_class", "one class folder"),  # trained to 100%, said nothing
    ("loose_image", "an image outside the class folders"),  # silently left out
])
def test_malformed_image_folder_names_path_and_layout(tmp_path, breakage, message):
    root = tmp_path / "data"
    if breakage != "missing":
        make_folder(root, per_class=0 if breakage == "no_images" else 1)
    if breakage == "no_val":
        for p in sorted((root / "val").rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
        (root / "val").rmdir()
    elif breakage == "no_classes":
        for c in ("cat", "dog"):
            for p in (root / "train" / c).iterdir():
                p.unlink()
            (root / "train" / c).rmdir()
    elif breakage == "different_classes":
        (root / "val" / "dog").rename(root / "val" / "fox")
    elif breakage == "one_class":
        for split in ("train", "val"):
            for p in (root / split / "dog").iterdir():
                p.unlink()
            (root / split / "dog").rmdir()
    elif breakage == "loose_image":
        (root / "train" / "cat" / "0.png").rename(root / "train" / "0.png")
        (root / "train" / "notes.txt").write_text("not an image: fine beside the classes")
    cfg = DataConfig(name="imagefolder", root=str(root))
    with pytest.raises(DataError, match=message) as info:
        load_splits(cfg)
    assert str(root) in str(info.value) and "ROOT/train/CLASS" in str(info.value)


def test_unknown_data_name_suggests_the_closest():
    with pytest.raises(DataError, match="did you mean 'cifar10'"):
        validate_data(DataConfig(name="cifar1O"))


def test_folder_data_without_root_says_what_to_set():
    with pytest.raises(DataError, match="data.root"):
        validate_data(DataConfig(name="imagefolder"))
