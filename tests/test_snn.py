import dataclasses
import inspect
import subprocess
import sys
import warnings

import numba
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits, make_blobs
from sklearn.metrics import adjusted_rand_score, make_scorer
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

from deepstdp import PCAWhitening, STDPClustering
from deepstdp.clustering.stdp.kernels import input_events, normalize, present, work
from deepstdp.clustering.stdp.settings import STDPSettings
from deepstdp.measures.metrics import cluster_acc
from deepstdp.runtime.util import DeepSTDPError

V_REST, GAP = -65.0, 13.0  # default rest and threshold - rest
FAST = {"time": 100, "epochs": 2}
# Diehl & Cook's layer as 0.4 ran it (excitatory synapses, weight sums, spike-count readout,
# online STDP only): the tests of the neuron and plasticity dynamics use its simple wiring.
DC = {"synapse": "excitatory", "weight_norm": "sum", "inference": "spikes", "init": "data",
      "consolidation": 0, "n_init": 1}


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


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return PCAWhitening(32).fit_transform(d.data), d.target


# ------------------------------------------------------------------------------ dynamics


def test_membrane_decays_with_tau_m():
    net = STDPClustering(2, tau_m=20.0, dt=0.5, **DC)
    w = np.array([[5.0, 0.0]])  # one input spike lifts neuron 0 by 5 mV, below threshold
    rec = net.simulate(raster(40, 1, {0: [0]}), weights=w, adapt=False)
    t = np.arange(40)
    np.testing.assert_allclose(rec.v[:, 0], V_REST + 5.0 * np.exp(-t * 0.5 / 20.0), rtol=1e-6)
    np.testing.assert_allclose(rec.v[:, 1], V_REST)
    assert not rec.spikes.any()


def test_threshold_rises_by_theta_plus_then_decays():
    net = STDPClustering(2, theta_plus=0.3, tau_theta=10.0, **DC)
    rec = net.simulate(raster(30, 1, {0: [0]}), weights=np.array([[GAP + 1, 0.0]]))
    assert rec.spikes[0, 0] and rec.spikes.sum() == 1
    np.testing.assert_allclose(rec.theta[:, 0], 0.3 * np.exp(-np.arange(30) / 10.0), rtol=1e-6)
    np.testing.assert_allclose(rec.theta[:, 1], 0.0)
    frozen = net.simulate(raster(30, 1, {0: [0]}), weights=np.array([[GAP + 1, 0.0]]),
                          adapt=False)
    np.testing.assert_allclose(frozen.theta, 0.0)


def test_theta_decays_exactly_over_long_presentations():
    # exp(-1/2) per step: the common decay factor is folded into theta every ~28 steps.
    net = STDPClustering(2, tau_theta=2.0, **DC)
    rec = net.simulate(raster(300, 1, {}), weights=np.ones((1, 2)), theta=np.array([5.0, 1.0]))
    t = np.arange(1, 301)
    np.testing.assert_allclose(rec.theta, np.outer(np.exp(-t / 2.0), [5.0, 1.0]), rtol=1e-9)


def test_refractory_period_blocks_input():
    net = STDPClustering(2, refractory=5.0, dt=1.0, **DC)
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
    net = STDPClustering(2, **STDP, **DC)
    w = np.array([[50.0, 0.0], [0.5, 0.5], [0.5, 0.5]])  # input 0 makes neuron 0 fire
    rec = net.simulate(raster(20, 3, {1: [2], 0: [7]}), weights=w, learn=True, adapt=False)
    assert np.flatnonzero(rec.spikes[:, 0]).tolist() == [7]
    assert rec.weights[1, 0] == pytest.approx(0.5 + 0.01 * np.exp(-5 / 20.0), rel=1e-5)
    assert rec.weights[2, 0] == 0.5  # input 2 never fired: no change
    assert rec.weights[1, 1] == 0.5  # neuron 1 never fired: no change


def test_stdp_post_before_pre_depresses():
    net = STDPClustering(2, **STDP, **DC)
    w = np.array([[50.0, 0.0], [0.5, 0.5], [0.5, 0.5]])
    rec = net.simulate(raster(20, 3, {0: [2], 1: [7, 9]}), weights=w, learn=True, adapt=False)
    assert np.flatnonzero(rec.spikes[:, 0]).tolist() == [2]
    expected = 0.5 - 0.002 * (np.exp(-5 / 10.0) + np.exp(-7 / 10.0))  # both spikes depress
    assert rec.weights[1, 0] == pytest.approx(expected, rel=1e-5)
    assert rec.weights[1, 1] == 0.5
    off = net.simulate(raster(20, 3, {0: [2], 1: [7]}), weights=w, learn=False, adapt=False)
    np.testing.assert_array_equal(off.weights, w)


def test_normalisation_keeps_each_neurons_weight_sum(blobs):
    w = np.random.default_rng(0).random((6, 4)).astype(np.float32)
    normalize(w, 7.0)
    np.testing.assert_allclose(w.sum(axis=0), 7.0, rtol=1e-5)
    net = STDPClustering(5, norm=12.0, epochs=1, **DC).fit(blobs[0])
    np.testing.assert_allclose(net.weights_.sum(axis=0), 12.0, rtol=1e-4)


def test_strong_inhibition_lets_one_neuron_dominate():
    rng = np.random.default_rng(0)
    spikes = rng.random((250, 40)) < 0.05
    w = 0.5 + 0.05 * rng.random((40, 6))  # six near-identical neurons
    strong = STDPClustering(6, inhibition=200.0, **DC).simulate(spikes, weights=w, adapt=False)
    counts = strong.spikes.sum(axis=0)
    assert counts.max() >= 5 and counts.max() >= 0.9 * counts.sum()
    none = STDPClustering(6, inhibition=0.0, **DC).simulate(spikes, weights=w, adapt=False)
    assert (none.spikes.sum(axis=0) > 0).sum() >= 4


def test_input_events_are_bernoulli_trains_with_on_off_cells():
    steps, pmax = 20000, 0.1
    x = np.array([1.0, -0.5, 0.0], np.float32)
    wk = work(6, 1, steps)
    wk.state[0] = 7
    input_events(x, pmax, wk)
    per_step, counts = np.zeros(steps, int), np.zeros(6, int)
    for t in range(steps):  # walk each step's list of input spikes
        e = wk.head[t]
        while e >= 0:
            counts[wk.ev[e]] += 1
            per_step[t] += 1
            e = wk.nxt[e]
    # on cells 0..2, off cells 3..5: x0 fires at pmax, x1's off cell at pmax / 2, x2 never
    assert counts[0] == pytest.approx(2000, rel=0.08)
    assert counts[4] == pytest.approx(1000, rel=0.1)
    assert counts[[1, 2, 3, 5]].sum() == 0
    assert per_step.max() <= 2  # each input fires at most once per step


def test_skipping_steps_without_input_changes_no_spike(digits):
    """present() leaks over steps without input at once unless it records every step; the two
    ways give the same spikes, learnt weights and thresholds on a fitted layer's samples (the
    potentials differ by float rounding only)."""
    x = digits[0][:60].astype(np.float32)
    m = STDPClustering(10, random_state=0, n_init=1, consolidation=0, time=300).fit(x)
    dyn, pre, post, steps = m._kernel_args()[:4]
    runs = []
    for record in (False, True):
        w, th = m.weights_.copy(), m.theta_.copy()
        wk, out = work(w.shape[0], w.shape[1], steps), []
        rec = (np.zeros((steps, 10)), np.zeros((steps, 10), bool), np.zeros((steps, 10))) \
            if record else (np.empty((0, 0)), np.empty((0, 0), bool), np.empty((0, 0)))
        for s, sample in enumerate(x):
            wk.state[0] = s + 1
            input_events(sample, 0.08, wk)
            nf = present(w, th, dyn, pre, post, True, True, wk, *rec)
            out.append((nf, wk.counts.copy(), wk.first.copy()))
        runs.append((out, w, th))
    (fast, w_fast, th_fast), (slow, w_slow, th_slow) = runs
    assert sum(nf for nf, _, _ in fast) > 30  # the layer spiked, so the comparison means something
    for (nf_a, counts_a, first_a), (nf_b, counts_b, first_b) in zip(fast, slow, strict=True):
        assert nf_a == nf_b and (counts_a == counts_b).all() and (first_a == first_b).all()
    np.testing.assert_allclose(w_fast, w_slow, rtol=1e-5)
    np.testing.assert_allclose(th_fast, th_slow, rtol=1e-9)


# ------------------------------------------------------------------------------ clustering


def test_blobs_are_clustered(blobs):
    x, y = blobs
    net = STDPClustering(5, random_state=1)
    labels = net.fit_predict(x)
    assert cluster_acc(y, labels) >= 0.95
    assert labels.dtype == np.int64 and labels.shape == (len(x),)
    np.testing.assert_array_equal(net.predict(x), labels)
    assert net.labels_silent_ <= len(x) // 20
    assert len(net.history_["theta"]) == net.epochs
    assert net.passes_ == net.epochs + net.consolidation  # online, then consolidation passes


def test_silent_samples_are_reshown_then_go_to_the_closest_neuron(blobs):
    x, y = blobs
    net = STDPClustering(5, random_state=1, **DC).fit(x)
    assert net.labels_silent_ == 0
    net.theta_ = net.theta_ + 1e4  # nothing can reach threshold any more
    out = net.readout(x)
    assert out.n_reshown == out.n_silent == len(x) and out.silent.all()
    np.testing.assert_array_equal(out.shows, net.max_reshow + 1)
    assert cluster_acc(y, out.labels) >= 0.9  # closest to threshold still follows the drive
    assert net.labels_silent_ == 0  # fit's counts are not predict's


def test_overclustering_maps_neurons_to_clusters(blobs):
    x, y = blobs
    net = STDPClustering(5, n_neurons=12, epochs=3).fit(torch.from_numpy(x))
    assert net.neuron_cluster_.shape == (12,) and set(net.neuron_cluster_) <= set(range(5))
    assert cluster_acc(y, net.labels_) >= 0.8


def test_a_neuron_without_weights_joins_the_largest_cluster(blobs):
    x = blobs[0]
    net = STDPClustering(5, n_neurons=8, epochs=1, random_state=0, **DC).fit(x)
    net.weights_[:, 3] = 0.0  # no input can drive it, and STDP cannot revive it
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no division by its zero norm
        net.partial_fit(x)
    largest = np.bincount(net.labels_, minlength=5).argmax()
    assert net.neuron_cluster_[3] == largest
    assert not net.weights_[:, 3].any()


def test_all_zero_samples_raise_unless_norm_is_given():
    zeros = np.zeros((20, 4))
    with pytest.raises(DeepSTDPError, match="all zero"):
        STDPClustering(2).fit(zeros)
    net = STDPClustering(2, norm=4.0, **FAST, **DC).fit(zeros)
    assert np.isfinite(net.weights_).all()
    assert net.labels_silent_ == 20  # no input, no spike: every sample goes to the closest


def test_digits_quality(digits):
    x, y = digits
    assert cluster_acc(y, STDPClustering(10, random_state=0).fit_predict(x)) >= 0.7


# ------------------------------------------------------------------------------ prediction


def test_prediction_depends_only_on_the_sample(digits):
    x = digits[0]
    net = STDPClustering(10, random_state=0, **FAST).fit(x)
    ref = net.readout(x)
    np.testing.assert_array_equal(ref.labels, net.labels_)  # fit's labelling pass is predict
    perm = np.random.default_rng(1).permutation(len(x))
    labels = np.empty_like(ref.labels)
    for part in np.array_split(perm, 2):  # two batches, each in shuffled order
        labels[part] = net.predict(x[part])
    np.testing.assert_array_equal(labels, ref.labels)
    again = net.readout(x[::-1])
    for got, want in zip(again, ref, strict=True):
        np.testing.assert_array_equal(got, want[::-1])
    np.testing.assert_array_equal(net.predict(x[5:6]), ref.labels[5:6])


def test_prediction_is_the_same_on_any_thread_count(digits):
    x = digits[0]
    net = STDPClustering(10, random_state=0, **FAST).fit(x)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = net.predict(x)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one, net.predict(x))


def test_same_seed_same_result(blobs):
    x = blobs[0]
    a = STDPClustering(5, random_state=4, epochs=2).fit(x)
    b = STDPClustering(5, random_state=4, epochs=2).fit(x)
    np.testing.assert_array_equal(a.weights_, b.weights_)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    c = STDPClustering(5, random_state=5, epochs=2).fit(x)
    assert not np.array_equal(a.weights_, c.weights_)


def test_verbose_shows_each_pass_on_stderr_and_changes_nothing(blobs, capsys, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    x = blobs[0]
    quiet = STDPClustering(5, random_state=4, epochs=2, n_init=2).fit(x)
    assert capsys.readouterr().err == ""
    loud = STDPClustering(5, random_state=4, epochs=2, n_init=2, verbose=True).fit(x)
    err = capsys.readouterr().err
    passes = 2 * (2 + STDPSettings.consolidation + 1)  # starts x (training, consolidation, label)
    assert "spiking layer (5 clusters)" in err and f"0/{passes} " in err
    np.testing.assert_array_equal(quiet.weights_, loud.weights_)
    np.testing.assert_array_equal(quiet.labels_, loud.labels_)
    loud.partial_fit(x)
    assert f"0/{passes // 2} " in capsys.readouterr().err


def test_random_state_none_or_generator_draws_the_seed(blobs):
    x = blobs[0]
    seeds = {STDPClustering(5, random_state=None, epochs=1).fit(x).seed_ for _ in range(3)}
    assert len(seeds) == 3
    a = STDPClustering(5, random_state=np.random.RandomState(3), epochs=1).fit(x)
    b = STDPClustering(5, random_state=np.random.RandomState(3), epochs=1).fit(x)
    assert a.seed_ == b.seed_
    np.testing.assert_array_equal(a.labels_, b.labels_)


# ------------------------------------------------------------------------------ state


@pytest.mark.parametrize("layer", [DC, {}], ids=["diehl-cook", "default"])
def test_partial_fit_continues_and_resumes_exactly(blobs, tmp_path, layer):
    x = blobs[0]
    net = STDPClustering(5, random_state=2, epochs=1, **layer).fit(x)
    torch.save(net.state_dict(), tmp_path / "state.pt")
    theta_before = net.theta_.copy()
    net.partial_fit(x)
    assert net.passes_ == 2 * (1 + net.consolidation) and len(net.history_["wins"]) == 2
    assert net.theta_.sum() > theta_before.sum()  # thresholds kept climbing, not reset
    np.testing.assert_array_equal(net.predict(x), net.labels_)
    refit = STDPClustering(5, random_state=2, epochs=1, **layer).fit(x)
    if layer:  # consolidated to the same fixed point on these blobs, which is fine
        assert not np.array_equal(net.weights_, refit.weights_)

    resumed = STDPClustering(5, random_state=0, epochs=1, **layer)  # seed from the state
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    np.testing.assert_array_equal(resumed.predict(x), refit.labels_)
    resumed.partial_fit(x)
    np.testing.assert_array_equal(resumed.weights_, net.weights_)
    np.testing.assert_array_equal(resumed.labels_, net.labels_)


def test_state_holds_tensors_and_python_scalars_and_old_numpy_states_load(blobs):
    x = blobs[0]
    net = STDPClustering(5, n_neurons=7, random_state=2, epochs=2).fit(x)
    state = net.state_dict()
    for key, value in state.items():
        assert type(value) in (torch.Tensor, int, float), key
    # As checkpoints before 0.3 held it: numpy arrays and scalars, the labelling counts as n_*.
    old = {k: v.numpy() if isinstance(v, torch.Tensor) else np.array(v)[()]
           for k, v in state.items()}
    old["n_reshown"], old["n_silent"] = old.pop("labels_reshown"), old.pop("labels_silent")
    restored = STDPClustering(5, n_neurons=7, epochs=2)
    restored.load_state_dict(old)
    np.testing.assert_array_equal(restored.predict(x), net.labels_)
    assert restored.diagnostics() == net.diagnostics()
    with pytest.raises(DeepSTDPError, match=r"\(20, 7\); this clusterer has 5 neurons"):
        STDPClustering(5).load_state_dict(state)


def test_diagnostics_report_the_labelling_pass_not_predict(blobs):
    x = blobs[0]
    net = STDPClustering(5, random_state=1, epochs=1).fit(x)
    before = net.diagnostics()
    assert before["stdp_reshown"] == net.labels_reshown_
    assert before["stdp_train_reshown"] == net.train_reshown_
    net.predict(np.zeros((30, x.shape[1])))  # all silent, and changes nothing
    assert net.diagnostics() == before


# ------------------------------------------------------------------------------ scikit-learn


def test_scikit_learn_estimator_checks():
    check_estimator(STDPClustering(3, random_state=0, time=50, epochs=2))  # no expected failures


def test_clone_pipeline_and_grid_search(digits):
    x, y = load_digits(return_X_y=True)
    net = STDPClustering(10, random_state=0, **FAST)
    copy = clone(net)
    assert copy.get_params() == net.get_params() and not hasattr(copy, "weights_")
    pipe = make_pipeline(StandardScaler(), net)
    labels = pipe.fit_predict(x)
    np.testing.assert_array_equal(pipe.predict(x), labels)
    assert adjusted_rand_score(y, labels) > 0.3
    search = GridSearchCV(STDPClustering(10, random_state=0, **FAST),
                          {"theta_plus": [0.0, 0.05]}, cv=2,
                          scoring=make_scorer(adjusted_rand_score))
    search.fit(digits[0], digits[1])
    assert search.best_params_["theta_plus"] in (0.0, 0.05)
    assert search.cv_results_["mean_test_score"].min() > 0.2


# ------------------------------------------------------------------------------ settings


def test_settings_are_the_estimators_parameters_and_defaults():
    params = inspect.signature(STDPClustering).parameters
    fields = dataclasses.fields(STDPSettings)
    assert {f.name for f in fields} == set(params) - {"n_clusters", "random_state", "verbose"}
    for f in fields:
        assert params[f.name].default == f.default, f.name
    settings = dataclasses.replace(STDPSettings(), time=120, n_neurons=12)
    net = STDPClustering(n_clusters=6, random_state=3, **dataclasses.asdict(settings))
    assert net.get_params()["time"] == 120 and net.get_params()["n_neurons"] == 12


def test_settings_load_without_numba():
    code = ("import sys; import deepstdp.clustering.stdp.settings; "
            "assert 'numba' not in sys.modules "
            "and 'deepstdp.clustering.stdp.estimator' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("kwargs, message", [
    ({"time": 0}, "time must be an integer >= 1, got 0"),
    ({"time": 2.5}, "time must be an integer >= 1, got 2.5"),
    ({"epochs": True}, "epochs must be an integer >= 0"),
    ({"consolidation": -1}, "consolidation must be an integer >= 0, got -1"),
    ({"n_init": 0}, "n_init must be an integer >= 1, got 0"),
    ({"online_samples": 0}, "online_samples must be an integer >= 1, got 0"),
    ({"anneal": 0.0}, "anneal must be a finite number > 0, got 0.0"),
    ({"synapse": "gap"}, "synapse must be one of excitatory, push-pull, got 'gap'"),
    ({"weight_norm": "l3"}, "weight_norm must be one of sum, l2"),
    ({"inference": "vote"}, "inference must be one of spikes, current"),
    ({"dt": 0.0}, "dt must be a finite number > 0, got 0.0"),
    ({"tau_theta": -1.0}, "tau_theta must be a finite number > 0"),
    ({"nu_post": -1.0}, "nu_post must be a finite number >= 0"),
    ({"intensity": float("nan")}, "intensity must be a finite number > 0"),
    ({"v_rest": "cold"}, "v_rest must be a finite number"),
    ({"v_thresh": -70.0}, "must be below v_thresh"),
    ({"init": "kmeans"}, "init must be one of data, kmeans\\+\\+, random"),
])
def test_bad_settings_name_the_setting_and_its_range(kwargs, message):
    with pytest.raises(DeepSTDPError, match=message):
        STDPSettings(**kwargs).validate()
    net = STDPClustering(2, **kwargs)  # the constructor only stores: fit validates
    with pytest.raises(DeepSTDPError, match=message):
        net.fit(np.random.default_rng(0).random((10, 3)))


@pytest.mark.parametrize("kwargs, message", [
    ({"n_clusters": 0}, "n_clusters must be an integer >= 1"),
    ({"n_clusters": 4, "n_neurons": 3}, r"n_neurons \(3\) must be at least n_clusters \(4\)"),
    ({"n_clusters": 2, "random_state": -1}, r"random_state must be in \[0, 2\*\*32\)"),
    ({"n_clusters": 2, "random_state": "x"}, "random_state must be None, an int"),
])
def test_bad_parameters_raise_at_fit(kwargs, message):
    with pytest.raises(DeepSTDPError, match=message):
        STDPClustering(**kwargs).fit(np.random.default_rng(0).random((10, 3)))


@pytest.mark.parametrize("make, call", [
    (lambda: STDPClustering(3), lambda c, x: c.fit(np.where(x > 0.5, np.nan, x))),
    (lambda: STDPClustering(3), lambda c, x: c.predict(x)),
    (lambda: STDPClustering(3, **FAST).fit(np.eye(6)), lambda c, x: c.predict(x[:, :4])),
    (lambda: STDPClustering(3, **FAST).fit(np.eye(6)), lambda c, x: c.partial_fit(x[:, :4])),
    (lambda: STDPClustering(3), lambda c, x: c.fit(x[:2])),
    (lambda: STDPClustering(3), lambda c, x: c.fit(x[0])),
])
def test_bad_input_raises(make, call):
    x = np.random.default_rng(0).random((10, 6))
    with pytest.raises(DeepSTDPError):
        call(make(), x)


def test_plots_are_written(blobs, tmp_path):
    from deepstdp.clustering.stdp.plots import plot_neuron_activity, plot_receptive_fields

    net = STDPClustering(5, n_neurons=6, epochs=2).fit(blobs[0])
    plot_receptive_fields(net, tmp_path / "fields.png")
    plot_receptive_fields(net, tmp_path / "grid.png", image_shape=(2, 5))
    plot_neuron_activity(net, tmp_path / "activity.png")
    for name in ("fields", "grid", "activity"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(DeepSTDPError):
        plot_receptive_fields(net, tmp_path / "bad.png", image_shape=(3, 3))


# The layer that matches k-means on deep features (docs/snn.md, "Clustering deep features"):
# push-pull synapses, L2-normalised signed weights, the noise-free readout.
PP = {"synapse": "push-pull", "weight_norm": "l2", "inference": "current"}


def test_push_pull_synapses_subtract_the_partner_cells_weight():
    net = STDPClustering(1, synapse="push-pull")
    w = np.array([[2.0], [0.0], [0.5], [3.0]])  # 2 features: on cells 0-1, off cells 2-3
    rec = net.simulate(raster(3, 4, {0: [1], 1: [2]}), weights=w, adapt=False)
    v1 = V_REST + (2.0 - 0.5)  # feature 0 positive: its on weight minus its off weight
    assert rec.v[1, 0] == pytest.approx(v1)
    assert rec.v[2, 0] == pytest.approx(V_REST + (v1 - V_REST) * np.exp(-1 / 100) - 3.0)
    with pytest.raises(DeepSTDPError, match="pair on and off cells: 3 inputs is odd"):
        net.simulate(raster(3, 3, {}), weights=np.ones((3, 1)))


def test_l2_normalisation_sets_the_length_of_the_signed_weights():
    w = np.random.default_rng(0).random((6, 4)).astype(np.float32)
    normalize(w, 3.0, True)
    np.testing.assert_allclose(np.linalg.norm(w[:3] - w[3:], axis=0), 3.0, rtol=1e-5)


def test_current_inference_is_the_neuron_furthest_above_threshold_in_expectation(blobs):
    x = blobs[0].astype(np.float32)
    net = STDPClustering(5, random_state=1, **PP).fit(x)
    rates = 0.064 * x.astype(np.float64) / np.abs(x).max(axis=1, keepdims=True)
    d, w = x.shape[1], net.weights_.astype(np.float64)
    score = rates @ (w[:d] - w[d:]) / (1 - np.exp(-1 / 100)) - net.theta_
    out = net.readout(x)
    np.testing.assert_array_equal(out.neurons, score.argmax(axis=1))
    top = np.sort(score, axis=1)[:, -2:]
    np.testing.assert_allclose(out.margin, top[:, 1] - top[:, 0], rtol=1e-4, atol=1e-6)
    assert out.n_silent == 0 and out.n_reshown == 0
    np.testing.assert_array_equal(net.labels_, out.labels)  # the labelling pass is predict
    np.testing.assert_array_equal(net.margin(x), out.margin)


def test_consolidation_gives_each_neuron_the_normalised_rates_it_won(blobs):
    x = blobs[0].astype(np.float32)
    start = STDPClustering(5, random_state=3, epochs=0, consolidation=0, n_init=1,
                           **PP).fit(x)  # the initial weights
    winners = start.readout(x).neurons
    one = STDPClustering(5, random_state=3, epochs=0, consolidation=1, n_init=1, **PP).fit(x)
    rates = 0.064 * x.astype(np.float64) / np.abs(x).max(axis=1, keepdims=True)
    on_off = np.concatenate([rates.clip(0), (-rates).clip(0)], axis=1)
    d = x.shape[1]
    for j in range(5):
        if (winners == j).any():
            col = on_off[winners == j].sum(axis=0)
            col *= one.norm_ / np.linalg.norm(col[:d] - col[d:])
        else:
            col = start.weights_[:, j]
        np.testing.assert_allclose(one.weights_[:, j], col, rtol=1e-4, atol=1e-7)


def test_consolidation_stops_at_a_fixed_point_with_the_weights_of_every_pass(blobs,
                                                                           monkeypatch):
    x = blobs[0].astype(np.float32)
    kw = {"random_state": 3, "epochs": 0, "n_init": 1, **PP}
    manual = STDPClustering(5, consolidation=0, **kw).fit(x)
    for _ in range(12):  # every pass, the fixed point or not
        manual._expected_consolidation(x, manual._expected(x)[0])
    calls, made = [], STDPClustering._expected_consolidation
    monkeypatch.setattr(STDPClustering, "_expected_consolidation",
                        lambda self, *a: calls.append(1) or made(self, *a))
    net = STDPClustering(5, consolidation=12, **kw).fit(x)
    assert len(calls) < 12 and net.passes_ == 12  # stopped early, counted every pass
    np.testing.assert_array_equal(net.weights_, manual.weights_)


def test_quality_in_blocks_is_the_whole_matrix_s(blobs, monkeypatch):
    import deepstdp.clustering.stdp.estimator as est

    net = STDPClustering(5, random_state=0, **FAST).fit(blobs[0])
    x = blobs[0].astype(np.float32)
    whole = float(net._drive(x).max(axis=1).mean() / net._self_drive(x))
    monkeypatch.setattr(est, "_QUALITY_BLOCK", 5 * 7)  # blocks of 7 samples, the last short
    assert net.quality(x) == pytest.approx(whole, rel=1e-12)


def test_online_samples_trains_each_pass_on_a_fresh_subset_and_labels_all(blobs):
    x = blobs[0].astype(np.float32)
    full = STDPClustering(5, random_state=0, **FAST).fit(x)
    np.testing.assert_array_equal(
        STDPClustering(5, random_state=0, online_samples=len(x) + 1, **FAST).fit(x).weights_,
        full.weights_)  # a cap above the set is the whole set, in the same order
    net = STDPClustering(5, random_state=0, online_samples=150, **FAST).fit(x)
    assert [int(w.sum()) for w in net.history_["wins"]] == [150] * FAST["epochs"]
    assert len(net.labels_) == len(x)
    again = STDPClustering(5, random_state=0, online_samples=150, **FAST).fit(x)
    np.testing.assert_array_equal(again.weights_, net.weights_)
    assert cluster_acc(blobs[1], net.labels_) > 0.9


def test_spiking_consolidation_is_deterministic_and_sums_potentiation(blobs):
    x = blobs[0]
    kw = dict(random_state=2, epochs=1, time=100, consolidation=2, synapse="push-pull",
              weight_norm="sum", inference="spikes", n_init=1)
    a = STDPClustering(5, **kw).fit(x)
    b = STDPClustering(5, **kw).fit(x)
    np.testing.assert_array_equal(a.weights_, b.weights_)
    assert a.passes_ == 3  # one online pass, two consolidation passes
    np.testing.assert_allclose(a.weights_.sum(axis=0), a.norm_, rtol=1e-4)


def test_n_init_keeps_the_start_that_fits_best(blobs):
    x = blobs[0]
    kw = dict(random_state=0, epochs=1, time=100, consolidation=2, **PP)
    one = STDPClustering(5, n_init=1, **kw).fit(x)
    three = STDPClustering(5, n_init=3, **kw).fit(x)
    assert 0 < one.quality(x) <= three.quality(x) <= 1 + 1e-9  # start 0 is among the three
    np.testing.assert_array_equal(three.predict(x), three.labels_)
    again = STDPClustering(5, n_init=3, **kw).fit(x)
    np.testing.assert_array_equal(again.weights_, three.weights_)


def test_annealing_slows_learning_with_each_win(blobs):
    x = blobs[0]
    kw = dict(random_state=0, time=100, consolidation=0, n_init=1)
    start = STDPClustering(5, epochs=0, **kw).fit(x)
    kw["epochs"] = 1
    free = STDPClustering(5, **kw).fit(x)
    slow = STDPClustering(5, anneal=1.0, **kw).fit(x)
    moved = [np.abs(n.weights_ - start.weights_).sum() for n in (free, slow)]
    assert moved[1] < 0.5 * moved[0]
