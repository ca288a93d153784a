"""Per-image cost of each loader against the Tiny ImageNet loader on its 64x64 JPEGs.

    python benchmarks/bench_loaders.py [N]     # N images per format (default 5000)

Writes synthetic files of every format into a temp folder (Tiny ImageNet's layout of JPEGs;
image folders of JPEG, PNG and WebP; CIFAR-10 pickles, STL-10 binaries, gzipped MNIST idx) and
times one cold load of each (no decode cache: each run gets a fresh cache folder), printing
microseconds per image. Issue 34's target: no new loader costs more per image than Tiny
ImageNet's.
"""

from __future__ import annotations

import gzip
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from deepstdp.data import datasets as data


def _noise_images(n: int, side: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth random images (blocks of colour, noise on top): JPEG sizes like photos'."""
    base = rng.integers(0, 256, (n, side // 8, side // 8, 3), dtype=np.uint8)
    big = base.repeat(8, axis=1).repeat(8, axis=2)
    return np.clip(big + rng.integers(-20, 20, big.shape), 0, 255).astype(np.uint8)


def write_all(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    images64 = _noise_images(n, 64, rng)
    tiny = root / "tiny-imagenet-200"
    wnids = [f"n{i:08d}" for i in range(10)]
    (tiny / "val" / "images").mkdir(parents=True)
    (tiny / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for i, image in enumerate(images64):
        folder = tiny / "train" / wnids[i % 10] / "images"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i}.JPEG", quality=90)
    (tiny / "val" / "val_annotations.txt").write_text("")
    for fmt, suffix in (("JPEG", ".jpg"), ("PNG", ".png"), ("WEBP", ".webp")):
        for i, image in enumerate(images64):
            path = root / f"folder-{fmt.lower()}" / f"c{i % 10}" / f"{i}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path, format=fmt)
    mixed = root / "folder-mixed-jpeg"  # photo-sized, of two sizes: decoded at a JPEG draft
    for i, image in enumerate(images64[: n // 5]):
        path = mixed / f"c{i % 10}" / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).resize((640, 480) if i % 2 else (500, 375)).save(path,
                                                                                quality=90)
    cifar = root / "cifar-10-batches-py"
    cifar.mkdir()
    rows = _noise_images(n, 32, rng).transpose(0, 3, 1, 2).reshape(n, -1)
    labels = (np.arange(n) % 10).tolist()
    meta = {b"label_names": [f"c{i}".encode() for i in range(10)]}
    (cifar / "batches.meta").write_bytes(pickle.dumps(meta, 2))
    per = -(-n // 5)
    for b in range(5):
        batch = {b"data": rows[b * per:(b + 1) * per], b"labels": labels[b * per:(b + 1) * per]}
        (cifar / f"data_batch_{b + 1}").write_bytes(pickle.dumps(batch, 2))
    stl = root / "stl10_binary"
    stl.mkdir()
    (stl / "class_names.txt").write_text("".join(f"k{i}\n" for i in range(10)))
    x96 = _noise_images(n, 96, rng)
    (stl / "train_X.bin").write_bytes(np.ascontiguousarray(x96.transpose(0, 3, 2, 1)).tobytes())
    (stl / "train_y.bin").write_bytes((np.arange(n) % 10 + 1).astype(np.uint8).tobytes())
    mnist = root / "mnist"
    mnist.mkdir()
    x28 = _noise_images(n, 32, rng)[:, :28, :28, 0]
    for stem, magic, array in (("train-images-idx3-ubyte", 2051, x28),
                               ("train-labels-idx1-ubyte", 2049, np.arange(n) % 10),
                               ("t10k-images-idx3-ubyte", 2051, x28[:10]),
                               ("t10k-labels-idx1-ubyte", 2049, np.arange(10))):
        header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
        (mnist / f"{stem}.gz").write_bytes(gzip.compress(header
                                                         + array.astype(np.uint8).tobytes()))


def timed(label: str, load, rows: list) -> None:
    start = time.perf_counter()
    s = load()
    seconds = time.perf_counter() - start
    rows.append((label, len(s), seconds))
    print(f"{label:<34} {len(s):>6} images {seconds:7.2f} s  {1e6 * seconds / len(s):8.1f} us/img "
          f"{tuple(s.images.shape[1:])}", flush=True)


def main(n: int = 5000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        write_all(root, n)
        print(f"wrote the files of {n} images a format in {time.perf_counter() - start:.0f} s")
        caches = iter(range(100))

        def cache() -> Path:
            return root / f"cache{next(caches)}"

        rows: list = []
        timed("tiny-imagenet (64px JPEG)", lambda: data.load_tiny_imagenet(
            root, 10, "train", cache(), progress=False), rows)
        for fmt in ("jpeg", "png", "webp"):
            timed(f"folder ({fmt}, 64px)", lambda f=fmt: data.load_image_folder(
                root / f"folder-{f}", "train", val_fraction=0.01, cache_dir=cache(),
                progress=False), rows)
        timed("folder (jpeg 640x480/500x375 -> 64)", lambda: data.load_image_folder(
            root / "folder-mixed-jpeg", "train", val_fraction=0.01, cache_dir=cache(),
            progress=False), rows)
        os.environ["DEEPSTDP_CACHE"] = str(cache())
        for name, folder in (("cifar10", "cifar-10-batches-py"), ("stl10", "stl10_binary"),
                             ("mnist", "mnist")):
            timed(f"{name} (official files)", lambda n_=name, f=folder: data.load_dataset(
                n_, "train", data_root=root / f), rows)
        base = rows[0][2] / rows[0][1]
        print("per image against tiny-imagenet: " + ", ".join(
            f"{label.split(' ')[0]}{label[label.find('('):]} {s / k / base:.2f}x"
            for label, k, s in rows[1:]))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
