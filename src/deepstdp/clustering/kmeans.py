"""k-means, the clusterer of DeepCluster, on scikit-learn or faiss (docs/clustering.md).

`KMeansClustering` passes scikit-learn's `check_estimator` with no expected failures.
"""

from __future__ import annotations

import numbers
import os
import sys
from types import ModuleType
from typing import Any, Self

import numpy as np
import scipy.sparse as sp
from sklearn.cluster import KMeans, kmeans_plusplus
from sklearn.metrics import euclidean_distances, pairwise_distances_argmin
from sklearn.utils import check_random_state
from sklearn.utils.extmath import row_norms

from deepstdp.clustering.base import (
    Clusterer,
    _check_int,
    state_array,
    state_tensors,
)
from deepstdp.clustering.choices import KMEANS_BACKENDS
from deepstdp.runtime.util import DeepSTDPError

# 'auto' picks faiss from this many multiply-adds per Lloyd iteration (samples x clusters x
# features, here 100,000 x 1,000 x 256) and this many clusters, where its Lloyd iterations took
# 5-19% less CPU time than scikit-learn's; at 100 clusters they took 1.3-1.6x more, and whole
# fits of 10-200 clusters were no faster (benchmarks/bench_kmeans.py, docs/clustering.md).
FAISS_MIN_WORK = 25 * 10**9
FAISS_MIN_CLUSTERS = 1000

class KMeansClustering(Clusterer):
    """k-means (Lloyd, greedy k-means++ init, best of `n_init` runs) on all points.

    backend: 'sklearn' (scikit-learn's KMeans), 'faiss' (the same algorithm with faiss finding
    the nearest centres, on the GPUs where faiss-gpu is installed) or 'auto': faiss where it is
    installed and the problem is as large as where it measured faster on a CPU (about 1,000
    clusters of 100,000 points; docs/clustering.md), else scikit-learn. Both draw the k-means++
    seeds from `random_state` alike and stop alike (centre shift below `tol` times the mean
    feature variance, or no label changed), so they agree up to rounding, and each gives the same
    result for the same seed. A cluster gone empty is moved to the point farthest from its
    centre, which plays the role of DeepCluster's empty-cluster splitting.

    init: 'k-means++' (the best of n_init seeded starts), or an (n_clusters, features) array of
    starting centres, then one run (n_init is ignored): the loop's warm start (`kmeans_warm`).

    Fitted attributes: labels_, cluster_centers_, inertia_, n_iter_ (of the best run),
    backend_ (the backend used).
    """

    def __init__(self, n_clusters: int = 10, *, n_init: int = 5, max_iter: int = 100,
                 tol: float = 1e-4, backend: str = "auto", random_state: Any = 0,
                 init: str | np.ndarray = "k-means++"):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.backend = backend
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> Self:
        _check_int("n_init", self.n_init, 1)
        _check_int("max_iter", self.max_iter, 1)
        if not (isinstance(self.tol, numbers.Real) and 0 <= self.tol < float("inf")):
            raise DeepSTDPError(f"tol must be non-negative, got {self.tol!r}")
        if self.backend not in KMEANS_BACKENDS:
            raise DeepSTDPError(f"unknown k-means backend {self.backend!r}: use "
                                f"{', '.join(KMEANS_BACKENDS)}")
        x = self._validate_fit_input(X)
        start = self._start(x.shape[1])
        n_init = self.n_init if start is None else 1
        self.backend_ = _choose_backend(self.backend, *x.shape, self.n_clusters)
        if self.backend_ == "faiss":
            centers, labels, inertia, n_iter = _faiss_kmeans(
                x, self.n_clusters, n_init, self.max_iter, self.tol, self.random_state, start)
        else:
            km = KMeans(self.n_clusters, n_init=n_init, max_iter=self.max_iter, tol=self.tol,
                        random_state=self.random_state,
                        init="k-means++" if start is None else start).fit(x)
            centers, labels, inertia, n_iter = (km.cluster_centers_, km.labels_, km.inertia_,
                                                km.n_iter_)
        self.cluster_centers_ = centers.astype(np.float32)
        self.labels_ = labels.astype(np.int64)
        self.inertia_, self.n_iter_ = float(inertia), int(n_iter)
        return self

    def _start(self, n_features: int) -> np.ndarray | None:
        """The starting centres `init` gives, checked; None for k-means++ starts."""
        if isinstance(self.init, str):
            if self.init != "k-means++":
                raise DeepSTDPError(f"init must be 'k-means++' or an array of centres, got "
                                    f"{self.init!r}")
            return None
        start = np.asarray(self.init, dtype=np.float32)
        if start.shape != (self.n_clusters, n_features) or not np.isfinite(start).all():
            raise DeepSTDPError(f"init must hold {self.n_clusters} finite centres of "
                                f"{n_features} features, got an array of shape {start.shape}")
        return start

    def predict(self, X: Any) -> np.ndarray:
        x = self._validate_input(X)
        return pairwise_distances_argmin(x, self.cluster_centers_).astype(np.int64)

    def margin(self, X: Any) -> np.ndarray:
        """Squared distance to the second-nearest centre minus that to the nearest."""
        x = self._validate_input(X)
        if self.n_clusters == 1:
            return np.zeros(len(x))
        d2 = euclidean_distances(x.astype(np.float64), self.cluster_centers_.astype(np.float64),
                                 squared=True)
        two = np.partition(d2, 1, axis=1)[:, :2]
        return (two[:, 1] - two[:, 0]).astype(np.float64)

    def diagnostics(self) -> dict[str, Any]:
        """Scalars for the training log: the Lloyd iterations of the last fit (of its best
        start), which tells whether a warm start converges sooner or runs into max_iter."""
        return {"kmeans_iterations": self.n_iter_} if hasattr(self, "n_iter_") else {}

    def state_dict(self) -> dict[str, Any]:
        if not hasattr(self, "labels_"):
            return {}
        return state_tensors({"labels": self.labels_, "centers": self.cluster_centers_})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.labels_ = state_array(state["labels"], np.int64)
            self.cluster_centers_ = state_array(state["centers"], np.float32)
            self.n_features_in_ = self.cluster_centers_.shape[1]


def _choose_backend(backend: str, n_samples: int, n_features: int, n_clusters: int) -> str:
    if backend == "faiss":
        _import_faiss()  # fails with the install hint before any work
        return backend
    if backend == "sklearn" or (n_samples * n_clusters * n_features < FAISS_MIN_WORK
                                or n_clusters < FAISS_MIN_CLUSTERS):
        return "sklearn"
    try:
        _import_faiss()
    except DeepSTDPError:
        return "sklearn"
    return "faiss"


# OpenBLAS core types newer than faiss-cpu's bundled OpenBLAS 0.3.15, and the closest it knows.
_OLD_OPENBLAS_CORE = {"sapphirerapids": "SkylakeX"}


def _import_faiss() -> ModuleType:
    """faiss, loaded so that its bundled OpenBLAS uses this CPU's kernels.

    faiss-cpu's wheels bundle OpenBLAS 0.3.15, which takes CPUs newer than itself for a
    Pentium 4 ('Prescott', SSE3 kernels: faiss's k-means iterations took 1.6x (10 clusters) to
    3.8x (1,000) the CPU time on this project's Xeon, docs/clustering.md). Unless
    OPENBLAS_CORETYPE is set, it is set, while faiss loads, to the core type that numpy's newer
    OpenBLAS detected.
    """
    core = None
    if "faiss" not in sys.modules and "OPENBLAS_CORETYPE" not in os.environ:
        from threadpoolctl import threadpool_info

        arch = next((i["architecture"] for i in threadpool_info()
                     if i.get("internal_api") == "openblas" and i.get("architecture")), None)
        if arch is not None and arch != "Prescott":
            core = _OLD_OPENBLAS_CORE.get(arch.lower(), arch)
            os.environ["OPENBLAS_CORETYPE"] = core
    try:
        import faiss
    except ImportError:
        raise DeepSTDPError("the faiss k-means backend needs faiss: pip install faiss-cpu "
                            "(or 'deepstdp[faiss]')") from None
    finally:
        if core is not None:
            del os.environ["OPENBLAS_CORETYPE"]
    return faiss


def _faiss_kmeans(x: np.ndarray, k: int, n_init: int, max_iter: int, tol: float,
                  random_state: Any, start: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, float, int]:
    """scikit-learn's k-means with faiss's exhaustive search assigning the points.

    As scikit-learn's KMeans: the data centred (float32 distances lose less to cancellation),
    greedy k-means++ seeds drawn in turn from one random stream, Lloyd iterations until no label
    changes or the centres move less than tol times the mean feature variance, a final
    assignment to the last centres, and the run of least inertia kept. `start`: one run from
    these centres instead of k-means++ seeds.
    """
    faiss = _import_faiss()
    mean = x.mean(axis=0)
    x = x - mean
    x_sq = row_norms(x, squared=True)
    tol = tol * float(x_sq.sum(dtype=np.float64)) / x.size  # the mean feature variance
    rng = check_random_state(random_state)
    index = faiss.IndexFlatL2(x.shape[1])
    if faiss.get_num_gpus():
        index = faiss.index_cpu_to_all_gpus(index)

    def assign(centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        index.reset()
        index.add(centers)
        dist, labels = index.search(x, 1)
        return dist[:, 0], labels[:, 0]

    best: tuple[np.ndarray, np.ndarray, float, int] | None = None
    for _ in range(n_init):
        centers = kmeans_plusplus(x, k, x_squared_norms=x_sq, random_state=rng)[0] \
            if start is None else start - mean
        labels, n_iter, done = None, 0, False
        while not done and n_iter < max_iter:
            n_iter += 1
            dist, new_labels = assign(centers)
            new_centers = _means(x, new_labels, dist, k)
            done = (float(((new_centers - centers) ** 2).sum()) <= tol
                    or labels is not None and np.array_equal(labels, new_labels))
            centers, labels = new_centers, new_labels
        dist, labels = assign(centers)
        inertia = float(dist.sum(dtype=np.float64))
        if best is None or inertia < best[2]:
            best = (centers + mean, labels, inertia, n_iter)
    assert best is not None  # n_init >= 1
    return best


def _means(x: np.ndarray, labels: np.ndarray, dist: np.ndarray, k: int) -> np.ndarray:
    """Cluster means; an empty cluster's centre moves to a point far from its own centre."""
    n = len(x)
    members = sp.csr_matrix((np.ones(n, np.float32), (labels, np.arange(n))), shape=(k, n))
    counts = np.bincount(labels, minlength=k)
    centers = np.asarray(members @ x, dtype=np.float32)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        far = np.argpartition(dist, -len(empty))[-len(empty):]
        centers[empty], counts[empty] = x[far], 1
    return np.ascontiguousarray(centers / counts[:, None], dtype=np.float32)
