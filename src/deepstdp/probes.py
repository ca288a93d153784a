"""Whether the features learn, apart from any clustering: k-NN and a linear probe.

Both read the true labels, which training never sees: they are diagnostics of the features, the
standard yardsticks of self-supervised learning (k-NN as in Wu et al. 2018, the linear probe as
in DeepCluster's evaluation), and they do not depend on which clusterer made the pseudo-labels.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from deepstdp.util import DeepSTDPError


def _check(train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray) -> None:
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
        raise DeepSTDPError(f"feature shapes {train.shape} and {test.shape} do not match")
    if len(train) != len(y_train) or len(test) != len(y_test):
        raise DeepSTDPError("each feature row needs one label")


def knn_accuracy(train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray,
                 k: int = 20, temperature: float = 0.07) -> float:
    """Accuracy of labelling each test row by its k most cosine-similar train rows.

    Votes are weighted by exp(similarity / temperature), the weighted k-NN of Wu et al. (2018)
    that self-supervised papers report, so near neighbours count more than the k-th.
    """
    _check(train, y_train, test, y_test)
    a = torch.nn.functional.normalize(torch.as_tensor(train, dtype=torch.float32), dim=1)
    b = torch.nn.functional.normalize(torch.as_tensor(test, dtype=torch.float32), dim=1)
    sim, idx = (b @ a.T).topk(min(k, len(a)), dim=1)
    labels = torch.as_tensor(y_train, dtype=torch.int64)[idx]
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    votes = torch.zeros(len(b), n_classes).scatter_add_(1, labels, (sim / temperature).exp())
    return float((votes.argmax(1).numpy() == np.asarray(y_test)).mean())


def linear_probe_accuracy(train: np.ndarray, y_train: np.ndarray, test: np.ndarray,
                          y_test: np.ndarray, c: float = 0.1, max_iter: int = 300) -> float:
    """Test accuracy of a logistic regression fit on standardised, frozen train features.

    The L2 strength `c` (scikit-learn's C) is fixed, not tuned on the test rows, so the number
    stays a diagnostic rather than a model selection; lbfgs is deterministic.
    """
    _check(train, y_train, test, y_test)
    scaler = StandardScaler().fit(train)
    clf = LogisticRegression(C=c, max_iter=max_iter).fit(scaler.transform(train), y_train)
    return float(clf.score(scaler.transform(test), y_test))
