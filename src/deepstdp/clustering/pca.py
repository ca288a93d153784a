"""PCA whitening of the features before they are clustered (DeepCluster's `preprocess_features`).

`PCAWhitening` is a scikit-learn transformer (it passes `check_estimator` with no expected
failures) with `state_dict`/`from_state_dict` for checkpoints (docs/clustering.md).
"""

from __future__ import annotations

import numbers
from typing import Any, Self

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin

from deepstdp.clustering.base import (
    _check_fitted,
    _check_int,
    _validate,
    state_array,
    state_tensors,
)
from deepstdp.runtime.util import DeepSTDPError


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
