"""Feature post-processing and the clusterer interface (DeepCluster's `clustering.py`).

Every clusterer follows scikit-learn's estimator API (`fit`, `predict`, `fit_predict`,
`n_clusters`, `labels_`) plus `state_dict`/`load_state_dict` for checkpoints, so k-means and the
spiking layer swap by one argument.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Self

import numpy as np
import torch
from sklearn.cluster import KMeans

from deepstdp.util import DeepSTDPError


def as_features(x: Any, n_features: int | None = None, name: str = "features") -> np.ndarray:
    """Validate a (samples, features) float array from numpy or torch; float32, C-contiguous."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().numpy()
    x = np.asarray(x)
    if x.ndim != 2:
        raise DeepSTDPError(f"{name} must be 2-D (samples, features), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise DeepSTDPError(f"{name} must be numeric, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise DeepSTDPError(f"{name} contain NaN or infinite values")
    if n_features is not None and x.shape[1] != n_features:
        raise DeepSTDPError(
            f"{name} have {x.shape[1]} dimensions, the fitted model expects {n_features}")
    return x


class PCAWhitening:
    """PCA to `dim` components, whitening, then L2 normalisation, as DeepCluster does.

    Whitening gives each retained direction unit variance, so that k-means (and the spiking
    layer's input rates) are not dominated by the few directions with the largest variance.
    """

    def __init__(self, dim: int = 256, eps: float = 1e-5):
        self.dim = dim
        self.eps = eps

    def fit(self, x: Any) -> Self:
        x = as_features(x).astype(np.float64)
        self.mean_ = x.mean(axis=0)
        # SVD of the centred data: right singular vectors are the principal axes.
        _, s, vt = np.linalg.svd(x - self.mean_, full_matrices=False)
        self.dim_ = int(min(self.dim, *x.shape))
        var = s[: self.dim_] ** 2 / max(len(x) - 1, 1)
        # SVD leaves each axis's sign arbitrary; fix it (largest loading positive, as
        # scikit-learn's svd_flip) so that a refit on similar features keeps its orientation,
        # which a spiking layer carried over between epochs relies on.
        vt = vt[: self.dim_]
        vt *= np.sign(vt[np.arange(self.dim_), np.abs(vt).argmax(axis=1)])[:, None]
        self.components_ = vt
        self.scale_ = 1.0 / np.sqrt(var + self.eps)
        self.rotation_ = np.eye(self.dim_)
        return self

    def align_to(self, previous: PCAWhitening, x: Any) -> Self:
        """Rotate this fit's whitened axes onto `previous`'s, as seen on the samples x.

        Each epoch's refit orders and orients its axes afresh, so a spiking layer carried over
        from the last epoch would meet its inputs in a new basis. The rotation R minimising
        |A R - B| over orthogonal matrices (Procrustes: R = U V^T from the SVD of A^T B, with A
        and B the samples whitened by this fit and by `previous`) keeps the whitening and puts
        the axes where the layer learnt them.
        """
        if previous.dim_ != self.dim_:
            return self
        x = as_features(x, n_features=self.mean_.shape[0]).astype(np.float64)
        u, _, vt = np.linalg.svd(self._whiten(x).T @ previous._whiten(x))
        self.rotation_ = self.rotation_ @ (u @ vt)
        return self

    def _whiten(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean_) @ self.components_.T * self.scale_ @ self.rotation_

    def transform(self, x: Any) -> np.ndarray:
        x = as_features(x, n_features=self.mean_.shape[0]).astype(np.float64)
        z = self._whiten(x)
        z /= np.linalg.norm(z, axis=1, keepdims=True) + 1e-12
        return z.astype(np.float32)

    def fit_transform(self, x: Any) -> np.ndarray:
        return self.fit(x).transform(x)

    def state_dict(self) -> dict[str, Any]:
        return {"dim": self.dim, "eps": self.eps, "mean": self.mean_,
                "components": self.components_, "scale": self.scale_, "rotation": self.rotation_}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> PCAWhitening:
        pca = cls(state["dim"], state["eps"])
        pca.mean_, pca.components_, pca.scale_ = state["mean"], state["components"], state["scale"]
        pca.dim_ = len(pca.components_)
        pca.rotation_ = np.asarray(state.get("rotation", np.eye(pca.dim_)))  # none: unaligned
        return pca


class Clusterer(ABC):
    """What the training loop needs of a clusterer; subclasses set `labels_` in `fit`."""

    n_clusters: int
    labels_: np.ndarray

    @abstractmethod
    def fit(self, x: Any) -> Self: ...

    @abstractmethod
    def predict(self, x: Any) -> np.ndarray: ...

    def fit_predict(self, x: Any) -> np.ndarray:
        return self.fit(x).labels_

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything `predict` and a later `fit` need, as numpy arrays and Python scalars."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def _check_fit_input(self, x: Any) -> np.ndarray:
        x = as_features(x)
        if len(x) < self.n_clusters:
            raise DeepSTDPError(f"{len(x)} samples cannot form {self.n_clusters} clusters")
        return x

    def _check_fitted(self) -> None:
        if not hasattr(self, "labels_"):
            raise DeepSTDPError(f"{type(self).__name__} must be fitted before predict")


class KMeansClustering(Clusterer):
    """k-means (Lloyd, k-means++ init, best of `n_init` runs) on all points, no subsampling.

    scikit-learn relocates a cluster that goes empty to the point farthest from its centre,
    which plays the role of DeepCluster's empty-cluster splitting.
    """

    def __init__(self, n_clusters: int, seed: int = 0, n_init: int = 5, max_iter: int = 100):
        if n_clusters < 2:
            raise DeepSTDPError(f"n_clusters must be at least 2, got {n_clusters}")
        self.n_clusters = n_clusters
        self.seed = seed
        self.n_init = n_init
        self.max_iter = max_iter

    def fit(self, x: Any) -> Self:
        x = self._check_fit_input(x)
        km = KMeans(self.n_clusters, n_init=self.n_init, max_iter=self.max_iter,
                    random_state=self.seed)
        self.labels_ = km.fit_predict(x).astype(np.int64)
        self.cluster_centers_ = km.cluster_centers_.astype(np.float32)
        self.inertia_ = float(km.inertia_)
        return self

    def predict(self, x: Any) -> np.ndarray:
        self._check_fitted()
        x = as_features(x, n_features=self.cluster_centers_.shape[1])
        d = ((x[:, None, :] - self.cluster_centers_[None]) ** 2).sum(-1)
        return d.argmin(axis=1).astype(np.int64)

    def state_dict(self) -> dict[str, Any]:
        if not hasattr(self, "labels_"):
            return {}
        return {"labels": self.labels_, "centers": self.cluster_centers_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.labels_ = np.asarray(state["labels"])
            self.cluster_centers_ = np.asarray(state["centers"])
