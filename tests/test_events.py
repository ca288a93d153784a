"""N-MNIST through tonic (data/events.py), on synthetic .bin files in the official 5-byte format."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

from deepstdp.data import events
from deepstdp.data.datasets import load_dataset
from deepstdp.runtime.util import DeepSTDPError, SettingError

N_TRAIN, N_TEST = 6, 2


def encode(evs: list[tuple[int, int, int, int]]) -> bytes:
    """(x, y, t in us, p) events as N-MNIST's 5-byte records."""
    out = bytearray()
    for x, y, t, p in evs:
        out += bytes([x, y, (p << 7) | ((t >> 16) & 127), (t >> 8) & 255, t & 255])
    return bytes(out)


def digit_events(digit: int, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """Events in a 6x6 block whose place on a 2x5 grid is the digit, plus a little noise."""
    r0, c0 = 4 + 16 * (digit // 5), 2 + 6 * (digit % 5)
    evs = []
    for t in range(0, 300_000, 1_000):
        x, y = c0 + int(rng.integers(6)), r0 + int(rng.integers(6))
        evs.append((x, y, t, int(rng.integers(2))))
        if t % 10_000 == 0:
            evs.append((int(rng.integers(34)), int(rng.integers(34)), t, 1))
    return evs


@pytest.fixture()
def nmnist_dir(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "NMNIST"
    for split, n in (("Train", N_TRAIN), ("Test", N_TEST)):
        for d in range(10):
            folder = root / split / str(d)
            folder.mkdir(parents=True)
            for i in range(n):
                (folder / f"{i:05d}.bin").write_bytes(encode(digit_events(d, rng)))
    return tmp_path


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("DEEPSTDP_CACHE", str(folder))
    return folder


def test_encoding_matches_tonic_reader(tmp_path):
    tonic_io = pytest.importorskip("tonic.io")
    evs = [(3, 4, 5, 1), (33, 0, 2**23 - 1, 0), (0, 33, 70_000, 1)]
    path = tmp_path / "a.bin"
    path.write_bytes(encode(evs))
    got = tonic_io.read_mnist_file(str(path), dtype=np.dtype(
        [("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")]))
    assert [tuple(int(v) for v in e) for e in got[["x", "y", "t", "p"]]] == evs


def test_loader_shapes_labels_splits(nmnist_dir, cache):
    pytest.importorskip("tonic")
    train = load_dataset("nmnist", "train", nmnist_dir, progress=False)
    val = load_dataset("nmnist", "val", nmnist_dir / "NMNIST", progress=False)
    assert train.images.shape == (10 * N_TRAIN, 34, 34, 3) and train.images.dtype == np.uint8
    assert val.images.shape == (10 * N_TEST, 34, 34, 3)
    assert train.labels.dtype == np.int64
    assert train.labels.tolist() == [d for d in range(10) for _ in range(N_TRAIN)]
    assert train.classes == [str(d) for d in range(10)] and train.name == "nmnist/train"
    assert val.name == "nmnist/val" and val.n_classes == 10
    # Each class is brightest in its own block.
    for d in range(10):
        r0, c0 = 4 + 16 * (d // 5), 2 + 6 * (d % 5)
        mean = train.images[train.labels == d, :, :, 2].astype(float).mean(0)
        assert mean[r0:r0 + 6, c0:c0 + 6].mean() > 5 * mean.mean() / 2
    # The second load reads the cache: no tonic needed.
    assert len(list(cache.glob("nmnist-train-*.npz"))) == 1
    again = load_dataset("nmnist", "train", nmnist_dir, progress=False)
    np.testing.assert_array_equal(again.images, train.images)
    with pytest.raises(SettingError, match="classes"):
        load_dataset("nmnist", "train", nmnist_dir, classes="5", progress=False)


def test_hand_computed_frame(tmp_path):
    pytest.importorskip("tonic")
    evs = [(1, 2, 10, 1)] * 3 + [(1, 2, 20, 0)] + [(5, 7, 30 + i, 0) for i in range(20)]
    # A timestamp-overflow marker (y = 240) is no event.
    evs.append((0, 240, 100, 0))
    path = tmp_path / "one.bin"
    path.write_bytes(encode(evs))
    image = events.read_nmnist_file(path)
    expected = np.zeros((34, 34, 3), dtype=np.uint8)
    expected[2, 1] = [96, 32, 64]  # ON 3/8, OFF 1/8, sum 4/16 of 255, rounded
    expected[7, 5] = [0, 255, 255]  # 20 OFF events clip at the caps
    np.testing.assert_array_equal(image, expected)


def test_truncated_file_names_it_and_caches_nothing(nmnist_dir, cache):
    pytest.importorskip("tonic")
    bad = nmnist_dir / "NMNIST" / "Train" / "3" / "00001.bin"
    bad.write_bytes(bad.read_bytes()[:-2])
    with pytest.raises(DeepSTDPError) as info:
        load_dataset("nmnist", "train", nmnist_dir, progress=False)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    assert not cache.exists() or not list(cache.iterdir())


def test_tonic_missing_says_how_to_install(nmnist_dir, cache, monkeypatch):
    real_import = builtins.__import__

    def no_tonic(name, *args, **kwargs):
        if name == "tonic" or name.startswith("tonic."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tonic)
    with pytest.raises(DeepSTDPError, match=r"pip install 'deepstdp\[events\]'"):
        load_dataset("nmnist", "train", nmnist_dir, progress=False)


def test_missing_folder(tmp_path):
    with pytest.raises(DeepSTDPError, match="no Train or Test folder"):
        load_dataset("nmnist", "train", tmp_path, progress=False)


def test_cli_trains_on_nmnist(nmnist_dir, cache, tmp_path):
    pytest.importorskip("tonic")
    from deepstdp.cli import main

    out = tmp_path / "run"
    assert main(["train", "--dataset", "nmnist", "--data-root", str(nmnist_dir), "--epochs", "1",
                 "--widths", "16,M", "--feat-dim", "32", "--pca-dim", "8", "--image-size", "16",
                 "--threads", "1", "--precision", "fp32", "--k-train", "20", "--batch-size",
                 "16", "--out", str(out), "--quiet"]) == 0
    assert any(out.iterdir())
