"""Feature post-processing and the clusterer interface (DeepCluster's `clustering.py`).

`PCAWhitening`, `KMeansClustering` and every `Clusterer` are scikit-learn estimators: they
clone, go in a `Pipeline` and are tuned by `GridSearchCV` (the first two pass `check_estimator`
with no expected failures), and k-means and the spiking layer swap by one argument. On top of
scikit-learn's API they have `state_dict`/`load_state_dict` for checkpoints
(docs/clustering.md).
"""

from __future__ import annotations

import numbers
import os
import sys
from abc import ABCMeta, abstractmethod
from types import ModuleType
from typing import Any, Self

import numpy as np
import scipy.sparse as sp
import sklearn.exceptions
import torch
from numpy.typing import DTypeLike
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
)
from sklearn.cluster import KMeans, kmeans_plusplus
from sklearn.metrics import euclidean_distances, pairwise_distances_argmin
from sklearn.utils import check_random_state
from sklearn.utils.extmath import row_norms
from sklearn.utils.validation import check_is_fitted, validate_data

from deepstdp.config import KMEANS_BACKENDS
from deepstdp.util import DeepSTDPError

# 'auto' picks faiss from this many multiply-adds per Lloyd iteration (samples x clusters x
# features, here 100,000 x 1,000 x 256) and this many clusters, where its Lloyd iterations took
# 5-19% less CPU time than scikit-learn's; at 100 clusters they took 1.3-1.6x more, and whole
# fits of 10-200 clusters were no faster (benchmarks/bench_kmeans.py, docs/clustering.md).
FAISS_MIN_WORK = 25 * 10**9
FAISS_MIN_CLUSTERS = 1000


class NotFittedError(DeepSTDPError, sklearn.exceptions.NotFittedError):
    """A method that needs a fitted estimator was called before `fit`: a DeepSTDPError for the
    CLI's one-line errors and scikit-learn's NotFittedError for its tools."""


def state_tensors(value: Any) -> Any:
    """`value` with numpy arrays as torch tensors and numpy scalars as Python ones, through
    dicts, lists and tuples, so a checkpoint holding it loads with torch.load(weights_only=True).
    Subclasses build their `state_dict` with it."""
    if isinstance(value, np.ndarray):
        return torch.tensor(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: state_tensors(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(state_tensors(v) for v in value)
    return value


def state_array(value: Any, dtype: DTypeLike | None = None) -> np.ndarray:
    """A state entry as a numpy array: a tensor, or the numpy array of an older checkpoint."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def _validate(est: BaseEstimator, x: Any, reset: bool, dtype: DTypeLike) -> np.ndarray:
    """scikit-learn's input validation (2-D, finite, numeric, `n_features_in_` set on reset or
    checked), also for torch tensors, its errors as one-line DeepSTDPErrors: the first line of
    scikit-learn's message (not its dump of the data or advice on imputers), and the reshape
    hint of a 1-D input."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().numpy()
    try:
        return validate_data(est, x, reset=reset, dtype=dtype)
    except ValueError as e:
        first, *rest = str(e).splitlines()
        hint = [line for line in rest if line.startswith("Reshape your data")]
        raise DeepSTDPError(" ".join([first, *hint])) from None


def _check_fitted(est: BaseEstimator) -> None:
    try:
        check_is_fitted(est)
    except sklearn.exceptions.NotFittedError:
        raise NotFittedError(f"{type(est).__name__} must be fitted before this call") from None


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise DeepSTDPError(f"{name} must be an integer >= {low}, got {value!r}")


class PCAWhitening(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """PCA to `n_components`, whitening, then L2 normalisation, as DeepCluster does.

    Whitening gives each retained direction unit variance, so that k-means (and the spiking
    layer's input rates) are not dominated by the few directions with the largest variance.
    The default, 32, is the pipeline's (TrainConfig.pca_dim: DeepCluster's 256 lifts noise on
    sets of a few thousand images). The output is float32 whatever the input.

    Fitted attributes: mean_, components_ (n_components_, n_features_in_), scale_ (per
    component), rotation_ (identity unless `align_to` turned the axes), n_components_
    (n_components capped by the sample count and feature width).
    """

    def __init__(self, n_components: int = 32, eps: float = 1e-5):
        self.n_components = n_components
        self.eps = eps

    def fit(self, X: Any, y: Any = None) -> Self:
        _check_int("n_components", self.n_components, 1)
        if not (isinstance(self.eps, numbers.Real) and 0 < self.eps < float("inf")):
            raise DeepSTDPError(f"eps must be positive, got {self.eps!r}")
        x = _validate(self, X, reset=True, dtype=np.float64)
        self.mean_ = x.mean(axis=0)
        # SVD of the centred data: right singular vectors are the principal axes.
        _, s, vt = np.linalg.svd(x - self.mean_, full_matrices=False)
        n = int(min(self.n_components, *x.shape))
        var = s[:n] ** 2 / max(len(x) - 1, 1)
        # SVD leaves each axis's sign arbitrary; fix it (largest loading positive, as
        # scikit-learn's svd_flip) so that a refit on similar features keeps its orientation,
        # which a spiking layer carried over between epochs relies on.
        vt = vt[:n]
        vt *= np.sign(vt[np.arange(n), np.abs(vt).argmax(axis=1)])[:, None]
        self.components_ = vt
        self.scale_ = 1.0 / np.sqrt(var + self.eps)
        self.rotation_ = np.eye(n)
        self.n_components_ = n
        return self

    def align_to(self, previous: PCAWhitening, X: Any) -> Self:
        """Rotate this fit's whitened axes onto `previous`'s, as seen on the samples X.

        Each epoch's refit orders and orients its axes afresh, so a spiking layer carried over
        from the last epoch would meet its inputs in a new basis. The rotation R minimising
        |A R - B| over orthogonal matrices (Procrustes: R = U V^T from the SVD of A^T B, with A
        and B the samples whitened by this fit and by `previous`) keeps the whitening and puts
        the axes where the layer learnt them.
        """
        _check_fitted(self)
        _check_fitted(previous)
        if previous.n_components_ != self.n_components_:
            return self
        x = _validate(self, X, reset=False, dtype=np.float64)
        u, _, vt = np.linalg.svd(self._whiten(x).T @ previous._whiten(x))
        self.rotation_ = self.rotation_ @ (u @ vt)
        return self

    def _whiten(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean_) @ self.components_.T * self.scale_ @ self.rotation_

    def transform(self, X: Any) -> np.ndarray:
        _check_fitted(self)
        z = self._whiten(_validate(self, X, reset=False, dtype=np.float64))
        z /= np.linalg.norm(z, axis=1, keepdims=True) + 1e-12
        return z.astype(np.float32)

    @property
    def _n_features_out(self) -> int:
        """Output width, for get_feature_names_out (pcawhitening0, pcawhitening1, ...)."""
        return self.n_components_

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    def state_dict(self) -> dict[str, Any]:
        _check_fitted(self)
        return state_tensors({"n_components": self.n_components, "eps": self.eps,
                              "mean": self.mean_, "components": self.components_,
                              "scale": self.scale_, "rotation": self.rotation_})

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> PCAWhitening:
        """Rebuild a fitted whitening from `state_dict`, or from a checkpoint of deepstdp 0.2
        (numpy arrays, `dim` for n_components, no rotation when unaligned)."""
        pca = cls(int(state.get("n_components", state.get("dim"))), float(state["eps"]))
        pca.mean_ = state_array(state["mean"], np.float64)
        pca.components_ = state_array(state["components"], np.float64)
        pca.scale_ = state_array(state["scale"], np.float64)
        pca.n_components_, pca.n_features_in_ = pca.components_.shape
        pca.rotation_ = (state_array(state["rotation"], np.float64) if "rotation" in state
                         else np.eye(pca.n_components_))
        return pca


class Clusterer(ClusterMixin, BaseEstimator, metaclass=ABCMeta):
    """What the training loop needs of a clusterer: a scikit-learn clusterer with checkpoints.

    Subclasses implement `fit(X, y=None)`, which sets `labels_`, and `predict(X)`;
    `fit_predict` comes from ClusterMixin. `state_dict()` holds torch tensors and plain Python
    values only (build it with `state_tensors`), so a checkpoint holding it loads with
    torch.load(weights_only=True); `load_state_dict` also takes the numpy arrays of older
    checkpoints (read entries with `state_array`). Inputs are validated by
    `_validate_fit_input` (fit) and `_validate_input` (predict, partial_fit).
    """

    n_clusters: int

    @abstractmethod
    def fit(self, X: Any, y: Any = None) -> Self: ...

    @abstractmethod
    def predict(self, X: Any) -> np.ndarray: ...

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything `predict` and a later fit need; {} when unfitted."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def margin(self, X: Any) -> np.ndarray:
        """How sure the fitted clusterer is of each sample's cluster, larger is surer, ranking
        samples within a clusterer (the loop's target_keep keeps the surest targets by it).
        Optional: a clusterer without one cannot be used with target_keep < 1."""
        raise DeepSTDPError(f"{type(self).__name__} has no margin, which keeping only the "
                            "surest targets needs")

    def _validate_fit_input(self, X: Any) -> np.ndarray:
        """X as float32 (samples, features), setting n_features_in_; checks that n_clusters
        is a positive integer and that there are at least n_clusters samples."""
        _check_int("n_clusters", self.n_clusters, 1)
        x = _validate(self, X, reset=True, dtype=np.float32)
        if len(x) < self.n_clusters:
            raise DeepSTDPError(f"cannot form {self.n_clusters} clusters from {len(x)} samples")
        return x

    def _validate_input(self, X: Any) -> np.ndarray:
        """X for a fitted clusterer as float32, with the width it was fitted on."""
        _check_fitted(self)
        return _validate(self, X, reset=False, dtype=np.float32)


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

    Fitted attributes: labels_, cluster_centers_, inertia_, n_iter_ (of the best run),
    backend_ (the backend used).
    """

    def __init__(self, n_clusters: int = 10, *, n_init: int = 5, max_iter: int = 100,
                 tol: float = 1e-4, backend: str = "auto", random_state: Any = 0):
        self.n_clusters = n_clusters
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
        self.backend_ = _choose_backend(self.backend, *x.shape, self.n_clusters)
        if self.backend_ == "faiss":
            centers, labels, inertia, n_iter = _faiss_kmeans(
                x, self.n_clusters, self.n_init, self.max_iter, self.tol, self.random_state)
        else:
            km = KMeans(self.n_clusters, n_init=self.n_init, max_iter=self.max_iter,
                        tol=self.tol, random_state=self.random_state).fit(x)
            centers, labels, inertia, n_iter = (km.cluster_centers_, km.labels_, km.inertia_,
                                                km.n_iter_)
        self.cluster_centers_ = centers.astype(np.float32)
        self.labels_ = labels.astype(np.int64)
        self.inertia_, self.n_iter_ = float(inertia), int(n_iter)
        return self

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
                  random_state: Any) -> tuple[np.ndarray, np.ndarray, float, int]:
    """scikit-learn's k-means with faiss's exhaustive search assigning the points.

    As scikit-learn's KMeans: the data centred (float32 distances lose less to cancellation),
    greedy k-means++ seeds drawn in turn from one random stream, Lloyd iterations until no label
    changes or the centres move less than tol times the mean feature variance, a final
    assignment to the last centres, and the run of least inertia kept.
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
        centers = kmeans_plusplus(x, k, x_squared_norms=x_sq, random_state=rng)[0]
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
