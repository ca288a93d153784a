"""The spiking clustering layer's compiled kernels: one presentation of a sample, and the
passes over a data set that the estimator (`estimator.STDPClustering`) makes.

Functions of arrays only, compiled by numba (the estimator holds the state and the settings),
as Norse keeps its `functional` apart from its modules. The per-sample time loop is event
driven: an input spike adds its weight row to the neurons' input, and everything else a spike
sets off (depression, potentiation, traces, thresholds, normalisation) costs work in proportion
to the few neurons that spiked, not to the layer. A training sample's random spike trains are
keyed by (seed, pass, sample index, show); a frozen pass keys them by (seed, the sample's
bytes, show), so a prediction depends only on the sample and the fitted weights, whatever the
batch or its order. docs/snn.md explains the design.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_FROZEN_PASS = 2**62  # the pass number of every frozen (labelling or predict) pass
_REBASE = 2.0**-20  # see present: theta's common decay factor is folded in below this


class Dyn(NamedTuple):
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


class Work(NamedTuple):
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
def work(n_in: int, n: int, n_steps: int, consolidate: bool = False) -> Work:
    cap = n_in * n_steps  # most input spikes one show can have
    f32, i64 = np.float32, np.int64
    return Work(np.full(n_steps, -1, np.int32), np.empty(cap, np.int32),
                 np.empty(cap, np.int32), np.empty(n, f32), np.empty(n, f32), np.empty(n, f32),
                 np.empty(n, f32), np.empty(n, f32), np.empty(n, f32), np.empty(n),
                 np.empty(n, i64), np.empty(n, i64), np.empty(n, i64), np.empty(n, i64),
                 np.empty(n, i64), np.empty(n, i64), np.empty(n_in, i64), np.empty(n_in, i64),
                 np.empty(1, np.uint64), np.ones(n, f32),
                 np.zeros((n_in, n) if consolidate else (0, 0)))


@njit(cache=True)
def push(wk: Work, e: int, t: int, i: int) -> None:
    """Input spike number e: input i at step t (a step's spikes are listed last in, first out)."""
    wk.ev[e] = i
    wk.nxt[e] = wk.head[t]
    wk.head[t] = e


@njit(cache=True)
def input_events(x: np.ndarray, pmax: float, wk: Work) -> None:
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
            push(wk, e, int(t), i)
            e += 1
            t += 1.0 + np.floor(np.log(_uniform(wk.state)) * inv_log)


@njit(cache=True)
def present(w: np.ndarray, theta: np.ndarray, k: Dyn, pre_decay: np.ndarray,
             post_decay: np.ndarray, learn: bool, adapt: bool, wk: Work, rec_v: np.ndarray,
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

    Steps without an input spike are not visited one by one: with no neuron above threshold
    after a step (at most one crossed, and it spiked and was reset), the leak alone cannot lift
    a neuron to threshold (v moves towards v_rest, below it), so no neuron can spike before the
    next input; the leak of such a gap is applied at once (decay_m ** gap) when the next input
    arrives. Half the steps of a typical show have no input. Unless recording, the peak is
    therefore taken at steps with input, where v - threshold is highest between leaks.

    Returns nf, the number of neurons that spiked, and fills wk.counts (spikes per neuron),
    wk.first (step of the first spike, -1 if none), wk.fired[:nf] and wk.peak (the highest
    v - threshold reached at a step with input). rec_* are (steps, neurons) recordings, or
    0 x 0 for none.
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
    nf, n_ref, n_pre, gap, pending = 0, 0, 0, 0, False
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
        if e < 0 and not pending and not record:
            gap += 1
            continue
        if gap > 0:
            leak = decay_m ** gap
            for j in range(n):
                v[j] = v_rest + (v[j] - v_rest) * leak
            gap = 0
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
        pending = hits > 1  # another neuron may still be above threshold after the spike
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
def normalize_columns(w: np.ndarray, columns: np.ndarray, norm: float, l2: bool) -> None:
    """Scale the given neurons' input weights (columns) to size `norm` (`_column_size`)."""
    for j in columns:
        s = _column_size(w, j, l2)
        if s > 0:
            f = np.float32(norm) / s
            for i in range(w.shape[0]):
                w[i, j] *= f


@njit(cache=True)
def normalize(w: np.ndarray, norm: float, l2: bool = False) -> None:
    """Scale each neuron's input weights (a column) to size `norm` (`_column_size`)."""
    normalize_columns(w, np.arange(w.shape[1]), norm, l2)


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
def _show(x: np.ndarray, w: np.ndarray, theta: np.ndarray, k: Dyn, pre_decay: np.ndarray,
          post_decay: np.ndarray, learn: bool, intensity: float, intensity_step: float,
          max_reshow: int, dt: float, norm: float, key: np.uint64,
          wk: Work) -> tuple[int, int, int]:
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
        input_events(x, pmax, wk)
        nf = present(w, theta, k, pre_decay, post_decay, learn, learn, wk, no_f, no_b, no_f)
        if nf > 0:
            if learn:
                normalize_columns(w, wk.fired[:nf], norm, k.l2)
            winner = _best(wk.counts, wk.first, wk.peak, -1)
            return winner, _best(wk.counts, wk.first, wk.peak, winner), show + 1
    winner = _best(wk.counts, wk.first, wk.peak, -1)
    return winner, _best(wk.counts, wk.first, wk.peak, winner), max_reshow + 2


@njit(cache=True)
def train_pass(x: np.ndarray, order: np.ndarray, w: np.ndarray, theta: np.ndarray, k: Dyn,
                pre_decay: np.ndarray, post_decay: np.ndarray, n_steps: int, intensity: float,
                intensity_step: float, max_reshow: int, dt: float, norm: float,
                seed: np.uint64, pass_no: int, anneal: float, won: np.ndarray,
                winners: np.ndarray, shows: np.ndarray, spikes: np.ndarray) -> None:
    """One pass of online learning over x[order], one sample at a time (truly sequential).

    won: each neuron's wins so far in this fit / partial_fit call (updated). With anneal > 0 a
    neuron's STDP rates are scaled by 1 / (1 + won / anneal): online k-means's 1/n step, so
    that its weights settle on the mean of the samples it wins instead of tracking the last few.
    """
    wk = work(w.shape[0], w.shape[1], n_steps)
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
def consolidation_pass(x: np.ndarray, w: np.ndarray, theta: np.ndarray, k: Dyn,
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
        wk = work(w.shape[0], w.shape[1], n_steps, True)
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
            normalize_columns(w, np.array([j]), norm, k.l2)


@njit(cache=True, parallel=True)
def frozen_pass(x: np.ndarray, w: np.ndarray, theta: np.ndarray, k: Dyn,
                 pre_decay: np.ndarray, post_decay: np.ndarray, n_steps: int, intensity: float,
                 intensity_step: float, max_reshow: int, dt: float, seed: np.uint64,
                 n_chunks: int, winners: np.ndarray, runners: np.ndarray,
                 shows: np.ndarray, margins: np.ndarray) -> None:
    """Frozen network (no STDP, thresholds fixed): samples are independent, so chunks of them
    run in parallel. Each sample's spike trains are keyed by its bytes, so its result depends
    neither on the threads nor on the other samples of the batch or their order."""
    for c in prange(n_chunks):
        wk = work(w.shape[0], w.shape[1], n_steps)
        for s in range(c * x.shape[0] // n_chunks, (c + 1) * x.shape[0] // n_chunks):
            winners[s], runners[s], shows[s] = _show(
                x[s], w, theta, k, pre_decay, post_decay, False, intensity, intensity_step,
                max_reshow, dt, 0.0, _key(seed, _FROZEN_PASS, _digest(x[s])), wk)
            margins[s] = wk.counts[winners[s]] - wk.counts[runners[s]] if runners[s] >= 0 else 0


@njit(cache=True, parallel=True)
def expected_pass(x: np.ndarray, w: np.ndarray, theta: np.ndarray, pmax: float, gain: float,
                   signed: bool, winners: np.ndarray, runners: np.ndarray,
                   margins: np.ndarray) -> None:
    """The noise-free readout of every sample: each neuron's expected input per step from the
    sample's first-show rates, times `gain` (the potential above rest that it settles at),
    minus its threshold theta; the highest wins.

    The weights are taken once, input-major and in float64 (push-pull: the signed w_on - w_off,
    differenced in float32 as the simulation adds them). A sample's drive to all neurons is
    built one input at a time (drive += rate_k * weights_k, a contiguous sweep that the CPU
    runs in SIMD lanes, skipping zero rates): every neuron's sum runs over the inputs in
    order, whatever the sample's batch or thread, so a result depends on the sample alone.
    Summing a neuron's dot product per sample instead read the whole weight matrix from
    memory once a sample: 1.7-2.6x slower at 2,000 neurons of 32 inputs (docs/snn.md)."""
    d, n = x.shape[1], w.shape[1]
    w_on, w_off = np.empty((d, n)), np.empty((d, n))
    for k in range(d):
        for j in range(n):
            w_on[k, j] = w[k, j] - w[d + k, j] if signed else w[k, j]
            w_off[k, j] = w[d + k, j]
    n_samples, tile = x.shape[0], 64
    for t in prange((n_samples + tile - 1) // tile):
        drive = np.empty(n)
        for s in range(t * tile, min(n_samples, (t + 1) * tile)):
            scale = 0.0
            for k in range(d):
                scale = max(scale, abs(x[s, k]))
            drive[:] = 0.0
            for k in range(d if scale > 0.0 else 0):
                r, row = pmax * x[s, k] / scale, w_on[k]
                if not signed and r < 0:
                    r, row = -r, w_off[k]
                if r != 0.0:
                    for j in range(n):
                        drive[j] += r * row[j]
            best, second = -1, -1
            best_score, second_score = -np.inf, -np.inf
            for j in range(n):
                score = drive[j] * gain - theta[j]
                if score > best_score:
                    second, second_score = best, best_score
                    best, best_score = j, score
                elif score > second_score:
                    second, second_score = j, score
            winners[s], runners[s] = best, second
            margins[s] = best_score - second_score if second >= 0 else 0.0


@njit(cache=True)
def add_rows(acc: np.ndarray, index: np.ndarray, rows: np.ndarray) -> None:
    """acc[index[s]] += rows[s] for every s in order: np.add.at's result (the same sums in the
    same order), without its per-element dispatch, which cost a fifth of a default fit."""
    for s in range(index.shape[0]):
        a = acc[index[s]]
        for i in range(rows.shape[1]):
            a[i] += rows[s, i]
