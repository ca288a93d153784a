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

from deepstdp.runtime.util import DeepSTDPError

# At 200 classes (100,000 train x 10,000 test rows) the k-NN's whole similarity matrix took
# 3.9 GiB and the probe on every train row 15 min of a busy 2-core machine (docs/pipeline.md,
# "Scaling"). The k-NN therefore compares with at most this many similarities at once...
KNN_BLOCK = 2**26
# ...and the probe fits on at most this many train rows, spread evenly over the classes.
PROBE_MAX_TRAIN = 10_000


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
    y = torch.as_tensor(y_train, dtype=torch.int64)
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    votes = torch.zeros(len(b), n_classes)
    rows = max(1, KNN_BLOCK // len(a))
    for i in range(0, len(b), rows):
        sim, idx = (b[i:i + rows] @ a.T).topk(min(k, len(a)), dim=1)
        votes[i:i + rows].scatter_add_(1, y[idx], (sim / temperature).exp())
    return float((votes.argmax(1).numpy() == np.asarray(y_test)).mean())


def linear_probe_accuracy(train: np.ndarray, y_train: np.ndarray, test: np.ndarray,
                          y_test: np.ndarray, c: float = 0.1, max_iter: int = 300,
                          max_train: int = PROBE_MAX_TRAIN) -> float:
    """Test accuracy of a logistic regression fit on standardised, frozen train features.

    The L2 strength `c` (scikit-learn's C) is fixed, not tuned on the test rows, so the number
    stays a diagnostic rather than a model selection; lbfgs is deterministic. With more than
    `max_train` train rows it fits on `max_train` of them, evenly spaced within the rows
    sorted by class (so each class keeps its share), deterministically.
    """
    _check(train, y_train, test, y_test)
    if len(train) > max_train:
        by_class = np.argsort(y_train, kind="stable")
        keep = np.sort(by_class[np.linspace(0, len(train) - 1, max_train).round().astype(int)])
        train, y_train = train[keep], y_train[keep]
    scaler = StandardScaler().fit(train)
    clf = LogisticRegression(C=c, max_iter=max_iter).fit(scaler.transform(train), y_train)
    return float(clf.score(scaler.transform(test), y_test))
