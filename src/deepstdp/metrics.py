"""Clustering metrics against true labels (which training never sees)."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def contingency(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Counts[c, k] of samples of class c put in cluster k (ids are taken as 0..max)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    m = np.zeros((y_true.max() + 1, y_pred.max() + 1), dtype=np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    return m


def cluster_acc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Accuracy under the best one-to-one map of clusters to classes (Hungarian).

    With more clusters than classes the clusters left unmatched count as errors, so
    overclustering is not rewarded by this number.
    """
    m = contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(m, maximize=True)
    return float(m[rows, cols].sum() / len(y_true))


def cluster_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    return {
        "acc": cluster_acc(y_true, y_pred),
        "nmi": float(normalized_mutual_info_score(y_true, y_pred)),
        "ari": float(adjusted_rand_score(y_true, y_pred)),
    }


def cluster_sizes(y_pred: np.ndarray, n_clusters: int) -> list[int]:
    return np.bincount(y_pred, minlength=n_clusters).tolist()
