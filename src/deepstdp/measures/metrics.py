"""Clustering metrics against true labels (which training never sees)."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def contingency(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Counts[c, k] of samples of class c put in cluster k (ids are taken as 0..max); images
    without a label (-1) are left out."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    y_true, y_pred = y_true[y_true >= 0], y_pred[y_true >= 0]
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


def cluster_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float | None]:
    """ACC, NMI and ARI over the labelled images (label -1: none); None without any."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labelled = y_true >= 0
    if not labelled.any():
        return dict.fromkeys(("acc", "nmi", "ari"))
    y_true, y_pred = y_true[labelled], y_pred[labelled]
    return {
        "acc": cluster_acc(y_true, y_pred),
        "nmi": float(normalized_mutual_info_score(y_true, y_pred)),
        "ari": float(adjusted_rand_score(y_true, y_pred)),
    }


def cluster_sizes(y_pred: np.ndarray, n_clusters: int) -> list[int]:
    return np.bincount(y_pred, minlength=n_clusters).tolist()


def majority_names(y_true: np.ndarray, clusters: np.ndarray, n_clusters: int) -> np.ndarray:
    """Each cluster's name under Diehl & Cook's (2015) readout: the class it holds most of
    among the labelled images (ties: the lower class id); -1 for a cluster that holds none.

    The labels name the clusters and nothing else: the clustering is fixed before this runs
    (a spiking neuron's cluster is the images it wins), so training never sees them."""
    y_true, clusters = np.asarray(y_true), np.asarray(clusters)
    counts = np.zeros((n_clusters, int(y_true.max()) + 1), dtype=np.int64)
    np.add.at(counts, (clusters, y_true), 1)
    names = counts.argmax(axis=1)
    names[counts.sum(axis=1) == 0] = -1
    return names


def majority_accuracy(y_true: np.ndarray, clusters: np.ndarray, names: np.ndarray) -> float:
    """Fraction of images whose cluster is named by their class (`majority_names`); an image
    in an unnamed cluster counts as an error. Unlike `cluster_acc`, many clusters may share a
    name, so more clusters never lower it: compare it only at equal cluster counts."""
    return float((names[np.asarray(clusters)] == np.asarray(y_true)).mean())


def majority_metrics(y_train: np.ndarray, c_train: np.ndarray, y_val: np.ndarray,
                     c_val: np.ndarray, n_clusters: int) -> dict[str, float]:
    """`mv_acc` and `val_mv_acc`: the clusters named on the train split, both splits scored
    with those names (val's classes never name a cluster); over labelled images only, None
    where there are none."""
    y_train, c_train, y_val, c_val = map(np.asarray, (y_train, c_train, y_val, c_val))
    if not ((y_train >= 0).any() and (y_val >= 0).any()):
        return {"mv_acc": None, "val_mv_acc": None}
    c_train, y_train = c_train[y_train >= 0], y_train[y_train >= 0]
    c_val, y_val = c_val[y_val >= 0], y_val[y_val >= 0]
    names = majority_names(y_train, c_train, n_clusters)
    return {"mv_acc": majority_accuracy(y_train, c_train, names),
            "val_mv_acc": majority_accuracy(y_val, c_val, names)}
