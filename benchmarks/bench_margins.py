"""Do the clusterers' margins rank their own correctness? Target purity of the surest images.

For each committed epoch-40 feature set (benchmarks/features/), both clusterers fit k = 100
clusters (the loop's targets), and the purity of their clusters (the share of each cluster's
majority class, summed over clusters) is printed for all images and for the surest 70% and
50% of every cluster (`deepstdp.loop.training.surest`, the loop's --target-keep), ranked by each
clusterer's own margin (`Clusterer.margin`). Higher purity among the kept means the margin
picks the images more likely to share their cluster's class.

    python benchmarks/bench_margins.py [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from deepstdp import KMeansClustering, STDPClustering
from deepstdp.loop.training import surest

FEATURES = Path(__file__).parent / "features"


def purity(y: np.ndarray, labels: np.ndarray) -> float:
    return sum(np.bincount(y[labels == c]).max() for c in np.unique(labels)) / len(y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    for path in sorted(FEATURES.glob("*-epoch40.npz")):
        with np.load(path) as f:
            x, y = f["features"], f["labels"]
        for name, est in (("kmeans", KMeansClustering(100, random_state=args.seed)),
                          ("stdp", STDPClustering(100, random_state=args.seed))):
            labels = est.fit(x).labels_
            margins = est.margin(x)
            cells = [f"all {purity(y, labels):.3f}"]
            for fraction in (0.7, 0.5):
                keep = surest(labels, margins, fraction)
                cells.append(f"surest {fraction:.0%} {purity(y[keep], labels[keep]):.3f}")
            print(f"{path.stem:18s} {name:6s} " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
