"""The data stage's common ground: `ImageSet` (a set's images and labels in memory), the splits,
and the decode cache every decoding loader shares (its folder, its keys, its files), so that the
loaders (`datasets`, `events`) build on it without importing each other."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepstdp.runtime.util import DeepSTDPError

SPLITS = ("train", "val")
# Bump when the cached arrays' meaning changes, so that stale caches are never read.
_CACHE_VERSION = 1


@dataclass
class ImageSet:
    """An image set held in memory, with its labels where it has them.

    Labels may be absent: an image without one (a flat image folder, STL-10's unlabelled
    images) has label -1, and a set with no labelled image at all has no classes. The labels
    only score a clustering, never train it, so scores must be taken over `labelled_mask`."""

    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray  # int64 (N,), indices into `classes`, -1 for an unlabelled image
    classes: list[str]
    name: str

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def labelled_mask(self) -> np.ndarray:
        """Which images have a label: the only ones a score may count."""
        return self.labels >= 0

    @property
    def labelled(self) -> bool:
        """Whether any image has a label (else nothing can be scored against classes)."""
        return bool(self.n_classes) and bool(self.labelled_mask.any())

    def __len__(self) -> int:
        return len(self.labels)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DeepSTDPError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")


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


def _read_folder_cache(path: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray,
                                                                 int] | None:
    """A folder's cached images, labels and skipped count, or None (it is then rebuilt)."""
    try:
        with np.load(path, allow_pickle=False) as cached:
            if cached["classes"].tolist() != classes:
                return None
            return cached["images"], cached["labels"], int(cached["skipped"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None


def _write_folder_npz(path: Path, images: np.ndarray, labels: np.ndarray, classes: list[str],
                      skipped: int) -> None:
    with path.open("wb") as f:
        np.savez(f, images=images, labels=labels, classes=np.array(classes, dtype=str),
                 skipped=skipped)
