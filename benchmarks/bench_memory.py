"""Peak memory and time of the DeepCluster loop, phase by phase and by class count (issue 10).

Only a 10-class Tiny ImageNet subset may be on disk; `tree` builds a larger one from it so that
the full 200 classes can be measured. `phases` runs epoch 0 (features, PCA, both k-means,
targets, k-NN, probe) and epoch 1's training pass step by step, printing each step's seconds and
its own peak resident memory (Linux VmHWM, reset before each step through /proc/self/clear_refs).
`epoch` runs `deepstdp train` for epochs 0 and 1 and prints their seconds and the process's peak.

    python benchmarks/bench_memory.py tree --dest runs/tiny200 --classes 200
    python benchmarks/bench_memory.py phases --data-root runs/tiny200 --classes 200 --threads 2
    python benchmarks/bench_memory.py epoch --data-root runs/tiny200 --classes 200 --threads 2
    python benchmarks/bench_memory.py epoch --data-root runs/tiny200 --classes 200 --clusterer stdp
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deepstdp.clustering.pca import PCAWhitening
from deepstdp.config import TrainConfig
from deepstdp.data.augment import Augmentation
from deepstdp.data.datasets import Data, load_dataset
from deepstdp.loop.training import (
    k_train_of,
    make_clusterings,
    make_targets,
    train,
    train_epoch,
)
from deepstdp.measures.probes import knn_accuracy, linear_probe_accuracy
from deepstdp.network.features import embed, extract_features
from deepstdp.network.models import ConvNet
from deepstdp.runtime import threads
from deepstdp.runtime.devices import choose
from deepstdp.runtime.util import peak_memory_gib

GIB = 2**30


def _variant(path: Path, copy: int) -> Image.Image:
    """Copy `copy` of an image: shifted by (copy, 2 copy) pixels with wrap-around, mirrored for
    odd copies, brightness scaled by 0.8 + 0.02 copy."""
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"), dtype=np.float32)
    a = np.roll(a, (copy, 2 * copy), axis=(0, 1))
    if copy % 2:
        a = a[:, ::-1]
    return Image.fromarray(np.clip(a * (0.8 + 0.02 * copy), 0, 255).astype(np.uint8))


def build_tree(src: Path, dest: Path, n_classes: int) -> None:
    """A `tiny-imagenet-200` folder at `dest` with `n_classes` classes made from those of `src`.

    Class j is copy j // S of source class j % S (S source classes). Copy 0 links the original
    files under their own wnids, so the first S classes in sorted order are `src` itself; copy
    c > 0 (wnid "p{c:02d}" + source wnid, sorting after the originals) re-encodes each image
    through `_variant`, so that k-means and the probes do not meet exact duplicates.
    """
    wnids = sorted(set((src / "wnids.txt").read_text().split()))
    copies = -(-n_classes // len(wnids))
    new = [[w if c == 0 else f"p{c:02d}{w}" for w in wnids] for c in range(copies)]
    chosen = sorted(w for row in new for w in row)[:n_classes]
    dest.mkdir(parents=True)
    (dest / "wnids.txt").write_text("\n".join(chosen) + "\n")
    (dest / "val" / "images").mkdir(parents=True)
    annotations = (src / "val" / "val_annotations.txt").read_text().splitlines()
    lines = []
    for c, row in enumerate(new):
        for wnid, target in zip(wnids, row, strict=True):
            if target not in chosen:
                continue
            images = dest / "train" / target / "images"
            images.mkdir(parents=True)
            for path in sorted((src / "train" / wnid / "images").glob("*.JPEG")):
                out = images / path.name.replace(wnid, target)
                if c == 0:
                    out.symlink_to(path.resolve())
                else:
                    _variant(path, c).save(out, quality=90)
            for line in annotations:
                name, label, *box = line.split("\t")
                if label != wnid:
                    continue
                out_name = name if c == 0 else f"c{c:02d}_{name}"
                path = src / "val" / "images" / name
                out = dest / "val" / "images" / out_name
                if c == 0:
                    out.symlink_to(path.resolve())
                else:
                    _variant(path, c).save(out, quality=90)
                lines.append("\t".join([out_name, target, *box]))
    (dest / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def _status(field: str) -> float:
    """A /proc/self/status memory field in GiB."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)) * 1024 / GIB


@contextmanager
def measured(name: str, peaks: list[float]) -> Iterator[None]:
    """Print the block's seconds, resident memory before and after, and its own peak, which
    is appended to `peaks` (the reset also resets ru_maxrss, so the process's peak is theirs)."""
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before, t = _status("VmRSS"), time.perf_counter()
    yield
    peaks.append(_status("VmHWM"))
    print(f"{name:<32} {time.perf_counter() - t:8.1f} {before:9.2f} {peaks[-1]:9.2f} "
          f"{_status('VmRSS'):9.2f}", flush=True)


def phases(cfg: TrainConfig) -> None:
    """Epoch 0 and epoch 1's training pass as in training._train, step by step."""
    print(f"{'phase':<32} {'seconds':>8} {'RSS GiB':>9} {'peak GiB':>9} {'after':>9}")
    peaks: list[float] = []
    with measured("load uint8 train + val (cache)", peaks):
        sets = [load_dataset(cfg.dataset, split, cfg.data_root, cfg.classes, progress=False)
                for split in ("train", "val")]
    print(f"uint8 images: {sum(s.images.nbytes for s in sets) / GIB:.2f} GiB, "
          f"{len(sets[0])} train + {len(sets[1])} val")
    del sets
    with measured("Data (load + convert)", peaks):
        data = Data(**cfg.data_options(), progress=False)
    k = cfg.k or data.train.n_classes
    k_train = k_train_of(cfg, k)
    torch.manual_seed(cfg.seed)
    model = ConvNet.from_config(cfg, data.x_train.shape[1], k_train).to(
        memory_format=torch.channels_last)
    with measured("precision check", peaks):
        compute = choose(cfg.precision, torch.device("cpu"), model,
                         data.x_train[:cfg.batch_size * cfg.views])
    with measured("features, train", peaks):
        feats = extract_features(model, data.x_train, compute)
    with measured("embed", peaks):
        emb = embed(model, feats)
    with measured("PCA fit + transform", peaks):
        z = PCAWhitening(cfg.pca_dim).fit(emb).transform(emb)
    clusterings = make_clusterings(cfg, k, k_train, cfg.seed)
    with measured(f"{cfg.clusterer} k = {k}", peaks):
        clusterings.evaluated.fit(z)
    with measured(f"{cfg.clusterer} k_train = {k_train}", peaks):
        clusterings.targets.fit(z)
    with measured("targets (centroids)", peaks):
        targets = make_targets(cfg, emb, clusterings.targets.labels_, k_train)
    with measured("features, val", peaks):
        f_val = extract_features(model, data.x_val, compute)
    args = (feats, data.train.labels, f_val, data.val.labels)
    with measured("k-NN probe", peaks):
        knn_accuracy(*args, k=cfg.knn_k)
    with measured("linear probe", peaks):
        linear_probe_accuracy(*args)
    body = [p for n, p in model.named_parameters() if not n.startswith("top.")]
    optimizer = torch.optim.SGD(body, lr=cfg.lr, momentum=cfg.momentum)
    aug = Augmentation(data.mean, data.std, cfg.crop_scale, cfg.jitter, cfg.grayscale)
    with measured("train epoch 1 (augmented views)", peaks):
        train_epoch(model, optimizer, data.x_train, targets, cfg, 1, compute, aug, False)
    print(f"process peak (largest phase peak): {max(peaks):.2f} GiB")


def epoch(cfg: TrainConfig) -> None:
    """`deepstdp train` for epochs 0 and 1: each epoch's seconds by phase, the process's peak."""
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        rows = train(cfg, out, quiet=True)
    wall = time.perf_counter() - t
    for row in rows:
        parts = {p: row[f"time_{p}"] for p in ("train", "features", "cluster", "eval")}
        print(f"epoch {row['epoch']}: {sum(parts.values()):.1f} s "
              f"({', '.join(f'{p} {s:.1f}' for p, s in parts.items())}), {row['precision']}, "
              f"ACC {row['acc']:.3f}, k-NN {row['knn_acc']:.3f}, probe {row['probe_acc']:.3f}")
    print(f"wall {wall:.0f} s, peak resident memory (ru_maxrss) {peak_memory_gib():.2f} GiB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=("tree", "phases", "epoch"))
    p.add_argument("--src", type=Path, default=Path("../shared/data/tiny-imagenet-200"))
    p.add_argument("--dest", type=Path, default=Path("runs/tiny200"))
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--precision", default="auto")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--clusterer", default="kmeans")
    args = p.parse_args()
    if args.mode == "tree":
        build_tree(args.src, args.dest, args.classes)
        return
    cfg = TrainConfig(dataset="tiny-imagenet", data_root=args.data_root,
                      classes=str(args.classes), image_size=args.image_size,
                      precision=args.precision, threads=args.threads, epochs=1,
                      clusterer=args.clusterer)
    print(f"{args.classes} classes, {args.image_size}x{args.image_size}, "
          f"{args.threads} threads, precision {args.precision}, {args.clusterer}")
    if args.mode == "phases":
        with threads.pinned(args.threads):
            phases(cfg)
    else:
        epoch(cfg)


if __name__ == "__main__":
    main()
