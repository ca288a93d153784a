"""Speed, memory and quality of KMeansClustering's backends (scikit-learn and faiss).

Speed: each (backend, k, threads) fits a synthetic Gaussian mixture (--samples points in
--features dimensions, 100 components, unit noise, float32) in a fresh process, --repeat times,
and reports the best seconds and the peak memory above the data (the process's high-water mark,
reset before the fit), with the process's CPU seconds (all threads: on a shared machine the
better measure of the work done at one thread). Both backends draw the same k-means++ seeds and
stop alike, so the iteration and inertia columns should agree.

--lloyd-only times the Lloyd iterations alone, which is all the backends do differently: one
run (--n-init is ignored) from the same --k random points, tol 0, --max-iter iterations, against
a fit's k-means++ seeding (scikit-learn's, shared by both backends).

Quality (--quality): ACC of each backend over seeds on scikit-learn's digits PCA-whitened to 32
dimensions and, with --run DIR, on the embeddings of the training images by that run's network
(what its k-means clustered at its last epoch), whitened likewise.

    python benchmarks/bench_kmeans.py --k 10 100 --threads 1 2
    python benchmarks/bench_kmeans.py --samples 5000 --features 32 --k 10 100 --repeat 3
    python benchmarks/bench_kmeans.py --lloyd-only --k 10 100 1000 2000 --max-iter 10
    python benchmarks/bench_kmeans.py --quality --run runs/compare-tiny/runs/kmeans-seed0
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any
from unittest import mock

import numpy as np


def mixture(n: int, d: int, components: int = 100, seed: int = 0) -> np.ndarray:
    """Points around `components` centres of spread 1 per dimension, in chunks to keep the
    process's memory high-water mark at the data's size."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((components, d)).astype(np.float32)
    x = np.empty((n, d), np.float32)
    for i in range(0, n, 10_000):
        m = min(10_000, n - i)
        x[i:i + m] = centres[rng.integers(components, size=m)]
        x[i:i + m] += rng.standard_normal((m, d), dtype=np.float32)
    return x


def memory_kib() -> dict[str, int]:
    with open("/proc/self/status") as f:
        status = dict(line.split(":", 1) for line in f)
    return {key: int(status[key].split()[0]) for key in ("VmRSS", "VmHWM")}


def lloyd(x: np.ndarray, args: argparse.Namespace) -> tuple[float, int]:
    """Lloyd's iterations alone from random points: inertia and iterations."""
    from sklearn.cluster import KMeans

    from deepstdp.clustering import kmeans as clustering

    idx = np.random.default_rng(0).choice(len(x), args.k, replace=False)
    if args.backend == "sklearn":
        km = KMeans(args.k, init=x[idx], n_init=1, max_iter=args.max_iter, tol=0).fit(x)
        return km.inertia_, km.n_iter_
    # The faiss backend's loop, its k-means++ seeding swapped for the same random points.
    with mock.patch.object(clustering, "kmeans_plusplus", lambda xc, k, **_: (xc[idx], idx)):
        _, _, inertia, n_iter = clustering._faiss_kmeans(x, args.k, 1, args.max_iter, 0.0, 0)
    return inertia, n_iter


def one(args: argparse.Namespace) -> dict[str, Any]:
    """One (backend, k, threads) configuration, in this process."""
    from threadpoolctl import threadpool_limits

    from deepstdp.clustering.kmeans import KMeansClustering, _import_faiss

    if args.backend == "faiss":
        _import_faiss()  # its load time is not the fit's
    x = mixture(args.samples, args.features)
    best: dict[str, Any] = {}
    with threadpool_limits(args.threads):
        for _ in range(args.repeat):
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset the high-water mark to the current resident size
            before = memory_kib()["VmRSS"]
            t, cpu = time.perf_counter(), time.process_time()
            if args.lloyd_only:
                inertia, n_iter = lloyd(x, args)
            else:
                km = KMeansClustering(args.k, backend=args.backend, n_init=args.n_init,
                                      max_iter=args.max_iter, random_state=0).fit(x)
                inertia, n_iter = km.inertia_, km.n_iter_
            seconds = time.perf_counter() - t
            if not best or seconds < best["seconds"]:
                best = {"seconds": seconds, "cpu_seconds": time.process_time() - cpu,
                        "inertia": inertia, "n_iter": n_iter,
                        "peak_mib": (memory_kib()["VmHWM"] - before) / 1024}
    return {"backend": args.backend, "k": args.k, "threads": args.threads, **best}


def speed(args: argparse.Namespace) -> None:
    what = "Lloyd only, from random points" if args.lloyd_only else f"n_init {args.n_init}"
    print(f"{args.samples} x {args.features} Gaussian mixture, {what}, max_iter "
          f"{args.max_iter}, best of {args.repeat}")
    print(f"{'k':>5} {'threads':>7} {'backend':>8} {'seconds':>8} {'CPU s':>8} "
          f"{'peak MiB':>9} {'iters':>5} {'inertia':>14}")
    for k in args.k:
        for threads in args.threads:
            for backend in args.backends:
                cmd = [sys.executable, __file__, "--one", "--backend", backend, "--k", str(k),
                       "--threads", str(threads), "--samples", str(args.samples),
                       "--features", str(args.features), "--repeat", str(args.repeat),
                       "--n-init", str(args.n_init), "--max-iter", str(args.max_iter),
                       *(["--lloyd-only"] if args.lloyd_only else [])]
                r = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                              text=True).stdout)
                print(f"{k:5d} {threads:7d} {backend:>8} {r['seconds']:8.2f} "
                      f"{r['cpu_seconds']:8.2f} {r['peak_mib']:9.0f} {r['n_iter']:5d} "
                      f"{r['inertia']:14.6g}", flush=True)


def quality(args: argparse.Namespace) -> None:
    from sklearn.datasets import load_digits

    from deepstdp.clustering.kmeans import KMeansClustering
    from deepstdp.clustering.pca import PCAWhitening
    from deepstdp.measures.metrics import cluster_acc

    digits = load_digits()
    sets = {"digits-pca32": (digits.data, digits.target)}
    if args.run:
        from deepstdp.data.datasets import Data
        from deepstdp.network.features import embed, extract_features
        from deepstdp.run.loaded import load_run

        run = load_run(args.run)
        data = Data(**run.config.data_options(), progress=False)
        emb = embed(run.model, extract_features(run.model, data.x_train))
        sets[args.run] = (emb, data.train.labels)
    for name, (x, y) in sets.items():
        z = PCAWhitening(32).fit_transform(x)
        k = len(np.unique(y))
        fits = [{b: KMeansClustering(k, backend=b, random_state=seed).fit(z)
                 for b in args.backends} for seed in range(args.seeds)]
        print(f"{name} ({len(x)} x {x.shape[1]} -> 32, k={k}), seeds 0-{args.seeds - 1}")
        for b in args.backends:
            accs = [cluster_acc(y, fit[b].labels_) for fit in fits]
            print(f"  {b:>8}: ACC {np.mean(accs):.4f} ± {np.std(accs):.4f} "
                  f"({' '.join(f'{a:.4f}' for a in accs)})")
        same = sum(all(np.array_equal(f[args.backends[0]].labels_, f[b].labels_)
                       for b in args.backends) for f in fits)
        gap = max(abs(f[b].inertia_ / f[args.backends[0]].inertia_ - 1)
                  for f in fits for b in args.backends)
        print(f"  identical labels for {same} of {args.seeds} seeds, inertias within {gap:.1e}",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=256)
    ap.add_argument("--k", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--backends", nargs="+", default=["sklearn", "faiss"])
    ap.add_argument("--n-init", type=int, default=5)
    ap.add_argument("--max-iter", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--lloyd-only", action="store_true",
                    help="time the Lloyd iterations alone, from random points")
    ap.add_argument("--quality", action="store_true", help="ACC instead of speed")
    ap.add_argument("--run", help="for --quality: a run directory whose features to cluster")
    ap.add_argument("--seeds", type=int, default=5, help="for --quality")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--backend", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        args.k, args.threads = args.k[0], args.threads[0]
        print(json.dumps(one(args)))
    elif args.quality:
        quality(args)
    else:
        speed(args)


if __name__ == "__main__":
    main()
