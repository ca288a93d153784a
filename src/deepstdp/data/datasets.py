"""Datasets as in-memory uint8 arrays, plus batched tensor transforms for the training loop.

The sets: scikit-learn's digits, Tiny ImageNet, any folder of images (`load_image_folder`) and
the standard sets read from their official files (`standard`); `download` fetches the files of
any set in `SOURCES`.

DeepCluster re-extracts features from the whole training set every epoch, so images are decoded
once, kept in memory as one uint8 array and cached on disk as `.npz`; augmentation then runs on
whole batches of tensors (no per-image PIL work, no torchvision).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm import tqdm

from deepstdp.config import DATASETS, TrainConfig
from deepstdp.data import events, standard
from deepstdp.data.cache import (
    ImageSet,
    _cache_key,
    _check_split,
    _default_cache_dir,
    _read_folder_cache,
    _write_folder_npz,
)
from deepstdp.data.standard import Remote, Source
from deepstdp.runtime.util import DeepSTDPError, SettingError, atomic_write

TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
# The published MD5 and size of the official zip, as listed by the dataset's users.
TINY_IMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
TINY_IMAGENET_SIZE = 248_100_043
TINY_IMAGENET_DIR = "tiny-imagenet-200"
_JPEG_SUFFIXES = (".jpeg", ".jpg")


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


def _decode(path: Path, side: int | None = None) -> np.ndarray:
    """One image as uint8 (H, W, 3): grayscale, palette, RGBA and CMYK images become RGB;
    16-bit grayscale is scaled to 8 bits (Pillow's own conversion clips it to white); 32-bit
    integer and float images, whose range no file states, are refused by name. With `side`,
    the image is centre-cropped to a square and resized to side x side (`_square`); a JPEG is
    then decoded at the smallest of its reduced scales that still covers the side, which makes
    a large photo several times cheaper to read.

    An RGB image (most JPEGs, PNGs and WebPs) goes to numpy as decoded and is squared as a
    Pillow image: converting it to its own mode, or squaring it by way of numpy, copied every
    pixel once more for nothing (about 10 us of a 64x64 JPEG's 300; docs/data.md, "Cost per
    image")."""
    try:
        with Image.open(path) as im:
            if side is not None:
                im.draft(im.mode, (side, side))
            if im.mode.startswith("I;16"):
                gray = (np.asarray(im, dtype=np.uint32) + 128) // 257
                rgb = np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)
            elif im.mode in ("I", "F"):
                raise DeepSTDPError(f"cannot read image {path}: its pixels are "
                                    f"{'32-bit integers' if im.mode == 'I' else 'floats'} "
                                    "of no stated range; save it with 8 or 16 bits")
            else:
                rgb_image = im if im.mode == "RGB" else im.convert("RGB")
                return np.asarray(rgb_image if side is None else _square_image(rgb_image, side))
    except DeepSTDPError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DeepSTDPError(f"cannot read image {path}: {e}") from None
    return rgb if side is None else _square(rgb, side)


def _square(image: np.ndarray, side: int) -> np.ndarray:
    """The centred square of an (H, W, 3) image, resized to side x side (`_square_image`)."""
    if image.shape[:2] == (side, side):
        return image
    return np.asarray(_square_image(Image.fromarray(image), side))


def _square_image(image: Image.Image, side: int) -> Image.Image:
    """The centred square of an image, resized to side x side: cropping rather than squeezing
    keeps objects' proportions, as torchvision's Resize + CenterCrop do."""
    w, h = image.size
    if (w, h) == (side, side):
        return image
    edge = min(h, w)
    box = ((w - edge) // 2, (h - edge) // 2, (w - edge) // 2 + edge, (h - edge) // 2 + edge)
    return image.resize((side, side), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)


def read_image(path: str | os.PathLike, channels: int = 3) -> np.ndarray:
    """One image file as uint8 (S, S, channels), its centred square at its own resolution:
    how a trained network takes an image it has not seen (`run.predict`), whatever its size,
    mode or format. channels 1: grayscale (ITU-R 601-2 luma, PIL's 'L'), as digits are."""
    rgb = _decode(Path(path))
    rgb = np.array(_square(rgb, min(rgb.shape[:2])))  # writable: torch takes it as is
    if channels == 3:
        return rgb
    if channels == 1:
        return np.array(Image.fromarray(rgb).convert("L"))[..., None]
    raise DeepSTDPError(f"images of {channels} channels cannot be read from files")


def image_files(inputs: list[str | os.PathLike]) -> list[Path]:
    """The files named, and every visible file under the folders named (sorted, at any depth),
    in the order given; a path that does not exist raises, naming it."""
    out: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            out += _files_under(path)
        elif path.is_file():
            out.append(path)
        else:
            raise DeepSTDPError(f"{path} is neither an image file nor a folder")
    return out


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


SOURCES: dict[str, Source] = {
    "tiny-imagenet": Source(TINY_IMAGENET_DIR, "wnids.txt",
                            (Remote(TINY_IMAGENET_URL, TINY_IMAGENET_MD5, TINY_IMAGENET_SIZE),)),
    **standard.SOURCES,
}
"""Every set `download` fetches: its official files, their MD5s and the folder they make."""


def download(name: str, dest: str | os.PathLike, progress: bool = True, *,
             source: Source | None = None) -> Path:
    """Fetch, verify and unpack the official files of `name` (SOURCES) into `dest`; return the
    set's folder there (`dest/<Source.folder>`). `source` replaces the table's entry.

    Each file is written to `dest/.<name>-<file>.part`: an interrupted download leaves it there
    and the next call continues it with an HTTP Range request (a server that ignores the range
    sends the whole file again, which restarts it). A complete file whose MD5 (or size, where
    known) is not the published one is deleted, so that a bad copy is never resumed; archives
    are unpacked into a temp folder renamed into place only when complete, so a failure never
    leaves a half-populated set.
    """
    source = source or SOURCES.get(standard.VARIANTS.get(name, name))
    if source is None:
        raise DeepSTDPError(f"unknown download {name!r}: expected one of {', '.join(SOURCES)}")
    dest = Path(dest).expanduser()
    target = dest / source.folder
    if (target / source.marker).is_file():
        return target
    if target.exists():
        raise DeepSTDPError(f"{target} exists but has no {source.marker}: remove it and "
                            "download again")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DeepSTDPError(f"cannot create {dest}: {e.strerror or e}") from None

    parts = [dest / f".{name}-{_file_name(r.url)}.part" for r in source.files]
    for remote, part in zip(source.files, parts, strict=True):
        _fetch(remote, part, dest, progress)
    tmp_dir = Path(tempfile.mkdtemp(dir=dest, prefix=f".{source.folder}."))
    try:
        for remote, part in zip(source.files, parts, strict=True):
            _unpack(remote.url, part, tmp_dir / source.folder)
        if not (tmp_dir / source.folder / source.marker).is_file():
            raise DeepSTDPError(f"the download of {source.files[0].url} holds no "
                                f"{source.folder}/{source.marker}")
        os.replace(tmp_dir / source.folder, target)
    finally:
        for part in parts:  # verified: of no use once unpacked, nor if it cannot be
            part.unlink(missing_ok=True)
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return target


def _file_name(url: str) -> str:
    return Path(urllib.parse.urlparse(url).path).name or "download"


def _fetch(remote: Remote, part: Path, dest: Path, progress: bool) -> None:
    """Download `remote` into `part`, continuing what `part` holds; then check its MD5."""
    url = remote.url
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        try:
            response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                              timeout=60)
        except urllib.error.HTTPError as e:
            if e.code != 416 or not offset:  # 416: nothing after offset, the part is whole
                raise
            response = None
        if response is not None:
            with response:
                if offset and getattr(response, "status", None) != 206:
                    offset = 0  # the server sent the whole file: start again
                length = response.headers.get("Content-Length", "")
                total = remote.size or (offset + int(length) if length.isdigit() else None)
                with (part.open("r+b" if offset else "wb") as out,
                      tqdm(total=total, initial=offset, desc=f"downloading {_file_name(url)}",
                           unit="B", unit_scale=True, disable=not progress) as bar):
                    out.seek(offset)
                    out.truncate()
                    received = 0
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                # http.client ends a body cut short quietly: a dropped connection shows only here.
                if length.isdigit() and received < int(length):
                    raise http.client.IncompleteRead(b"", int(length) - received)
    except (OSError, ValueError, http.client.HTTPException) as e:
        # A plain URLError's str() wraps its reason in "<urlopen error ...>".
        reason = e.reason if type(e) is urllib.error.URLError else e
        kept = part.is_file() and part.stat().st_size > 0
        if not kept:
            part.unlink(missing_ok=True)
        raise DeepSTDPError(
            f"cannot download {url}: {reason}; "
            + (f"run the command again to continue {part.name}" if kept else
               f"download it by hand and unpack it into {dest}")
        ) from None
    n_bytes = part.stat().st_size
    if remote.size is not None and n_bytes != remote.size:
        part.unlink()
        raise DeepSTDPError(f"download of {url} has {n_bytes} bytes, expected {remote.size}")
    digest = hashlib.md5(usedforsecurity=False)
    with part.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    if digest.hexdigest() != remote.md5:
        part.unlink()
        raise DeepSTDPError(f"download of {url} has MD5 {digest.hexdigest()}, expected "
                            f"{remote.md5}")


def _unpack(url: str, part: Path, folder: Path) -> None:
    """Unpack a verified download into the temp folder `folder`'s parent (an archive holds the
    set's folder) or, for a plain file, move it into `folder`."""
    name = _file_name(url)
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(part) as archive:
                archive.extractall(folder.parent)
        elif name.endswith((".tar.gz", ".tgz", ".tar")):
            with tarfile.open(part) as archive:
                archive.extractall(folder.parent, filter="data")
        else:
            folder.mkdir(exist_ok=True)
            os.replace(part, folder / name)
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as e:
        raise DeepSTDPError(f"cannot unpack the download of {url}: {e}") from None


def download_tiny_imagenet(
    dest: str | os.PathLike,
    url: str = TINY_IMAGENET_URL,
    progress: bool = True,
    *,
    md5: str = TINY_IMAGENET_MD5,
    size: int = TINY_IMAGENET_SIZE,
) -> Path:
    """Fetch, verify and unzip the official zip into `dest`; return `dest/tiny-imagenet-200`
    (`download`, with the zip's URL, MD5 and size as given)."""
    return download("tiny-imagenet", dest, progress,
                    source=Source(TINY_IMAGENET_DIR, "wnids.txt", (Remote(url, md5, size),)))


# --------------------------------------------------------------------------- image folders

FOLDER_SIDE = 64
"""Side of the square an image folder's images are stored at when they differ in size (or
exceed it): Tiny ImageNet's own and the `paper` recipe's resolution, above the default
image_size of 32, at 12 KB an image (1.2 GB for 100,000)."""
VAL_FRACTION = 0.1
SPLIT_SEED = 0
"""The seed of a held-out val split: fixed, so every run and both splits see one partition."""


def _visible(path: Path) -> bool:
    # Dot files are macOS metadata ("._x.jpg", ".DS_Store") that copies of folders often carry.
    return not path.name.startswith(".")


def _files_under(folder: Path) -> list[Path]:
    """Every visible file under `folder`, at any depth, sorted by path. One os.walk, hidden
    folders pruned: no stat per file (the decoder refuses what is not an image, by name)."""
    out: list[Path] = []
    for where, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out += [Path(where, f) for f in files if not f.startswith(".")]
    return sorted(out)


def _list_folder(base: Path, classes: list[str] | None) -> tuple[list[Path], np.ndarray,
                                                                   list[str]]:
    """The files of `base` and their labels: with class sub-folders, ImageFolder's layout
    (classes named by folder, sorted; files beside them are ignored), else every file of
    `base` itself, unlabelled. `classes`: the train split's, which a val folder's must be in."""
    subdirs = sorted(p for p in base.iterdir() if p.is_dir() and _visible(p))
    if not subdirs:
        if classes:
            raise DeepSTDPError(f"{base} has no class folders but {base.parent / 'train'} has")
        paths = sorted(p for p in base.iterdir() if p.is_file() and _visible(p))
        return paths, np.full(len(paths), -1, dtype=np.int64), []
    names = [d.name for d in subdirs]
    if classes is None:
        classes = names
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise DeepSTDPError(f"{base} has class folder(s) {', '.join(unknown)} that "
                            f"{base.parent / 'train'} has not")
    per_class = [_files_under(d) for d in subdirs]
    for d, files in zip(subdirs, per_class, strict=True):
        if not files:
            raise DeepSTDPError(f"class folder {d} holds no files")
    index = {c: i for i, c in enumerate(classes)}
    labels = np.repeat(np.array([index[n] for n in names], dtype=np.int64),
                       [len(f) for f in per_class])
    return [p for files in per_class for p in files], labels, classes


def held_out(labels: np.ndarray, fraction: float, seed: int = SPLIT_SEED) -> np.ndarray:
    """Which images make the val split: `fraction` of each class (of all images when none is
    labelled), at least one of a class of two or more and never all of it, drawn with `seed`."""
    rng = np.random.default_rng(seed)
    val = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n = min(max(int(len(members) * fraction + 0.5), 1), len(members) - 1)
        val[rng.permutation(members)[:n]] = True
    return val


def _decode_folder(paths: list[Path], name: str, side: int, skip_bad: bool,
                   progress: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """Decode the images into one array: at their own size while they all share one of at most
    `side` pixels a side (no loss), else every one centre-cropped and resized to side x side
    (the images read so far are resized when the first of another size turns up, so it is one
    pass). Returns the images, the indices of `paths` they are, and the count of files skipped
    as not images (`skip_bad`; else the first such file raises)."""
    images: np.ndarray | None = None
    kept: list[int] = []
    square = False
    for i, path in enumerate(tqdm(paths, desc=f"decoding {name}", unit="img",
                                  disable=not progress)):
        try:
            image = _decode(path, side if square else None)
        except DeepSTDPError as e:
            if not skip_bad:  # named as the setting, so the command line names its option
                raise SettingError("skip_bad", f"not set: {e} (set it to skip files that are "
                                               "not images)") from None
            continue
        if images is None:
            square = max(image.shape[:2]) > side
            image = _square(image, side) if square else image
            images = np.empty((len(paths), *image.shape), dtype=np.uint8)
        elif image.shape != images.shape[1:]:
            if not square:
                square, done = True, images[:len(kept)]
                images = np.empty((len(paths), side, side, 3), dtype=np.uint8)
                for j, old in enumerate(done):
                    images[j] = _square(old, side)
            image = _square(image, side)
        images[len(kept)] = image
        kept.append(i)
    if images is None:
        raise DeepSTDPError(f"none of the {len(paths)} files of {name} is an image")
    n_bad = len(paths) - len(kept)
    return (images[:len(kept)].copy() if n_bad else images), np.array(kept, dtype=np.int64), n_bad


def load_image_folder(
    root: str | os.PathLike | None,
    split: str = "train",
    *,
    val_fraction: float = VAL_FRACTION,
    skip_bad: bool = False,
    side: int = FOLDER_SIDE,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> ImageSet:
    """A split of any folder of images (JPEG, PNG, BMP, WebP: whatever Pillow reads), decoded
    once to uint8 RGB and cached like Tiny ImageNet's.

    Layouts: `root/<class>/<image>` (ImageFolder's: classes named by folder, sorted, images at
    any depth below them) or images directly in `root` (unlabelled: labels -1, no classes).
    The val split is `root/val` where `root` holds both `train` and `val` folders (each in
    either layout), else `val_fraction` of the images held out (`held_out`: seeded, and
    stratified by class when labelled). A file that is not an image raises, naming it, unless
    `skip_bad`, which skips such files with one warning of their count. The cache is keyed by
    the files' paths under `root`, sizes and mtimes, so an edited folder is decoded again.
    """
    _check_split(split)
    if root is None:
        raise SettingError("data_root", "is not given: name the folder of images")
    if isinstance(val_fraction, bool) or not 0 < val_fraction < 1:
        raise SettingError("val_fraction", f"must be in (0, 1), got {val_fraction!r}")
    root = Path(root).expanduser()
    if not root.is_dir():
        problem = "is not a folder" if root.exists() else "does not exist"
        raise DeepSTDPError(f"data folder {root} {problem}")
    root = root.resolve()
    if (root / "train").is_dir() and (root / "val").is_dir():
        train_classes = _list_folder(root / "train", None)[2] if split == "val" else None
        paths, labels, classes = _list_folder(root / split, train_classes)
        where = f"split {split} of {root}"
    else:
        paths, labels, classes = _list_folder(root, None)
        if len(paths) < 2:
            raise DeepSTDPError(f"{root} holds {len(paths)} file(s): too few to hold out a "
                                "val split")
        val = held_out(labels, val_fraction)
        chosen = val if split == "val" else ~val
        paths, labels = [p for p, c in zip(paths, chosen, strict=True) if c], labels[chosen]
        where = f"{root} ({split}: {val_fraction:g} held out)"
    if not paths:
        raise DeepSTDPError(f"no files in {where}")
    name = f"folder/{split}"

    cache_dir = Path(cache_dir if cache_dir is not None else _default_cache_dir()).expanduser()
    if cache_dir.resolve().is_relative_to(root):
        raise DeepSTDPError(f"cache folder {cache_dir} is inside the data folder {root}")
    key = _cache_key(root, classes, f"{where}/{side}px/skip_bad={skip_bad}", paths)
    cache_file = cache_dir / f"folder-{split}-{key}.npz"
    cached = _read_folder_cache(cache_file, classes)
    if cached is not None and len(cached[0]) == len(cached[1]):
        images, labels, n_bad = cached
    else:
        images, kept, n_bad = _decode_folder(paths, name, side, skip_bad, progress)
        labels = labels[kept]
        try:
            atomic_write(cache_file, lambda p: _write_folder_npz(p, images, labels, classes,
                                                                n_bad))
        except OSError as e:
            warnings.warn(f"cannot write cache {cache_file}: {e}", stacklevel=2)
    if n_bad:
        warnings.warn(f"skipped {n_bad} file(s) of {where} that are not images", stacklevel=2)
    return ImageSet(images=images, labels=labels, classes=classes, name=name)


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


def _fixed_classes(name: str, classes: str | int | list[str] | None, n: int) -> None:
    """A set whose classes are its own takes `classes` left out (None, or the setting's
    default, which picks Tiny ImageNet's subset) or as its own count; anything else would
    silently be ignored, so it is refused."""
    if classes is None or str(classes).strip() == TrainConfig.classes:
        return
    if parse_classes(classes) != n:
        have = f"always has its {n} classes" if n else "has no classes (it is unlabelled)"
        raise SettingError("classes", f"must be left out: {name} {have}")


def load_dataset(
    name: str,
    split: str,
    data_root: str | os.PathLike | None = None,
    classes: str | int | list[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    val_fraction: float = VAL_FRACTION,
    skip_bad: bool = False,
) -> ImageSet:
    """Load a data set by its name (config.DATASETS): digits, tiny-imagenet, folder (any folder
    of images, `load_image_folder`, which alone reads `val_fraction` and `skip_bad`) or a
    standard set (`standard.STANDARD`), whose val split is its official test split."""
    if name == "digits":
        if classes is not None and parse_classes(classes) != 10:
            raise SettingError("classes", "must be left out: digits always has its 10 classes")
        return load_digits_set(split)
    if name == "tiny-imagenet":
        return load_tiny_imagenet(data_root, parse_classes(classes), split, cache_dir, progress)
    if name == "folder":
        images = load_image_folder(data_root, split, val_fraction=val_fraction,
                                   skip_bad=skip_bad, cache_dir=cache_dir, progress=progress)
        _fixed_classes(name, classes, images.n_classes)
        return images
    if name == "nmnist":  # event-camera recordings binned into frames (data/events.py)
        _fixed_classes(name, classes, 10)
        return events.load_nmnist(data_root, split, cache_dir=cache_dir, progress=progress)
    if name in standard.STANDARD:
        _check_split(split)
        _fixed_classes(name, classes, standard.N_CLASSES[name])
        folder = standard.resolve_folder(data_root, name)
        images, labels, names = standard.load_standard(name, folder, split)
        return ImageSet(images, labels, names, f"{name}/{split}")
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
    stored) but hold uint8, converting per batch (ImageTensor). `val_fraction` and `skip_bad`
    are load_image_folder's."""

    def __init__(self, dataset: str, data_root: str | os.PathLike | None = None,
                 classes: str | int | list[str] | None = None, image_size: int | None = None,
                 progress: bool = False, val_fraction: float = VAL_FRACTION,
                 skip_bad: bool = False):
        kw = dict(data_root=data_root, classes=classes, progress=progress,
                  val_fraction=val_fraction, skip_bad=skip_bad)
        self.train: ImageSet = load_dataset(dataset, "train", **kw)
        self.val: ImageSet = load_dataset(dataset, "val", **kw)
        self.mean, self.std = channel_stats(self.train.images)
        self.x_train = ImageTensor(self.train.images, self.mean, self.std, image_size)
        self.x_val = ImageTensor(self.val.images, self.mean, self.std, image_size)
