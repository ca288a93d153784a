import numpy as np
import pytest
import torch

from deepstdp import KMeansClustering, PCAWhitening
from deepstdp.targets import uniform_sample
from deepstdp.util import DeepSTDPError


def correlated(n=500, d=20, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 3 + 5


def test_pca_whitening_decorrelates_then_normalises():
    x = correlated()
    pca = PCAWhitening(dim=8).fit(x)
    # Before the L2 step the projection has identity covariance.
    z = (x - pca.mean_) @ pca.components_.T * pca.scale_
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(8), atol=1e-3)
    out = pca.transform(x)
    assert out.shape == (500, 8) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_pca_dim_is_capped_by_samples_and_features():
    assert PCAWhitening(256).fit(correlated(n=30, d=20)).dim_ == 20
    assert PCAWhitening(256).fit(correlated(n=12, d=20)).dim_ == 12


def test_pca_state_round_trip():
    x = correlated()
    pca = PCAWhitening(6).fit(x)
    again = PCAWhitening.from_state_dict(pca.state_dict())
    np.testing.assert_array_equal(pca.transform(x), again.transform(x))


def blobs(seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, 5)) * 10
    y = np.repeat(np.arange(4), 50)
    return (centres[y] + rng.normal(size=(200, 5))).astype(np.float32), y


def test_kmeans_recovers_blobs_and_accepts_torch():
    from deepstdp.metrics import cluster_acc

    x, y = blobs()
    km = KMeansClustering(4, seed=0)
    assert cluster_acc(y, km.fit_predict(torch.from_numpy(x))) == 1.0
    np.testing.assert_array_equal(km.predict(x), km.labels_)


def test_kmeans_is_seeded():
    x, _ = blobs(1)
    a = KMeansClustering(6, seed=3).fit_predict(x)
    b = KMeansClustering(6, seed=3).fit_predict(x)
    np.testing.assert_array_equal(a, b)


def test_kmeans_never_leaves_a_cluster_empty():
    x = np.repeat(np.eye(3, dtype=np.float32), [50, 1, 1], axis=0)  # 3 distinct points
    labels = KMeansClustering(3, seed=0).fit_predict(x)
    assert np.bincount(labels, minlength=3).min() > 0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: KMeansClustering(1), "at least 2"),
        (lambda: KMeansClustering(5).fit(np.zeros((3, 2))), "3 samples cannot form 5"),
        (lambda: KMeansClustering(2).fit(np.array([[0.0, np.nan], [1, 1], [2, 2]])), "NaN"),
        (lambda: KMeansClustering(2).predict(np.zeros((3, 2))), "fitted"),
        (lambda: KMeansClustering(2).fit(np.zeros(5)), "2-D"),
        (lambda: KMeansClustering(2).fit(blobs()[0]).predict(np.zeros((3, 2))), "expects 5"),
    ],
)
def test_clusterer_errors(call, message):
    with pytest.raises(DeepSTDPError, match=message):
        call()


def test_uniform_sample_balances_clusters():
    labels = np.array([0] * 900 + [1] * 90 + [3] * 10)  # cluster 2 empty
    idx = uniform_sample(labels, 999, np.random.default_rng(0))
    counts = np.bincount(labels[idx], minlength=4)
    assert len(idx) == 999
    assert counts[2] == 0
    assert counts[[0, 1, 3]].min() >= 332 and counts.max() <= 333


def test_pca_refit_keeps_axis_orientation():
    """A refit on the same features in another order gives the same whitened features, so a
    spiking layer carried over between epochs sees a stable input space."""
    x = correlated()
    a = PCAWhitening(8).fit(x).transform(x)
    b = PCAWhitening(8).fit(x[::-1].copy()).transform(x)
    np.testing.assert_allclose(a, b, atol=1e-5)
    largest = np.abs(PCAWhitening(8).fit(x).components_).argmax(axis=1)
    assert (PCAWhitening(8).fit(x).components_[np.arange(8), largest] > 0).all()


def test_pca_alignment_undoes_a_rotation_of_the_basis():
    x = correlated()
    a = PCAWhitening(6).fit(x)
    b = PCAWhitening.from_state_dict(a.state_dict())
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(6, 6)))
    b.rotation_ = q  # the same subspace, its axes turned and mixed, as a refit may give
    assert np.abs(b.transform(x) - a.transform(x)).max() > 0.1
    b.align_to(a, x)
    np.testing.assert_allclose(b.transform(x), a.transform(x), atol=1e-5)
    # Whitening survives the rotation: identity covariance before the L2 step.
    np.testing.assert_allclose(np.cov(b._whiten(x), rowvar=False), np.eye(6), atol=1e-3)
    again = PCAWhitening.from_state_dict(b.state_dict())
    np.testing.assert_array_equal(again.transform(x), b.transform(x))
