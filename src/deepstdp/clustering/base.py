"""The clusterer interface every clusterer of the loop implements, and the helpers they share.

Every clusterer is a scikit-learn estimator: it clones, goes in a `Pipeline` and is tuned by
`GridSearchCV`, and k-means and the spiking layer swap by one argument. On top of scikit-learn's
API each has `state_dict`/`load_state_dict` for checkpoints (docs/clustering.md).
"""

from __future__ import annotations

import numbers
from abc import ABCMeta, abstractmethod
from typing import Any, Self

import numpy as np
import sklearn.exceptions
import torch
from numpy.typing import DTypeLike
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from deepstdp.runtime.util import DeepSTDPError


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
