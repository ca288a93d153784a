"""The spiking clustering layer's settings: one typed dataclass, every default documented.

`STDPSettings` is the single source of `STDPClustering`'s defaults (its keyword defaults refer
to the fields here) and of their allowed ranges (`validate`, which `fit` calls). Its field names
are the estimator's parameter names, so ``STDPClustering(n_clusters=k, random_state=seed,
**dataclasses.asdict(settings))`` builds one. It imports neither numba nor the estimator, so
the command line can read it without compiling anything. docs/snn.md explains each choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deepstdp.runtime.rules import Rule, check_fields
from deepstdp.runtime.util import DeepSTDPError

INITS = ("data", "kmeans++", "random")
SYNAPSES = ("excitatory", "push-pull")
WEIGHT_NORMS = ("sum", "l2")
INFERENCES = ("spikes", "current")
# What the settings added in 0.5 were before they existed (Diehl & Cook's layer of 0.4): a
# saved run whose settings lack them ran with these.
BEFORE_0_5: dict[str, Any] = {"init": "data", "synapse": "excitatory", "weight_norm": "sum",
                              "consolidation": 0, "n_init": 1, "anneal": None,
                              "inference": "spikes"}
_POSITIVE, _NON_NEGATIVE = Rule(0, low_open=True), Rule(0)
RULES: dict[str, Rule] = {
    "init": Rule(choices=INITS), "synapse": Rule(choices=SYNAPSES),
    "weight_norm": Rule(choices=WEIGHT_NORMS), "inference": Rule(choices=INFERENCES),
    "n_neurons": Rule(1), "time": Rule(1), "epochs": _NON_NEGATIVE,
    "max_reshow": _NON_NEGATIVE, "online_samples": Rule(1), "consolidation": _NON_NEGATIVE,
    "n_init": Rule(1),
    "dt": _POSITIVE, "intensity": _POSITIVE, "intensity_step": _NON_NEGATIVE,
    "tau_m": _POSITIVE, "refractory": _NON_NEGATIVE, "theta_plus": _NON_NEGATIVE,
    "tau_theta": _POSITIVE, "inhibition": _NON_NEGATIVE, "nu_pre": _NON_NEGATIVE,
    "nu_post": _NON_NEGATIVE, "tau_pre": _POSITIVE, "tau_post": _POSITIVE, "wmax": _POSITIVE,
    "norm": _POSITIVE, "drive": _POSITIVE, "anneal": _POSITIVE,
    "v_rest": Rule(), "v_reset": Rule(), "v_thresh": Rule(),
}
"""What each setting allows beyond its type (None wherever the type allows it)."""


@dataclass(frozen=True)
class STDPSettings:
    """Every tunable setting of `STDPClustering` except n_clusters and random_state.

    Times are in ms, potentials in mV, rates in Hz.
    """

    n_neurons: int | None = None
    """Excitatory neurons, >= n_clusters; None: n_clusters (neuron i is cluster i). With more
    neurons, neurons are grouped into clusters by spectral clustering of their co-activation
    graph (how often one won a sample and the other came second)."""
    time: int = 250
    """Simulation steps per presentation of a sample. Longer presentations make a spike-count
    readout less noisy (with `inference='spikes'` 500 beat 250 by 0.02-0.05 ACC on digits);
    with the noise-free readout and consolidation 250 clusters as well as 500 at half the cost
    (0.10, docs/snn.md)."""
    dt: float = 1.0
    """Step length."""
    epochs: int = 2
    """Online STDP passes over the data per fit / partial_fit call; consolidation then makes
    each neuron the mean of what it won, so 2 cluster as well as 3 (0.10, docs/snn.md)."""
    online_samples: int | None = None
    """Samples each online pass trains on: None, all of them; else a random subset of this
    many, drawn afresh every pass (consolidation and labelling still see every sample). The
    online passes cost the most and are where a large set (100,000 images) can be sampled:
    consolidation then averages every sample a neuron wins."""
    intensity: float = 64.0
    """Input rate of a sample's largest |component| (Diehl & Cook's 63.75 Hz)."""
    intensity_step: float = 32.0
    """Rate added each time a sample that made no neuron spike is shown again."""
    max_reshow: int = 4
    """Re-shows before a silent sample goes to the neuron that came closest to threshold."""
    v_rest: float = -65.0
    """Resting potential, which the membrane leaks towards."""
    v_reset: float = -60.0
    """Potential after a spike."""
    v_thresh: float = -52.0
    """Base threshold, to which the adaptive theta is added."""
    tau_m: float = 100.0
    """Membrane time constant."""
    refractory: float = 5.0
    """Time after a spike during which a neuron ignores its input."""
    theta_plus: float = 0.05
    """Threshold increase per spike: frequent winners get harder to fire, which balances cluster
    sizes, and the rising thresholds anneal learning."""
    tau_theta: float | None = None
    """Threshold decay time constant; None: 300 * n_neurons * time * dt, Diehl & Cook's ratio
    (1e7 ms for 100 neurons at 500 ms per sample), so that the equilibrium theta does not depend
    on layer size or presentation length."""
    inhibition: float = 17.5
    """Potential removed from every other neuron when one spikes."""
    nu_pre: float = 1e-3
    """Depression per input spike, times the neuron's trace, in units of the mean weight."""
    nu_post: float = 0.1
    """Potentiation per neuron spike, times the input's trace, in units of the mean weight."""
    tau_pre: float = 20.0
    """Time constant of the input traces."""
    tau_post: float = 20.0
    """Time constant of the neuron traces."""
    wmax: float = 10.0
    """Upper clip of a weight after an STDP update, in units of the mean weight."""
    norm: float | None = None
    """Sum of each neuron's input weights, restored after every sample that made it learn;
    None: calibrated from `drive` at each fit (kept by partial_fit)."""
    drive: float = 0.35
    """With norm None: input per step (mV) that a typical sample gives the best-matching of 50
    neurons shaped like other samples. One value suits 16- to 256-d whitened features; raw
    non-negative pixels want about 0.2."""
    init: str = "kmeans++"
    """'data': each neuron starts from the input rates of a random sample plus U[0, 0.1), so no
    neuron starts hopeless; 'kmeans++': the same from samples picked k-means++-style (each
    next pick far, in cosine, from those already picked), so the neurons start spread over the
    data; 'random': uniform weights (Diehl & Cook)."""
    synapse: str = "push-pull"
    """'excitatory': an input cell's spike adds its weight (Diehl & Cook); 'push-pull': it also
    subtracts the weight its partner cell (the other polarity of the same feature) has, so a
    neuron's current is (w_on - w_off) . x, a signed projection, and a feature of the wrong sign
    counts against a neuron instead of not at all."""
    weight_norm: str = "l2"
    """What normalisation keeps equal across neurons: 'sum', each neuron's weight sum (Diehl &
    Cook); 'l2', the L2 norm of its signed weights w_on - w_off, so that with push-pull the
    largest current goes to the neuron closest in angle to the sample, as in spherical k-means."""
    anneal: float | None = None
    """Learning-rate annealing: a neuron's STDP rates are divided by 1 + wins / anneal, its wins
    counted from the start of each fit / partial_fit call (online k-means's 1/n step: its
    weights settle on the mean of what it won); None: constant rates (Diehl & Cook)."""
    consolidation: int = 10
    """Passes of batch STDP after the online ones in each fit / partial_fit: the network is
    frozen while every sample is shown, each synapse sums the potentiation its neuron's spikes
    would make, and at the end each neuron's weights become that sum, normalised (the average of
    what it won, Lloyd's step of k-means with the spiking layer assigning)."""
    n_init: int = 3
    """Starts of `fit` (each from its own initial weights); the one whose weights fit the data
    best (`STDPClustering.quality`, no labels) is kept, as k-means keeps the lowest inertia.
    partial_fit continues the kept one. 3 cluster as well as 10 (0.10, docs/snn.md)."""
    inference: str = "current"
    """How a frozen pass (the labelling pass of fit, predict) names a sample's neuron:
    'spikes', the one spiking most in a Poisson presentation; 'current', the one whose expected
    input current lifts it furthest above its threshold (the noise-free limit of the same
    layer)."""

    def validate(self, n_clusters: int | None = None) -> STDPSettings:
        """Check every setting's type and range (and n_neurons >= n_clusters when given).

        Raises SettingError (a DeepSTDPError) naming the first bad setting and what it allows.
        """
        check_fields(self, RULES)
        if (self.v_rest >= self.v_thresh) or (self.v_reset >= self.v_thresh):
            raise DeepSTDPError(f"v_rest ({self.v_rest}) and v_reset ({self.v_reset}) must be "
                                f"below v_thresh ({self.v_thresh})")
        if n_clusters is not None and self.n_neurons is not None and self.n_neurons < n_clusters:
            raise DeepSTDPError(f"n_neurons ({self.n_neurons}) must be at least n_clusters "
                                f"({n_clusters})")
        return self
