"""Datasets as in-memory uint8 arrays, plus batched tensor transforms for the training loop.

DeepCluster re-extracts features from the whole training set every epoch, so images are decoded
once, kept in memory as one uint8 array and cached on disk as `.npz`; augmentation then runs on
whole batches of tensors (no per-image PIL work, no torchvision).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm import tqdm

from deepstdp.config import DATASETS
from deepstdp.runtime.util import DeepSTDPError, SettingError, atomic_write

TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
# The published MD5 and size of the official zip, as listed by the dataset's users.
TINY_IMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
TINY_IMAGENET_SIZE = 248_100_043
TINY_IMAGENET_DIR = "tiny-imagenet-200"
SPLITS = ("train", "val")
# Bump when the cached arrays' meaning changes, so that stale caches are never read.
_CACHE_VERSION = 1
_JPEG_SUFFIXES = (".jpeg", ".jpg")


@dataclass
class ImageSet:
    """A labelled image set held in memory."""

    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray  # int64 (N,), indices into `classes`
    classes: list[str]
    name: str

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.labels)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DeepSTDPError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")


# --------------------------------------------------------------------------- Tiny ImageNet


def resolve_data_root(data_root: str | os.PathLike | None) -> Path:
    """Find the `tiny-imagenet-200` folder from `data_root` or, if None, $DEEPSTDP_DATA.

    Either the folder itself or the folder holding it is accepted, since users point at both.
    """
    if data_root is None:
        data_root = os.environ.get("DEEPSTDP_DATA")
        if not data_root:
            raise SettingError(
                "data_root", "is not given and DEEPSTDP_DATA is not set: name the "
                f"{TINY_IMAGENET_DIR} folder (or the folder holding it)"
            )
    root = Path(data_root).expanduser()
    if not root.is_dir():
        problem = "is not a folder" if root.exists() else "does not exist"
        raise DeepSTDPError(f"data folder {root} {problem}")
    for candidate in (root, root / TINY_IMAGENET_DIR):
        if (candidate / "wnids.txt").is_file():
            return candidate.resolve()
    where = root / TINY_IMAGENET_DIR if (root / TINY_IMAGENET_DIR).is_dir() else root
    raise DeepSTDPError(
        f"no wnids.txt in {where}: expected the {TINY_IMAGENET_DIR} folder or a folder holding it"
    )


def parse_classes(spec: str | int | list[str] | None) -> int | list[str]:
    """Turn a --classes value into a class count ("10") or a wnid list ("n1,n2"); None is 10."""
    if spec is None:
        return 10
    if isinstance(spec, str):
        text = spec.strip()
        spec = int(text) if text.lstrip("+-").isdigit() else [w.strip() for w in text.split(",")]
    if isinstance(spec, list):
        if not spec or "" in spec:
            raise SettingError("classes", f"{','.join(spec)!r} has an empty class name")
        duplicates = sorted({w for w in spec if spec.count(w) > 1})
        if duplicates:
            raise SettingError("classes", f"names {', '.join(duplicates)} twice")
        return spec
    if isinstance(spec, bool) or not isinstance(spec, int):
        raise SettingError("classes", f"must be a count or comma-separated wnids, got {spec!r}")
    if spec <= 0:
        raise SettingError("classes", f"count must be positive, got {spec}")
    return spec


def _select_classes(root: Path, classes: str | int | list[str]) -> list[str]:
    """The requested wnids: the first N of wnids.txt in sorted order, or the given ones as is."""
    classes = parse_classes(classes)
    available = sorted(
        {line.strip() for line in (root / "wnids.txt").read_text().splitlines()} - {""}
    )
    if not available:
        raise DeepSTDPError(f"{root / 'wnids.txt'} lists no classes")
    if isinstance(classes, int):
        if classes > len(available):
            raise DeepSTDPError(
                f"{classes} classes requested but {root / 'wnids.txt'} lists only {len(available)}"
            )
        return available[:classes]
    unknown = sorted(set(classes) - set(available))
    if unknown:
        raise DeepSTDPError(f"unknown wnid(s) {', '.join(unknown)}: not in {root / 'wnids.txt'}")
    return list(classes)


def _list_files(root: Path, wnids: list[str], split: str) -> tuple[list[Path], np.ndarray]:
    """Image paths and labels, sorted by class then file name so that runs are reproducible."""
    per_class: list[list[Path]] = [[] for _ in wnids]
    index = {w: i for i, w in enumerate(wnids)}
    if split == "train":
        for i, wnid in enumerate(wnids):
            folder = root / "train" / wnid / "images"
            if not folder.is_dir():
                raise DeepSTDPError(f"missing folder {folder}")
            # Dot files are macOS metadata ("._x.JPEG") that copies of the data often carry.
            per_class[i] = [
                p
                for p in folder.iterdir()
                if p.suffix.lower() in _JPEG_SUFFIXES and not p.name.startswith(".")
            ]
    else:
        annotations = root / "val" / "val_annotations.txt"
        if not annotations.is_file():
            raise DeepSTDPError(f"missing {annotations}: cannot label the val split")
        for n, line in enumerate(annotations.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2:
                raise DeepSTDPError(
                    f"{annotations}:{n}: expected 'file<TAB>wnid<TAB>box', got {line!r}"
                )
            if fields[1] in index:
                per_class[index[fields[1]]].append(root / "val" / "images" / fields[0])
    for wnid, files in zip(wnids, per_class, strict=True):
        if not files:
            raise DeepSTDPError(f"class {wnid} has no {split} images in {root}")
        files.sort(key=lambda p: p.name)
    paths = [p for files in per_class for p in files]
    labels = np.repeat(np.arange(len(wnids), dtype=np.int64), [len(f) for f in per_class])
    return paths, labels


def _default_cache_dir() -> Path:
    return Path(os.environ.get("DEEPSTDP_CACHE") or Path.home() / ".cache" / "deepstdp")


def _cache_key(root: Path, wnids: list[str], split: str, paths: list[Path]) -> str:
    """Hash of everything the decoded arrays depend on; size and mtime catch replaced files."""
    h = hashlib.sha256(json.dumps([_CACHE_VERSION, str(root), wnids, split]).encode())
    for p in paths:
        try:
            st = p.stat()
        except OSError as e:
            raise DeepSTDPError(f"cannot read image {p}: {e.strerror or e}") from None
        h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _decode(path: Path) -> np.ndarray:
    """One image as uint8 (H, W, 3): grayscale, palette, RGBA and CMYK images become RGB;
    16-bit grayscale is scaled to 8 bits (Pillow's own conversion clips it to white); 32-bit
    integer and float images, whose range no file states, are refused by name."""
    try:
        with Image.open(path) as im:
            if im.mode.startswith("I;16"):
                gray = (np.asarray(im, dtype=np.uint32) + 128) // 257
                return np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)
            if im.mode in ("I", "F"):
                raise DeepSTDPError(f"cannot read image {path}: its pixels are "
                                    f"{'32-bit integers' if im.mode == 'I' else 'floats'} "
                                    "of no stated range; save it with 8 or 16 bits")
            return np.asarray(im.convert("RGB"))
    except DeepSTDPError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DeepSTDPError(f"cannot read image {path}: {e}") from None


def _decode_all(paths: list[Path], name: str, progress: bool) -> np.ndarray:
    """Decode into one preallocated array, in one thread.

    Tiny ImageNet's 64x64 JPEGs take ~0.15 ms each; a two-thread pool measured slower
    (0.74 s vs 1.15 s for 5,000 images), the per-call overhead outweighing the decoding.
    """
    first = _decode(paths[0])
    images = np.empty((len(paths), *first.shape), dtype=np.uint8)
    for i, path in enumerate(
        tqdm(paths, desc=f"decoding {name}", unit="img", disable=not progress)
    ):
        image = _decode(path)
        if image.shape != first.shape:
            raise DeepSTDPError(
                f"the images of {name} differ in size: {path} is "
                f"{image.shape[1]}x{image.shape[0]}, {paths[0]} {first.shape[1]}x"
                f"{first.shape[0]}; a data set's images must share one size"
            )
        images[i] = image
    return images


def _read_cache(path: Path, wnids: list[str]) -> np.ndarray | None:
    """The cached images, or None when the file is missing or unusable (it is then rebuilt)."""
    try:
        with np.load(path, allow_pickle=False) as cached:
            if cached["classes"].tolist() != wnids:
                return None
            return cached["images"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None


def _write_npz(path: Path, images: np.ndarray, labels: np.ndarray, wnids: list[str]) -> None:
    # Through a file object: given a name, np.savez would append ".npz" to atomic_write's temp name.
    with path.open("wb") as f:
        np.savez(f, images=images, labels=labels, classes=np.array(wnids))


def load_tiny_imagenet(
    root: str | os.PathLike | None,
    classes: str | int | list[str] = 10,
    split: str = "train",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> ImageSet:
    """Load a Tiny ImageNet split as uint8 RGB, decoding once and caching the arrays.

    The cache lives in `cache_dir` (default $DEEPSTDP_CACHE, else ~/.cache/deepstdp), never in
    the data folder, which may be shared and read-only.
    """
    _check_split(split)
    root = resolve_data_root(root)
    wnids = _select_classes(root, classes)
    paths, labels = _list_files(root, wnids, split)
    name = f"tiny-imagenet/{split}"

    cache_dir = Path(cache_dir if cache_dir is not None else _default_cache_dir()).expanduser()
    if cache_dir.resolve().is_relative_to(root):
        raise DeepSTDPError(f"cache folder {cache_dir} is inside the data folder {root}")
    key = _cache_key(root, wnids, split, paths)
    cache_file = cache_dir / f"tiny-imagenet-{split}-{len(wnids)}cls-{key}.npz"

    images = _read_cache(cache_file, wnids)
    if images is None or len(images) != len(labels):
        images = _decode_all(paths, name, progress)
        try:
            atomic_write(cache_file, lambda p: _write_npz(p, images, labels, wnids))
        except OSError as e:
            warnings.warn(f"cannot write cache {cache_file}: {e}", stacklevel=2)
    return ImageSet(images=images, labels=labels, classes=wnids, name=name)


def download_tiny_imagenet(
    dest: str | os.PathLike,
    url: str = TINY_IMAGENET_URL,
    progress: bool = True,
    *,
    md5: str = TINY_IMAGENET_MD5,
    size: int = TINY_IMAGENET_SIZE,
) -> Path:
    """Fetch, verify and unzip the official zip into `dest`; return `dest/tiny-imagenet-200`.

    The zip goes to a temp file and is extracted into a temp folder that is renamed into place
    only when complete, so an interrupted download never leaves a half-populated dataset.
    """
    dest = Path(dest).expanduser()
    target = dest / TINY_IMAGENET_DIR
    if (target / "wnids.txt").is_file():
        return target
    if target.exists():
        raise DeepSTDPError(f"{target} exists but has no wnids.txt: remove it and download again")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DeepSTDPError(f"cannot create {dest}: {e.strerror or e}") from None

    fd, tmp_name = tempfile.mkstemp(dir=dest, prefix=f".{TINY_IMAGENET_DIR}.", suffix=".zip.part")
    tmp_zip = Path(tmp_name)
    tmp_dir = Path(tempfile.mkdtemp(dir=dest, prefix=f".{TINY_IMAGENET_DIR}."))
    try:
        digest = hashlib.md5(usedforsecurity=False)
        n_bytes = 0
        try:
            with (
                os.fdopen(fd, "wb") as out,
                urllib.request.urlopen(url, timeout=60) as response,
                tqdm(
                    total=size, desc="downloading", unit="B", unit_scale=True, disable=not progress
                ) as bar,
            ):
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    n_bytes += len(chunk)
                    bar.update(len(chunk))
        except (OSError, ValueError, http.client.HTTPException) as e:
            # A plain URLError's str() wraps its reason in "<urlopen error ...>".
            reason = e.reason if type(e) is urllib.error.URLError else e
            raise DeepSTDPError(
                f"cannot download {url}: {reason}; download it by hand and unzip it into {dest}"
            ) from None
        if n_bytes != size:
            raise DeepSTDPError(f"download of {url} has {n_bytes} bytes, expected {size}")
        if digest.hexdigest() != md5:
            raise DeepSTDPError(f"download of {url} has MD5 {digest.hexdigest()}, expected {md5}")
        try:
            with zipfile.ZipFile(tmp_zip) as archive:
                archive.extractall(tmp_dir)
        except (zipfile.BadZipFile, OSError) as e:
            raise DeepSTDPError(f"cannot unzip the download of {url}: {e}") from None
        if not (tmp_dir / TINY_IMAGENET_DIR / "wnids.txt").is_file():
            raise DeepSTDPError(f"the zip at {url} holds no {TINY_IMAGENET_DIR}/wnids.txt")
        os.replace(tmp_dir / TINY_IMAGENET_DIR, target)
    finally:
        tmp_zip.unlink(missing_ok=True)
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return target


# --------------------------------------------------------------------------- digits and dispatch


def load_digits_set(split: str = "train") -> ImageSet:
    """scikit-learn's 8x8 digits as uint8 (N, 8, 8, 1): a tiny set for smoke tests, no download.

    The split is a fixed stratified 80/20 one (random_state=0), so train and val never overlap.
    """
    _check_split(split)
    digits = load_digits()
    index = np.arange(len(digits.target))
    train, val = train_test_split(index, test_size=0.2, random_state=0, stratify=digits.target)
    chosen = np.sort(train if split == "train" else val)
    # Pixel values are 0..16; scale them to the 0..255 range of every other image set.
    images = np.rint(digits.images[chosen] * (255 / 16)).astype(np.uint8)[..., None]
    labels = digits.target[chosen].astype(np.int64)
    return ImageSet(images, labels, [str(d) for d in range(10)], f"digits/{split}")


def load_dataset(
    name: str,
    split: str,
    data_root: str | os.PathLike | None = None,
    classes: str | int | list[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> ImageSet:
    """Load a data set by its CLI name ("digits" or "tiny-imagenet")."""
    if name == "digits":
        if classes is not None and parse_classes(classes) != 10:
            raise SettingError("classes", "must be left out: digits always has its 10 classes")
        return load_digits_set(split)
    if name == "tiny-imagenet":
        return load_tiny_imagenet(data_root, parse_classes(classes), split, cache_dir, progress)
    raise DeepSTDPError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}")


# --------------------------------------------------------------------------- tensor transforms


def to_float_tensor(images: np.ndarray, size: int | None = None) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, size, size) in [0, 1], resized with antialiasing."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise DeepSTDPError(
            f"expected uint8 images (N, H, W, C), got {images.dtype} {images.shape}"
        )
    return _to_float(torch.from_numpy(np.ascontiguousarray(images)), size)


def _to_float(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """to_float_tensor of a uint8 tensor, on whatever device that tensor is."""
    x = images.permute(0, 3, 1, 2).float().div_(255)
    if size is not None and x.shape[-2:] != (size, size):
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    return x.contiguous()


def channel_stats(images: np.ndarray, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 (N, H, W, C) images on the [0, 1] scale.

    Summed in float64 chunks so that memory stays small even for the full 100,000-image set.
    """
    if images.ndim != 4 or len(images) == 0:
        raise DeepSTDPError(f"expected a non-empty (N, H, W, C) image array, got {images.shape}")
    total = np.zeros(images.shape[-1])
    total_sq = np.zeros(images.shape[-1])
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].astype(np.float64) / 255
        total += block.sum(axis=(0, 1, 2))
        total_sq += np.square(block).sum(axis=(0, 1, 2))
    count = images.size // images.shape[-1]
    mean = total / count
    # A constant channel would divide by zero in `normalize`; floor its std instead.
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0)).clip(min=1e-6)
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per-channel (x - mean) / std for a (N, C, H, W) batch."""
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    if mean.shape[1] != x.shape[1] or std.shape[1] != x.shape[1]:
        raise DeepSTDPError(
            f"normalize: {x.shape[1]} channels but {mean.shape[1]} means and {std.shape[1]} stds"
        )
    return (x - mean) / std


class ImageTensor:
    """uint8 (N, H, W, C) images read like the float32 tensor
    `normalize(to_float_tensor(images, size), mean, std)`, converting only the rows indexed.

    The loop reads images in batches (training steps, feature extraction), so the float copy of
    a whole set need never exist: 4 bytes a pixel against 1, and converting 100,000 images at
    once peaked at 9.6 GiB at 32x32 (docs/pipeline.md, "Scaling"). Each row comes out bit for
    bit as converting the whole set would give it.
    """

    def __init__(self, images: np.ndarray, mean: torch.Tensor, std: torch.Tensor,
                 size: int | None = None):
        if images.dtype != np.uint8 or images.ndim != 4:
            raise DeepSTDPError(
                f"expected uint8 images (N, H, W, C), got {images.dtype} {images.shape}"
            )
        n, h, w, c = images.shape
        self.images, self.mean, self.std, self.size = images, mean, std, size
        self.shape = torch.Size((n, c, size or h, size or w))
        self.dtype = torch.float32

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int | slice | np.ndarray | torch.Tensor) -> torch.Tensor:
        """The indexed images as a normalised float32 (n, C, size, size) tensor (an int index
        gives one (C, size, size) image), as indexing the converted set would."""
        x = self.rows_on(index)
        return x[0] if isinstance(index, int | np.integer) else x

    def take(self, rows: slice) -> ImageTensor:
        """The images `rows` as an ImageTensor too: a view, nothing converted or copied."""
        return ImageTensor(self.images[rows], self.mean, self.std, self.size)

    def rows_on(self, index: int | slice | np.ndarray | torch.Tensor,
                put: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> torch.Tensor:
        """The indexed rows as a (n, C, size, size) batch, converted after `put` moved their
        uint8 bytes (to a GPU, say): the same values on any device, up to its float rounding."""
        if isinstance(index, torch.Tensor):
            index = index.numpy()
        rows = self.images[index]
        rows = torch.from_numpy(np.ascontiguousarray(rows.reshape(-1, *rows.shape[-3:])))
        return normalize(_to_float(put(rows), self.size), self.mean, self.std)


class Data:
    """A data set's train and val images with their true labels, as the loop and the spiking
    evaluation read them: `x_train` and `x_val` index like normalised float32 tensors (by the
    training images' channel statistics `mean` and `std`) of side `image_size` (None: as
    stored) but hold uint8, converting per batch (ImageTensor)."""

    def __init__(self, dataset: str, data_root: str | os.PathLike | None = None,
                 classes: str | int | list[str] | None = None, image_size: int | None = None,
                 progress: bool = False):
        kw = dict(data_root=data_root, classes=classes, progress=progress)
        self.train: ImageSet = load_dataset(dataset, "train", **kw)
        self.val: ImageSet = load_dataset(dataset, "val", **kw)
        self.mean, self.std = channel_stats(self.train.images)
        self.x_train = ImageTensor(self.train.images, self.mean, self.std, image_size)
        self.x_val = ImageTensor(self.val.images, self.mean, self.std, image_size)
