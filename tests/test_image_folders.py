"""Any folder of images (deepstdp.data.datasets.load_image_folder), on folders written here."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepstdp.data import datasets as data
from deepstdp.runtime.util import DeepSTDPError, SettingError

COLOURS = {"cat": (200, 0, 0), "dog": (0, 200, 0), "emu": (0, 0, 200)}


def _save(path: Path, colour=(10, 20, 30), size=(8, 8), mode="RGB", fmt=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path, format=fmt)
    return path


def _labelled(root: Path, per_class: int = 5) -> Path:
    for name, colour in COLOURS.items():
        for i in range(per_class):
            _save(root / name / f"{i}.png", colour)
    return root


def load(root: Path, split: str, tmp_path: Path, **kw) -> data.ImageSet:
    return data.load_image_folder(root, split, cache_dir=tmp_path / "cache", progress=False, **kw)


def test_labelled_layout_held_out_split_is_seeded_and_stratified(tmp_path: Path) -> None:
    root = _labelled(tmp_path / "imgs", per_class=10)
    (root / "README.txt").write_text("beside the class folders: ignored")
    train = load(root, "train", tmp_path, val_fraction=0.2)
    val = load(root, "val", tmp_path, val_fraction=0.2)
    assert train.classes == ["cat", "dog", "emu"] and train.name == "folder/train"
    assert train.images.shape == (24, 8, 8, 3) and train.images.dtype == np.uint8
    assert np.bincount(val.labels).tolist() == [2, 2, 2]  # stratified
    assert np.bincount(train.labels).tolist() == [8, 8, 8]
    for s in (train, val):  # each image's pixels are its class's colour
        colours = np.array([COLOURS[c] for c in s.classes])[s.labels]
        assert (s.images[:, 0, 0] == colours).all()
    again = data.load_image_folder(root, "val", val_fraction=0.2, cache_dir=tmp_path / "c2",
                                   progress=False)
    assert np.array_equal(again.labels, val.labels) and np.array_equal(again.images, val.images)
    mask = data.held_out(train.labels.repeat(3), 0.5)
    assert mask.sum() == 36 and data.held_out(train.labels.repeat(3), 0.5).tolist() == \
        mask.tolist()
    via = data.load_dataset("folder", "train", data_root=root, val_fraction=0.2,
                            cache_dir=tmp_path / "cache", progress=False)
    assert np.array_equal(via.images, train.images)
    with pytest.raises(SettingError, match="always has its 3 classes"):
        data.load_dataset("folder", "train", data_root=root, classes="5", progress=False)
    with pytest.raises(SettingError, match="val_fraction"):
        load(root, "train", tmp_path, val_fraction=1.0)


def test_flat_folder_has_no_labels(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    for i in range(10):
        _save(root / f"img{i}.jpg", (i * 20, 0, 0), fmt="JPEG")
    _save(root / ".hidden.jpg")  # macOS metadata: left out
    train, val = (load(root, s, tmp_path) for s in ("train", "val"))
    assert len(train) == 9 and len(val) == 1 and train.classes == [] and train.n_classes == 0
    assert (train.labels == -1).all() and not train.labelled and not val.labelled_mask.any()


def test_train_val_folders(tmp_path: Path) -> None:
    root = tmp_path / "tv"
    _labelled(root / "train", per_class=2)
    _save(root / "val" / "emu" / "x.png", COLOURS["emu"])
    _save(root / "val" / "cat" / "deep" / "y.png", COLOURS["cat"])  # any depth
    train = load(root, "train", tmp_path, val_fraction=0.5)  # no effect here
    val = load(root, "val", tmp_path)
    assert len(train) == 6 and train.classes == val.classes == ["cat", "dog", "emu"]
    assert val.labels.tolist() == [0, 2]  # val numbered by the train split's classes
    _save(root / "val" / "yak" / "z.png")
    with pytest.raises(DeepSTDPError, match="class folder.*yak"):
        load(root, "val", tmp_path)


@pytest.mark.parametrize(("mode", "colour", "fmt", "suffix"), [
    ("RGB", (10, 200, 30), "JPEG", ".jpg"), ("RGB", (10, 200, 30), "PNG", ".png"),
    ("RGB", (10, 200, 30), "BMP", ".bmp"), ("RGB", (10, 200, 30), "WEBP", ".webp"),
    ("L", 77, "PNG", ".png"), ("P", 3, "PNG", ".png"), ("RGBA", (10, 200, 30, 128), "PNG", ".png"),
    ("CMYK", (0, 255, 0, 0), "JPEG", ".jpg"), ("I;16", 65535, "PNG", ".png"),
])
def test_every_format_and_mode_becomes_rgb_uint8(tmp_path, mode, colour, fmt, suffix) -> None:
    root = tmp_path / "m"
    for i in range(2):
        _save(root / f"{i}{suffix}", colour, mode=mode, fmt=fmt)
    s = load(root, "train", tmp_path)
    assert s.images.shape == (1, 8, 8, 3) and s.images.dtype == np.uint8
    pixel = s.images[0, 4, 4].astype(int)
    want = {"L": (77,) * 3, "I;16": (255,) * 3, "CMYK": (255, 0, 255)}.get(mode)
    if mode == "P":
        want = Image.new("P", (1, 1), 3).convert("RGB").getpixel((0, 0))
    want = want or colour[:3]
    tolerance = 6 if fmt in ("JPEG", "WEBP") else 0
    assert np.abs(pixel - np.array(want)).max() <= tolerance, (pixel, want)


def test_mixed_sizes_are_centre_cropped_to_a_square(tmp_path: Path) -> None:
    root = tmp_path / "sizes"
    small = _save(root / "a" / "0.png", (255, 0, 0), size=(8, 8))
    wide = Image.new("RGB", (300, 100), (0, 0, 255))
    wide.paste((0, 255, 0), (100, 0, 200, 100))  # the centre square is green
    wide.save(root / "a" / "1.jpg", quality=95)
    _save(root / "b" / "2.png", (9, 9, 9), size=(20, 30))
    _save(root / "b" / "3.png", (9, 9, 9), size=(20, 30))
    both = [load(root, split, tmp_path, val_fraction=0.25) for split in ("train", "val")]
    for split in both:  # one of each class in each split, all squared to the side
        assert split.images.shape == (2, data.FOLDER_SIDE, data.FOLDER_SIDE, 3)
    a = np.concatenate([split.images[split.labels == 0] for split in both])
    centres = sorted(tuple(int(v) for v in image[32, 32]) for image in a)
    assert centres[0] == (0, 255, 0) or abs(centres[0][1] - 255) <= 8  # the wide one's centre
    assert centres[1] == (255, 0, 0)  # the small red one, upsized
    assert small.exists()
    only_wide = tmp_path / "wide"
    for i in range(2):
        wide.save(_save(only_wide / f"{i}.jpg").with_suffix(".jpg"), quality=95)
    w = load(only_wide, "train", tmp_path)  # one size, over the side: squared anyway
    assert w.images.shape == (1, 64, 64, 3)
    assert np.abs(w.images[0, 32, 32].astype(int) - (0, 255, 0)).max() <= 8


def test_a_file_that_is_not_an_image(tmp_path: Path) -> None:
    root = _labelled(tmp_path / "bad", per_class=4)
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 20)
    with pytest.raises(DeepSTDPError) as e:
        load(root, "train", tmp_path)
    assert "broken.png" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "cache").exists()  # nothing written
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        both = [load(root, s, tmp_path, skip_bad=True) for s in ("train", "val")]
    assert sum(len(s) for s in both) == 12
    counts = [str(w.message) for w in caught if "skipped" in str(w.message)]
    assert len(counts) >= 1 and all(" 1 file" in c or " 2 file" in c for c in counts)
    n_bad = sum(int(c.split()[1]) for c in counts)
    assert n_bad == 2
    with pytest.warns(UserWarning, match="skipped"):  # read from the cache: still said
        load(root, both[0].name.split("/")[1], tmp_path, skip_bad=True)


def test_the_cache_decodes_again_after_a_file_is_edited(tmp_path: Path) -> None:
    root = _labelled(tmp_path / "edit", per_class=3)
    first = load(root, "train", tmp_path)
    cached = sorted((tmp_path / "cache").glob("folder-train-*.npz"))
    assert len(cached) == 1
    assert np.array_equal(load(root, "train", tmp_path).images, first.images)  # a cache hit
    assert sorted((tmp_path / "cache").glob("folder-train-*.npz")) == cached
    target = sorted(root.glob("*/*.png"))[0]
    train_paths = [p for p in sorted(root.glob("*/*.png"))]
    assert target in train_paths
    for path in train_paths:  # edit every file: whichever are in train change
        _save(path, (1, 2, 3), size=(8, 8))
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = load(root, "train", tmp_path)
    assert (again.images[:, 0, 0] == (1, 2, 3)).all()
    assert len(sorted((tmp_path / "cache").glob("folder-train-*.npz"))) == 2


def test_missing_or_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(DeepSTDPError, match="does not exist"):
        load(tmp_path / "nope", "train", tmp_path)
    with pytest.raises(SettingError, match="data_root"):
        data.load_image_folder(None)
    (tmp_path / "e" / "cls").mkdir(parents=True)
    with pytest.raises(DeepSTDPError, match="class folder .*cls holds no files"):
        load(tmp_path / "e", "train", tmp_path)
