"""Deep-STDP's clustering layer: a Diehl & Cook (2015) spiking network trained by STDP.

Each sample is shown for `time` steps as Bernoulli (discrete Poisson) spike trains. The signed
feature vector x of width D becomes 2*D non-negative rates by an on/off pair per dimension,
``rate_on = intensity * max(x, 0) / max|x|`` and ``rate_off = intensity * max(-x, 0) / max|x|``,
so the strongest component of every sample fires at `intensity` Hz whatever the feature scale
(as the brightest MNIST pixel does in Diehl & Cook). The inputs drive `n_neurons` excitatory
leaky integrate-and-fire neurons with adaptive thresholds; a spike inhibits all other neurons
directly (Diehl & Cook's one-to-one inhibitory population collapsed into one connection), which
makes the layer a soft winner-take-all. Trace-based STDP moves the winner's input weights
towards the sample, and per-neuron weight normalisation keeps the neurons competing on equal
terms. A sample's cluster is the cluster of the neuron that spikes most while it is shown.

The per-sample time loop runs in numba and is event driven: only inputs that spike touch their
weight row and only neurons that spike touch their weight column, so a sample costs
O(input spikes * n_neurons + time * n_neurons), not O(time * inputs * n_neurons). Random numbers
come from a counter-based generator keyed by (seed, pass, sample, show), so results do not depend
on the thread count, and a clusterer restored by `load_state_dict` continues exactly as an
uninterrupted one. docs/snn.md explains the design choices and the tuning of the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Self

import numba
import numpy as np
from numba import njit, prange
from sklearn.cluster import SpectralClustering

from deepstdp.clustering import Clusterer, as_features
from deepstdp.util import DeepSTDPError

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_PREDICT_PASS = 2**62  # the pass number of every predict call: prediction is a pure function


class _Dyn(NamedTuple):
    """Per-step constants, derived from the public parameters (see STDPClustering._dyn)."""

    v_rest: float
    v_reset: float
    v_thresh: float
    decay_m: float  # exp(-dt / tau_m)
    refrac_steps: int
    theta_plus: float
    decay_theta: float  # exp(-dt / tau_theta)
    inhibition: float
    nu_pre: float  # absolute weight units
    nu_post: float
    decay_post: float  # exp(-dt / tau_post)
    wmax: float


# ------------------------------------------------------------------------------ random numbers


@njit(cache=True)
def _mix(z: np.uint64) -> np.uint64:
    """SplitMix64's finaliser: a bijective scramble of a 64-bit integer."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def _key(seed: np.uint64, a: int, b: int) -> np.uint64:
    """Start of an independent random stream for (seed, a, b)."""
    return _mix(_mix(seed + np.uint64(a) * _GOLDEN) + np.uint64(b) * _GOLDEN)


@njit(cache=True)
def _uniform(state: np.ndarray) -> float:
    """Next SplitMix64 draw from `state` (one uint64) as a float in (0, 1]."""
    state[0] += _GOLDEN
    return ((_mix(state[0]) >> np.uint64(11)) + np.uint64(1)) * (1.0 / 9007199254740992.0)


# ------------------------------------------------------------------------------ network kernels


@njit(cache=True)
def _input_events(x: np.ndarray, pmax: float, n_steps: int, state: np.ndarray,
                  ptr: np.ndarray, idx: np.ndarray, tmp_t: np.ndarray,
                  tmp_i: np.ndarray) -> None:
    """Bernoulli spike trains of the on/off inputs of sample x, as CSR by time step.

    The inputs spiking at step t are ``idx[ptr[t]:ptr[t + 1]]``; input k < D is x[k]'s on cell,
    D + k its off cell. Gaps between an input's spikes are drawn geometrically, so the cost is
    one random number per spike, not one per input and step.
    """
    d = x.shape[0]
    ptr[:] = 0
    scale = 0.0
    for k in range(d):
        scale = max(scale, abs(x[k]))
    n = 0
    for k in range(d if scale > 0.0 else 0):
        p = pmax * abs(x[k]) / scale
        if p <= 0.0:
            continue
        i = k if x[k] > 0 else d + k
        inv_log = 1.0 / np.log1p(-p) if p < 1.0 else 0.0
        t = np.floor(np.log(_uniform(state)) * inv_log)  # failures before the first spike
        while t < n_steps:
            tmp_t[n] = int(t)
            tmp_i[n] = i
            ptr[int(t) + 1] += 1
            n += 1
            t += 1.0 + np.floor(np.log(_uniform(state)) * inv_log)
    for t in range(n_steps):
        ptr[t + 1] += ptr[t]
    fill = ptr[:-1].copy()
    for e in range(n):
        idx[fill[tmp_t[e]]] = tmp_i[e]
        fill[tmp_t[e]] += 1


@njit(cache=True)
def _present(w: np.ndarray, theta: np.ndarray, ptr: np.ndarray, idx: np.ndarray, k: _Dyn,
             pre_decay: np.ndarray, learn: bool, adapt: bool, counts: np.ndarray,
             first: np.ndarray, peak: np.ndarray, rec_v: np.ndarray, rec_s: np.ndarray,
             rec_theta: np.ndarray) -> None:
    """Show one sample (input spikes as CSR by step) to the layer, starting from rest.

    Each step: v leaks towards v_rest; the weights of the inputs spiking now are added (not while
    refractory); the neuron furthest above its threshold v_thresh + theta, if any, spikes: it is
    reset and refractory, and every other neuron loses `inhibition` mV. One spike per step keeps
    the winner-take-all crisp when several neurons cross together. With `adapt`, a spike adds
    theta_plus to the spiker's theta and every theta decays each step. With `learn`, STDP: an
    input spike depresses its weights by nu_pre * post-trace, a neuron spike potentiates its
    weights by nu_post * pre-trace, clipped to [0, wmax]. Traces are set to 1 by a spike and
    decay exponentially (pre_decay[dt_steps] for inputs), so an input spiking in the same step
    as the neuron counts as pre-before-post.

    Fills counts (spikes per neuron), first (step of the first spike, -1 if none) and peak (the
    highest v - threshold reached). rec_* are (steps, neurons) recordings, or 0 x 0 for none.
    """
    n_in, n = w.shape
    record = rec_v.shape[0] > 0
    f32 = np.float32
    v_rest, decay_m = f32(k.v_rest), f32(k.decay_m)
    nu_pre, decay_post = f32(k.nu_pre), f32(k.decay_post)
    v = np.full(n, v_rest, np.float32)
    thr = (k.v_thresh + theta).astype(np.float32)  # kept equal to v_thresh + theta
    cur = np.zeros(n, np.float32)
    gate = np.ones(n, np.float32)  # 0 while refractory: input is ignored and no spike
    refrac = np.zeros(n, np.int64)
    n_refrac = 0
    post = np.zeros(n, np.float32)
    last_pre = np.full(n_in, -1, np.int64)  # an input's trace is pre_decay[t - last_pre]
    counts[:] = 0
    first[:] = -1
    peak[:] = -1e30
    any_post = False
    for t in range(ptr.shape[0] - 1):
        if any_post:
            for j in range(n):
                post[j] *= decay_post
        cur[:] = 0.0
        for e in range(ptr[t], ptr[t + 1]):
            i = idx[e]
            last_pre[i] = t
            row = w[i]
            for j in range(n):
                cur[j] += row[j]
            if learn and any_post:
                for j in range(n):
                    row[j] = max(row[j] - nu_pre * post[j], f32(0.0))
        top = f32(-1e30)
        for j in range(n):  # branch-free, so it vectorises
            v[j] = v_rest + (v[j] - v_rest) * decay_m + cur[j] * gate[j]
            over = v[j] - thr[j] - (f32(1.0) - gate[j]) * f32(1e30)
            peak[j] = max(peak[j], over)
            top = max(top, over)
        if n_refrac > 0:
            for j in range(n):
                if refrac[j] > 0:
                    refrac[j] -= 1
                    if refrac[j] == 0:
                        gate[j] = 1.0
                        n_refrac -= 1
        if adapt:
            for j in range(n):
                theta[j] *= k.decay_theta
                thr[j] = k.v_thresh + theta[j]
        best, best_over = -1, f32(-1e30)
        if top >= 0.0:
            for j in range(n):
                if gate[j] > 0 and v[j] - thr[j] > best_over:
                    best, best_over = j, v[j] - thr[j]
        if best >= 0:
            for j in range(n):
                v[j] -= k.inhibition
            v[best] = k.v_reset
            refrac[best] = k.refrac_steps
            if k.refrac_steps > 0:
                gate[best] = 0.0
                n_refrac += 1
            counts[best] += 1
            if first[best] < 0:
                first[best] = t
            post[best] = 1.0
            any_post = True
            if adapt:
                theta[best] += k.theta_plus
                thr[best] = k.v_thresh + theta[best]
            if learn:
                for i in range(n_in):
                    if last_pre[i] >= 0:
                        w[i, best] = min(w[i, best] + k.nu_post * pre_decay[t - last_pre[i]],
                                         k.wmax)
        if record:
            rec_v[t] = v
            rec_theta[t] = theta
            if best >= 0:
                rec_s[t, best] = True


@njit(cache=True)
def _normalize(w: np.ndarray, norm: float) -> None:
    """Scale each neuron's input weights (a column) to sum to `norm`."""
    s = np.zeros(w.shape[1], np.float32)
    for i in range(w.shape[0]):  # row by row: w is C-ordered
        s += w[i]
    f = np.where(s > 0, np.float32(norm) / s, np.float32(1.0)).astype(np.float32)
    for i in range(w.shape[0]):
        w[i] *= f


@njit(cache=True)
def _best(counts: np.ndarray, first: np.ndarray, peak: np.ndarray, skip: int) -> int:
    """The neuron (other than `skip`) that spiked most; ties: first to spike, then highest peak."""
    best = -1
    for j in range(counts.shape[0]):
        if j == skip:
            continue
        if best < 0 or counts[j] > counts[best]:
            best = j
        elif counts[j] == counts[best]:
            if counts[j] > 0 and first[j] != first[best]:
                if first[j] < first[best]:
                    best = j
            elif peak[j] > peak[best]:
                best = j
    return best


@njit(cache=True)
def _show(x: np.ndarray, w: np.ndarray, theta: np.ndarray, k: _Dyn, pre_decay: np.ndarray,
          learn: bool, intensity: float, intensity_step: float, max_reshow: int, dt: float,
          norm: float, key: np.uint64, counts: np.ndarray, ptr: np.ndarray, idx: np.ndarray,
          tmp_t: np.ndarray, tmp_i: np.ndarray) -> tuple[int, int, int]:
    """Show sample x, re-showing it louder while no neuron spikes.

    Returns (winner, runner-up, shows): shows is the number of presentations, or
    max_reshow + 2 when the sample stayed silent throughout and the neurons were ranked by how
    close they came to their thresholds (`peak`). `counts` gets the spikes of the last show.
    With `learn`, weights are normalised to `norm` after every show that had a spike.
    """
    n = w.shape[1]
    first = np.empty(n, np.int64)
    peak = np.empty(n)
    no_f, no_b = np.empty((0, 0)), np.empty((0, 0), np.bool_)
    state = np.empty(1, np.uint64)
    for show in range(max_reshow + 1):
        state[0] = _mix(key + np.uint64(show))
        pmax = (intensity + show * intensity_step) * dt / 1000.0
        _input_events(x, pmax, ptr.shape[0] - 1, state, ptr, idx, tmp_t, tmp_i)
        _present(w, theta, ptr, idx, k, pre_decay, learn, learn, counts, first, peak,
                 no_f, no_b, no_f)
        if counts.sum() > 0:
            if learn:
                _normalize(w, norm)
            winner = _best(counts, first, peak, -1)
            return winner, _best(counts, first, peak, winner), show + 1
    winner = _best(counts, first, peak, -1)
    return winner, _best(counts, first, peak, winner), max_reshow + 2


@njit(cache=True)
def _train_pass(x: np.ndarray, order: np.ndarray, w: np.ndarray, theta: np.ndarray, k: _Dyn,
                pre_decay: np.ndarray, n_steps: int, intensity: float, intensity_step: float,
                max_reshow: int, dt: float, norm: float, seed: np.uint64, pass_no: int,
                winners: np.ndarray, shows: np.ndarray, spikes: np.ndarray) -> None:
    """One pass of online learning over x[order], one sample at a time (truly sequential)."""
    cap = w.shape[0] * n_steps  # most input spikes one show can have
    ptr, idx = np.empty(n_steps + 1, np.int64), np.empty(cap, np.int64)
    tmp_t, tmp_i = np.empty(cap, np.int64), np.empty(cap, np.int64)
    counts = np.empty(w.shape[1], np.int64)
    for s in range(order.shape[0]):
        winners[s], _, shows[s] = _show(x[order[s]], w, theta, k, pre_decay, True, intensity,
                                        intensity_step, max_reshow, dt, norm,
                                        _key(seed, pass_no, order[s]), counts, ptr, idx, tmp_t,
                                        tmp_i)
        spikes += counts


@njit(cache=True, parallel=True)
def _predict_pass(x: np.ndarray, w: np.ndarray, theta: np.ndarray, k: _Dyn,
                  pre_decay: np.ndarray, n_steps: int, intensity: float,
                  intensity_step: float, max_reshow: int, dt: float, seed: np.uint64,
                  n_chunks: int, winners: np.ndarray, runners: np.ndarray,
                  shows: np.ndarray) -> None:
    """Frozen network (no STDP, thresholds fixed): samples are independent, so chunks of them
    run in parallel; the keyed random streams make the result independent of the threads."""
    cap = w.shape[0] * n_steps
    for c in prange(n_chunks):
        ptr, idx = np.empty(n_steps + 1, np.int64), np.empty(cap, np.int64)
        tmp_t, tmp_i = np.empty(cap, np.int64), np.empty(cap, np.int64)
        counts = np.empty(w.shape[1], np.int64)
        for s in range(c * x.shape[0] // n_chunks, (c + 1) * x.shape[0] // n_chunks):
            winners[s], runners[s], shows[s] = _show(
                x[s], w, theta, k, pre_decay, False, intensity, intensity_step, max_reshow, dt,
                0.0, _key(seed, _PREDICT_PASS, s), counts, ptr, idx, tmp_t, tmp_i)


# ------------------------------------------------------------------------------ estimator


@dataclass
class SimResult:
    """Step-by-step record of one presentation (see `STDPClustering.simulate`)."""

    v: np.ndarray
    """(steps, neurons) membrane potential at the end of each step."""
    spikes: np.ndarray
    """(steps, neurons) bool."""
    theta: np.ndarray
    """(steps, neurons) adaptive threshold at the end of each step."""
    weights: np.ndarray
    """(inputs, neurons) weights after the presentation."""


class STDPClustering(Clusterer):
    """Clustering by a Diehl & Cook (2015) STDP network (see the module docstring).

    `fit` re-initialises weights and thresholds, then makes `epochs` passes of online STDP (one
    sample at a time, plasticity and threshold adaptation on, order reshuffled every pass);
    `partial_fit` makes `epochs` more passes from the current state. Both end with one frozen
    pass (no plasticity, thresholds fixed) that sets `labels_`; `predict` is that frozen pass.

    Parameters (times in ms, potentials in mV, rates in Hz):
        n_clusters: number of clusters (>= 2).
        n_neurons: excitatory neurons, >= n_clusters (default n_clusters: neuron i is cluster i).
            With more neurons, neurons are grouped into clusters by spectral clustering of
            their co-activation graph: how often one won a sample and the other came second.
        time: simulation steps per presentation of a sample.
        dt: step length.
        seed: seeds the initial weights, the sample order and every spike train.
        epochs: online passes over the data per fit / partial_fit call.
        intensity: input rate of a sample's largest |component|.
        intensity_step: rate added each time a sample that made no neuron spike is re-shown.
        max_reshow: re-shows before a silent sample goes to the neuron closest to threshold.
        v_rest, v_reset, v_thresh: resting, reset and base threshold potential.
        tau_m: membrane time constant.
        refractory: time after a spike during which a neuron ignores its input.
        theta_plus: threshold increase per spike; frequent winners get harder to fire, which
            balances cluster sizes, and the rising thresholds anneal learning.
        tau_theta: threshold decay time constant; None: 300 * n_neurons * time * dt, i.e. each
            neuron's threshold remembers about its last 300 shares of presentations, the ratio
            of Diehl & Cook's 1e7 ms for 100 neurons and 350 + 150 ms per sample.
        inhibition: potential removed from every other neuron when one spikes.
        nu_pre: depression per input spike, times the post trace.
        nu_post: potentiation per neuron spike, times the pre trace.
        tau_pre, tau_post: time constants of the input and neuron traces.
        wmax: upper clip of a weight after an STDP update.
        norm: sum of each neuron's input weights, restored after every sample; it sets how
            fast a matching sample drives a neuron to threshold. None: calibrated from `drive`
            at each fit (kept by partial_fit), as `norm_`.
        drive: input per step (mV) that a typical sample gives the best-matching of 50 neurons
            shaped like other samples (rates + 0.1, normalised): norm_ = drive / (intensity *
            dt / 1000 * that match). One value then suits 16- to 256-d whitened features;
            raw non-negative pixels, where every neuron matches every image fairly well, want
            about 0.2.
        init: 'data': each neuron starts from the input rates of a random sample plus uniform
            noise in [0, 0.1), so no neuron starts hopeless (with non-negative inputs half of
            random weights sit on off cells that never fire); 'random': uniform (Diehl & Cook).

    nu_pre, nu_post and wmax are in units of the mean weight, norm_ / (2 * D), so they mean the
    same for any feature width D; Diehl & Cook's 1e-4, 1e-2 and 1 at mean weight 0.1 are 1e-3,
    0.1 and 10 here.

    Attributes after fit: labels_, norm_, weights_ (2D, n_neurons) float32 (rows D.. are the off
    cells), theta_, neuron_cluster_, passes_ (training passes so far), n_reshown_ / n_silent_
    (samples of the last frozen pass, fit's or predict's, that needed a re-show / stayed silent
    to the end), train_reshown_ / train_silent_ (the same for the last training pass) and
    history_ (per training pass: spikes, wins and end-of-pass theta per neuron).
    """

    def __init__(
        self,
        n_clusters: int,
        n_neurons: int | None = None,
        *,
        time: int = 500,
        dt: float = 1.0,
        seed: int = 0,
        epochs: int = 3,
        intensity: float = 64.0,
        intensity_step: float = 32.0,
        max_reshow: int = 4,
        v_rest: float = -65.0,
        v_reset: float = -60.0,
        v_thresh: float = -52.0,
        tau_m: float = 100.0,
        refractory: float = 5.0,
        theta_plus: float = 0.05,
        tau_theta: float | None = None,
        inhibition: float = 17.5,
        nu_pre: float = 1e-3,
        nu_post: float = 0.1,
        tau_pre: float = 20.0,
        tau_post: float = 20.0,
        wmax: float = 10.0,
        norm: float | None = None,
        drive: float = 0.35,
        init: str = "data",
    ):
        n_neurons = n_clusters if n_neurons is None else n_neurons
        for name, value, low in (("n_clusters", n_clusters, 2), ("n_neurons", n_neurons, 2),
                                 ("time", time, 1), ("epochs", epochs, 1),
                                 ("max_reshow", max_reshow, 0)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                raise DeepSTDPError(f"{name} must be an integer >= {low}, got {value}")
        if n_neurons < n_clusters:
            raise DeepSTDPError(f"n_neurons ({n_neurons}) must be at least n_clusters "
                                f"({n_clusters})")
        for name, value in (("dt", dt), ("intensity", intensity), ("tau_m", tau_m),
                            ("tau_theta", 1.0 if tau_theta is None else tau_theta),
                            ("tau_pre", tau_pre), ("tau_post", tau_post), ("wmax", wmax),
                            ("norm", 1.0 if norm is None else norm), ("drive", drive)):
            if not value > 0:
                raise DeepSTDPError(f"{name} must be positive, got {value}")
        for name, value in (("intensity_step", intensity_step), ("refractory", refractory),
                            ("theta_plus", theta_plus), ("inhibition", inhibition),
                            ("nu_pre", nu_pre), ("nu_post", nu_post)):
            if not value >= 0:
                raise DeepSTDPError(f"{name} must be non-negative, got {value}")
        if not (v_rest < v_thresh and v_reset < v_thresh):
            raise DeepSTDPError("v_rest and v_reset must be below v_thresh")
        if init not in ("random", "data"):
            raise DeepSTDPError(f"init must be 'random' or 'data', got {init!r}")
        self.n_clusters, self.n_neurons = int(n_clusters), int(n_neurons)
        self.time, self.dt, self.seed, self.epochs = int(time), float(dt), int(seed), int(epochs)
        self.intensity, self.intensity_step = float(intensity), float(intensity_step)
        self.max_reshow = int(max_reshow)
        self.v_rest, self.v_reset, self.v_thresh = float(v_rest), float(v_reset), float(v_thresh)
        self.tau_m, self.refractory = float(tau_m), float(refractory)
        self.theta_plus = float(theta_plus)
        self.tau_theta = (300.0 * self.n_neurons * self.time * self.dt if tau_theta is None
                          else float(tau_theta))
        self.inhibition = float(inhibition)
        self.nu_pre, self.nu_post = float(nu_pre), float(nu_post)
        self.tau_pre, self.tau_post = float(tau_pre), float(tau_post)
        self.wmax, self.init = float(wmax), init
        self.norm, self.drive = None if norm is None else float(norm), float(drive)

    # ------------------------------------------------------------------ public API

    def fit(self, x: Any) -> Self:
        """Re-initialise, train `epochs` passes, then label x with the frozen network."""
        x = self._check_fit_input(x)
        self._init_state(x)
        self._train(x)
        return self

    def partial_fit(self, x: Any) -> Self:
        """Train `epochs` more passes from the current state (fit if unfitted), relabel x."""
        if not hasattr(self, "weights_"):
            return self.fit(x)
        x = as_features(x, n_features=self.n_features_)
        if len(x) < self.n_clusters:
            raise DeepSTDPError(f"{len(x)} samples cannot form {self.n_clusters} clusters")
        self._train(x)
        return self

    def predict(self, x: Any) -> np.ndarray:
        """Cluster of the neuron spiking most on each sample; no plasticity, deterministic."""
        if not hasattr(self, "weights_"):
            raise DeepSTDPError(f"{type(self).__name__} must be fitted before predict")
        winners, _ = self._frozen_pass(as_features(x, n_features=self.n_features_))
        return self.neuron_cluster_[winners]

    def simulate(self, spikes: np.ndarray, weights: np.ndarray | None = None,
                 theta: np.ndarray | None = None, learn: bool = False,
                 adapt: bool = True) -> SimResult:
        """One presentation of a given input raster with this clusterer's constants, recording
        every step; for tests and plots. Changes nothing in the clusterer.

        spikes: (steps, inputs) bool; weights: (inputs, neurons), default the fitted ones;
        theta: initial thresholds, default the fitted ones or zeros. No weight normalisation
        (that happens between samples). nu_pre, nu_post and wmax are in units of
        norm_ / inputs as in fit (`norm` if unfitted, else 1: with norm=None they are absolute).
        """
        if weights is None and not hasattr(self, "weights_"):
            raise DeepSTDPError("simulate needs weights or a fitted clusterer")
        spikes = np.asarray(spikes, dtype=bool)
        w = np.array(self.weights_ if weights is None else weights, dtype=np.float32)
        if theta is None:
            theta = getattr(self, "theta_", np.zeros(w.shape[1]))
        th = np.array(theta, dtype=np.float64)
        if spikes.ndim != 2 or w.ndim != 2 or w.shape[0] != spikes.shape[1]:
            raise DeepSTDPError(f"raster {spikes.shape} and weights {w.shape} do not match")
        if th.shape != (w.shape[1],):
            raise DeepSTDPError(f"theta {th.shape} does not match {w.shape[1]} neurons")
        steps, n = spikes.shape[0], w.shape[1]
        t, i = np.nonzero(spikes)
        ptr = np.searchsorted(t, np.arange(steps + 1)).astype(np.int64)
        rec_v, rec_th = np.zeros((steps, n)), np.zeros((steps, n))
        rec_s = np.zeros((steps, n), bool)
        counts, first, peak = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n)
        norm = getattr(self, "norm_", self.norm or w.shape[0])
        _present(w, th, ptr, i.astype(np.int64), self._dyn(w.shape[0], norm),
                 self._pre_decay(steps), learn, adapt, counts, first, peak, rec_v, rec_s, rec_th)
        return SimResult(v=rec_v, spikes=rec_s, theta=rec_th, weights=w)

    def diagnostics(self) -> dict[str, Any]:
        """Scalars for the training log: re-shown / silent samples and neuron usage."""
        if not hasattr(self, "weights_"):
            return {}
        return {"stdp_reshown": self.n_reshown_, "stdp_silent": self.n_silent_,
                "stdp_train_reshown": self.train_reshown_, "stdp_train_silent": self.train_silent_,
                "stdp_dead_neurons": int((self.history_["wins"][-1] == 0).sum()),
                "stdp_theta_mean": float(self.theta_.mean()), "stdp_passes": self.passes_}

    def state_dict(self) -> dict[str, Any]:
        if not hasattr(self, "weights_"):
            return {}
        return {"weights": self.weights_, "theta": self.theta_,
                "neuron_cluster": self.neuron_cluster_, "labels": self.labels_,
                "seed": self.seed, "passes": self.passes_, "norm": self.norm_,
                "n_reshown": self.n_reshown_, "n_silent": self.n_silent_,
                "train_reshown": self.train_reshown_, "train_silent": self.train_silent_,
                **{f"history_{k}": np.array(v) for k, v in self.history_.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        w = np.ascontiguousarray(state["weights"], dtype=np.float32)
        if w.ndim != 2 or w.shape[1] != self.n_neurons or w.shape[0] % 2:
            raise DeepSTDPError(f"state holds weights {w.shape}, this clusterer has "
                                f"{self.n_neurons} neurons")
        self.weights_, self.n_features_ = w, w.shape[0] // 2
        self.theta_ = np.array(state["theta"], dtype=np.float64)
        self.neuron_cluster_ = np.asarray(state["neuron_cluster"], dtype=np.int64)
        self.labels_ = np.asarray(state["labels"], dtype=np.int64)
        self.seed, self.passes_ = int(state["seed"]), int(state["passes"])
        self.norm_ = float(state["norm"])
        self.n_reshown_, self.n_silent_ = int(state["n_reshown"]), int(state["n_silent"])
        self.train_reshown_ = int(state["train_reshown"])
        self.train_silent_ = int(state["train_silent"])
        self.history_ = {k: list(np.asarray(state[f"history_{k}"]))
                         for k in ("spikes", "wins", "theta")}

    # ------------------------------------------------------------------ internals

    def _dyn(self, n_inputs: int, norm: float) -> _Dyn:
        unit = norm / n_inputs  # the mean weight: unit of nu_pre, nu_post and wmax
        return _Dyn(self.v_rest, self.v_reset, self.v_thresh, float(np.exp(-self.dt / self.tau_m)),
                    round(self.refractory / self.dt), self.theta_plus,
                    float(np.exp(-self.dt / self.tau_theta)), self.inhibition,
                    self.nu_pre * unit, self.nu_post * unit,
                    float(np.exp(-self.dt / self.tau_post)), self.wmax * unit)

    def _pre_decay(self, steps: int) -> np.ndarray:
        """Input trace k steps after its spike, for k = 0..steps."""
        return np.exp(-np.arange(steps + 1) * self.dt / self.tau_pre).astype(np.float32)

    def _init_state(self, x: np.ndarray) -> None:
        rng = np.random.default_rng([self.seed, 0])
        d = x.shape[1]
        if self.init == "random":
            w = rng.random((2 * d, self.n_neurons))
        else:
            pick = x[rng.choice(len(x), self.n_neurons, replace=len(x) < self.n_neurons)]
            pick = pick / np.abs(pick).max(axis=1, keepdims=True).clip(1e-12)
            w = np.concatenate([pick.clip(0), (-pick).clip(0)], axis=1).T
            w = w + 0.1 * rng.random(w.shape)
        self.weights_ = np.ascontiguousarray(w, dtype=np.float32)
        self.norm_ = self.norm or self._calibrate_norm(x, rng)
        _normalize(self.weights_, self.norm_)
        self.theta_ = np.zeros(self.n_neurons)
        self.n_features_ = d
        self.passes_ = 0
        self.history_: dict[str, list[np.ndarray]] = {"spikes": [], "wins": [], "theta": []}

    def _calibrate_norm(self, x: np.ndarray, rng: np.random.Generator) -> float:
        """Weight sum that gives the best-matching of 50 sample-shaped neurons `drive` mV per
        step from a typical sample; makes one default fit raw pixels and 256-d features."""
        pick = rng.choice(len(x), min(len(x), 1050), replace=False)
        a = x[pick] / np.abs(x[pick]).max(axis=1, keepdims=True).clip(1e-12)
        rates = np.concatenate([a.clip(0), (-a).clip(0)], axis=1)
        m = min(50, len(rates) // 2)
        protos, samples = rates[:m] + 0.1, rates[m:]
        protos /= protos.sum(axis=1, keepdims=True)
        match = (samples @ protos.T).max(axis=1).mean()
        return float(self.drive / (self.intensity * self.dt / 1000.0 * match))

    def _train(self, x: np.ndarray) -> None:
        k, pre = self._dyn(2 * self.n_features_, self.norm_), self._pre_decay(self.time)
        n = len(x)
        for _ in range(self.epochs):
            order = np.random.default_rng([self.seed, 1, self.passes_]).permutation(n)
            winners, shows = np.empty(n, np.int64), np.empty(n, np.int64)
            spikes = np.zeros(self.n_neurons, np.int64)
            _train_pass(x, order, self.weights_, self.theta_, k, pre, self.time,
                        self.intensity, self.intensity_step, self.max_reshow, self.dt,
                        self.norm_, np.uint64(self.seed), self.passes_, winners, shows, spikes)
            self.passes_ += 1
            self.history_["spikes"].append(spikes)
            self.history_["wins"].append(np.bincount(winners, minlength=self.n_neurons))
            self.history_["theta"].append(self.theta_.copy())
            self.train_reshown_ = int((shows > 1).sum())
            self.train_silent_ = int((shows > self.max_reshow + 1).sum())
        winners, runners = self._frozen_pass(x)
        self._map_neurons(winners, runners)
        self.labels_ = self.neuron_cluster_[winners]

    def _frozen_pass(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Winner and runner-up neuron of every sample; sets n_reshown_ and n_silent_."""
        n = len(x)
        winners, runners, shows = (np.empty(n, np.int64) for _ in range(3))
        _predict_pass(x, self.weights_, self.theta_, self._dyn(2 * self.n_features_, self.norm_),
                      self._pre_decay(self.time), self.time, self.intensity,
                      self.intensity_step, self.max_reshow, self.dt, np.uint64(self.seed),
                      max(1, min(n, 4 * numba.get_num_threads())), winners, runners, shows)
        self.n_reshown_ = int((shows > 1).sum())
        self.n_silent_ = int((shows > self.max_reshow + 1).sum())
        return winners, runners

    def _map_neurons(self, winners: np.ndarray, runners: np.ndarray) -> None:
        """Neuron -> cluster: identity, or spectral clustering of the co-activation graph.

        Only neurons that won a sample take part; each silent neuron joins the cluster of the
        active neuron with the most similar weights, so dead neurons cannot claim clusters.
        """
        n, k = self.n_neurons, self.n_clusters
        if n == k:
            self.neuron_cluster_ = np.arange(n, dtype=np.int64)
            return
        active = np.flatnonzero(np.bincount(winners, minlength=n))
        if len(active) <= k:
            cluster_of_active = np.arange(len(active))
        else:
            co = np.zeros((n, n))
            np.add.at(co, (winners, runners), 1.0)
            co = (co + co.T)[np.ix_(active, active)] + 1e-3  # the floor keeps it connected
            spectral = SpectralClustering(k, affinity="precomputed", random_state=self.seed)
            cluster_of_active = spectral.fit_predict(co)
        w = self.weights_ / np.linalg.norm(self.weights_, axis=0)
        nearest = active[np.argmax(w.T @ w[:, active], axis=1)]
        mapping = np.zeros(n, np.int64)
        mapping[active] = cluster_of_active
        mapping = mapping[nearest]
        mapping[active] = cluster_of_active
        self.neuron_cluster_ = mapping
