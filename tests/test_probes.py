"""The probes' bounds for large sets: the k-NN in blocks of test rows, the probe on a subsample."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from deepstdp.measures import probes


def overlapping(n_train: int, n_test: int, classes: int = 4, d: int = 8):
    """Train and test rows of classes that overlap enough that the probes err on some rows."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, classes, n_train + n_test)
    x = (rng.normal(size=(classes, d))[y] + rng.normal(size=(len(y), d))).astype(np.float32)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def test_knn_in_blocks_matches_the_whole_matrix(monkeypatch):
    x, y, xt, yt = overlapping(400, 150)
    whole = probes.knn_accuracy(x, y, xt, yt, k=10)
    assert 0.4 < whole < 0.95
    monkeypatch.setattr(probes, "KNN_BLOCK", 400 * 7)  # blocks of 7 test rows, one shorter
    assert probes.knn_accuracy(x, y, xt, yt, k=10) == whole


def test_probe_fits_on_an_even_share_of_each_class(monkeypatch):
    x, y, xt, yt = overlapping(1000, 300)
    seen = []

    class Recording(LogisticRegression):
        def fit(self, features, labels):
            seen.append(labels)
            return super().fit(features, labels)

    monkeypatch.setattr(probes, "LogisticRegression", Recording)
    full = probes.linear_probe_accuracy(x, y, xt, yt)
    assert probes.linear_probe_accuracy(x, y, xt, yt, max_train=1000) == full
    sub = probes.linear_probe_accuracy(x, y, xt, yt, max_train=200)
    assert len(seen[0]) == len(seen[1]) == 1000 and len(seen[2]) == 200
    share = np.bincount(seen[2], minlength=4) / 200
    np.testing.assert_allclose(share, np.bincount(y, minlength=4) / 1000, atol=0.01)
    assert abs(sub - full) < 0.1
    assert probes.linear_probe_accuracy(x, y, xt, yt, max_train=200) == sub  # deterministic
