"""Tests for deepstdp.data.datasets, on a small dataset built per test in the official layout."""

from __future__ import annotations

import hashlib
import io
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepstdp.data import datasets as data
from deepstdp.runtime.util import DeepSTDPError

SHARED = Path(__file__).parents[2] / "shared" / "data"
# Listed unsorted on purpose: classes are numbered in sorted order.
WNIDS = ["n03", "n01", "n02"]
COLOURS = {"n01": (200, 0, 0), "n02": (0, 200, 0), "n03": (0, 0, 200)}
N_TRAIN, N_VAL = 3, 2


def _jpeg(path: Path, colour: tuple[int, ...] | int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (8, 8), colour).save(path, quality=95)


def _dim(colour: tuple[int, int, int], i: int) -> tuple[int, ...]:
    """The class colour, darker for later files, so the file order shows in the pixels."""
    return tuple(c * (i + 1) // N_TRAIN for c in colour)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """tiny-imagenet-200 with 3 classes x 3 train images (n01_2 grayscale) and 2 val each."""
    root = tmp_path / "tiny-imagenet-200"
    root.mkdir()
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (root / "words.txt").write_text("".join(f"{w}\tthing {w}\n" for w in WNIDS))
    for wnid in WNIDS:
        (root / "train" / wnid / f"{wnid}_boxes.txt").parent.mkdir(parents=True)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in reversed(range(N_TRAIN)):
            _jpeg(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", _dim(COLOURS[wnid], i))
    _jpeg(root / "train" / "n01" / "images" / "n01_2.JPEG", 128, mode="L")
    lines = []
    for j, wnid in enumerate(WNIDS * N_VAL):
        _jpeg(root / "val" / "images" / f"val_{j}.JPEG", COLOURS[wnid])
        lines.append(f"val_{j}.JPEG\t{wnid}\t0\t0\t7\t7\n")
    (root / "val" / "val_annotations.txt").write_text("".join(lines))
    return root


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def load(root: Path, cache: Path, **kwargs) -> data.ImageSet:
    return data.load_tiny_imagenet(root, cache_dir=cache, progress=False, **kwargs)


# --------------------------------------------------------------------------- Tiny ImageNet


def test_train_split_shapes_labels_and_rgb(root: Path, cache: Path) -> None:
    s = load(root, cache, classes=3)
    assert s.images.shape == (9, 8, 8, 3) and s.images.dtype == np.uint8
    assert s.labels.dtype == np.int64 and s.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert s.classes == ["n01", "n02", "n03"] and s.n_classes == 3 and len(s) == 9
    assert s.name == "tiny-imagenet/train"
    mean = s.images.mean(axis=(1, 2)).astype(int)
    for i, label in enumerate(s.labels.tolist()):
        if i == 2:  # the grayscale JPEG: three equal channels
            assert (s.images[2] == s.images[2, ..., :1]).all()
            assert abs(mean[2, 0] - 128) <= 2
        else:
            expected = np.array(_dim(COLOURS[s.classes[label]], i % N_TRAIN))
            assert np.abs(mean[i] - expected).max() <= 4, (i, mean[i], expected)


def test_class_count_takes_first_sorted_wnids(root: Path, cache: Path) -> None:
    s = load(root, cache, classes=2)
    assert s.classes == ["n01", "n02"] and len(s) == 6
    assert load(root, cache, classes="2").classes == ["n01", "n02"]


def test_dot_files_are_skipped(root: Path, cache: Path) -> None:
    (_images(root, "n01") / "._n01_0.JPEG").write_bytes(b"macOS metadata")
    assert len(load(root, cache, classes=1)) == 3


def test_explicit_wnids_keep_given_order(root: Path, cache: Path) -> None:
    s = load(root, cache, classes=["n03", "n01"])
    assert s.classes == ["n03", "n01"] and s.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert s.images[0, ..., 2].mean() > 50 and s.images[0, ..., :2].mean() < 10  # n03 is blue


def test_val_split(root: Path, cache: Path) -> None:
    s = load(root, cache, classes=["n02", "n03"], split="val")
    assert s.name == "tiny-imagenet/val" and s.images.shape == (4, 8, 8, 3)
    assert s.labels.tolist() == [0, 0, 1, 1]
    assert s.images[:2, ..., 1].min() > 190 and s.images[2:, ..., 2].min() > 190


def test_cmyk_jpeg_becomes_rgb(root: Path, cache: Path) -> None:
    _jpeg(root / "train" / "n02" / "images" / "n02_0.JPEG", (0, 0, 0, 0), mode="CMYK")
    s = load(root, cache, classes=3)
    assert s.images.shape == (9, 8, 8, 3) and s.images[3].min() > 240  # no ink: white


def test_cache_is_hit_and_lives_outside_the_data_root(
    root: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load(root, cache, classes=3)
    (cache_file,) = cache.glob("*.npz")
    assert not cache_file.resolve().is_relative_to(root.resolve())

    def no_decoding(path: Path) -> np.ndarray:
        raise AssertionError(f"decoded {path} despite the cache")

    monkeypatch.setattr(data, "_decode", no_decoding)
    second = load(root, cache, classes=3)
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.labels, second.labels)
    assert second.classes == first.classes
    monkeypatch.undo()

    # A replaced image changes the key, so the stale cache is not used.
    _jpeg(root / "train" / "n01" / "images" / "n01_0.JPEG", (0, 0, 0))
    third = load(root, cache, classes=3)
    assert third.images[0].max() < 10 and len(list(cache.glob("*.npz"))) == 2


def test_default_cache_dir_from_env(root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DEEPSTDP_CACHE", str(tmp_path / "env-cache"))
    data.load_tiny_imagenet(root, classes=1, progress=False)
    assert len(list((tmp_path / "env-cache").glob("*.npz"))) == 1


def test_cache_inside_data_root_is_refused(root: Path) -> None:
    with pytest.raises(DeepSTDPError, match="inside the data folder"):
        load(root, root / "cache", classes=3)


def test_resolve_data_root(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert data.resolve_data_root(root) == root.resolve()
    assert data.resolve_data_root(tmp_path) == root.resolve()  # the folder holding it
    monkeypatch.setenv("DEEPSTDP_DATA", str(tmp_path))
    assert data.resolve_data_root(None) == root.resolve()
    monkeypatch.delenv("DEEPSTDP_DATA")
    with pytest.raises(DeepSTDPError, match="DEEPSTDP_DATA"):
        data.resolve_data_root(None)
    with pytest.raises(DeepSTDPError, match="is not a folder"):
        data.resolve_data_root(root / "wnids.txt")


def _truncate(path: Path) -> None:
    """Drop the last bytes, as an interrupted copy would."""
    path.write_bytes(path.read_bytes()[:-10])


def _images(root: Path, wnid: str) -> Path:
    return root / "train" / wnid / "images"


BREAKAGES = {
    "no wnids.txt": (lambda r: (r / "wnids.txt").unlink(), {}),
    "missing .*val_annotations.txt": (
        lambda r: (r / "val" / "val_annotations.txt").unlink(),
        {"split": "val"},
    ),
    "val_1.JPEG": (lambda r: (r / "val" / "images" / "val_1.JPEG").unlink(), {"split": "val"}),
    "unknown wnid.*n09": (lambda r: None, {"classes": ["n01", "n09"]}),
    "4 classes requested .* only 3": (lambda r: None, {"classes": 4}),
    "unknown split": (lambda r: None, {"split": "test"}),
    "n02_1.JPEG": (lambda r: _truncate(_images(r, "n02") / "n02_1.JPEG"), {}),
    "n03_0.JPEG": (lambda r: (_images(r, "n03") / "n03_0.JPEG").write_bytes(b"junk"), {}),
    "n02 has no train": (lambda r: [p.unlink() for p in _images(r, "n02").iterdir()], {}),
    "differ in size: .*n03_1.JPEG is 9x8, .*8x8": (
        lambda r: Image.new("RGB", (9, 8)).save(_images(r, "n03") / "n03_1.JPEG"),
        {},
    ),
}


@pytest.mark.parametrize("message", BREAKAGES)
def test_bad_input_raises_a_clear_error(root: Path, cache: Path, message: str) -> None:
    breakage, kwargs = BREAKAGES[message]
    breakage(root)
    with pytest.raises(DeepSTDPError, match=message):
        load(root, cache, **{"classes": 3, **kwargs})


def test_missing_root(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(DeepSTDPError, match="missing does not exist"):
        load(tmp_path / "missing", cache)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, 10),
        ("10", 10),
        (3, 3),
        (" 7 ", 7),
        ("n01,n02", ["n01", "n02"]),
        ("n01", ["n01"]),
        (["n02"], ["n02"]),
    ],
)
def test_parse_classes(spec, expected) -> None:
    assert data.parse_classes(spec) == expected


@pytest.mark.parametrize(
    "spec", ["0", 0, "-3", -1, "", " ", "n01,,n02", "n01,n01", [], ["n01", "n01"], True, 2.5]
)
def test_parse_classes_rejects(spec) -> None:
    with pytest.raises(DeepSTDPError):
        data.parse_classes(spec)


@pytest.mark.skipif(not (SHARED / "tiny-imagenet-200").is_dir(), reason="no shared subset")
def test_shared_subset(tmp_path: Path) -> None:
    train = data.load_tiny_imagenet(SHARED, split="train", cache_dir=tmp_path, progress=False)
    val = data.load_tiny_imagenet(SHARED, split="val", cache_dir=tmp_path, progress=False)
    assert train.images.shape == (5000, 64, 64, 3) and val.images.shape == (500, 64, 64, 3)
    assert train.n_classes == val.n_classes == 10 and train.classes == val.classes
    assert np.bincount(train.labels).tolist() == [500] * 10
    assert np.bincount(val.labels).tolist() == [50] * 10


# --------------------------------------------------------------------------- digits, dispatch


def test_digits_splits() -> None:
    train, val = data.load_digits_set("train"), data.load_digits_set("val")
    assert train.images.shape == (1437, 8, 8, 1) and val.images.shape == (360, 8, 8, 1)
    assert train.images.dtype == np.uint8 and train.images.max() == 255
    assert train.classes == [str(d) for d in range(10)] and train.name == "digits/train"
    assert np.bincount(val.labels).min() >= 35  # stratified: ~36 of each digit
    again = data.load_digits_set("val")
    np.testing.assert_array_equal(val.images, again.images)
    np.testing.assert_array_equal(val.labels, again.labels)


def test_load_dataset(root: Path, cache: Path) -> None:
    assert len(data.load_dataset("digits", "val")) == 360
    s = data.load_dataset("tiny-imagenet", "train", root, "n02", cache, progress=False)
    assert s.classes == ["n02"] and len(s) == 3
    with pytest.raises(DeepSTDPError, match="unknown dataset"):
        data.load_dataset("cifar", "train")
    with pytest.raises(DeepSTDPError, match="digits"):
        data.load_dataset("digits", "train", classes="3")


# --------------------------------------------------------------------------- download


def test_download_without_network_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DeepSTDPError, match="cannot download .*: Name or service not known"):
        data.download_tiny_imagenet(tmp_path / "dl", progress=False)
    assert list((tmp_path / "dl").iterdir()) == []  # no partial files


def _fake_zip(tmp_path: Path) -> tuple[Path, bytes]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("tiny-imagenet-200/wnids.txt", "n01\n")
        archive.writestr("tiny-imagenet-200/words.txt", "n01\tthing\n")
    (path := tmp_path / "fake.zip").write_bytes(buffer.getvalue())
    return path, buffer.getvalue()


def test_download_verifies_and_unzips(tmp_path: Path) -> None:
    path, payload = _fake_zip(tmp_path)
    dest = tmp_path / "dl"
    md5 = hashlib.md5(payload).hexdigest()
    got = data.download_tiny_imagenet(dest, path.as_uri(), False, md5=md5, size=len(payload))
    assert got == dest / "tiny-imagenet-200" and (got / "wnids.txt").read_text() == "n01\n"
    assert sorted(p.name for p in dest.iterdir()) == ["tiny-imagenet-200"]
    # Already present: skipped, even with a URL that cannot work.
    assert data.download_tiny_imagenet(dest, "http://invalid./x.zip", False) == got


@pytest.mark.parametrize(("md5", "size", "message"), [("0" * 32, None, "MD5"), (None, 1, "bytes")])
def test_download_rejects_a_bad_file(tmp_path: Path, md5, size, message) -> None:
    path, payload = _fake_zip(tmp_path)
    md5 = md5 or hashlib.md5(payload).hexdigest()
    dest = tmp_path / "dl"
    with pytest.raises(DeepSTDPError, match=message):
        data.download_tiny_imagenet(dest, path.as_uri(), False, md5=md5, size=size or len(payload))
    assert list(dest.iterdir()) == []


# --------------------------------------------------------------------------- tensors


def test_to_float_tensor_and_normalize() -> None:
    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    x = data.to_float_tensor(images)
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32
    assert torch.allclose(x[1, 2], torch.from_numpy(images[1, ..., 2]).float() / 255)
    small = data.to_float_tensor(images, size=8)
    assert small.shape == (4, 3, 8, 8) and small.min() >= 0 and small.max() <= 1
    mean, std = data.channel_stats(images, chunk=3)
    assert torch.allclose(mean, x.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(std, x.std(dim=(0, 2, 3), unbiased=False), atol=1e-5)
    z = data.normalize(x, mean, std)
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    with pytest.raises(DeepSTDPError):
        data.to_float_tensor(images.astype(np.float32))


@pytest.mark.parametrize("size", [None, 8, 12])
def test_image_tensor_indexes_like_the_converted_set(size) -> None:
    """Batches converted on access are bit for bit the rows of the whole set converted at once,
    for every index the loop and the conversion tools use."""
    images = np.random.default_rng(1).integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    mean, std = data.channel_stats(images)
    full = data.normalize(data.to_float_tensor(images, size), mean, std)
    lazy = data.ImageTensor(images, mean, std, size)
    assert lazy.shape == full.shape and len(lazy) == 40 and lazy.dtype == full.dtype
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    for index in (slice(None), slice(5, 17), slice(None, None, 7), perm[:13], perm.numpy(), 3):
        got = lazy[index]
        assert got.dtype == torch.float32 and torch.equal(got, full[index])
    assert torch.equal(lazy[::7][:2], full[::7][:2])


def test_image_tensor_holds_the_uint8_images_only() -> None:
    images = np.zeros((5, 8, 8, 1), dtype=np.uint8)
    lazy = data.ImageTensor(images, torch.zeros(1), torch.ones(1), 4)
    assert lazy.images is images and lazy.shape == (5, 1, 4, 4)
    with pytest.raises(DeepSTDPError, match="uint8"):
        data.ImageTensor(images.astype(np.float32), torch.zeros(1), torch.ones(1))


def test_features_of_an_image_tensor_equal_those_of_the_converted_set() -> None:
    from deepstdp.network.features import extract_features
    from deepstdp.network.models import ConvNet

    images = np.random.default_rng(2).integers(0, 256, (37, 16, 16, 3), dtype=np.uint8)
    mean, std = data.channel_stats(images)
    torch.manual_seed(0)
    model = ConvNet(3, 5, widths="8,M,16,M", feat_dim=24, sobel=False)
    lazy = extract_features(model, data.ImageTensor(images, mean, std, 8), batch=16)
    full = data.normalize(data.to_float_tensor(images, 8), mean, std)
    assert lazy.shape == (37, 24) and lazy.dtype == np.float32
    np.testing.assert_array_equal(lazy, extract_features(model, full, batch=16))
    # One batch of all 37 may take other kernels: equal up to rounding, rows in place.
    want = model.eval().features(full).detach().numpy()
    np.testing.assert_allclose(lazy, want, rtol=1e-4, atol=1e-5)
