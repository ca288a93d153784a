import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import sklearn.exceptions
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.metrics import adjusted_rand_score, make_scorer
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import check_estimator

from deepstdp import KMeansClustering, PCAWhitening
from deepstdp.clustering import kmeans as clustering_module
from deepstdp.clustering.base import NotFittedError
from deepstdp.config import KMEANS_BACKENDS, RULES, TrainConfig
from deepstdp.loop.targets import uniform_sample
from deepstdp.measures.metrics import cluster_acc
from deepstdp.registry import make_clusterer
from deepstdp.runtime.util import DeepSTDPError


def correlated(n=500, d=20, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 3 + 5


def blobs(seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, 5)) * 10
    y = np.repeat(np.arange(4), 50)
    return (centres[y] + rng.normal(size=(200, 5))).astype(np.float32), y


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return d.data, d.target


HAVE_FAISS = importlib.util.find_spec("faiss") is not None
if HAVE_FAISS:  # loaded once, so that tests hiding it put the same module back
    clustering_module._import_faiss()


@pytest.fixture
def no_faiss(monkeypatch):
    """faiss as if not installed: importing it raises ImportError."""
    monkeypatch.setitem(sys.modules, "faiss", None)


def test_pca_whitening_decorrelates_then_normalises():
    x = correlated()
    pca = PCAWhitening(n_components=8).fit(x)
    # Before the L2 step the projection has identity covariance.
    z = (x - pca.mean_) @ pca.components_.T * pca.scale_
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(8), atol=1e-3)
    out = pca.transform(x)
    assert out.shape == (500, 8) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_pca_default_is_the_pipelines_dimension():
    assert PCAWhitening().n_components == TrainConfig().pca_dim == 32


def test_pca_n_components_is_capped_by_samples_and_features():
    assert PCAWhitening(256).fit(correlated(n=30, d=20)).n_components_ == 20
    assert PCAWhitening(256).fit(correlated(n=12, d=20)).n_components_ == 12


def test_pca_state_round_trip_through_a_weights_only_checkpoint(tmp_path):
    x = correlated()
    pca = PCAWhitening(6).fit(x)
    torch.save({"pca": pca.state_dict()}, tmp_path / "ck.pt")
    state = torch.load(tmp_path / "ck.pt", weights_only=True)["pca"]
    again = PCAWhitening.from_state_dict(state)
    np.testing.assert_array_equal(pca.transform(x), again.transform(x))
    assert again.n_features_in_ == 20 and again.get_params() == pca.get_params()


def test_pca_reads_a_deepstdp_0_2_state():
    """0.2 checkpoints hold numpy arrays, `dim` for n_components and no rotation."""
    x = correlated()
    pca = PCAWhitening(6).fit(x)
    old = {"dim": 6, "eps": 1e-5, "mean": pca.mean_, "components": pca.components_,
           "scale": pca.scale_}
    np.testing.assert_array_equal(PCAWhitening.from_state_dict(old).transform(x), pca.transform(x))


def test_kmeans_recovers_blobs_and_accepts_torch():
    x, y = blobs()
    km = KMeansClustering(4, random_state=0)
    assert cluster_acc(y, km.fit_predict(torch.from_numpy(x))) == 1.0
    np.testing.assert_array_equal(km.predict(x), km.labels_)
    assert km.backend_ == "sklearn"  # 'auto' on a small problem


@pytest.mark.parametrize("backend", ["sklearn", "faiss"])
def test_kmeans_is_seeded(backend):
    if backend == "faiss" and not HAVE_FAISS:
        pytest.skip("faiss is not installed")
    x, _ = blobs(1)
    a = KMeansClustering(6, backend=backend, random_state=3).fit_predict(x)
    b = KMeansClustering(6, backend=backend, random_state=3).fit_predict(x)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", ["sklearn", "faiss"])
def test_kmeans_never_leaves_a_cluster_empty(backend):
    if backend == "faiss" and not HAVE_FAISS:
        pytest.skip("faiss is not installed")
    x = np.repeat(np.eye(3, dtype=np.float32), [50, 1, 1], axis=0)  # 3 distinct points
    labels = KMeansClustering(3, backend=backend, random_state=0).fit_predict(x)
    assert np.bincount(labels, minlength=3).min() > 0


def test_kmeans_state_round_trip_through_a_weights_only_checkpoint(tmp_path):
    x, _ = blobs()
    km = KMeansClustering(4, random_state=0).fit(x)
    assert KMeansClustering(4).state_dict() == {}
    torch.save({"clusterer": km.state_dict()}, tmp_path / "ck.pt")
    again = KMeansClustering(4)
    again.load_state_dict(torch.load(tmp_path / "ck.pt", weights_only=True)["clusterer"])
    np.testing.assert_array_equal(again.predict(x), km.labels_)
    np.testing.assert_array_equal(again.labels_, km.labels_)
    old = KMeansClustering(4)  # a 0.2 checkpoint: numpy arrays
    old.load_state_dict({"labels": km.labels_, "centers": km.cluster_centers_})
    np.testing.assert_array_equal(old.predict(x), km.labels_)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: KMeansClustering(0).fit(blobs()[0]), "n_clusters must be an integer >= 1"),
        (lambda: KMeansClustering(5).fit(np.zeros((3, 2))), "cannot form 5 clusters from 3"),
        (lambda: KMeansClustering(2).fit(np.array([[0.0, np.nan], [1, 1], [2, 2]])),
         "^Input X contains NaN.$"),
        (lambda: KMeansClustering(2).fit(np.zeros(5)), "2D array.*Reshape your data"),
        (lambda: KMeansClustering(2).fit(blobs()[0]).predict(np.zeros((3, 2))),
         "X has 2 features, but KMeansClustering is expecting 5"),
        (lambda: KMeansClustering(2, n_init=0).fit(blobs()[0]), "n_init must be"),
        (lambda: KMeansClustering(2, tol=-1.0).fit(blobs()[0]), "tol must be non-negative"),
        (lambda: KMeansClustering(2, backend="cuml").fit(blobs()[0]),
         "unknown k-means backend 'cuml': use auto, sklearn, faiss"),
        (lambda: PCAWhitening(0).fit(correlated()), "n_components must be an integer >= 1"),
    ],
)
def test_errors_are_one_line(call, message):
    with pytest.raises(DeepSTDPError, match=message) as e:
        call()
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("est", [KMeansClustering(2), PCAWhitening()])
def test_unfitted_use_raises_both_error_types(est):
    method = est.predict if hasattr(est, "predict") else est.transform
    with pytest.raises(NotFittedError, match="must be fitted") as e:
        method(np.zeros((3, 2)))
    assert isinstance(e.value, DeepSTDPError)
    assert isinstance(e.value, sklearn.exceptions.NotFittedError)


@pytest.mark.parametrize(
    "est",
    [PCAWhitening(), KMeansClustering(backend="sklearn", n_init=1),
     KMeansClustering(backend="faiss", n_init=1)],
    ids=["PCAWhitening", "KMeans-sklearn", "KMeans-faiss"],
)
def test_scikit_learn_estimator_checks(est):
    if est.get_params().get("backend") == "faiss" and not HAVE_FAISS:
        pytest.skip("faiss is not installed")
    check_estimator(est)  # no expected failures


def test_clone_keeps_parameters_not_fitted_state():
    km = KMeansClustering(5, n_init=2, backend="sklearn", random_state=7).fit(blobs()[0])
    copy = clone(km)
    assert copy.get_params() == km.get_params()
    assert not hasattr(copy, "labels_")


def test_pipeline_and_grid_search(digits):
    x, y = digits[0][:600], digits[1][:600]
    pipe = Pipeline([("pca", PCAWhitening()), ("kmeans", KMeansClustering(n_init=1))])
    labels = pipe.fit_predict(x)
    manual = KMeansClustering(n_init=1).fit_predict(PCAWhitening().fit_transform(x))
    np.testing.assert_array_equal(labels, manual)
    assert cluster_acc(y, labels) > 0.6
    search = GridSearchCV(pipe, {"kmeans__n_clusters": [3, 10, 30]},
                          scoring=make_scorer(adjusted_rand_score), cv=2).fit(x, y)
    assert search.best_params_ == {"kmeans__n_clusters": 10}
    assert search.best_estimator_.predict(x).max() == 9


def test_faiss_agrees_with_sklearn_on_digits(digits):
    pytest.importorskip("faiss")
    x, y = digits
    z = PCAWhitening().fit_transform(x)
    for k in (10, 50):
        sk = KMeansClustering(k, n_init=2, backend="sklearn", random_state=1).fit(z)
        fa = KMeansClustering(k, n_init=2, backend="faiss", random_state=1).fit(z)
        assert fa.backend_ == "faiss"
        # The same k-means++ seeds and stopping rule: the same clustering up to rounding.
        assert adjusted_rand_score(sk.labels_, fa.labels_) > 0.99
        assert fa.inertia_ == pytest.approx(sk.inertia_, rel=1e-4)
        if k == 10:
            assert abs(cluster_acc(y, fa.labels_) - cluster_acc(y, sk.labels_)) <= 0.01
        np.testing.assert_array_equal(fa.predict(z), fa.labels_)


def test_faiss_loads_with_the_cpus_blas_kernels():
    """faiss-cpu's old OpenBLAS would take a new CPU for a Pentium 4 (3x slower k-means)."""
    pytest.importorskip("faiss")
    code = ("import json, os; from threadpoolctl import threadpool_info as info;"
            "from deepstdp.clustering.kmeans import _import_faiss; _import_faiss();"
            "print(json.dumps([[i.get('architecture') for i in info()"
            " if i['internal_api'] == 'openblas'], 'OPENBLAS_CORETYPE' in os.environ]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    archs, leftover = json.loads(out)
    assert len(archs) >= 2  # numpy's and faiss's
    assert "Prescott" not in archs or set(archs) == {"Prescott"}
    assert not leftover  # the environment is as it was


def test_asking_for_faiss_without_it_says_how_to_install(no_faiss):
    with pytest.raises(DeepSTDPError, match="needs faiss: pip install faiss-cpu") as e:
        KMeansClustering(2, backend="faiss").fit(blobs()[0])
    assert "\n" not in str(e.value) and "--" not in str(e.value)


def test_auto_picks_faiss_only_when_large_and_installed(monkeypatch):
    x, _ = blobs()
    assert KMeansClustering(4).fit(x).backend_ == "sklearn"  # small
    monkeypatch.setattr(clustering_module, "FAISS_MIN_WORK", 0)
    monkeypatch.setattr(clustering_module, "FAISS_MIN_CLUSTERS", 2)
    assert KMeansClustering(4).fit(x).backend_ == ("faiss" if HAVE_FAISS else "sklearn")
    assert KMeansClustering(1).fit(x).backend_ == "sklearn"  # too few clusters
    monkeypatch.setitem(sys.modules, "faiss", None)
    assert KMeansClustering(4).fit(x).backend_ == "sklearn"


def test_training_settings_choose_the_backend():
    assert RULES["kmeans_backend"].choices == KMEANS_BACKENDS  # the estimator's, one tuple
    assert TrainConfig().kmeans_backend == "auto"
    cfg = TrainConfig(kmeans_backend="sklearn").validate()
    km = make_clusterer(cfg, 5, 3)
    assert (km.backend, km.n_clusters, km.random_state) == ("sklearn", 5, 3)
    with pytest.raises(DeepSTDPError, match="kmeans_backend"):
        TrainConfig(kmeans_backend="gpu").validate()


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


def test_kmeans_margin_is_the_gap_between_the_two_nearest_centres():
    x = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    km = KMeansClustering(3, random_state=0).fit(x)
    d2 = np.sort(((x[:, None].astype(np.float64) - km.cluster_centers_[None]) ** 2).sum(2), 1)
    np.testing.assert_allclose(km.margin(x), d2[:, 1] - d2[:, 0], rtol=1e-5, atol=1e-6)
    assert (km.margin(x) >= 0).all()


@pytest.mark.parametrize("backend", ["sklearn", "faiss"])
def test_kmeans_from_given_centres_makes_one_run_from_them(backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    x, _ = blobs()
    fresh = KMeansClustering(3, backend=backend, random_state=0).fit(x)
    warm = KMeansClustering(3, backend=backend, init=fresh.cluster_centers_).fit(x)
    np.testing.assert_array_equal(warm.labels_, fresh.labels_)
    assert warm.n_iter_ <= 2  # already converged: one step to see it, at most one more
    with pytest.raises(DeepSTDPError, match="3 finite centres of"):
        KMeansClustering(3, backend=backend, init=fresh.cluster_centers_[:2]).fit(x)
    with pytest.raises(DeepSTDPError, match="init must be 'k-means\\+\\+'"):
        KMeansClustering(3, backend=backend, init="random").fit(x)
