"""Throughput of STDPClustering: samples/s of a training pass and of predict, against BindsNET.

BindsNET's DiehlAndCook2015 ran 17 samples/s one at a time with 256 inputs, 100 neurons and
250 steps of 1 ms (docs/snn.md); the defaults here are that configuration (128 features: each is
an on/off pair of input spike trains). For every (features, neurons, steps) it times a fresh
network (thresholds at zero: its first training pass) and a trained one (thresholds settled
after --settle passes), on synthetic whitened-like features (unit-norm Gaussian mixture). A
training pass is sequential (one sample at a time, weights updated at every spike); its time is
that of `fit` / `partial_fit` less that of predict on the same samples, which is exactly their
frozen labelling pass. Each figure is the best of --repeats runs: on a shared machine the best
is the least disturbed.

--layer picks the wiring: 'default' (push-pull synapses, L2-normalised signed weights, the
noise-free readout for predict) or 'diehl-cook' (0.4's defaults: excitatory synapses, weight
sums, spike-count readout). Either way a timed fit is one online pass and the labelling pass:
n_init 1 and no consolidation passes (those cost a labelling pass each with the default
readout).

    python benchmarks/bench_snn.py [--samples 4000] [--repeats 5] [--threads 1] [--layer ...]
"""

from __future__ import annotations

import argparse
import platform
import time

import numba
import numpy as np

from deepstdp import STDPClustering

BINDSNET = 17.0  # samples/s, DiehlAndCook2015 at 256 inputs, 100 neurons, 250 steps
LAYERS = {"default": {},
          "diehl-cook": {"synapse": "excitatory", "weight_norm": "sum", "inference": "spikes",
                         "init": "data"}}
ONE_PASS = {"n_init": 1, "consolidation": 0}


def features(n: int, d: int, k: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d))
    x = centres[rng.integers(k, size=n)] + 1.5 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            info = {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in f if ":" in ln)}
        return f"{info['model name']} (family {info['cpu family']}, model {info['model']})"
    except (OSError, KeyError):
        return platform.processor() or "unknown CPU"


def timed_pass(net: STDPClustering, x: np.ndarray, fresh: bool) -> np.ndarray:
    """Seconds of one training pass and of predict on x: wall-clock, then CPU time of this
    process (what the same work takes on a core of its own, when others share the machine)."""
    clocks = (time.perf_counter, time.process_time)
    t0 = [c() for c in clocks]
    net.fit(x) if fresh else net.partial_fit(x)  # one training pass + the labelling pass
    t1 = [c() for c in clocks]
    net.predict(x)
    t2 = [c() for c in clocks]
    return np.array([[(b - a) - (c - b), c - b] for a, b, c in zip(t0, t1, t2, strict=True)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--features", type=int, nargs="+", default=[128])
    ap.add_argument("--neurons", type=int, nargs="+", default=[100])
    ap.add_argument("--steps", type=int, nargs="+", default=[250])
    ap.add_argument("--settle", type=int, default=3, help="passes before timing a trained net")
    ap.add_argument("--repeats", type=int, default=5, help="figures are the best of these")
    ap.add_argument("--threads", type=int, default=1, help="numba threads for predict")
    ap.add_argument("--layer", choices=list(LAYERS), default="default")
    args = ap.parse_args()
    layer = {**LAYERS[args.layer], **ONE_PASS}
    numba.set_num_threads(args.threads)
    STDPClustering(2, epochs=1, time=10).fit(features(20, 4))  # compile (or load the cache)
    print(f"{cpu_name()}; {args.samples} samples; predict on {args.threads} thread(s); "
          f"best of {args.repeats}; layer {args.layer}; x BindsNET = samples/s / {BINDSNET:g}")
    print(f"{'':31}| {'wall-clock':^32} | {'CPU time':^32} |")
    print(f"{'features':>8} {'neurons':>7} {'steps':>5} {'network':>7} |"
          + f" {'train/s':>8} {'x':>5} {'predict/s':>9} {'x':>5} |" * 2
          + f" {'spikes/sample':>13} {'re-shown':>8}")
    for d in args.features:
        x = features(args.samples, d)
        for n in args.neurons:
            for steps in args.steps:
                for state in ("fresh", "trained"):
                    net = STDPClustering(n, time=steps, epochs=1, random_state=0, **layer)
                    if state == "trained":
                        net.set_params(epochs=args.settle).fit(x).set_params(epochs=1)
                    times = np.array([timed_pass(net, x, fresh=state == "fresh")
                                      for _ in range(args.repeats)])
                    rates = len(x) / times.min(axis=0)  # (clock, train / predict)
                    spikes = net.history_["spikes"][-1].sum() / len(x)
                    cells = "".join(f" {r:8.0f} {r / BINDSNET:5.0f} {p:9.0f} {p / BINDSNET:5.0f} |"
                                    for r, p in rates)
                    print(f"{d:8d} {n:7d} {steps:5d} {state:>7} |{cells} {spikes:13.2f} "
                          f"{net.train_reshown_ / len(x):8.0%}", flush=True)


if __name__ == "__main__":
    main()
