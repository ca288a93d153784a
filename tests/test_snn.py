import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs

from deepstdp import PCAWhitening, STDPClustering
from deepstdp.metrics import cluster_acc
from deepstdp.snn import _input_events, _normalize
from deepstdp.util import DeepSTDPError

V_REST, GAP = -65.0, 13.0  # default rest and threshold - rest


def raster(steps: int, n_inputs: int, spikes: dict[int, list[int]]) -> np.ndarray:
    """(steps, inputs) bool with spikes[input] = the steps it fires at."""
    r = np.zeros((steps, n_inputs), bool)
    for i, ts in spikes.items():
        r[ts, i] = True
    return r


@pytest.fixture(scope="module")
def blobs():
    x, y = make_blobs(600, 20, centers=5, cluster_std=1.0, center_box=(-10, 10), random_state=3)
    return PCAWhitening(10).fit_transform(x), y


def test_membrane_decays_with_tau_m():
    net = STDPClustering(2, tau_m=20.0, dt=0.5)
    w = np.array([[5.0, 0.0]])  # one input spike lifts neuron 0 by 5 mV, below threshold
    rec = net.simulate(raster(40, 1, {0: [0]}), weights=w, adapt=False)
    t = np.arange(40)
    np.testing.assert_allclose(rec.v[:, 0], V_REST + 5.0 * np.exp(-t * 0.5 / 20.0), rtol=1e-6)
    np.testing.assert_allclose(rec.v[:, 1], V_REST)
    assert not rec.spikes.any()


def test_threshold_rises_by_theta_plus_then_decays():
    net = STDPClustering(2, theta_plus=0.3, tau_theta=10.0)
    rec = net.simulate(raster(30, 1, {0: [0]}), weights=np.array([[GAP + 1, 0.0]]))
    assert rec.spikes[0, 0] and rec.spikes.sum() == 1
    np.testing.assert_allclose(rec.theta[:, 0], 0.3 * np.exp(-np.arange(30) / 10.0), rtol=1e-6)
    np.testing.assert_allclose(rec.theta[:, 1], 0.0)
    frozen = net.simulate(raster(30, 1, {0: [0]}), weights=np.array([[GAP + 1, 0.0]]),
                          adapt=False)
    np.testing.assert_allclose(frozen.theta, 0.0)


def test_refractory_period_blocks_input():
    net = STDPClustering(2, refractory=5.0, dt=1.0)
    rec = net.simulate(raster(40, 1, {0: list(range(40))}), weights=np.array([[100.0, 0.0]]),
                       adapt=False)
    times = np.flatnonzero(rec.spikes[:, 0])
    assert times[0] == 0
    np.testing.assert_array_equal(np.diff(times), 6)  # 5 silent steps, then the next spike
    # During the refractory steps the potential only leaks back from v_reset.
    assert np.all(rec.v[1:6, 0] < -52.0) and np.all(np.diff(rec.v[1:6, 0]) < 0)


# Weights are in units of norm / inputs; norm = inputs makes nu_pre and nu_post absolute.
STDP = {"norm": 3.0, "nu_pre": 0.002, "nu_post": 0.01, "tau_pre": 20.0, "tau_post": 10.0,
        "wmax": 1e6}


def test_stdp_pre_before_post_potentiates():
    net = STDPClustering(2, **STDP)
    w = np.array([[50.0, 0.0], [0.5, 0.5], [0.5, 0.5]])  # input 0 makes neuron 0 fire
    rec = net.simulate(raster(20, 3, {1: [2], 0: [7]}), weights=w, learn=True, adapt=False)
    assert np.flatnonzero(rec.spikes[:, 0]).tolist() == [7]
    assert rec.weights[1, 0] == pytest.approx(0.5 + 0.01 * np.exp(-5 / 20.0), rel=1e-5)
    assert rec.weights[2, 0] == 0.5  # input 2 never fired: no change
    assert rec.weights[1, 1] == 0.5  # neuron 1 never fired: no change


def test_stdp_post_before_pre_depresses():
    net = STDPClustering(2, **STDP)
    w = np.array([[50.0, 0.0], [0.5, 0.5], [0.5, 0.5]])
    rec = net.simulate(raster(20, 3, {0: [2], 1: [7]}), weights=w, learn=True, adapt=False)
    assert np.flatnonzero(rec.spikes[:, 0]).tolist() == [2]
    assert rec.weights[1, 0] == pytest.approx(0.5 - 0.002 * np.exp(-5 / 10.0), rel=1e-5)
    assert rec.weights[1, 1] == 0.5
    off = net.simulate(raster(20, 3, {0: [2], 1: [7]}), weights=w, learn=False, adapt=False)
    np.testing.assert_array_equal(off.weights, w)


def test_normalisation_keeps_each_neurons_weight_sum(blobs):
    w = np.random.default_rng(0).random((6, 4)).astype(np.float32)
    _normalize(w, 7.0)
    np.testing.assert_allclose(w.sum(axis=0), 7.0, rtol=1e-5)
    net = STDPClustering(5, norm=12.0, epochs=1).fit(blobs[0])
    np.testing.assert_allclose(net.weights_.sum(axis=0), 12.0, rtol=1e-4)


def test_strong_inhibition_lets_one_neuron_dominate():
    rng = np.random.default_rng(0)
    spikes = rng.random((250, 40)) < 0.05
    w = 0.5 + 0.05 * rng.random((40, 6))  # six near-identical neurons
    strong = STDPClustering(6, inhibition=200.0).simulate(spikes, weights=w, adapt=False)
    counts = strong.spikes.sum(axis=0)
    assert counts.max() >= 5 and counts.max() >= 0.9 * counts.sum()
    none = STDPClustering(6, inhibition=0.0).simulate(spikes, weights=w, adapt=False)
    assert (none.spikes.sum(axis=0) > 0).sum() >= 4


def test_input_events_are_bernoulli_trains_with_on_off_cells():
    steps, pmax = 20000, 0.1
    x = np.array([1.0, -0.5, 0.0], np.float32)
    cap = 2 * len(x) * steps
    ptr, idx = np.empty(steps + 1, np.int64), np.empty(cap, np.int64)
    _input_events(x, pmax, steps, np.array([7], np.uint64), ptr, idx, np.empty(cap, np.int64),
                  np.empty(cap, np.int64))
    counts = np.bincount(idx[: ptr[-1]], minlength=6)
    # on cells 0..2, off cells 3..5: x0 fires at pmax, x1's off cell at pmax / 2, x2 never
    assert counts[0] == pytest.approx(2000, rel=0.08)
    assert counts[4] == pytest.approx(1000, rel=0.1)
    assert counts[[1, 2, 3, 5]].sum() == 0
    per_step = np.diff(ptr)
    assert per_step.max() <= 2  # each input fires at most once per step


def test_blobs_are_clustered(blobs):
    x, y = blobs
    net = STDPClustering(5, seed=1)
    labels = net.fit_predict(x)
    assert cluster_acc(y, labels) >= 0.95
    assert labels.dtype == np.int64 and labels.shape == (len(x),)
    np.testing.assert_array_equal(net.predict(x), labels)
    assert net.n_silent_ <= len(x) // 20
    assert len(net.history_["theta"]) == net.epochs == net.passes_


def test_silent_samples_are_reshown_then_go_to_the_closest_neuron(blobs):
    x, y = blobs
    net = STDPClustering(5, seed=1).fit(x)
    assert net.n_silent_ == 0
    net.theta_ = net.theta_ + 1e4  # nothing can reach threshold any more
    labels = net.predict(x)
    assert net.n_reshown_ == net.n_silent_ == len(x)
    assert cluster_acc(y, labels) >= 0.9  # closest to threshold still follows the drive


def test_plots_are_written(blobs, tmp_path):
    from deepstdp.snn_plots import plot_neuron_activity, plot_receptive_fields

    net = STDPClustering(5, n_neurons=6, epochs=2).fit(blobs[0])
    plot_receptive_fields(net, tmp_path / "fields.png")
    plot_receptive_fields(net, tmp_path / "grid.png", image_shape=(2, 5))
    plot_neuron_activity(net, tmp_path / "activity.png")
    for name in ("fields", "grid", "activity"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(DeepSTDPError):
        plot_receptive_fields(net, tmp_path / "bad.png", image_shape=(3, 3))


def test_overclustering_maps_neurons_to_clusters(blobs):
    x, y = blobs
    net = STDPClustering(5, n_neurons=12, epochs=3).fit(torch.from_numpy(x))
    assert net.neuron_cluster_.shape == (12,) and set(net.neuron_cluster_) <= set(range(5))
    assert cluster_acc(y, net.labels_) >= 0.8


def test_same_seed_same_result(blobs):
    x = blobs[0]
    a, b = STDPClustering(5, seed=4, epochs=2).fit(x), STDPClustering(5, seed=4, epochs=2).fit(x)
    np.testing.assert_array_equal(a.weights_, b.weights_)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    c = STDPClustering(5, seed=5, epochs=2).fit(x)
    assert not np.array_equal(a.weights_, c.weights_)


def test_partial_fit_continues_and_resumes_exactly(blobs):
    x = blobs[0]
    net = STDPClustering(5, seed=2, epochs=1).fit(x)
    state = {k: np.copy(v) for k, v in net.state_dict().items()}
    theta_before = net.theta_.copy()
    net.partial_fit(x)
    assert net.passes_ == 2 and len(net.history_["wins"]) == 2
    assert net.theta_.sum() > theta_before.sum()  # thresholds kept climbing, not reset
    refit = STDPClustering(5, seed=2, epochs=1).fit(x)
    assert not np.array_equal(net.weights_, refit.weights_)

    resumed = STDPClustering(5, seed=0, epochs=1)  # seed comes from the state
    resumed.load_state_dict(state)
    np.testing.assert_array_equal(resumed.predict(x), refit.labels_)
    resumed.partial_fit(x)
    np.testing.assert_array_equal(resumed.weights_, net.weights_)
    np.testing.assert_array_equal(resumed.labels_, net.labels_)


@pytest.mark.parametrize("make, call", [
    (lambda: STDPClustering(3), lambda c, x: c.fit(np.where(x > 0.5, np.nan, x))),
    (lambda: STDPClustering(3), lambda c, x: c.predict(x)),
    (lambda: STDPClustering(3).fit(np.eye(6)), lambda c, x: c.predict(x[:, :4])),
    (lambda: STDPClustering(3).fit(np.eye(6)), lambda c, x: c.partial_fit(x[:, :4])),
    (lambda: STDPClustering(3), lambda c, x: c.fit(x[:2])),
    (lambda: STDPClustering(3), lambda c, x: c.fit(x[0])),
])
def test_bad_input_raises(make, call):
    x = np.random.default_rng(0).random((10, 6))
    with pytest.raises(DeepSTDPError):
        call(make(), x)


@pytest.mark.parametrize("kwargs", [
    {"n_clusters": 1}, {"n_clusters": 4, "n_neurons": 3}, {"n_clusters": 2, "time": 0},
    {"n_clusters": 2, "dt": 0.0}, {"n_clusters": 2, "init": "kmeans"},
    {"n_clusters": 2, "v_thresh": -70.0}, {"n_clusters": 2, "nu_post": -1.0},
])
def test_bad_parameters_raise(kwargs):
    with pytest.raises(DeepSTDPError):
        STDPClustering(**kwargs)
