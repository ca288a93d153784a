"""Per-image cost of each loader against the Tiny ImageNet loader on its 64x64 JPEGs.

    python benchmarks/bench_loaders.py [N] [ROUNDS]   # N images a format (default 5000),
                                                      # ROUNDS loads of each (default 9)

Writes synthetic files of every format into a temp folder (Tiny ImageNet's layout of JPEGs;
image folders of JPEG, PNG and WebP; CIFAR-10 pickles, STL-10 binaries, gzipped MNIST idx).
Tiny ImageNet's files and the JPEG folder's hold the very same bytes (each image encoded once,
at quality 90), so that those two loaders do the same decoding work and differ only in what
they do around it.

Each loader then runs ROUNDS cold loads (no decode cache: each load gets a fresh cache folder,
removed after it), interleaved: each round runs every loader once, in a fresh random order
(seeded), so that a busy machine's load, which drifts over seconds, falls on all of them alike
and no loader always runs first or right after the same one. Printed: each loader's minimum
and median microseconds per image, by the wall clock and by this process's CPU time (the
steadier of the two when other jobs share the cores), and their ratios to Tiny ImageNet's.
Issue 34's target: no new loader costs more per image than Tiny ImageNet's.
"""

from __future__ import annotations

import gzip
import io
import pickle
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
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
    """The files of n images of every format under `root` (the mixed folder holds n // 5)."""
    rng = np.random.default_rng(0)
    images64 = _noise_images(n, 64, rng)
    tiny = root / "tiny-imagenet-200"
    wnids = [f"n{i:08d}" for i in range(10)]
    (tiny / "val" / "images").mkdir(parents=True)
    (tiny / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for i, image in enumerate(images64):
        jpeg = io.BytesIO()
        Image.fromarray(image).save(jpeg, format="JPEG", quality=90)
        for path in (tiny / "train" / wnids[i % 10] / "images" / f"{i}.JPEG",
                     root / "folder-jpeg" / f"c{i % 10}" / f"{i}.jpg"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(jpeg.getvalue())
    (tiny / "val" / "val_annotations.txt").write_text("")
    for fmt, suffix in (("PNG", ".png"), ("WEBP", ".webp")):
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


Loader = Callable[[Path], data.ImageSet]
"""A cold load: the set, decoded with the given (fresh) cache folder."""


def loaders(root: Path) -> dict[str, Loader]:
    """Each loader's cold load of its files under `root`, Tiny ImageNet's first."""
    def folder(name: str) -> Loader:
        return lambda cache: data.load_image_folder(root / name, "train", val_fraction=0.01,
                                                    cache_dir=cache, progress=False)

    out: dict[str, Loader] = {"tiny-imagenet (64px JPEG)": lambda cache: data.load_tiny_imagenet(
        root, 10, "train", cache, progress=False)}
    for fmt in ("jpeg", "png", "webp"):
        out[f"folder ({fmt}, 64px)"] = folder(f"folder-{fmt}")
    out["folder (jpeg 640x480/500x375 -> 64)"] = folder("folder-mixed-jpeg")
    for name, where in (("cifar10", "cifar-10-batches-py"), ("stl10", "stl10_binary"),
                        ("mnist", "mnist")):  # no decode cache: their files hold pixels
        out[f"{name} (official files)"] = lambda cache, n_=name, w=where: data.load_dataset(
            n_, "train", data_root=root / w)
    return out


def main(n: int = 5000, rounds: int = 9) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        write_all(root, n)
        print(f"wrote the files of {n} images a format in {time.perf_counter() - start:.0f} s; "
              f"{rounds} interleaved rounds", flush=True)
        runs = loaders(root)
        labels = list(runs)
        wall: dict[str, list[float]] = {label: [] for label in labels}
        cpu: dict[str, list[float]] = {label: [] for label in labels}
        sizes: dict[str, tuple[int, tuple[int, ...]]] = {}
        order = np.random.default_rng(0)
        for r in range(rounds):
            for i in order.permutation(len(labels)):
                label = labels[i]
                cache = root / "cache"
                start, start_cpu = time.perf_counter(), time.process_time()
                s = runs[label](cache)
                wall[label].append((time.perf_counter() - start) / len(s) * 1e6)
                cpu[label].append((time.process_time() - start_cpu) / len(s) * 1e6)
                sizes[label] = len(s), tuple(s.images.shape[1:])
                shutil.rmtree(cache, ignore_errors=True)
            print(f"round {r + 1} of {rounds} done", flush=True)
        report(labels, wall, cpu, sizes)


def report(labels: list[str], wall: dict[str, list[float]], cpu: dict[str, list[float]],
           sizes: dict[str, tuple[int, tuple[int, ...]]]) -> None:
    """Each loader's min and median us/image and its ratio to Tiny ImageNet's (the first):
    of the minima, and the median of the rounds' ratios, each load against Tiny ImageNet's of
    the same round, seconds apart, which cancels most of the drift of a busy machine's load."""
    tiny = labels[0]
    print(f"\n{'us/image':<36}{'images':>7}  {'wall min':>9}{'median':>8}  {'cpu min':>8}"
          f"{'median':>8}   x tiny (wall, cpu): of the minima; median of the rounds' ratios")
    for label in labels:
        w, c, w0, c0 = (np.array(v) for v in (wall[label], cpu[label], wall[tiny], cpu[tiny]))
        count, shape = sizes[label]
        print(f"{label:<36}{count:>7}  {w.min():9.1f}{np.median(w):8.1f}  {c.min():8.1f}"
              f"{np.median(c):8.1f}   {w.min() / w0.min():.2f}, {c.min() / c0.min():.2f}; "
              f"{np.median(w / w0):.2f}, {np.median(c / c0):.2f}  {shape}")

if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
