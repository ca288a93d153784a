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

The per-sample time loop runs in numba and is event driven: an input spike adds its weight row
to the neurons' input, and everything else a spike sets off (depression, potentiation, traces,
thresholds, normalisation) costs work in proportion to the few neurons that spiked, not to the
layer. A training sample's random spike trains are keyed by (seed, pass, sample index, show);
a frozen pass keys them by (seed, the sample's bytes, show), so a prediction depends only on the
sample and the fitted model, whatever the batch or its order. docs/snn.md explains the design
choices and the tuning of the defaults.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from numbers import Integral
from typing import Any, NamedTuple, Self

import numba
import numpy as np
from numba import njit, prange
from sklearn.cluster import SpectralClustering, kmeans_plusplus
from sklearn.utils import check_random_state

from deepstdp.clustering import Clusterer, _check_fitted, state_array, state_tensors
from deepstdp.snn_settings import STDPSettings
from deepstdp.util import DeepSTDPError

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_FROZEN_PASS = 2**62  # the pass number of every frozen (labelling or predict) pass
_REBASE = 2.0**-20  # see _present: theta's common decay factor is folded in below this


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
    wmax: float
    signed: bool  # push-pull synapses: an input cell's weight also inhibits via its partner
    l2: bool  # weight normalisation: L2 norm of the signed weights, else the sum (L1)


class _Work(NamedTuple):
    """Scratch arrays of the presentation loop, allocated once per pass or parallel chunk."""

    head: np.ndarray  # (steps,) int32: last input spike listed for each step, -1 if none
    nxt: np.ndarray  # (inputs * steps,) int32: the step's next listed input spike, -1 if none
    ev: np.ndarray  # (inputs * steps,) int32: the input of each spike
    v: np.ndarray  # (neurons,) float32 membrane potential
    cur: np.ndarray  # (neurons,) float32 input of the current step
    gate: np.ndarray  # (neurons,) float32: 0 while refractory, else 1
    base: np.ndarray  # (neurons,) float32: v_thresh, or 1e30 while refractory
    peak: np.ndarray  # (neurons,) float32 highest v - threshold so far
    a32: np.ndarray  # (neurons,) float32 copy of a
    a: np.ndarray  # (neurons,) float64: theta = a * (common decay factor)
    counts: np.ndarray  # (neurons,) int64 spikes
    first: np.ndarray  # (neurons,) int64 step of the first spike, -1 if none
    last_post: np.ndarray  # (neurons,) int64 step of the last spike
    fired: np.ndarray  # (neurons,) int64: the neurons that spiked, in order of first spike
    ref_end: np.ndarray  # (neurons,) int64 last refractory step
    refractory: np.ndarray  # (neurons,) int64: the neurons that are refractory now
    last_pre: np.ndarray  # (inputs,) int64 step of the input's last spike, -1 if none
    pre_list: np.ndarray  # (inputs,) int64: the inputs that spiked
    state: np.ndarray  # (1,) uint64 random stream
    rate: np.ndarray  # (neurons,) float32 learning-rate factor (annealing), 1 unless annealed
    acc: np.ndarray  # (inputs, neurons) float64 potentiation summed over a pass, or 0 x 0


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


# ------------------------------------------------------------------------------ random numbers


@njit(cache=True)
def _mix(z: np.uint64) -> np.uint64:
    """SplitMix64's finaliser: a bijective scramble of a 64-bit integer."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def _key(seed: np.uint64, a: int, b: np.uint64) -> np.uint64:
    """Start of an independent random stream for (seed, a, b)."""
    return _mix(_mix(seed + np.uint64(a) * _GOLDEN) + np.uint64(b) * _GOLDEN)


@njit(cache=True)
def _digest(x: np.ndarray) -> np.uint64:
    """A 64-bit hash of a float32 sample's bytes: its frozen-pass stream is keyed by it."""
    h = np.uint64(x.shape[0])
    for b in x.view(np.uint32):
        h = _mix(h + np.uint64(b) + _GOLDEN)
    return h


@njit(cache=True)
def _uniform(state: np.ndarray) -> float:
    """Next SplitMix64 draw from `state` (one uint64) as a float in (0, 1]."""
    state[0] += _GOLDEN
    return ((_mix(state[0]) >> np.uint64(11)) + np.uint64(1)) * (1.0 / 9007199254740992.0)


# ------------------------------------------------------------------------------ network kernels


@njit(cache=True)
def _work(n_in: int, n: int, n_steps: int, consolidate: bool = False) -> _Work:
    cap = n_in * n_steps  # most input spikes one show can have
    f32, i64 = np.float32, np.int64
    return _Work(np.full(n_steps, -1, np.int32), np.empty(cap, np.int32),
                 np.empty(cap, np.int32), np.empty(n, f32), np.empty(n, f32), np.empty(n, f32),
                 np.empty(n, f32), np.empty(n, f32), np.empty(n, f32), np.empty(n),
                 np.empty(n, i64), np.empty(n, i64), np.empty(n, i64), np.empty(n, i64),
                 np.empty(n, i64), np.empty(n, i64), np.empty(n_in, i64), np.empty(n_in, i64),
                 np.empty(1, np.uint64), np.ones(n, f32),
                 np.zeros((n_in, n) if consolidate else (0, 0)))


@njit(cache=True)
def _push(wk: _Work, e: int, t: int, i: int) -> None:
    """Input spike number e: input i at step t (a step's spikes are listed last in, first out)."""
    wk.ev[e] = i
    wk.nxt[e] = wk.head[t]
    wk.head[t] = e


@njit(cache=True)
def _input_events(x: np.ndarray, pmax: float, wk: _Work) -> None:
    """Bernoulli spike trains of the on/off inputs of sample x, as a list per time step.

    Input k < D is x[k]'s on cell, D + k its off cell. Gaps between an input's spikes are drawn
    geometrically, so the cost is one random number per spike, not one per input and step.
    """
    d, n_steps = x.shape[0], wk.head.shape[0]
    wk.head[:] = -1
    scale = 0.0
    for k in range(d):
        scale = max(scale, abs(x[k]))
    e = 0
    for k in range(d if scale > 0.0 else 0):
        p = pmax * abs(x[k]) / scale
        if p <= 0.0:
            continue
        i = k if x[k] > 0 else d + k
        inv_log = 1.0 / np.log1p(-p) if p < 1.0 else 0.0
        t = np.floor(np.log(_uniform(wk.state)) * inv_log)  # failures before the first spike
        while t < n_steps:
            _push(wk, e, int(t), i)
            e += 1
            t += 1.0 + np.floor(np.log(_uniform(wk.state)) * inv_log)


@njit(cache=True)
def _present(w: np.ndarray, theta: np.ndarray, k: _Dyn, pre_decay: np.ndarray,
             post_decay: np.ndarray, learn: bool, adapt: bool, wk: _Work, rec_v: np.ndarray,
             rec_s: np.ndarray, rec_theta: np.ndarray) -> int:
    """Show one sample (input spikes listed in wk.head / wk.nxt / wk.ev) to the layer, from rest.

    Each step: v leaks towards v_rest; the weights of the inputs spiking now are added (not
    while refractory); the neuron furthest above its threshold v_thresh + theta, if any, spikes:
    it is reset and refractory, and every other neuron loses `inhibition` mV. One spike per step
    keeps the winner-take-all crisp when several neurons cross together. With `adapt`, a spike
    adds theta_plus to the spiker's theta and every theta decays each step. With `learn`, STDP:
    an input spike depresses its weights by nu_pre * post-trace, a neuron spike potentiates its
    weights by nu_post * pre-trace, clipped to [0, wmax]. Traces are set to 1 by a spike and
    decay exponentially (pre_decay / post_decay[steps since the spike]), so an input spiking in
    the same step as the neuron counts as pre-before-post.

    Work beyond adding input rows and one vectorised pass over the neurons per step is in
    proportion to the neurons that spiked: only they have a trace (depression touches
    wk.fired[:nf]), potentiation touches one column, and since every theta decays by the same
    factor g per step, theta = g * a where a changes only at spikes; theta is written back at
    the end (a absorbs g whenever g gets small).

    Returns nf, the number of neurons that spiked, and fills wk.counts (spikes per neuron),
    wk.first (step of the first spike, -1 if none), wk.fired[:nf] and wk.peak (the highest
    v - threshold reached). rec_* are (steps, neurons) recordings, or 0 x 0 for none.
    """
    n, d = w.shape[1], w.shape[0] // 2
    head, nxt, ev = wk.head, wk.nxt, wk.ev
    v, cur, gate, base, peak, a32, a = wk.v, wk.cur, wk.gate, wk.base, wk.peak, wk.a32, wk.a
    counts, first, last_post, fired = wk.counts, wk.first, wk.last_post, wk.fired
    ref_end, refractory, last_pre, pre_list = wk.ref_end, wk.refractory, wk.last_pre, wk.pre_list
    record = rec_v.shape[0] > 0
    f32 = np.float32
    v_rest, decay_m, v_thresh = f32(k.v_rest), f32(k.decay_m), f32(k.v_thresh)
    nu_pre, off, zero = f32(k.nu_pre), f32(1e30), f32(0.0)
    v[:] = v_rest
    gate[:] = 1.0
    base[:] = v_thresh
    peak[:] = -off
    counts[:] = 0
    first[:] = -1
    last_pre[:] = -1
    for j in range(n):
        a[j] = theta[j]
        a32[j] = a[j]
    nf, n_ref, n_pre = 0, 0, 0
    g, decay_theta = 1.0, k.decay_theta if adapt else 1.0
    for t in range(head.shape[0]):
        if n_ref > 0:  # refractory periods that ended
            r = 0
            for q in range(n_ref):
                j = refractory[q]
                if ref_end[j] < t:
                    gate[j], base[j] = 1.0, v_thresh
                else:
                    refractory[r] = j
                    r += 1
            n_ref = r
        g *= decay_theta
        if g < _REBASE:
            for j in range(n):
                a[j] *= g
                a32[j] = a[j]
            g = 1.0
        gf = f32(g)
        e, inputs = head[t], False
        while e >= 0:
            i = ev[e]
            if k.signed:  # the partner cell's weight counts against: current (w_on - w_off).x
                ip = i + d if i < d else i - d
                if inputs:
                    for j in range(n):
                        cur[j] += w[i, j] - w[ip, j]
                else:
                    for j in range(n):
                        cur[j] = w[i, j] - w[ip, j]
            elif inputs:
                for j in range(n):
                    cur[j] += w[i, j]
            else:
                for j in range(n):
                    cur[j] = w[i, j]
            inputs = True
            if last_pre[i] < 0:
                pre_list[n_pre] = i
                n_pre += 1
            last_pre[i] = t
            if learn:
                for q in range(nf):
                    j = fired[q]
                    w[i, j] = max(w[i, j] - nu_pre * wk.rate[j] * post_decay[t - last_post[j]],
                                  zero)
            e = nxt[e]
        # One pass over the neurons, vectorised: no float reductions, a count of crossings.
        hits = 0
        if inputs:
            for j in range(n):
                vj = v_rest + (v[j] - v_rest) * decay_m + cur[j] * gate[j]
                v[j] = vj
                over = vj - base[j] - gf * a32[j]
                peak[j] = over if over > peak[j] else peak[j]
                hits += over >= zero
        else:
            for j in range(n):
                vj = v_rest + (v[j] - v_rest) * decay_m
                v[j] = vj
                over = vj - base[j] - gf * a32[j]
                peak[j] = over if over > peak[j] else peak[j]
                hits += over >= zero
        best = -1
        if hits > 0:
            best_over = zero
            for j in range(n):
                over = v[j] - base[j] - gf * a32[j]
                if over >= best_over and (best < 0 or over > best_over):
                    best, best_over = j, over
            for j in range(n):
                v[j] -= k.inhibition
            v[best] = k.v_reset
            if k.refrac_steps > 0:
                gate[best], base[best] = 0.0, off
                ref_end[best] = t + k.refrac_steps
                refractory[n_ref] = best
                n_ref += 1
            counts[best] += 1
            if first[best] < 0:
                first[best] = t
                fired[nf] = best
                nf += 1
            last_post[best] = t
            if adapt:
                a[best] += k.theta_plus / g
                a32[best] = a[best]
            if learn:
                nu_post = k.nu_post * wk.rate[best]
                for q in range(n_pre):
                    i = pre_list[q]
                    w[i, best] = min(w[i, best] + nu_post * pre_decay[t - last_pre[i]],
                                     k.wmax)
            if wk.acc.shape[0] > 0:  # a consolidation pass: potentiation summed, not applied
                for q in range(n_pre):
                    i = pre_list[q]
                    wk.acc[i, best] += pre_decay[t - last_pre[i]]
        if record:
            rec_v[t] = v
            rec_theta[t] = g * a
            if best >= 0:
                rec_s[t, best] = True
    if adapt:
        for j in range(n):
            theta[j] = g * a[j]
    return nf


@njit(cache=True)
def _column_size(w: np.ndarray, j: int, l2: bool) -> np.float32:
    """A neuron's weight size: the sum of its weights, or with `l2` the L2 norm of its signed
    weights w_on - w_off (the vector that push-pull synapses project the sample on)."""
    s = np.float32(0.0)
    if l2:
        d = w.shape[0] // 2
        for i in range(d):
            m = w[i, j] - w[i + d, j]
            s += m * m
        return np.float32(np.sqrt(s))
    for i in range(w.shape[0]):
        s += w[i, j]
    return s


@njit(cache=True)
def _normalize_columns(w: np.ndarray, columns: np.ndarray, norm: float, l2: bool) -> None:
    """Scale the given neurons' input weights (columns) to size `norm` (`_column_size`)."""
    for j in columns:
        s = _column_size(w, j, l2)
        if s > 0:
            f = np.float32(norm) / s
            for i in range(w.shape[0]):
                w[i, j] *= f


@njit(cache=True)
def _normalize(w: np.ndarray, norm: float, l2: bool = False) -> None:
    """Scale each neuron's input weights (a column) to size `norm` (`_column_size`)."""
    _normalize_columns(w, np.arange(w.shape[1]), norm, l2)


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
          post_decay: np.ndarray, learn: bool, intensity: float, intensity_step: float,
          max_reshow: int, dt: float, norm: float, key: np.uint64,
          wk: _Work) -> tuple[int, int, int]:
    """Show sample x, re-showing it louder while no neuron spikes.

    Returns (winner, runner-up, shows): shows is the number of presentations, or
    max_reshow + 2 when the sample stayed silent throughout and the neurons were ranked by how
    close they came to their thresholds (`peak`). wk.counts gets the spikes of the last show.
    With `learn`, the weights of the neurons that spiked are normalised to `norm` after the show.
    """
    no_f, no_b = np.empty((0, 0)), np.empty((0, 0), np.bool_)
    for show in range(max_reshow + 1):
        wk.state[0] = _mix(key + np.uint64(show))
        pmax = (intensity + show * intensity_step) * dt / 1000.0
        _input_events(x, pmax, wk)
        nf = _present(w, theta, k, pre_decay, post_decay, learn, learn, wk, no_f, no_b, no_f)
        if nf > 0:
            if learn:
                _normalize_columns(w, wk.fired[:nf], norm, k.l2)
            winner = _best(wk.counts, wk.first, wk.peak, -1)
            return winner, _best(wk.counts, wk.first, wk.peak, winner), show + 1
    winner = _best(wk.counts, wk.first, wk.peak, -1)
    return winner, _best(wk.counts, wk.first, wk.peak, winner), max_reshow + 2


@njit(cache=True)
def _train_pass(x: np.ndarray, order: np.ndarray, w: np.ndarray, theta: np.ndarray, k: _Dyn,
                pre_decay: np.ndarray, post_decay: np.ndarray, n_steps: int, intensity: float,
                intensity_step: float, max_reshow: int, dt: float, norm: float,
                seed: np.uint64, pass_no: int, anneal: float, won: np.ndarray,
                winners: np.ndarray, shows: np.ndarray, spikes: np.ndarray) -> None:
    """One pass of online learning over x[order], one sample at a time (truly sequential).

    won: each neuron's wins so far in this fit / partial_fit call (updated). With anneal > 0 a
    neuron's STDP rates are scaled by 1 / (1 + won / anneal): online k-means's 1/n step, so
    that its weights settle on the mean of the samples it wins instead of tracking the last few.
    """
    wk = _work(w.shape[0], w.shape[1], n_steps)
    if anneal > 0:
        for j in range(w.shape[1]):
            wk.rate[j] = 1.0 / (1.0 + won[j] / anneal)
    for s in range(order.shape[0]):
        winner, _, shows[s] = _show(x[order[s]], w, theta, k, pre_decay, post_decay, True,
                                    intensity, intensity_step, max_reshow, dt, norm,
                                    _key(seed, pass_no, np.uint64(order[s])), wk)
        winners[s] = winner
        won[winner] += 1.0
        if anneal > 0:
            wk.rate[winner] = 1.0 / (1.0 + won[winner] / anneal)
        spikes += wk.counts


@njit(cache=True, parallel=True)
def _consolidation_pass(x: np.ndarray, w: np.ndarray, theta: np.ndarray, k: _Dyn,
                        pre_decay: np.ndarray, post_decay: np.ndarray, n_steps: int,
                        intensity: float, intensity_step: float, max_reshow: int, dt: float,
                        norm: float, seed: np.uint64, pass_no: int, n_chunks: int) -> None:
    """A pass of batch STDP: the network frozen while it is shown every sample (so chunks run
    in parallel), each synapse sums the potentiation its neuron's spikes would have made, and
    at the end every neuron that spiked takes that sum as its weights, normalised. With the
    online passes' constant rates a neuron's weights are an imprint of its last few samples;
    this makes them the average of all it won (Lloyd's step of k-means, the spikes assigning)."""
    sums = np.zeros((n_chunks, w.shape[0], w.shape[1]))
    for c in prange(n_chunks):
        wk = _work(w.shape[0], w.shape[1], n_steps, True)
        for s in range(c * x.shape[0] // n_chunks, (c + 1) * x.shape[0] // n_chunks):
            _show(x[s], w, theta, k, pre_decay, post_decay, False, intensity, intensity_step,
                  max_reshow, dt, 0.0, _key(seed, pass_no, np.uint64(s)), wk)
        sums[c] = wk.acc
    acc = sums.sum(axis=0)
    for j in range(w.shape[1]):
        total = 0.0
        for i in range(w.shape[0]):
            total += acc[i, j]
        if total > 0:
            for i in range(w.shape[0]):
                w[i, j] = acc[i, j]
            _normalize_columns(w, np.array([j]), norm, k.l2)


@njit(cache=True, parallel=True)
def _frozen_pass(x: np.ndarray, w: np.ndarray, theta: np.ndarray, k: _Dyn,
                 pre_decay: np.ndarray, post_decay: np.ndarray, n_steps: int, intensity: float,
                 intensity_step: float, max_reshow: int, dt: float, seed: np.uint64,
                 n_chunks: int, winners: np.ndarray, runners: np.ndarray,
                 shows: np.ndarray, margins: np.ndarray) -> None:
    """Frozen network (no STDP, thresholds fixed): samples are independent, so chunks of them
    run in parallel. Each sample's spike trains are keyed by its bytes, so its result depends
    neither on the threads nor on the other samples of the batch or their order."""
    for c in prange(n_chunks):
        wk = _work(w.shape[0], w.shape[1], n_steps)
        for s in range(c * x.shape[0] // n_chunks, (c + 1) * x.shape[0] // n_chunks):
            winners[s], runners[s], shows[s] = _show(
                x[s], w, theta, k, pre_decay, post_decay, False, intensity, intensity_step,
                max_reshow, dt, 0.0, _key(seed, _FROZEN_PASS, _digest(x[s])), wk)
            margins[s] = wk.counts[winners[s]] - wk.counts[runners[s]] if runners[s] >= 0 else 0


@njit(cache=True, parallel=True)
def _expected_pass(x: np.ndarray, w: np.ndarray, theta: np.ndarray, pmax: float, gain: float,
                   signed: bool, winners: np.ndarray, runners: np.ndarray,
                   margins: np.ndarray) -> None:
    """The noise-free readout of every sample: each neuron's expected input per step from the
    sample's first-show rates, times `gain` (the potential above rest that it settles at),
    minus its threshold theta; the highest wins. Summed in a fixed order per sample, so a
    result depends on the sample alone, not on its batch or the thread count."""
    d, n = x.shape[1], w.shape[1]
    for s in prange(x.shape[0]):
        scale = 0.0
        for k in range(d):
            scale = max(scale, abs(x[s, k]))
        best, second = -1, -1
        best_score, second_score = -np.inf, -np.inf
        for j in range(n):
            drive = 0.0
            for k in range(d if scale > 0.0 else 0):
                r = pmax * x[s, k] / scale
                if signed:
                    drive += r * (w[k, j] - w[d + k, j])
                elif r > 0:
                    drive += r * w[k, j]
                else:
                    drive -= r * w[d + k, j]
            score = drive * gain - theta[j]
            if score > best_score:
                second, second_score = best, best_score
                best, best_score = j, score
            elif score > second_score:
                second, second_score = j, score
        winners[s], runners[s] = best, second
        margins[s] = best_score - second_score if second >= 0 else 0.0


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


_SETTINGS = tuple(f.name for f in dataclasses.fields(STDPSettings))
_HISTORY = ("spikes", "wins", "theta")


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
    `deepstdp.snn_settings.STDPSettings`, which documents each one's default and meaning.
    nu_pre, nu_post and wmax are in units of the mean weight, norm_ / (2 * D), so
    they mean the same for any feature width D.

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
    ):
        self.n_clusters = n_clusters
        self.random_state = random_state
        self.n_neurons = n_neurons
        self.time = time
        self.dt = dt
        self.epochs = epochs
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

    # ------------------------------------------------------------------ public API

    def fit(self, X: Any, y: Any = None) -> Self:
        """Re-initialise, train `epochs` passes, then label X with the frozen network; with
        n_init > 1, keep the best of that many starts (`quality`)."""
        settings = self._check_params()
        x = _writable(self._validate_fit_input(X))
        self.seed_ = self._seed()
        best: tuple[float, dict[str, Any]] | None = None
        for start in range(self.n_init):
            self._init_state(x, settings, start)
            self._train(x, settings)
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
        drive = self._drive(x)
        return float(drive.max(axis=1).mean() / self._self_drive(x))

    def partial_fit(self, X: Any, y: Any = None) -> Self:
        """Train `epochs` more passes from the current state (fit if unfitted), relabel X."""
        if not hasattr(self, "weights_"):
            return self.fit(X)
        settings = self._check_params()
        self._train(_writable(self._validate_input(X)), settings)
        return self

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
                 adapt: bool = True) -> SimResult:
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
        wk = _work(w.shape[0], n, steps)
        for e in range(len(t)):
            _push(wk, e, t[e], i[e])
        rec_v, rec_th = np.zeros((steps, n)), np.zeros((steps, n))
        rec_s = np.zeros((steps, n), bool)
        norm = getattr(self, "norm_", self.norm or w.shape[0])
        tau_theta = self._tau_theta(settings, n)
        _present(w, th, self._dyn(w.shape[0], norm, tau_theta), self._decay(self.tau_pre, steps),
                 self._decay(self.tau_post, steps), learn, adapt, wk, rec_v, rec_s, rec_th)
        return SimResult(v=rec_v, spikes=rec_s, theta=rec_th, weights=w)

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

    def _dyn(self, n_inputs: int, norm: float, tau_theta: float) -> _Dyn:
        l2 = self.weight_norm == "l2"
        # The typical weight, unit of nu_pre, nu_post and wmax: the mean weight of a column
        # summing to norm, or the RMS signed weight of a column of L2 norm `norm`.
        unit = norm / np.sqrt(n_inputs / 2) if l2 else norm / n_inputs
        return _Dyn(float(self.v_rest), float(self.v_reset), float(self.v_thresh),
                    float(np.exp(-self.dt / self.tau_m)), round(self.refractory / self.dt),
                    float(self.theta_plus), float(np.exp(-self.dt / tau_theta)),
                    float(self.inhibition), self.nu_pre * unit, self.nu_post * unit,
                    self.wmax * unit, self.synapse == "push-pull", l2)

    def _decay(self, tau: float, steps: int) -> np.ndarray:
        """A trace k steps after its spike, for k = 0..steps."""
        return np.exp(-np.arange(steps + 1) * self.dt / tau).astype(np.float32)

    def _kernel_args(self) -> tuple:
        """The arguments that _train_pass and _frozen_pass share after x."""
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
        _normalize(self.weights_, self.norm_, self.weight_norm == "l2")
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

    def _train(self, x: np.ndarray, settings: STDPSettings) -> None:
        n_neurons = self.n_neurons_
        if (settings.n_neurons or self.n_clusters) != n_neurons:
            raise DeepSTDPError(f"the fitted layer has {n_neurons} neurons, the parameters ask "
                                f"for {settings.n_neurons or self.n_clusters}: fit again")
        self.tau_theta_ = self._tau_theta(settings, n_neurons)
        args, n = self._kernel_args(), len(x)
        won = np.zeros(n_neurons)
        for _ in range(self.epochs):
            order = np.random.default_rng([self.seed_, 1, self.passes_]).permutation(n)
            winners, shows = np.empty(n, np.int64), np.empty(n, np.int64)
            spikes = np.zeros(n_neurons, np.int64)
            _train_pass(x, order, self.weights_, self.theta_, *args, self.norm_,
                        np.uint64(self.seed_), self.passes_, float(self.anneal or 0.0), won,
                        winners, shows, spikes)
            self.passes_ += 1
            self.history_["spikes"].append(spikes)
            self.history_["wins"].append(np.bincount(winners, minlength=n_neurons))
            self.history_["theta"].append(self.theta_.copy())
            self.train_reshown_ = int((shows > 1).sum())
            self.train_silent_ = int((shows > self.max_reshow + 1).sum())
        for _ in range(self.consolidation):
            if self.inference == "current":
                self._expected_consolidation(x)
            else:
                _consolidation_pass(x, self.weights_, self.theta_, *args, self.norm_,
                                    np.uint64(self.seed_), self.passes_,
                                    max(1, min(n, 4 * numba.get_num_threads())))
            self.passes_ += 1
        winners, runners, shows, _ = self._frozen(x)
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
        _frozen_pass(x, _writable(self.weights_), _writable(self.theta_), *self._kernel_args(),
                     np.uint64(self.seed_),
                     max(1, min(n, 4 * numba.get_num_threads())), winners, runners, shows,
                     margins)
        return winners, runners, shows, margins

    def _expected_consolidation(self, x: np.ndarray) -> None:
        """`_consolidation_pass` in the noise-free limit of `inference='current'`: the winner of
        each sample (`_expected`) sums the sample's input rates (the expected pre-synaptic
        trace its spikes would potentiate by), and each neuron that won takes that sum,
        normalised, as its weights."""
        winners = self._expected(x)[0]
        rates = self._rates(x)
        on_off = np.concatenate([rates.clip(0), (-rates).clip(0)], axis=1)
        acc = np.zeros((self.n_neurons_, on_off.shape[1]))
        np.add.at(acc, winners, on_off)
        won = np.flatnonzero(acc.sum(axis=1) > 0)
        self.weights_[:, won] = acc[won].T.astype(np.float32)
        _normalize_columns(self.weights_, won.astype(np.int64), self.norm_,
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
        _expected_pass(x, _writable(self.weights_), _writable(self.theta_),
                       self.intensity * self.dt / 1000.0,
                       1.0 / (1.0 - np.exp(-self.dt / self.tau_m)), self.synapse == "push-pull",
                       winners, runners, margins)
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
