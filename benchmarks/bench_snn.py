"""Throughput of STDPClustering: samples/s of a training pass and of predict.

For every (features, neurons, steps) it fits one pass on synthetic whitened-like features
(unit-norm Gaussian mixture), then predicts them. Each feature is an on/off pair of inputs, so
256 features are 512 input spike trains. A training pass is sequential (one sample at a time,
weights updated every step); predict runs on --threads numba threads.

    NUMBA_NUM_THREADS=2 python benchmarks/bench_snn.py [--samples 4000] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np

from deepstdp import STDPClustering


def features(n: int, d: int, k: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d))
    x = centres[rng.integers(k, size=n)] + 1.5 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--features", type=int, nargs="+", default=[256])
    ap.add_argument("--neurons", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 250])
    ap.add_argument("--threads", type=int, default=1, help="numba threads for predict")
    args = ap.parse_args()
    numba.set_num_threads(args.threads)
    STDPClustering(2, epochs=1, time=10).fit(features(20, 4))  # compile (or load the cache)
    print(f"{args.samples} samples; predict on {args.threads} thread(s)")
    print(f"{'features':>8} {'neurons':>7} {'steps':>5} | {'train pass/s':>12} {'fit/s':>8} "
          f"{'predict/s':>9} | {'spikes/sample':>13} {'re-shown':>8}")
    for d in args.features:
        x = features(args.samples, d)
        for n in args.neurons:
            for steps in args.steps:
                net = STDPClustering(n, time=steps, epochs=1)
                t0 = time.perf_counter()
                net.fit(x)  # one training pass + one frozen labelling pass
                t1 = time.perf_counter()
                net.predict(x)
                t2 = time.perf_counter()
                fit_s, pred_s = t1 - t0, t2 - t1
                spikes = net.history_["spikes"][-1].sum() / len(x)
                print(f"{d:8d} {n:7d} {steps:5d} | {len(x) / (fit_s - pred_s):12.0f} "
                      f"{len(x) / fit_s:8.0f} {len(x) / pred_s:9.0f} | {spikes:13.2f} "
                      f"{net.train_reshown_ / len(x):8.0%}", flush=True)


if __name__ == "__main__":
    main()
