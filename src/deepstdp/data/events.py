"""Event-camera (neuromorphic) sets through tonic, binned into the uint8 images the network takes.

N-MNIST (Orchard et al. 2015): MNIST digits recorded by an ATIS sensor moved in three saccades,
34x34 pixels, two polarities, 10 classes. Official layout: `Train/<digit>/*.bin` and
`Test/<digit>/*.bin`; each .bin is a sequence of 5-byte events: byte 0 x, byte 1 y, byte 2
bit 7 the polarity (1 = ON) and bits 6..0 the top 7 bits of a 23-bit timestamp in
microseconds, bytes 3-4 its low 16 bits (an event with y = 240 marks a timestamp overflow and
is dropped). tonic reads the files (`tonic.io.read_mnist_file`) and bins the events
(`tonic.transforms.ToFrame`); tonic is the optional extra `deepstdp[events]`, imported only
when files are decoded.

Binning: the whole recording is one frame of per-pixel event counts per polarity
(`ToFrame(n_event_bins=1)`); the three channels are the ON count, the OFF count and their sum,
each clipped at a fixed cap (`COUNT_CAP`, `2 * COUNT_CAP` for the sum) and scaled to 0..255.
A fixed cap rather than each image's maximum keeps intensities comparable across images (a
busy recording is brighter, as its counts are), and one frame over the whole recording makes
the digit's shape, which is what the clustering should find, not the saccade's timing.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from deepstdp.data.cache import (
    ImageSet,
    _cache_key,
    _check_split,
    _default_cache_dir,
    _read_folder_cache,
    _write_folder_npz,
)
from deepstdp.runtime.util import DeepSTDPError, SettingError, atomic_write

SENSOR_SIZE = (34, 34, 2)  # tonic's order: width, height, polarities
NMNIST_CLASSES = [str(d) for d in range(10)]
# Events per pixel (per polarity) that make full intensity; N-MNIST's busiest stroke pixels
# see about this many of one polarity over the three saccades.
COUNT_CAP = 8
EVENT_BYTES = 5
_FOLDERS = {"train": "Train", "val": "Test"}
_ALSO = ("NMNIST", "N-MNIST", "nmnist")
INSTALL = "pip install 'deepstdp[events]'"


def _tonic():
    """tonic's reader and binning transform, or one line saying how to install it."""
    try:
        from tonic.io import read_mnist_file
        from tonic.transforms import ToFrame
    except ImportError as e:
        raise DeepSTDPError(f"reading event-camera sets needs tonic ({e}): {INSTALL}") from None
    return read_mnist_file, ToFrame


def resolve_nmnist(data_root: str | os.PathLike | None) -> Path:
    """The folder holding N-MNIST's `Train` and `Test` folders: `data_root` itself or one of
    `NMNIST`, `N-MNIST`, `nmnist` in it; None falls back to $DEEPSTDP_DATA."""
    if data_root is None:
        data_root = os.environ.get("DEEPSTDP_DATA")
        if not data_root:
            raise SettingError("data_root", "is not given and DEEPSTDP_DATA is not set: name "
                               "the N-MNIST folder (holding Train and Test)")
    root = Path(data_root).expanduser()
    if not root.is_dir():
        problem = "is not a folder" if root.exists() else "does not exist"
        raise DeepSTDPError(f"data folder {root} {problem}")
    for candidate in (root, *(root / d for d in _ALSO)):
        if (candidate / "Train").is_dir() or (candidate / "Test").is_dir():
            return candidate.resolve()
    raise DeepSTDPError(f"no Train or Test folder in {root}: expected N-MNIST's folder "
                        "(Train/<digit>/*.bin, Test/<digit>/*.bin) or a folder holding it")


def _list_bins(folder: Path) -> tuple[list[Path], np.ndarray]:
    if not folder.is_dir():
        raise DeepSTDPError(f"no folder {folder}: N-MNIST's splits are Train and Test")
    paths: list[Path] = []
    labels: list[int] = []
    for c, digit in enumerate(NMNIST_CLASSES):
        files = sorted(p for p in (folder / digit).glob("*.bin")
                       if p.is_file() and not p.name.startswith("."))
        paths += files
        labels += [c] * len(files)
    if not paths:
        raise DeepSTDPError(f"no .bin files in {folder}/<digit>/")
    return paths, np.array(labels, dtype=np.int64)


def events_to_image(counts: np.ndarray) -> np.ndarray:
    """Per-polarity counts (2, H, W), polarity 0 = OFF, 1 = ON, -> uint8 (H, W, 3): ON, OFF and
    their sum, clipped at the fixed caps and scaled to 0..255 (rounded)."""
    counts = counts.astype(np.float64)
    on, off = counts[1], counts[0]
    channels = [np.minimum(on, COUNT_CAP) / COUNT_CAP, np.minimum(off, COUNT_CAP) / COUNT_CAP,
                np.minimum(on + off, 2 * COUNT_CAP) / (2 * COUNT_CAP)]
    return np.rint(np.stack(channels, axis=-1) * 255).astype(np.uint8)


def read_nmnist_file(path: Path, tonic=None) -> np.ndarray:
    """One N-MNIST recording as uint8 (34, 34, 3) (`events_to_image`), read and binned by
    tonic; a file that is not whole 5-byte events or has events off the sensor raises, naming
    it."""
    read_mnist_file, to_frame = tonic or _tonic()
    try:
        size = path.stat().st_size
    except OSError as e:
        raise DeepSTDPError(f"cannot read {path}: {e.strerror or e}") from None
    if size % EVENT_BYTES:
        raise DeepSTDPError(f"{path} is not N-MNIST events: {size} bytes is not a whole number "
                            f"of {EVENT_BYTES}-byte events (truncated?)")
    dtype = np.dtype([("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])
    try:
        events = read_mnist_file(str(path), dtype=dtype)
    except OSError as e:
        raise DeepSTDPError(f"cannot read {path}: {e.strerror or e}") from None
    w, h, _ = SENSOR_SIZE
    if len(events) and (events["x"].max() >= w or events["y"].max() >= h):
        raise DeepSTDPError(f"{path} is not N-MNIST events: an event lies off the {w}x{h} "
                            "sensor")
    if len(events) == 0:
        counts = np.zeros(SENSOR_SIZE[::-1], dtype=np.int64)
    else:
        counts = to_frame(sensor_size=SENSOR_SIZE, n_event_bins=1)(events)[0]
    return events_to_image(counts)


def load_nmnist(
    data_root: str | os.PathLike | None,
    split: str = "train",
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> ImageSet:
    """A split of N-MNIST (train = Train, val = the official Test folder) as uint8 (N, 34, 34, 3)
    images, decoded once and cached like an image folder (keyed by the files' paths under the
    folder, sizes and mtimes). tonic is needed only to decode, not to read the cache."""
    _check_split(split)
    root = resolve_nmnist(data_root)
    paths, labels = _list_bins(root / _FOLDERS[split])
    cache_dir = Path(cache_dir if cache_dir is not None else _default_cache_dir()).expanduser()
    key = _cache_key(root, NMNIST_CLASSES, f"nmnist/{split}/cap={COUNT_CAP}", paths)
    cache_file = cache_dir / f"nmnist-{split}-{key}.npz"
    cached = _read_folder_cache(cache_file, NMNIST_CLASSES)
    if cached is not None and len(cached[0]) == len(cached[1]) == len(paths):
        images, labels = cached[0], cached[1]
    else:
        tonic = _tonic()
        images = np.empty((len(paths), SENSOR_SIZE[1], SENSOR_SIZE[0], 3), dtype=np.uint8)
        for i, path in enumerate(tqdm(paths, desc=f"decoding nmnist/{split}", unit="rec",
                                      disable=not progress)):
            images[i] = read_nmnist_file(path, tonic)
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(cache_file, lambda p: _write_folder_npz(p, images, labels,
                                                                NMNIST_CLASSES, 0))
        except OSError as e:
            warnings.warn(f"cannot write cache {cache_file}: {e}", stacklevel=2)
    return ImageSet(images=images, labels=labels, classes=list(NMNIST_CLASSES),
                    name=f"nmnist/{split}")
