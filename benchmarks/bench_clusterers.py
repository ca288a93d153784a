"""Clustering quality of STDPClustering against KMeansClustering on the same fixed features.

Prints ACC (Hungarian), the majority vote (MV: each cluster named by the class it holds most
of, scored on the same points; Diehl & Cook's readout, docs/reproduction.md), NMI, ARI and
cluster-size balance (smallest / largest cluster and the
entropy of the sizes over log k, 1 = perfectly even) as mean +- std over seeds, with seconds
per fit. Datasets (--datasets): well-separated Gaussian blobs; scikit-learn digits PCA-whitened
to 32 and 64 dimensions (DeepCluster's PCAWhitening: whitening + L2 norm); mixture256 and
mixture256-skewed, 20,000 points of 100 overlapping Gaussians in 512-d whitened to 256-d (the
pipeline's width), with equal or Dirichlet(5)-skewed class sizes. Or --features FILE.npz with
`features` (N, D) float and `labels` (N,) int, PCA-whitened to --pca-dim (0: used as given).

--run RUN_DIR measures what the loop's clusterers make of a trained run's features: its train
images through its network, whitened by its own PCA (the one saved with its last epoch), and
both clusterers built as the loop builds them (the registry, from the run's settings: its
k-means backend and its STDP settings, `--stdp` on top). --untrained uses the run's settings
but the network as the loop starts it (epoch 0: its seed, no training), with a PCA fitted to
those features as the loop does at epoch 0. --save FILE.npz writes the whitened set (`features`,
`labels`) for --features FILE.npz --pca-dim 0; benchmarks/features/ holds the committed ones.

    NUMBA_NUM_THREADS=2 python benchmarks/bench_clusterers.py [--seeds 5] [--first-seed 0]
        [--stdp time=500]
    python benchmarks/bench_clusterers.py --datasets mixture256 mixture256-skewed --seeds 3
    python benchmarks/bench_clusterers.py --features tin.npz --k 200 --seeds 3
    python benchmarks/bench_clusterers.py --run runs/cmp/runs/kmeans-seed0 --seeds 10
    python benchmarks/bench_clusterers.py --features benchmarks/features/*.npz --pca-dim 0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits, make_blobs

from deepstdp import KMeansClustering, PCAWhitening, STDPClustering
from deepstdp.clustering.base import Clusterer
from deepstdp.clustering.stdp.settings import STDPSettings
from deepstdp.config import TrainConfig
from deepstdp.measures.metrics import cluster_metrics, majority_accuracy, majority_names


def balance(labels: np.ndarray, k: int) -> dict[str, float]:
    sizes = np.bincount(labels, minlength=k)
    p = sizes[sizes > 0] / len(labels)
    return {"min": int(sizes.min()), "max": int(sizes.max()),
            "entropy": float(-(p * np.log(p)).sum() / np.log(k))}


def mixture(skewed: bool, k: int = 100, n: int = 20000, seed: int = 0
            ) -> tuple[np.ndarray, np.ndarray, int]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, 512))
    sizes = rng.dirichlet(np.full(k, 5.0)) if skewed else np.full(k, 1 / k)
    y = rng.choice(k, size=n, p=sizes)
    x = centres[y] + 2.5 * rng.standard_normal((n, 512))
    return PCAWhitening(256).fit_transform(x), y, k


def dataset(name: str) -> tuple[np.ndarray, np.ndarray, int]:
    if name == "blobs":
        x, y = make_blobs(2000, 64, centers=10, cluster_std=2.0, random_state=0)
        return PCAWhitening(32).fit_transform(x), y, 10
    if name.startswith("digits-pca"):
        digits = load_digits()
        return PCAWhitening(int(name[10:])).fit_transform(digits.data), digits.target, 10
    return mixture(skewed=name.endswith("skewed"))


def run_features(run_dir: str, untrained: bool) -> tuple[np.ndarray, np.ndarray, TrainConfig]:
    """A run's train features as its loop clusters them (see the module docstring)."""
    import torch

    from deepstdp.data.datasets import Data
    from deepstdp.network.features import embed, extract_features
    from deepstdp.network.models import ConvNet
    from deepstdp.run.loaded import load_run

    run = load_run(run_dir)
    cfg = run.config
    data = Data(**cfg.data_options(), progress=False)
    model, pca = run.model, run.pca
    if untrained:
        torch.manual_seed(cfg.seed)
        model = ConvNet.from_config(cfg, data.x_train.shape[1], run.checkpoint.k).eval()
    emb = embed(model, extract_features(model, data.x_train))
    if untrained:
        pca = PCAWhitening(cfg.pca_dim).fit(emb)
    return pca.transform(emb), data.train.labels, cfg


def datasets(args: argparse.Namespace) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    sets: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
    for path in args.features:
        with np.load(path) as f:
            x, y = f["features"], f["labels"].astype(np.int64)
        if args.pca_dim:
            x = PCAWhitening(args.pca_dim).fit_transform(x)
        sets[Path(path).stem] = (x, y, args.k or len(np.unique(y)))
    if args.run:
        x, y, _ = run_features(args.run, args.untrained)
        sets[Path(args.run).name + ("-untrained" if args.untrained else "")] = (
            x, y, args.k or len(np.unique(y)))
        if args.save:
            np.savez_compressed(args.save, features=x.astype(np.float32), labels=y)
    if not sets:
        sets = {name: dataset(name) for name in args.datasets}
    return sets


def run_methods(run_dir: str, stdp_kw: dict[str, object]
                ) -> dict[str, Callable[[int, int], Clusterer]]:
    """k-means and STDP as the run's loop builds them (the registry, the run's settings)."""
    from deepstdp.registry import make_clusterer
    from deepstdp.run.rundir import load_checkpoint

    cfg = load_checkpoint(run_dir).config
    # A k-means run never used its STDP settings: it meets today's spiking layer.
    stdp = dataclasses.replace(cfg.stdp if cfg.clusterer == "stdp" else STDPSettings(),
                               **stdp_kw)
    return {
        "kmeans": lambda k, seed: make_clusterer(dataclasses.replace(cfg, clusterer="kmeans"),
                                                 k, seed),
        "stdp": lambda k, seed: make_clusterer(dataclasses.replace(cfg, clusterer="stdp",
                                                                   stdp=stdp), k, seed),
    }


def evaluate(make: Callable[[int, int], Clusterer], x: np.ndarray, y: np.ndarray, k: int,
             seeds: range) -> dict[str, list[float]]:
    rows: dict[str, list[float]] = {}
    for seed in seeds:
        t = time.perf_counter()
        labels = make(k, seed).fit_predict(x)
        row = {**cluster_metrics(y, labels),
               "mv": majority_accuracy(y, labels, majority_names(y, labels, k)),
               **balance(labels, k), "seconds": time.perf_counter() - t}
        for key, value in row.items():
            rows.setdefault(key, []).append(value)
    return rows


def parse_value(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0,
                    help="seeds first-seed .. first-seed + seeds - 1 (more seeds in parts)")
    ap.add_argument("--datasets", nargs="+", default=["blobs", "digits-pca32", "digits-pca64"],
                    choices=["blobs", "digits-pca32", "digits-pca64", "mixture256",
                             "mixture256-skewed"])
    ap.add_argument("--features", nargs="+", default=[],
                    help="npz files with 'features' (N, D) and 'labels' (N,)")
    ap.add_argument("--run", help="a run directory: cluster its train features (see above)")
    ap.add_argument("--untrained", action="store_true",
                    help="with --run: the network as its loop starts (epoch 0)")
    ap.add_argument("--save", help="with --run: write the whitened features to this .npz")
    ap.add_argument("--pca-dim", type=int, default=256, help="for --features; 0 = no PCA")
    ap.add_argument("--k", type=int, help="clusters for --features (default: label count)")
    ap.add_argument("--stdp", action="append", default=[], metavar="KEY=VALUE",
                    help="STDPClustering keyword, repeatable")
    args = ap.parse_args()
    stdp_kw = dict(s.split("=", 1) for s in args.stdp)
    stdp_kw = {key: parse_value(value) for key, value in stdp_kw.items()}
    methods: dict[str, Callable[[int, int], Clusterer]] = {
        "kmeans": lambda k, seed: KMeansClustering(k, random_state=seed),
        "stdp": lambda k, seed: STDPClustering(k, random_state=seed, **stdp_kw),
    }
    if args.run:
        methods = run_methods(args.run, stdp_kw)
    print(f"mean +- std over {args.seeds} seeds from {args.first_seed}; STDP options "
          f"{stdp_kw or 'default'}")
    print(f"{'dataset':17s} {'method':6s} {'ACC':>11s} {'MV':>11s} {'NMI':>11s} {'ARI':>11s} "
          f"{'min':>5s} {'max':>5s} {'entropy':>7s} {'s/fit':>6s}")
    for name, (x, y, k) in datasets(args).items():
        for method, make in methods.items():
            r = evaluate(make, x, y, k, range(args.first_seed, args.first_seed + args.seeds))
            cells = " ".join(f"{np.mean(r[m]):.3f}±{np.std(r[m]):.3f}"
                             for m in ("acc", "mv", "nmi", "ari"))
            print(f"{name:17s} {method:6s} {cells} {np.mean(r['min']):5.0f} "
                  f"{np.mean(r['max']):5.0f} {np.mean(r['entropy']):7.3f} "
                  f"{np.mean(r['seconds']):6.2f}", flush=True)


if __name__ == "__main__":
    main()
