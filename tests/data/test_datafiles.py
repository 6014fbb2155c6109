"""Reading data without trusting it: the restricted CIFAR unpickler, the RGB conversion of every
image mode, the cheap file check, the deep check and its cache, and undecodable images met by
the loader (in the main process and in worker processes)."""

from __future__ import annotations

import io
import os
import pickle
import warnings

import numpy as np
import pytest
from PIL import Image

from ablate.config import DataConfig, RecipeConfig
from ablate.data import build_loaders, load_splits
from ablate.datafiles import check_files, image_files, read_cifar_batch, read_image, to_rgb
from ablate.deepcheck import cache_dir, check_data
from ablate.errors import DataError, UnreadableImage
from ablate.failures import classify_exception


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATE_CACHE_DIR", str(tmp_path / "cache"))


# -- CIFAR ----------------------------------------------------------------------------------------


def batch_bytes(n=4, labels=None, protocol=4, key=b"labels"):
    data = np.random.default_rng(0).integers(0, 255, (n, 3072), dtype=np.uint8)
    return pickle.dumps({b"data": data, key: list(range(n)) if labels is None else labels,
                         b"batch_label": b"training batch 1 of 5"}, protocol=protocol)


class CreatesAFile:
    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batches_of_every_pickle_protocol_are_read(tmp_path, protocol):
    path = tmp_path / "data_batch_1"
    path.write_bytes(batch_bytes(protocol=protocol))
    images, labels = read_cifar_batch(path, "cifar10")
    assert images.shape == (4, 3072) and images.dtype == np.uint8
    assert labels.tolist() == [0, 1, 2, 3]


def test_cifar_batches_written_by_numpy_1_are_read(tmp_path):
    # the real archives name numpy.core (numpy 2 writes numpy._core)
    raw = batch_bytes(protocol=2)
    assert b"numpy._core.multiarray" in raw
    path = tmp_path / "data_batch_1"
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy 2's numpy.core alias warns: not used
        images, labels = read_cifar_batch(path, "cifar10")
    assert images.shape == (4, 3072) and labels.tolist() == [0, 1, 2, 3]


def test_a_malicious_cifar_pickle_runs_nothing_and_is_one_line(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": CreatesAFile(target), b"labels": [0]}))
    pickle.loads(path.read_bytes())[b"data"].close()  # the plain unpickler creates it ...
    assert target.exists()
    target.unlink()
    with pytest.raises(DataError) as info:
        read_cifar_batch(path, "cifar10")
    assert not target.exists()  # ... the restricted one does not
    text = str(info.value)
    assert "\n" not in text and str(path) in text and "open, which a data file never needs" in text


@pytest.mark.parametrize("labels,message", [
    ([0, 1, 2], "4 images but 3 labels"),
    ([0, 1, 2, 10], "label 10 is outside the 10 classes"),
    ([0, -1, 2, 3], "label -1 is outside"),
    ([0.5, 1, 2, 3], "not whole numbers"),
])
def test_cifar_labels_that_do_not_fit_are_data_errors(tmp_path, labels, message):
    path = tmp_path / "data_batch_1"
    path.write_bytes(batch_bytes(labels=labels))
    with pytest.raises(DataError, match=message) as info:
        read_cifar_batch(path, "cifar10")
    assert info.value.file == str(path)


def test_cifar100_labels_are_checked_against_100_classes(tmp_path):
    path = tmp_path / "train"
    path.write_bytes(batch_bytes(labels=[0, 50, 99, 42], key=b"fine_labels"))
    assert read_cifar_batch(path, "cifar100")[1].tolist() == [0, 50, 99, 42]
    with pytest.raises(DataError, match="label 50 is outside the 10 classes"):
        path.write_bytes(batch_bytes(labels=[0, 50, 9, 4]))
        read_cifar_batch(path, "cifar10")


# -- RGB conversion -------------------------------------------------------------------------------


def roundtrip(img, tmp_path, fmt="PNG", **save):
    path = tmp_path / f"img.{fmt.lower()}"
    img.save(path, fmt, **save)
    out = read_image(path)
    assert out.mode == "RGB"
    return np.asarray(out).astype(int)


def test_grey_is_copied_to_three_channels(tmp_path):
    px = roundtrip(Image.fromarray(np.array([[0, 100, 255]], np.uint8), "L"), tmp_path)
    assert px[0].tolist() == [[0, 0, 0], [100, 100, 100], [255, 255, 255]]


def palette_image():
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.putdata([0, 1])
    return img


def test_palette_takes_its_colours(tmp_path):
    px = roundtrip(palette_image(), tmp_path)
    assert px[0].tolist() == [[255, 0, 0], [0, 255, 0]]


def test_palette_transparency_is_composited_on_black(tmp_path):
    px = roundtrip(palette_image(), tmp_path, transparency=1)  # green is transparent
    assert px[0].tolist() == [[255, 0, 0], [0, 0, 0]]


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    values = np.array([0, 257 * 100, 65535], "<u2")
    img = Image.frombytes("I;16", (3, 1), values.tobytes())
    assert np.asarray(img.convert("L"))[0, 1] == 255  # Pillow's own conversion clips
    px = roundtrip(img, tmp_path)
    assert px[0, :, 0].tolist() == [0, 100, 255] and (px[..., 0] == px[..., 2]).all()


def test_32_bit_grey_holding_16_bit_values_is_scaled_by_257():
    img = Image.fromarray(np.array([[0, 257 * 100, 65535]], np.int32), "I")
    assert np.asarray(to_rgb(img))[0, :, 1].tolist() == [0, 100, 255]


def test_wider_32_bit_grey_is_scaled_from_the_32_bit_range():
    img = Image.fromarray(np.array([[0, 2**30, 2**31 - 1]], np.int32), "I")
    assert np.asarray(to_rgb(img))[0, :, 0].tolist() == [0, 128, 255]


def test_cmyk_goes_through_pillows_conversion(tmp_path):
    img = Image.new("CMYK", (3, 1))
    img.putdata([(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 255)])
    px = roundtrip(img, tmp_path, fmt="TIFF")
    assert px[0].tolist() == [[255, 255, 255], [0, 255, 255], [0, 0, 0]]


def test_rgba_is_composited_on_black(tmp_path):
    img = Image.new("RGBA", (3, 1))
    img.putdata([(200, 100, 50, 255), (200, 100, 50, 0), (200, 100, 50, 128)])
    px = roundtrip(img, tmp_path)
    assert px[0, 0].tolist() == [200, 100, 50] and px[0, 1].tolist() == [0, 0, 0]
    assert np.abs(px[0, 2] - np.array([200, 100, 50]) * 128 / 255).max() <= 1


def test_grey_with_alpha_is_composited_on_black(tmp_path):
    img = Image.new("LA", (3, 1))
    img.putdata([(200, 255), (200, 0), (200, 51)])
    px = roundtrip(img, tmp_path)
    assert px[0, :, 0].tolist() == [200, 0, 40] and (px[..., 0] == px[..., 1]).all()


# -- the cheap check, the deep check and its cache ---------------------------------------------


def noise_jpeg(path, size=48):
    rng = np.random.default_rng(len(str(path)))
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path, "JPEG")


def make_folder(root, classes=("cat", "dog"), per_class=2):
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                noise_jpeg(root / split / c / f"{i}.jpg")
    return DataConfig(name="imagefolder", root=str(root), img_size=32)


def truncate(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


@pytest.mark.parametrize("breakage,message", [
    ("empty", "the file is empty"),
    ("not_an_image", "first bytes are not those of"),
    ("other_extension", "not an image file"),
    ("no_train_images", "class 'dog' has no images in train/"),
    ("link_loop", "a broken link or a link loop"),
    ("broken_link", "a broken link or a link loop"),
])
def test_the_cheap_check_names_the_first_bad_file(tmp_path, breakage, message):
    data = make_folder(tmp_path / "d")
    cat = tmp_path / "d/train/cat"
    bad = {"empty": cat / "2.jpg", "not_an_image": cat / "2.jpg",
           "other_extension": cat / "notes.txt", "no_train_images": tmp_path / "d/train/dog",
           "link_loop": cat / "2.jpg", "broken_link": cat / "2.jpg"}[breakage]
    if breakage == "empty":
        bad.write_bytes(b"")
    elif breakage in ("not_an_image", "other_extension"):
        bad.write_text("<html>not found</html>")
    elif breakage == "no_train_images":
        for f in bad.iterdir():
            f.unlink()
    elif breakage == "link_loop":
        os.symlink(bad.name, bad)  # 2.jpg -> 2.jpg
    else:
        os.symlink(tmp_path / "gone.jpg", bad)
    with pytest.raises(DataError, match=message) as info:
        check_files(data)
    assert info.value.file == str(bad) and "\n" not in str(info.value)


def test_a_link_loop_to_a_folder_ends_the_listing_and_is_skipped(tmp_path):
    data = make_folder(tmp_path / "d")
    cat = tmp_path / "d/train/cat"
    os.symlink("..", cat / "up")  # cat/up/cat/up/... if links to folders were followed
    os.symlink(".", cat / "here")
    assert image_files(cat) == ["0.jpg", "1.jpg"]
    assert check_files(data) == 8


def test_a_truncated_jpeg_passes_the_cheap_check_and_fails_the_deep_one(tmp_path):
    data = make_folder(tmp_path / "d")
    bad = tmp_path / "d/val/dog/1.jpg"
    truncate(bad)
    assert check_data(data, "f1").level == "files"
    seen = []
    with pytest.raises(UnreadableImage) as info:
        check_data(data, "f1", deep=True, on_progress=lambda d, t: seen.append((d, t)))
    assert info.value.file == str(bad) and "truncated" in str(info.value)
    assert seen[-1] == (8, 8)


def test_the_deep_check_names_every_undecodable_image(tmp_path):
    data = make_folder(tmp_path / "d", per_class=4)
    bad = sorted((tmp_path / "d/train").rglob("*.jpg"))[:3]
    for p in bad:
        truncate(p)
    with pytest.raises(DataError, match="3 of 16 images cannot be decoded") as info:
        check_data(data, "f2", deep=True, workers=2)  # the process pool's path
    assert all(str(p) in str(info.value) for p in bad)


def test_a_passed_check_is_remembered_per_fingerprint_and_folder(tmp_path, monkeypatch):
    data = make_folder(tmp_path / "d")
    first = check_data(data, "f3", deep=True)
    assert (first.level, first.images, first.cached) == ("decoded", 8, False)
    assert list(cache_dir().glob("f3-*.json"))

    def fail(*a, **k):
        raise AssertionError("a cached check read the files again")

    monkeypatch.setattr("ablate.deepcheck.check_files", fail)
    monkeypatch.setattr("ablate.deepcheck.read_image", fail)
    again = check_data(data, "f3", deep=True)
    assert again.cached and again.images == 8
    assert check_data(data, "f3").cached  # a deep result covers the cheap check
    with pytest.raises(AssertionError):
        check_data(data, "f4")  # other content
    copy = make_folder(tmp_path / "copy")
    with pytest.raises(AssertionError):
        check_data(copy, "f3")  # same content elsewhere: checked there too


def test_a_failed_check_is_not_remembered(tmp_path):
    data = make_folder(tmp_path / "d")
    truncate(tmp_path / "d/train/cat/0.jpg")
    for _ in range(2):
        with pytest.raises(UnreadableImage):
            check_data(data, "f5", deep=True)
    assert not list(cache_dir().glob("f5-*"))


# -- at run time -----------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_an_undecodable_image_met_by_the_loader_is_a_data_error_naming_it(tmp_path, workers):
    make_folder(tmp_path / "d")
    bad = tmp_path / "d/train/dog/0.jpg"
    truncate(bad)
    splits = load_splits(DataConfig(name="imagefolder", root=str(tmp_path / "d"), img_size=32))
    loaders = build_loaders(splits, RecipeConfig(batch_size=4, workers=workers), seed=0)
    try:
        with pytest.raises(UnreadableImage) as info:
            for _ in loaders.train:
                pass
    finally:
        loaders.close()
    err = info.value
    assert err.file == str(bad) and "Traceback" not in str(err) and "\n" not in str(err)
    failure = classify_exception(err)
    assert failure.kind == "data" and failure.deterministic  # not retried
    assert "--deep-data-check" in failure.first_line and str(bad) in failure.first_line


def test_an_image_that_is_not_one_fails_in_read_image_not_later(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(UnreadableImage) as info:
        read_image(path)
    assert info.value.file == str(path)
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buf, "PNG")
    path.write_bytes(buf.getvalue())
    assert np.asarray(read_image(path))[0, 0].tolist() == [1, 2, 3]


def test_loaded_cifar_refuses_a_malicious_batch(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (base / f).write_bytes(batch_bytes())
    target = tmp_path / "pwned"
    (base / "test_batch").write_bytes(pickle.dumps({b"data": CreatesAFile(target)}))
    with pytest.raises(DataError, match="test_batch"):
        load_splits(DataConfig(name="cifar10", root=str(tmp_path)))
    assert not target.exists()
