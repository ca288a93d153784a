"""The standard image sets read from their official files: CIFAR-10, CIFAR-100 (its 100 classes
or its 20 superclasses), STL-10 (with or without its 100,000 unlabelled images), MNIST and
Fashion-MNIST; and where to download those files (`SOURCES`).

These files already hold decoded pixels, so a reader only reshapes them (no decode cache: a copy
would cost the disk twice and read no faster). Every reader returns uint8 (N, H, W, C) images,
int64 labels (-1 for an unlabelled image) and the class names, checks each file's size against
what its header or shape says, and names the file in the one line of any error.
"""

from __future__ import annotations

import gzip
import os
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deepstdp.runtime.util import DeepSTDPError, SettingError

Arrays = tuple[np.ndarray, np.ndarray, list[str]]
"""(images uint8 (N, H, W, C), labels int64 (N,) with -1 for unlabelled, class names)."""


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Remote:
    """One file to download: its URL, published MD5 and, where known, its size in bytes."""

    url: str
    md5: str
    size: int | None = None


@dataclass(frozen=True)
class Source:
    """Where a set's official files come from: `files` are fetched and, when an archive (.zip,
    .tar.gz), unpacked; the set then lies in `dest/folder`, complete when `marker` is there."""

    folder: str
    marker: str
    files: tuple[Remote, ...]


_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")
SOURCES: dict[str, Source] = {
    "cifar10": Source("cifar-10-batches-py", "batches.meta", (Remote(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a"),)),
    "cifar100": Source("cifar-100-python", "meta", (Remote(
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85"),)),
    "stl10": Source("stl10_binary", "class_names.txt", (Remote(
        "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
        "91f7769df0f17e558f3565bffb0c7dfb"),)),
    "mnist": Source("mnist", "t10k-labels-idx1-ubyte.gz", tuple(
        Remote(_MNIST + f + ".gz", md5) for f, md5 in zip(IDX_FILES, (
            "f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
            strict=True))),
    "fashion-mnist": Source("fashion-mnist", "t10k-labels-idx1-ubyte.gz", tuple(
        Remote(_FASHION + f + ".gz", md5) for f, md5 in zip(IDX_FILES, (
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"),
            strict=True))),
}
"""The official files of each standard set (URLs and MD5s as the sets' pages publish them)."""

VARIANTS = {"cifar100-20": "cifar100", "stl10-unlabelled": "stl10"}
"""Data sets read from another's files: CIFAR-100's 20 superclasses, STL-10 with its
unlabelled images in the train split."""
STANDARD = (*SOURCES, *VARIANTS)
"""Every standard set's name, as `load_standard` takes it."""
N_CLASSES = {"cifar10": 10, "cifar100": 100, "cifar100-20": 20, "stl10": 10,
             "stl10-unlabelled": 10, "mnist": 10, "fashion-mnist": 10}
"""Each standard set's fixed class count, known before any file is read."""
_ALSO = {"mnist": ("MNIST/raw", "MNIST"), "fashion-mnist": ("FashionMNIST/raw", "FashionMNIST")}
"""Other folders the files are found in (torchvision's layout), under the data root."""


def files_of(name: str) -> Source:
    """The download source of a set (a variant downloads its base set's files)."""
    return SOURCES[VARIANTS.get(name, name)]


def resolve_folder(data_root: str | os.PathLike | None, name: str) -> Path:
    """The folder holding `name`'s official files: `data_root` itself or the folder named by
    SOURCES in it (or torchvision's for MNIST); None falls back to $DEEPSTDP_DATA."""
    source = files_of(name)
    if data_root is None:
        data_root = os.environ.get("DEEPSTDP_DATA")
        if not data_root:
            raise SettingError("data_root", "is not given and DEEPSTDP_DATA is not set: name "
                               f"the {source.folder} folder (or the folder holding it)")
    root = Path(data_root).expanduser()
    if not root.is_dir():
        problem = "is not a folder" if root.exists() else "does not exist"
        raise DeepSTDPError(f"data folder {root} {problem}")
    for candidate in (root, root / source.folder,
                      *(root / d for d in _ALSO.get(VARIANTS.get(name, name), ()))):
        if (candidate / source.marker).is_file() or (
                source.marker.endswith(".gz") and (candidate / source.marker[:-3]).is_file()):
            return candidate.resolve()
    raise DeepSTDPError(f"no {source.marker} in {root} or {root / source.folder}: expected the "
                        f"{source.folder} folder of {name}'s official files or a folder holding it")


# --------------------------------------------------------------------------- readers


def load_standard(name: str, root: Path, split: str) -> Arrays:
    """The `split` ('train' or 'val', the official test split) of a standard set, from the
    folder `root` of its official files (`resolve_folder`)."""
    if name == "cifar10":
        return _cifar10(root, split)
    if name in ("cifar100", "cifar100-20"):
        return _cifar100(root, split, coarse=name == "cifar100-20")
    if name in ("stl10", "stl10-unlabelled"):
        return _stl10(root, split, unlabelled=name == "stl10-unlabelled" and split == "train")
    if name in ("mnist", "fashion-mnist"):
        return _mnist(root, split, name)
    raise DeepSTDPError(f"unknown standard set {name!r}: expected one of {', '.join(STANDARD)}")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings and numpy arrays only: a pickle may run any code it
    names, and the CIFAR files name nothing else."""

    _ALLOWED = {("_codecs", "encode"), ("copy_reg", "_reconstructor"),
                ("copyreg", "_reconstructor"), ("builtins", "object")}

    def find_class(self, module: str, name: str) -> Any:
        if (module.split(".")[0] == "numpy" and name in (
                "_reconstruct", "_frombuffer", "ndarray", "dtype", "scalar")) \
                or (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which no CIFAR file holds")


def _unpickle(path: Path) -> dict[bytes, Any]:
    """A CIFAR file: a pickled dict with bytes keys (written by Python 2)."""
    try:
        with path.open("rb") as f:
            d = _ArrayUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DeepSTDPError(f"missing file {path}") from None
    except (OSError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError,
            pickle.UnpicklingError) as e:
        raise DeepSTDPError(f"cannot read {path}: truncated or not a CIFAR file ({e})") from None
    if not isinstance(d, dict):
        raise DeepSTDPError(f"cannot read {path}: holds a {type(d).__name__}, not a CIFAR dict")
    return d


def _field(d: dict[bytes, Any], key: str, path: Path) -> Any:
    try:
        return d[key.encode()]
    except KeyError:
        raise DeepSTDPError(f"cannot read {path}: no {key!r} entry") from None


def _names(path: Path, key: str) -> list[str]:
    names = _field(_unpickle(path), key, path)
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _cifar_batch(path: Path, label_key: str, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch: (N, 3072) channel-major rows -> (N, 32, 32, 3), and its labels."""
    d = _unpickle(path)
    data = np.asarray(_field(d, "data", path))
    labels = np.asarray(_field(d, label_key, path), dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DeepSTDPError(f"cannot read {path}: data is {data.dtype} {data.shape}, expected "
                            "uint8 (N, 3072)")
    if labels.shape != (len(data),) or (len(labels) and not (
            labels.min() >= 0 and labels.max() < n_classes)):
        raise DeepSTDPError(f"cannot read {path}: {len(labels)} {label_key} for {len(data)} "
                            f"images, or outside 0..{n_classes - 1}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _join(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return (np.ascontiguousarray(np.concatenate([p[0] for p in parts])),
            np.concatenate([p[1] for p in parts]))


def _cifar10(root: Path, split: str) -> Arrays:
    classes = _names(root / "batches.meta", "label_names")
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = _join([_cifar_batch(root / f, "labels", len(classes)) for f in files])
    return images, labels, classes


def _cifar100(root: Path, split: str, coarse: bool) -> Arrays:
    kind = "coarse" if coarse else "fine"
    classes = _names(root / "meta", f"{kind}_label_names")
    images, labels = _cifar_batch(root / ("train" if split == "train" else "test"),
                                  f"{kind}_labels", len(classes))
    return np.ascontiguousarray(images), labels, classes


_STL_SIDE = 96
_STL_BYTES = 3 * _STL_SIDE * _STL_SIDE


def _stl_images(path: Path, chunk: int = 4096) -> np.ndarray:
    """An STL-10 X file: uint8 (N, 3, 96, 96) with each channel stored column-major, so the
    last two axes are (x, y); read through a memory map and turned to (N, y, x, 3) in chunks,
    so the 2.8 GB unlabelled file is never held twice."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DeepSTDPError(f"missing file {path}") from None
    if size % _STL_BYTES:
        raise DeepSTDPError(f"cannot read {path}: {size} bytes is not a whole number of "
                            f"{_STL_SIDE}x{_STL_SIDE} images; truncated?")
    n = size // _STL_BYTES
    out = np.empty((n, _STL_SIDE, _STL_SIDE, 3), dtype=np.uint8)
    if n:
        raw = np.memmap(path, dtype=np.uint8, mode="r", shape=(n, 3, _STL_SIDE, _STL_SIDE))
        for start in range(0, n, chunk):
            out[start:start + chunk] = raw[start:start + chunk].transpose(0, 3, 2, 1)
        del raw
    return out


def _stl_labels(path: Path, n: int, n_classes: int) -> np.ndarray:
    try:
        y = np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1
    except FileNotFoundError:
        raise DeepSTDPError(f"missing file {path}") from None
    if len(y) != n or (n and not (y.min() >= 0 and y.max() < n_classes)):
        raise DeepSTDPError(f"cannot read {path}: {len(y)} labels for {n} images, or outside "
                            f"1..{n_classes}; truncated?")
    return y


def _stl10(root: Path, split: str, unlabelled: bool) -> Arrays:
    try:
        classes = [c.strip() for c in (root / "class_names.txt").read_text().splitlines()
                   if c.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise DeepSTDPError(f"cannot read {root / 'class_names.txt'}: {e}") from None
    stem = "train" if split == "train" else "test"
    images = _stl_images(root / f"{stem}_X.bin")
    labels = _stl_labels(root / f"{stem}_y.bin", len(images), len(classes))
    if unlabelled:
        extra = _stl_images(root / "unlabeled_X.bin")
        images = np.concatenate([extra, images])
        labels = np.concatenate([np.full(len(extra), -1, dtype=np.int64), labels])
    return images, labels, classes


def _idx(root: Path, stem: str, magic: int) -> np.ndarray:
    """An idx file (big-endian magic, dimension sizes, then uint8 data), gzipped or not."""
    path = root / f"{stem}.gz"
    if not path.is_file():
        path = root / stem
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DeepSTDPError(f"missing file {root / stem}[.gz]") from None
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DeepSTDPError(f"cannot read {path}: truncated or not gzip ({e})") from None
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        raise DeepSTDPError(f"cannot read {path}: not an idx file of magic number {magic}")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    if len(raw) - header != int(np.prod(shape)):
        raise DeepSTDPError(f"cannot read {path}: {len(raw) - header} bytes of data for shape "
                            f"{shape}; truncated?")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]


def _mnist(root: Path, split: str, name: str) -> Arrays:
    stem = "train" if split == "train" else "t10k"
    images = _idx(root, f"{stem}-images-idx3-ubyte", 2051)
    labels = _idx(root, f"{stem}-labels-idx1-ubyte", 2049).astype(np.int64)
    if len(labels) != len(images) or (len(labels) and labels.max() > 9):
        raise DeepSTDPError(f"{root}: {len(labels)} {stem} labels for {len(images)} images, or "
                            "a label over 9")
    classes = MNIST_CLASSES if name == "mnist" else FASHION_CLASSES
    return images[..., None].copy(), labels, list(classes)
