"""From a clusterer's partition to training targets: balanced sampling, centroids, Sinkhorn.

The clusterer (k-means or the spiking layer) is the one thing a comparison changes; everything
here turns whatever partition it returns into the network's training signal the same way.
"""

from __future__ import annotations

import numpy as np
import torch

from deepstdp.runtime.util import DeepSTDPError


def uniform_sample(labels: np.ndarray, n: int, rng: np.random.Generator,
                   keep: np.ndarray | None = None) -> np.ndarray:
    """n indices drawn evenly over the non-empty clusters (DeepCluster's UnifLabelSampler),
    among the images `keep` marks (default all).

    Without it a cluster that swallowed half the data would dominate the training signal.
    """
    if keep is not None:
        pool = np.flatnonzero(keep)
        return pool[uniform_sample(labels[pool], n, rng)]
    clusters = np.unique(labels)
    per = int(np.ceil(n / len(clusters)))
    idx = []
    for c in clusters:
        members = np.flatnonzero(labels == c)
        idx.append(rng.choice(members, per, replace=len(members) < per))
    idx = np.concatenate(idx)
    rng.shuffle(idx)
    return idx[:n]


def centroids(embeddings: torch.Tensor, labels: np.ndarray, k: int) -> torch.Tensor:
    """Unit-norm mean embedding of each cluster: the prototypes of DeepCluster-v2's top layer.

    An empty cluster gets a zero row, so it scores 0 for every sample and is never a target.
    """
    if len(embeddings) != len(labels):
        raise DeepSTDPError(f"{len(embeddings)} embeddings but {len(labels)} labels")
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    sums = torch.zeros(k, embeddings.shape[1], dtype=embeddings.dtype)
    sums.index_add_(0, y, embeddings)
    return torch.nn.functional.normalize(sums, dim=1)


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 50) -> torch.Tensor:
    """Soft assignments (rows sum to 1) of samples to prototypes with equal prototype mass.

    Sinkhorn-Knopp on exp(scores / epsilon), as SeLa (Asano et al. 2020) and SwAV (Caron et al.
    2020): alternately rescale so that every prototype receives 1/K of the batch and every
    sample distributes a mass of 1. Equipartition rules out the trivial solution of one
    prototype taking every sample. The last step normalises samples, so rows sum to 1 exactly
    and prototype totals are equal up to the convergence of `iterations` steps.
    """
    if scores.ndim != 2:
        raise DeepSTDPError(f"scores must be (samples, prototypes), got {tuple(scores.shape)}")
    q = scores.double() / epsilon
    q = torch.exp(q - q.max())
    n, k = q.shape
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(dim=0, keepdim=True)
        q /= k
        q /= q.sum(dim=1, keepdim=True)
        q /= n
    return (q * n).float()
