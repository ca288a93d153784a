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

This module is the estimator: its settings, state, checkpoints and readouts. The time loop it
runs is in `kernels` (compiled by numba); docs/snn.md explains the design choices
and the tuning of the defaults.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from numbers import Integral
from typing import Any, NamedTuple, Self

import numba
import numpy as np
from sklearn.cluster import SpectralClustering, kmeans_plusplus
from sklearn.utils import check_random_state
from tqdm import tqdm

from deepstdp.clustering.base import Clusterer, _check_fitted, state_array, state_tensors
from deepstdp.clustering.stdp import kernels
from deepstdp.clustering.stdp.settings import STDPSettings
from deepstdp.runtime.util import DeepSTDPError


class Readout(NamedTuple):
    """What a frozen pass found for each sample (see `STDPClustering.readout`)."""

    labels: np.ndarray
    """(samples,) int64 cluster."""
    neurons: np.ndarray
    """(samples,) int64 winning neuron."""
    shows: np.ndarray
    """(samples,) int64 presentations: 1, or more when no neuron spiked and it was re-shown."""
    silent: np.ndarray
    """(samples,) bool: no neuron spiked in any show; the neuron closest to threshold won."""
    margin: np.ndarray
    """(samples,) float64 confidence: the winner's lead over the runner-up, in spikes of the
    last show (readout 'spikes') or in mV of expected potential (readout 'current')."""

    @property
    def n_reshown(self) -> int:
        return int((self.shows > 1).sum())

    @property
    def n_silent(self) -> int:
        return int(self.silent.sum())


# ------------------------------------------------------------------------------ estimator


@dataclass
class PresentationTrace:
    """Step-by-step record of one presentation of a raster to the layer
    (`STDPClustering.simulate`; the converted CNN's record is conversion.network.IFRecord)."""

    v: np.ndarray
    """(steps, neurons) membrane potential at the end of each step."""
    spikes: np.ndarray
    """(steps, neurons) bool."""
    theta: np.ndarray
    """(steps, neurons) adaptive threshold at the end of each step."""
    weights: np.ndarray
    """(inputs, neurons) weights after the presentation."""


_SETTINGS = tuple(f.name for f in dataclasses.fields(STDPSettings))
_HISTORY = ("spikes", "wins", "theta")
_QUALITY_BLOCK = 2**24
"""`quality` takes each sample's best drive over this many (sample, neuron) pairs at a time:
the whole float64 matrix at 100,000 samples and 2,000 neurons was 1.6 GB, most of a 200-class
run's peak memory (docs/pipeline.md, "Scaling")."""


class STDPClustering(Clusterer):
    """Clustering by a Diehl & Cook (2015) STDP network (see the module docstring).

    A scikit-learn estimator. `fit` re-initialises weights and thresholds, then makes `epochs`
    passes of online STDP (one sample at a time, plasticity and threshold adaptation on, order
    reshuffled every pass); `partial_fit` makes `epochs` more passes from the current state.
    Both end with one frozen pass (no plasticity, thresholds fixed) that sets `labels_`;
    `predict` is that frozen pass, so ``predict(X)`` equals ``labels_`` after ``fit(X)``.

    Parameters: n_clusters (>= 1); random_state (an int in [0, 2**32), a numpy RandomState or
    None: seeds the initial weights, the sample order and every spike train; 10 clusters and
    seed 0 by default, as KMeansClustering); and the settings of
    `stdp.settings.STDPSettings`, which documents each one's default and meaning.
    nu_pre, nu_post and wmax are in units of the mean weight, norm_ / (2 * D), so
    they mean the same for any feature width D. verbose: a progress bar over the passes of fit
    and partial_fit (on stderr; changes no result).

    Attributes after fit: labels_; n_features_in_; n_neurons_ and tau_theta_ (the settings as
    resolved); seed_ (the kernels' seed, from random_state); norm_; weights_ (2D, n_neurons_)
    float32, rows D.. the off cells; theta_; neuron_cluster_; passes_ (training passes so far);
    labels_reshown_ / labels_silent_ (samples of the frozen pass that set labels_ that needed a
    re-show / stayed silent to the end); train_reshown_ / train_silent_ (the same for the last
    training pass); history_ (per training pass: spikes, wins and end-of-pass theta per
    neuron). predict changes nothing in the estimator (scikit-learn's contract), so the counts
    of any other frozen pass come with its labels from `readout(X)`.
    """

    def __init__(
        self,
        n_clusters: int = 10,
        *,
        random_state: int | np.random.RandomState | None = 0,
        n_neurons: int | None = STDPSettings.n_neurons,
        time: int = STDPSettings.time,
        dt: float = STDPSettings.dt,
        epochs: int = STDPSettings.epochs,
        online_samples: int | None = STDPSettings.online_samples,
        intensity: float = STDPSettings.intensity,
        intensity_step: float = STDPSettings.intensity_step,
        max_reshow: int = STDPSettings.max_reshow,
        v_rest: float = STDPSettings.v_rest,
        v_reset: float = STDPSettings.v_reset,
        v_thresh: float = STDPSettings.v_thresh,
        tau_m: float = STDPSettings.tau_m,
        refractory: float = STDPSettings.refractory,
        theta_plus: float = STDPSettings.theta_plus,
        tau_theta: float | None = STDPSettings.tau_theta,
        inhibition: float = STDPSettings.inhibition,
        nu_pre: float = STDPSettings.nu_pre,
        nu_post: float = STDPSettings.nu_post,
        tau_pre: float = STDPSettings.tau_pre,
        tau_post: float = STDPSettings.tau_post,
        wmax: float = STDPSettings.wmax,
        norm: float | None = STDPSettings.norm,
        drive: float = STDPSettings.drive,
        init: str = STDPSettings.init,
        synapse: str = STDPSettings.synapse,
        weight_norm: str = STDPSettings.weight_norm,
        inference: str = STDPSettings.inference,
        anneal: float | None = STDPSettings.anneal,
        consolidation: int = STDPSettings.consolidation,
        n_init: int = STDPSettings.n_init,
        verbose: bool = False,
    ):
        self.n_clusters = n_clusters
        self.random_state = random_state
        self.n_neurons = n_neurons
        self.time = time
        self.dt = dt
        self.epochs = epochs
        self.online_samples = online_samples
        self.intensity = intensity
        self.intensity_step = intensity_step
        self.max_reshow = max_reshow
        self.v_rest = v_rest
        self.v_reset = v_reset
        self.v_thresh = v_thresh
        self.tau_m = tau_m
        self.refractory = refractory
        self.theta_plus = theta_plus
        self.tau_theta = tau_theta
        self.inhibition = inhibition
        self.nu_pre = nu_pre
        self.nu_post = nu_post
        self.tau_pre = tau_pre
        self.tau_post = tau_post
        self.wmax = wmax
        self.norm = norm
        self.drive = drive
        self.init = init
        self.synapse = synapse
        self.weight_norm = weight_norm
        self.inference = inference
        self.anneal = anneal
        self.consolidation = consolidation
        self.n_init = n_init
        self.verbose = verbose

    # ------------------------------------------------------------------ public API

    def fit(self, X: Any, y: Any = None) -> Self:
        """Re-initialise, train `epochs` passes, then label X with the frozen network; with
        n_init > 1, keep the best of that many starts (`quality`)."""
        settings = self._check_params()
        x = _writable(self._validate_fit_input(X))
        self.seed_ = self._seed()
        best: tuple[float, dict[str, Any]] | None = None
        with self._progress(self.n_init) as bar:
            for start in range(self.n_init):
                self._init_state(x, settings, start)
                self._train(x, settings, bar)
                if self.n_init > 1:
                    q = self.quality(x)
                    if best is None or q > best[0]:
                        best = (q, copy.deepcopy({k: v for k, v in vars(self).items()
                                                  if k.endswith("_")}))
        if best is not None:
            vars(self).update(best[1])
        return self

    def quality(self, X: Any) -> float:
        """How well the neurons' weights fit X, without labels: the mean over samples of the
        winner's expected input current (noise-free, thresholds left out), in units of the
        current a weight vector identical to the sample's rates would get. Higher is better;
        fit chooses among its n_init starts by it, as k-means chooses by inertia."""
        _check_fitted(self)
        x = _writable(self._validate_input(X))
        rows = max(1, _QUALITY_BLOCK // self.n_neurons_)
        best = np.concatenate([self._drive(x[i:i + rows]).max(axis=1)
                               for i in range(0, len(x), rows)])
        return float(best.mean() / self._self_drive(x))

    def partial_fit(self, X: Any, y: Any = None) -> Self:
        """Train `epochs` more passes from the current state (fit if unfitted), relabel X."""
        if not hasattr(self, "weights_"):
            return self.fit(X)
        settings = self._check_params()
        with self._progress(1) as bar:
            self._train(_writable(self._validate_input(X)), settings, bar)
        return self

    def _progress(self, starts: int) -> tqdm:
        """A bar over the passes `starts` fits make (training, consolidation, labelling), shown
        when verbose: a fit on many samples takes minutes."""
        return tqdm(total=starts * (self.epochs + self.consolidation + 1), unit="pass",
                    desc=f"spiking layer ({self.n_clusters} clusters)", leave=False,
                    disable=not self.verbose)

    def predict(self, X: Any) -> np.ndarray:
        """Cluster of the neuron spiking most on each sample (frozen network).

        A pure function of each sample, the fitted model and random_state.
        """
        return self.readout(X).labels

    def margin(self, X: Any) -> np.ndarray:
        """Each sample's winner's lead over the runner-up (`readout`'s margin): spikes, or mV
        of expected potential with inference 'current'."""
        return self.readout(X).margin

    def readout(self, X: Any) -> Readout:
        """`predict` with each sample's winning neuron and re-show counts."""
        winners, runners, shows, margins = self._frozen(_writable(self._validate_input(X)))
        silent = shows > self.max_reshow + 1
        return Readout(self.neuron_cluster_[winners], winners, np.where(silent, shows - 1, shows),
                       silent, margins)

    def simulate(self, spikes: np.ndarray, weights: np.ndarray | None = None,
                 theta: np.ndarray | None = None, learn: bool = False,
                 adapt: bool = True) -> PresentationTrace:
        """One presentation of a given input raster with this clusterer's constants, recording
        every step; for tests and plots. Changes nothing in the clusterer.

        spikes: (steps, inputs) bool; weights: (inputs, neurons), default the fitted ones;
        theta: initial thresholds, default the fitted ones or zeros. No weight normalisation
        (that happens between samples). nu_pre, nu_post and wmax are in units of
        norm_ / inputs as in fit (`norm` if unfitted, else 1: with norm=None they are absolute).
        """
        settings = self._check_params()
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
        if self.synapse == "push-pull" and w.shape[0] % 2:
            raise DeepSTDPError(f"push-pull synapses pair on and off cells: {w.shape[0]} inputs "
                                "is odd")
        steps, n = spikes.shape[0], w.shape[1]
        t, i = np.nonzero(spikes)
        wk = kernels.work(w.shape[0], n, steps)
        for e in range(len(t)):
            kernels.push(wk, e, t[e], i[e])
        rec_v, rec_th = np.zeros((steps, n)), np.zeros((steps, n))
        rec_s = np.zeros((steps, n), bool)
        norm = getattr(self, "norm_", self.norm or w.shape[0])
        tau_theta = self._tau_theta(settings, n)
        kernels.present(w, th, self._dyn(w.shape[0], norm, tau_theta),
                        self._decay(self.tau_pre, steps), self._decay(self.tau_post, steps),
                        learn, adapt, wk, rec_v, rec_s, rec_th)
        return PresentationTrace(v=rec_v, spikes=rec_s, theta=rec_th, weights=w)

    def diagnostics(self) -> dict[str, Any]:
        """Scalars for the training log: re-shown / silent samples of the labelling pass and
        the last training pass, and neuron usage."""
        if not hasattr(self, "weights_"):
            return {}
        return {"stdp_reshown": self.labels_reshown_, "stdp_silent": self.labels_silent_,
                "stdp_train_reshown": self.train_reshown_, "stdp_train_silent": self.train_silent_,
                "stdp_dead_neurons": int((self.history_["wins"][-1] == 0).sum())
                if self.history_["wins"] else 0,
                "stdp_theta_mean": float(self.theta_.mean()), "stdp_passes": self.passes_}

    def state_dict(self) -> dict[str, Any]:
        """The fitted state as torch tensors and Python scalars (loads with weights_only=True):
        weights, thresholds, neuron-to-cluster map, labels, norm_, seed_, pass counter, re-show
        counters and history. The settings are not in it: load it into a clusterer built with
        the same settings."""
        if not hasattr(self, "weights_"):
            return {}
        return state_tensors({
            "weights": self.weights_, "theta": self.theta_, "neuron_cluster": self.neuron_cluster_,
            "labels": self.labels_, "seed": self.seed_, "passes": self.passes_, "norm": self.norm_,
            "labels_reshown": self.labels_reshown_, "labels_silent": self.labels_silent_,
            "train_reshown": self.train_reshown_, "train_silent": self.train_silent_,
            **{f"history_{k}": np.array(self.history_[k]) for k in _HISTORY}})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`'s output (tensors, or the numpy arrays of older checkpoints);
        a restored clusterer predicts and continues exactly like the one that was saved."""
        if not state:
            return
        settings = self._check_params()
        w = np.ascontiguousarray(state_array(state["weights"], np.float32))
        n = settings.n_neurons or self.n_clusters
        if w.ndim != 2 or w.shape[1] != n or w.shape[0] % 2:
            raise DeepSTDPError(f"the state holds weights of shape {w.shape}; this clusterer has "
                                f"{n} neurons")
        self.weights_, self.n_features_in_, self.n_neurons_ = w, w.shape[0] // 2, n
        self.tau_theta_ = self._tau_theta(settings, n)
        self.theta_ = state_array(state["theta"], np.float64)
        self.neuron_cluster_ = state_array(state["neuron_cluster"], np.int64)
        self.labels_ = state_array(state["labels"], np.int64)
        self.seed_, self.passes_ = int(state["seed"]), int(state["passes"])
        self.norm_ = float(state["norm"])
        # Checkpoints before 0.3 kept the last frozen pass's counts (often predict's) as n_*.
        self.labels_reshown_ = int(state.get("labels_reshown", state.get("n_reshown", 0)))
        self.labels_silent_ = int(state.get("labels_silent", state.get("n_silent", 0)))
        self.train_reshown_ = int(state["train_reshown"])
        self.train_silent_ = int(state["train_silent"])
        self.history_ = {k: list(state_array(state[f"history_{k}"])) for k in _HISTORY}

    # ------------------------------------------------------------------ internals

    def _check_params(self) -> STDPSettings:
        """The parameters as validated settings; raises DeepSTDPError on the first bad one."""
        k = self.n_clusters
        if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
            raise DeepSTDPError(f"n_clusters must be an integer >= 1, got {k!r}")
        return STDPSettings(**{name: getattr(self, name) for name in _SETTINGS}).validate(k)

    def _seed(self) -> int:
        """The kernels' seed: random_state itself if an int, else drawn from it."""
        rs = self.random_state
        if isinstance(rs, Integral) and not isinstance(rs, bool):
            if not 0 <= rs < 2**32:
                raise DeepSTDPError(f"random_state must be in [0, 2**32), got {rs}")
            return int(rs)
        try:
            return int(check_random_state(rs).randint(np.iinfo(np.int32).max))
        except ValueError:
            raise DeepSTDPError(f"random_state must be None, an int or a numpy RandomState, "
                                f"got {rs!r}") from None

    @staticmethod
    def _tau_theta(settings: STDPSettings, n_neurons: int) -> float:
        if settings.tau_theta is not None:
            return float(settings.tau_theta)
        return 300.0 * n_neurons * settings.time * settings.dt

    def _dyn(self, n_inputs: int, norm: float, tau_theta: float) -> kernels.Dyn:
        l2 = self.weight_norm == "l2"
        # The typical weight, unit of nu_pre, nu_post and wmax: the mean weight of a column
        # summing to norm, or the RMS signed weight of a column of L2 norm `norm`.
        unit = norm / np.sqrt(n_inputs / 2) if l2 else norm / n_inputs
        return kernels.Dyn(float(self.v_rest), float(self.v_reset), float(self.v_thresh),
                    float(np.exp(-self.dt / self.tau_m)), round(self.refractory / self.dt),
                    float(self.theta_plus), float(np.exp(-self.dt / tau_theta)),
                    float(self.inhibition), self.nu_pre * unit, self.nu_post * unit,
                    self.wmax * unit, self.synapse == "push-pull", l2)

    def _decay(self, tau: float, steps: int) -> np.ndarray:
        """A trace k steps after its spike, for k = 0..steps."""
        return np.exp(-np.arange(steps + 1) * self.dt / tau).astype(np.float32)

    def _kernel_args(self) -> tuple:
        """The arguments that kernels.train_pass and kernels.frozen_pass share after x."""
        return (self._dyn(2 * self.n_features_in_, self.norm_, self.tau_theta_),
                self._decay(self.tau_pre, self.time), self._decay(self.tau_post, self.time),
                int(self.time), float(self.intensity), float(self.intensity_step),
                int(self.max_reshow), float(self.dt))

    def _init_state(self, x: np.ndarray, settings: STDPSettings, start: int = 0) -> None:
        self.n_neurons_ = settings.n_neurons or self.n_clusters
        self.tau_theta_ = self._tau_theta(settings, self.n_neurons_)
        rng = np.random.default_rng([self.seed_, 0] + ([start] if start else []))
        d = x.shape[1]
        if self.init == "random":
            w = rng.random((2 * d, self.n_neurons_))
        else:
            if self.init == "kmeans++" and len(x) >= self.n_neurons_:
                unit = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
                _, index = kmeans_plusplus(unit, self.n_neurons_,
                                           random_state=int(rng.integers(2**31)))
                pick = x[index]
            else:
                pick = x[rng.choice(len(x), self.n_neurons_, replace=len(x) < self.n_neurons_)]
            pick = pick / np.abs(pick).max(axis=1, keepdims=True).clip(1e-12)
            w = np.concatenate([pick.clip(0), (-pick).clip(0)], axis=1).T
            w = w + 0.1 * rng.random(w.shape)
        self.weights_ = np.ascontiguousarray(w, dtype=np.float32)
        self.norm_ = float(self.norm) if self.norm is not None else self._calibrate_norm(x, rng)
        kernels.normalize(self.weights_, self.norm_, self.weight_norm == "l2")
        self.theta_ = np.zeros(self.n_neurons_)
        self.passes_ = 0
        self.train_reshown_ = self.train_silent_ = 0
        self.history_: dict[str, list[np.ndarray]] = {k: [] for k in _HISTORY}

    def _calibrate_norm(self, x: np.ndarray, rng: np.random.Generator) -> float:
        """Weight sum that gives the best-matching of 50 sample-shaped neurons `drive` mV per
        step from a typical sample; makes one default fit raw pixels and 256-d features."""
        pick = rng.choice(len(x), min(len(x), 1050), replace=False)
        a = x[pick] / np.abs(x[pick]).max(axis=1, keepdims=True).clip(1e-12)
        rates = np.concatenate([a.clip(0), (-a).clip(0)], axis=1)
        m = min(50, len(rates) // 2) or 1
        protos, samples = rates[:m] + 0.1, rates[m:] if len(rates) > m else rates
        if self.synapse == "push-pull":  # the current is (w_on - w_off) . (r_on - r_off)
            d = x.shape[1]
            protos, samples = protos[:, :d] - protos[:, d:], samples[:, :d] - samples[:, d:]
        size = np.linalg.norm(protos, axis=1) if self.weight_norm == "l2" else \
            np.abs(protos).sum(axis=1)
        protos /= np.where(size > 0, size, 1.0)[:, None]  # a zero sample: a zero neuron
        match = (samples @ protos.T).max(axis=1).mean()
        if match <= 0:
            raise DeepSTDPError("the samples are all zero, so the weights cannot be calibrated "
                                "to them; give norm to fit them anyway")
        return float(self.drive / (self.intensity * self.dt / 1000.0 * match))

    def _train(self, x: np.ndarray, settings: STDPSettings, bar: tqdm) -> None:
        n_neurons = self.n_neurons_
        if (settings.n_neurons or self.n_clusters) != n_neurons:
            raise DeepSTDPError(f"the fitted layer has {n_neurons} neurons, the parameters ask "
                                f"for {settings.n_neurons or self.n_clusters}: fit again")
        self.tau_theta_ = self._tau_theta(settings, n_neurons)
        args, n = self._kernel_args(), len(x)
        won = np.zeros(n_neurons)
        for _ in range(self.epochs):
            order = np.random.default_rng([self.seed_, 1, self.passes_]).permutation(n)
            order = order[:self.online_samples]  # None: all; else a fresh random subset a pass
            winners, shows = np.empty(len(order), np.int64), np.empty(len(order), np.int64)
            spikes = np.zeros(n_neurons, np.int64)
            kernels.train_pass(x, order, self.weights_, self.theta_, *args, self.norm_,
                               np.uint64(self.seed_), self.passes_, float(self.anneal or 0.0),
                               won, winners, shows, spikes)
            self.passes_ += 1
            self.history_["spikes"].append(spikes)
            self.history_["wins"].append(np.bincount(winners, minlength=n_neurons))
            self.history_["theta"].append(self.theta_.copy())
            self.train_reshown_ = int((shows > 1).sum())
            self.train_silent_ = int((shows > self.max_reshow + 1).sum())
            bar.update()
        winners, settled = None, False
        for _ in range(self.consolidation):
            if self.inference == "current":
                if not settled:
                    before, winners = winners, self._expected(x)[0]
                    # The same winners twice is a fixed point: the weights they make are the
                    # ones they were made from, so the passes left would change nothing.
                    settled = before is not None and np.array_equal(before, winners)
                    if not settled:
                        self._expected_consolidation(x, winners)
            else:
                kernels.consolidation_pass(x, self.weights_, self.theta_, *args, self.norm_,
                                           np.uint64(self.seed_), self.passes_,
                                           max(1, min(n, 4 * numba.get_num_threads())))
            self.passes_ += 1
            bar.update()
        winners, runners, shows, _ = self._frozen(x)
        bar.update()
        self._map_neurons(winners, runners)
        self.labels_ = self.neuron_cluster_[winners]
        self.labels_reshown_ = int((shows > 1).sum())
        self.labels_silent_ = int((shows > self.max_reshow + 1).sum())

    def _frozen(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Winner, runner-up neuron, shows (max_reshow + 2: silent) and the winner's margin
        for every sample."""
        if self.inference == "current":
            return self._expected(x)
        n = len(x)
        winners, runners, shows = (np.empty(n, np.int64) for _ in range(3))
        margins = np.empty(n)
        kernels.frozen_pass(x, _writable(self.weights_), _writable(self.theta_),
                            *self._kernel_args(), np.uint64(self.seed_),
                            max(1, min(n, 4 * numba.get_num_threads())), winners, runners, shows,
                            margins)
        return winners, runners, shows, margins

    def _expected_consolidation(self, x: np.ndarray, winners: np.ndarray) -> None:
        """`kernels.consolidation_pass` in the noise-free limit of `inference='current'`: the
        winner of each sample (`_expected`, given) sums the sample's input rates (the expected
        pre-synaptic trace its spikes would potentiate by), and each neuron that won takes that
        sum, normalised, as its weights."""
        rates = self._rates(x)
        on_off = np.concatenate([rates.clip(0), (-rates).clip(0)], axis=1)
        acc = np.zeros((self.n_neurons_, on_off.shape[1]))
        kernels.add_rows(acc, winners, on_off)
        won = np.flatnonzero(acc.sum(axis=1) > 0)
        self.weights_[:, won] = acc[won].T.astype(np.float32)
        kernels.normalize_columns(self.weights_, won.astype(np.int64), self.norm_,
                                  self.weight_norm == "l2")

    def _rates(self, x: np.ndarray) -> np.ndarray:
        """Each sample's first-show spike probability per step, signed (on cells > 0)."""
        pmax = self.intensity * self.dt / 1000.0
        return pmax * x / np.abs(x).max(axis=1, keepdims=True).clip(1e-12)

    def _drive(self, x: np.ndarray) -> np.ndarray:
        """(samples, neurons) expected input per step (mV) at the first show."""
        d, rates = x.shape[1], self._rates(x)
        w = self.weights_.astype(np.float64)
        if self.synapse == "push-pull":
            return rates @ (w[:d] - w[d:])
        return rates.clip(0) @ w[:d] + (-rates).clip(0) @ w[d:]

    def _self_drive(self, x: np.ndarray) -> float:
        """The mean drive of each sample on a neuron whose weights are its own rates (scaled
        to norm_): the unit of `quality`."""
        rates = self._rates(x)
        if self.weight_norm == "l2":
            size = np.linalg.norm(rates, axis=1)
            return float(self.norm_ * size.mean())
        full = np.abs(rates)
        return float(self.norm_ * ((full * full).sum(axis=1) / full.sum(axis=1)).mean())

    def _expected(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The noise-free readout: each neuron's expected input current from the sample's
        first-show rates, as the potential it would settle at above rest, against its
        threshold theta; the neuron furthest above wins, which is the neuron that the
        spiking layer makes fire first and most in expectation. Its lead over the runner-up
        (mV) is the margin."""
        n = len(x)
        winners, runners, margins = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n)
        kernels.expected_pass(x, _writable(self.weights_), _writable(self.theta_),
                              self.intensity * self.dt / 1000.0,
                              1.0 / (1.0 - np.exp(-self.dt / self.tau_m)),
                              self.synapse == "push-pull", winners, runners, margins)
        return winners, runners, np.ones(n, np.int64), margins

    def _map_neurons(self, winners: np.ndarray, runners: np.ndarray) -> None:
        """Neuron -> cluster: identity, or spectral clustering of the co-activation graph.

        Only neurons that won a sample take part; each other neuron joins the cluster of the
        active neuron with the most similar weights (cosine), so dead neurons cannot claim
        clusters. A neuron without any weight cannot be driven and wins a sample only as the
        closest to threshold of a silent one; it joins the cluster that won the most samples.
        """
        n, k = self.n_neurons_, self.n_clusters
        if n == k:
            self.neuron_cluster_ = np.arange(n, dtype=np.int64)
            return
        wins = np.bincount(winners, minlength=n)
        active = np.flatnonzero(wins)
        if len(active) <= k:
            cluster_of_active = np.arange(len(active))
        else:
            co = np.zeros((n, n))
            np.add.at(co, (winners, runners), 1.0)
            co = (co + co.T)[np.ix_(active, active)] + 1e-3  # the floor keeps it connected
            spectral = SpectralClustering(k, affinity="precomputed", random_state=self.seed_)
            cluster_of_active = spectral.fit_predict(co)
        length = np.linalg.norm(self.weights_, axis=0)
        unit = self.weights_ / np.where(length > 0, length, 1.0)
        mapping = np.zeros(n, np.int64)
        mapping[active] = cluster_of_active
        mapping = mapping[active[np.argmax(unit.T @ unit[:, active], axis=1)]]
        mapping[length == 0] = np.argmax(np.bincount(cluster_of_active,
                                                     weights=wins[active]))
        mapping[active] = cluster_of_active
        self.neuron_cluster_ = mapping


def _writable(a: np.ndarray) -> np.ndarray:
    """`a` as a C-ordered, writable array (a copy only if it is not): the kernels are compiled
    for such arrays only, and unpickled or memory-mapped ones may be read-only."""
    return np.require(a, requirements=["C", "W"])
