"""The converted network as integrate-and-fire (IF) neurons: simulation and its costs.

Discrete time, in one of three codings (settings.CODINGS): synchronous, every layer updates once
per step and a spike reaches the next layer in the same step; layered and binary, each layer
integrates its input's whole window of T steps, then fires for T steps (simulate_layered), every
spike weighing the same (layered) or the spike at step j weighing 2^(T-1-j) (binary). The ops
before the first IF layer are the analog input stage, computed once per image;
after it every op acts on spikes (weights already scaled by the threshold of the layer that
feeds them, so a spike is a unit event). docs/conversion.md explains the choices and the cost
model (synaptic operations, MACs, energy).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from deepstdp.conversion.settings import (
    CODINGS,
    READOUTS,
    ConversionSettings,
    check_timesteps,
)
from deepstdp.network.activations import qcfs
from deepstdp.network.synapses import WEIGHTED, Link, fanout
from deepstdp.runtime.util import DeepSTDPError

PJ_PER_MAC = 4.6
"""Energy of a 32-bit float multiply-accumulate at 45 nm (Horowitz, "Computing's energy
problem", ISSCC 2014: 3.7 pJ multiply + 0.9 pJ add): what the CNN pays per synapse."""
PJ_PER_AC = 0.9
"""Energy of a 32-bit float add at 45 nm (Horowitz 2014): what a spike pays per synapse."""
SPIKING = ("if", "maxgate")
"""Ops that emit spikes: IF layers, and the max-pooling gate, which routes the spikes of the IF
layer before it."""


@dataclass(eq=False)
class Op:
    """One step of the folded network.

    ANN kinds: conv, linear, avgpool, maxpool, flatten, relu, qcfs. SNN kinds: the linear ones,
    if (IF neurons of threshold `threshold`) and maxgate (max pooling of spikes).
    """

    kind: str
    name: str
    """The CNN module it comes from (e.g. 'body.4'), for messages and NIR node names."""
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    kernel: tuple[int, int] = (1, 1)
    threshold: float = 0.0
    """IF threshold; for qcfs, its trained lambda."""
    levels: int = 0
    """qcfs's quantisation levels; for an IF layer made from a QCFS, the QCFS's."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The ANN ops; `maxgate` gives only its output's shape here (it is simulated apart)."""
        if self.kind == "conv":
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)
        if self.kind == "linear":
            return F.linear(x, self.weight, self.bias)
        if self.kind == "avgpool":
            return F.avg_pool2d(x, self.kernel, self.stride)
        if self.kind in ("maxpool", "maxgate"):
            return F.max_pool2d(x, self.kernel, self.stride)
        if self.kind == "flatten":
            return x.flatten(1)
        if self.kind == "relu":
            return F.relu(x)
        if self.kind == "qcfs":
            return qcfs(x, self.threshold, self.levels)
        raise ValueError(f"{self.kind} is not a feed-forward op")

    def link(self) -> Link:
        """The op as the cost model (network.synapses) sees it: a conv's kernel is its
        weight's, `kernel` being the pooling window."""
        out = 0 if self.weight is None else int(self.weight.shape[0])
        kernel = tuple(self.weight.shape[2:]) if self.kind == "conv" else self.kernel
        return Link(self.kind, out, kernel, self.stride, self.padding)

    def to(self, dtype: torch.dtype, device: torch.device | None = None) -> Op:
        return dataclasses.replace(
            self, weight=None if self.weight is None else self.weight.to(device, dtype),
            bias=None if self.bias is None else self.bias.to(device, dtype))


def run_ops(ops: Sequence[Op], x: torch.Tensor) -> torch.Tensor:
    for op in ops:
        x = op(x)
    return x


def max_gate(charge: torch.Tensor, spikes: torch.Tensor, op: Op) -> torch.Tensor:
    """Spiking max pooling: each window passes the spikes of the one input neuron with the
    largest `charge` (ties go to the first in the window).

    Rueckauer et al. (2017) gate on an online estimate of each neuron's rate; the simulation
    passes the input each neuron has integrated so far (this step included), a finer estimate
    than its spike count, which lags by up to one spike (docs/conversion.md compares the two).
    """
    _, idx = F.max_pool2d(charge, op.kernel, op.stride, return_indices=True)
    return spikes.flatten(2).gather(2, idx.flatten(2)).view_as(idx)


@dataclass
class IFRecord:
    """What `SpikingNet.simulate` records at each requested number of steps T (the STDP
    layer's record of one presentation is stdp.estimator.PresentationTrace)."""

    counts: dict[int, torch.Tensor]
    """(images, features) spike counts of the feature layer after T steps (layer by layer:
    its levels, the spikes weighted)."""
    charge: dict[int, torch.Tensor]
    """(images, features) input the feature layer integrated in T steps (its membrane potential
    plus the charge its spikes took away, less the starting potential)."""
    sops: dict[int, torch.Tensor]
    """(images,) synaptic operations (accumulates caused by spikes) in the first T steps."""
    seconds: dict[int, float]
    """Wall time from the start of the batch (analog stage included) to the end of step T."""
    levels: dict[int, int] = dataclasses.field(default_factory=dict)
    """The levels a window of T steps expresses: T for a rate code, 2^T - 1 for the binary
    one; `counts` / levels is the rate in spikes per level step."""
    layer_counts: dict[int, list[torch.Tensor]] = dataclasses.field(default_factory=dict)
    """With `simulate(..., every_layer=True)`: each spiking stage's spike counts (levels) after
    T steps (converter.calibrate compares them with the CNN's activations)."""


class SpikingNet:
    """The converted network: linear ops, IF layers with their thresholds, max-pooling gates."""

    def __init__(self, ops: list[Op], input_shape: Sequence[int], settings: ConversionSettings):
        self.ops = ops
        self.input_shape = tuple(int(s) for s in input_shape)
        self.settings = settings
        self.reset = settings.reset
        self.v_init = float(settings.v_init)
        spiking = [i for i, op in enumerate(ops) if op.kind in SPIKING]
        self.analog = ops[:spiking[0]]
        # Stage k: spiking op k, then the linear ops its spikes feed (none before a gate or
        # after the feature layer).
        self.stages = [(ops[i], ops[i + 1:j]) for i, j in zip(spiking, [*spiking[1:], len(ops)],
                                                                strict=True)]
        self.shapes = self._shapes()
        # Synapses each neuron's spike reaches (network.synapses, the penalty's model too): to
        # the first weighted op after it or to the pooling neurons; none into a gate.
        self.fanouts = [fanout(self.shapes[i], [p.link() for p in post]) for i, post in
                        zip(spiking, (post for _, post in self.stages), strict=True)]
        # Pooling neurons (converter.convert): IF neurons fed by another IF layer's spikes
        # through average pooling alone; each averages `pooled` cells.
        self.pooled = [0] + [
            int(np.prod([p.kernel[0] * p.kernel[1] for p in post]))
            if post and all(p.kind == "avgpool" for p in post) and op.kind == "if" else 0
            for (op, _), (_, post) in zip(self.stages[1:], self.stages[:-1], strict=True)]

    @property
    def feature_threshold(self) -> float:
        return self.stages[-1][0].threshold

    def features(self, result: IFRecord, t: int, readout: str = READOUTS[0]) -> torch.Tensor:
        """The feature layer's activations decoded after T = t steps.

        'count': spike count / T * threshold, the rate code. 'membrane': the input it integrated,
        / T, through the layer's own activation (QCFS if it was one, else clipped at the
        threshold, where the count saturates); the potential left below threshold is no longer
        lost, which matters at small T.
        """
        op = self.stages[-1][0]
        levels = result.levels.get(t, t)
        if readout == "count":
            return result.counts[t] / levels * op.threshold
        if readout == "membrane":
            mean = result.charge[t] / levels
            if op.levels:
                return qcfs(mean, op.threshold, op.levels)
            return mean.clamp(0, op.threshold)
        raise DeepSTDPError(f"unknown readout {readout!r}: use {' or '.join(READOUTS)}")

    def _shapes(self) -> list[tuple[int, ...]]:
        """Shape (without batch) of each op's output."""
        x, out = torch.zeros(1, *self.input_shape), []
        for op in self.ops:
            x = x if op.kind == "if" else op(x)
            out.append(tuple(x.shape[1:]))
        return out

    def synapses(self, ops: Sequence[Op] | None = None) -> int:
        """Synapses of the weighted ops (all by default): the MACs of one ANN forward pass."""
        ops = self.ops if ops is None else ops
        shapes = [self.input_shape, *self.shapes]
        return sum(int(fanout(shapes[i], [op.link()]).sum()) for i, op in enumerate(self.ops)
                   if op.kind in WEIGHTED and any(op is o for o in ops))

    def n_neurons(self, driven: bool = False) -> int:
        """IF neurons; with `driven`, only those that add a constant current every step (the
        first layer's input, or a bias), i.e. not the pooling neurons."""
        return sum(int(np.prod(self.shapes[i])) for i, op in enumerate(self.ops)
                   if op.kind == "if" and (not driven or i == len(self.analog) or
                                           self.ops[i - 1].bias is not None))

    def costs(self, sops_per_image: float, timesteps: int) -> dict[str, float]:
        """Operations and energy per image of T steps, against one CNN forward pass.

        The SNN pays the analog stage's MACs once, an accumulate per synaptic event, and one add
        per step for each neuron with a constant input (the bias, folded from BatchNorm, or the
        first layer's current). Memory traffic, which dominates in practice, is in neither.
        """
        macs, input_macs = self.synapses(), self.synapses(self.analog)
        bias_adds = self.n_neurons(driven=True) * timesteps
        return {"sops_per_image": sops_per_image, "macs_per_image": macs,
                "input_macs_per_image": input_macs, "bias_adds_per_image": bias_adds,
                "energy_snn_uj": (input_macs * PJ_PER_MAC
                                  + (sops_per_image + bias_adds) * PJ_PER_AC) * 1e-6,
                "energy_ann_uj": macs * PJ_PER_MAC * 1e-6}

    @torch.no_grad()
    def simulate(self, x: torch.Tensor, timesteps: Sequence[int],
                 dtype: torch.dtype = torch.float32, every_layer: bool = False,
                 coding: str = "synchronous") -> IFRecord:
        """Run the batch x for max(timesteps) steps, recording at each T in timesteps, on x's
        device; with `every_layer`, every stage's spike counts too.

        `coding` (settings.CODINGS) 'synchronous': every layer updates once per step and a
        spike reaches the next layer in the same step. 'layered' and 'binary': layer by layer
        (simulate_layered).
        """
        if coding in ("layered", "binary"):
            return self.simulate_layered(x, timesteps, dtype, every_layer, coding == "binary")
        if coding != "synchronous":
            raise DeepSTDPError(f"unknown coding {coding!r}: use {' or '.join(CODINGS)}")
        start = time.perf_counter()
        marks, dev = set(timesteps), x.device
        stages = [(op, [p.to(dtype, dev) for p in post], fan.to(dev, dtype).flatten())
                  for (op, post), fan in zip(self.stages, self.fanouts, strict=True)]
        current = run_ops([op.to(dtype, dev) for op in self.analog], x.to(dtype))
        # Membranes, and the input integrated so far by each IF layer that feeds a gate or is
        # read out.
        state: list[torch.Tensor | None] = [None] * len(stages)
        charge: list[torch.Tensor | None] = [None] * len(stages)
        integrates = [k + 1 == len(stages) or stages[k + 1][0].kind == "maxgate"
                      for k in range(len(stages))]
        counts = torch.zeros(len(x), *self.shapes[-1], dtype=dtype, device=dev)
        layers: list[torch.Tensor | int] = [0] * len(stages)
        sops = torch.zeros(len(x), dtype=torch.float64, device=dev)
        result = IFRecord({}, {}, {}, {})
        for t in range(1, max(marks) + 1):
            inp = current
            for k, (op, post, fan) in enumerate(stages):
                if op.kind == "maxgate":  # fed by IF layer k - 1, whose charge decides
                    s = max_gate(charge[k - 1], inp, op)
                else:
                    if integrates[k]:
                        charge[k] = inp if charge[k] is None else charge[k] + inp
                    s = self._fire(k, op.threshold, inp, state)
                if post:
                    sops += (s.flatten(1) @ fan).double()
                if every_layer:
                    layers[k] = layers[k] + s
                inp = run_ops(post, s)
            counts += s
            if t in marks:
                if every_layer:
                    result.layer_counts[t] = [c.clone() for c in layers]
                result.counts[t] = counts.clone()
                result.levels[t] = t
                result.charge[t] = charge[-1].clone()
                result.sops[t] = sops.clone()
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                result.seconds[t] = time.perf_counter() - start
        return result

    @torch.no_grad()
    def simulate_layered(self, x: torch.Tensor, timesteps: Sequence[int],
                         dtype: torch.dtype = torch.float32, every_layer: bool = False,
                         binary: bool = False) -> IFRecord:
        """Layer by layer: each IF layer first integrates the input of its whole window of T
        steps without firing (the previous layer's spikes, its bias), then fires for T steps
        on the charge it holds, with no further input.

        A spike's arrival time within the window then no longer matters, so the unevenness
        error of synchronous propagation (a neuron that fires on early input which later input
        would have cancelled) is gone. With reset by subtraction and the half-threshold start,
        an IF layer's output is its mean input over the window rounded to one of `levels`
        steps of threshold / levels (ties down), clipped: the QCFS activation with `levels`
        levels, exactly. Rate code (`binary` False): every spike weighs the same, levels = T.
        Binary code (Stoeckl & Maass 2021's few-spikes neurons, Kim et al. 2018's weighted
        spikes, in their binary form): the threshold halves at each step of the firing window
        and a spike at step j weighs 2^(T-1-j) at its synapses, so the spikes are the binary
        digits of the level, levels = 2^T - 1, and at most T spikes express it. The price is
        latency: T steps per IF layer for one image (a pipeline takes a new image every T
        steps). Pooling neurons round ties down in the rate code and code the pooled mean as
        settings.binary_pooling says in the binary one (_binary_pooling). Each T is a run of
        its own (`seconds`: the analog stage and that run); SOPs
        count every spike's fan-out, as in `simulate`; `counts` and `layer_counts` hold the
        levels (weighted spike counts).
        """
        check_timesteps(timesteps, "binary" if binary else "layered")
        start, dev = time.perf_counter(), x.device
        current = run_ops([op.to(dtype, dev) for op in self.analog], x.to(dtype))
        result = IFRecord({}, {}, {}, {})
        analog = time.perf_counter() - start
        for t in sorted(set(timesteps)):
            begin = time.perf_counter()
            levels = 2**t - 1 if binary else t
            inp = current * levels  # the analog current over the window, in levels' units
            sops = torch.zeros(len(x), dtype=torch.float64, device=dev)
            layers: list[torch.Tensor] = []
            charge = level = spikes = inp  # a gate always follows an IF layer, which sets them
            for (op, post), fan, pooled in zip(self.stages, self.fanouts, self.pooled,
                                               strict=True):
                if op.kind == "maxgate":  # the winner is the neuron that integrated the most
                    level, spikes = max_gate(charge, level, op), max_gate(charge, spikes, op)
                elif pooled and binary:
                    charge = inp
                    level, spikes = self._binary_pooling(op.threshold, inp, t, pooled)
                else:
                    charge = inp
                    level, spikes = self._fire_window(op.threshold, inp, t, binary)
                if post:
                    sops += (spikes.flatten(1) @ fan.to(dev, dtype).flatten()).double()
                layers.append(level)
                inp = level
                for p in post:  # linear ops of the levels; a bias adds once per level step
                    p = p.to(dtype, dev)
                    inp = p(inp) if p.bias is None else p(inp) + (levels - 1) * _bias_map(p, inp)
            result.counts[t], result.charge[t], result.levels[t] = level, charge, levels
            result.sops[t] = sops
            if every_layer:
                result.layer_counts[t] = layers
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            result.seconds[t] = analog + time.perf_counter() - begin
        return result

    def _binary_pooling(self, threshold: float, charge: torch.Tensor, steps: int,
                        pooled: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooling neurons in the binary code: the level and spike count of each pooled cell's
        mean of `pooled` levels, a multiple of 1 / pooled.

        'exact' (settings.binary_pooling): with that unit and ceil(log2(pooled)) more steps the
        code passes the mean on as it is. 'rounded': in the layer's own `steps`, rounded to a
        level; a tie (half a level, for an even `pooled`) would always round down (a neuron
        fires above its threshold, not at it), biasing every pooled map by about -1/8 of a
        level for 2x2 pooling, so a checkerboard of initial membranes, +-1/(2 * pooled) of a
        level, sends half the ties up and leaves every other value's rounding as it is.
        """
        if self.settings.binary_pooling == "exact":
            extra = math.ceil(math.log2(pooled))
            level, spikes = self._fire_window(threshold / pooled, charge, steps + extra, True)
            return level / pooled, spikes
        return self._fire_window(threshold, charge + _checkerboard(charge) * threshold
                                 / (2 * pooled), steps, True)

    def _fire_window(self, threshold: float, charge: torch.Tensor, steps: int,
                     binary: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The level (spikes weighted by their step's weight) and the spike count of IF
        neurons that fire for `steps` steps on a held `charge` (in units of threshold / levels
        per level) with no input: the neuron of `_fire`, stepped, with a threshold that halves
        each step (from 2^(steps-1) units) in the binary code, or stays at one unit."""
        unit = threshold  # the charge a level stands for
        v = self.v_init * unit + charge
        level, spikes = torch.zeros_like(v), torch.zeros_like(v)
        for j in range(steps):
            weight = 2.0 ** (steps - 1 - j) if binary else 1.0
            s = (v > weight * unit).to(v.dtype)
            v = v - weight * unit * s if self.reset == "subtract" else v * (1 - s)
            level += weight * s
            spikes += s
        return level, spikes

    def _fire(self, k: int, threshold: float, inp: torch.Tensor,
              v: list[torch.Tensor | None]) -> torch.Tensor:
        """One step of IF layer k: integrate, spike above threshold, reset; updates v[k]."""
        v[k] = inp + (self.v_init * threshold if v[k] is None else v[k])
        s = (v[k] > threshold).to(inp.dtype)
        v[k] = v[k] - threshold * s if self.reset == "subtract" else v[k] * (1 - s)
        return s

    def state_dict(self) -> dict[str, Any]:
        return {"ops": [dataclasses.asdict(op) for op in self.ops],
                "input_shape": list(self.input_shape), "settings": self.settings.to_dict()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> SpikingNet:
        ops = [Op(**{**d, "stride": tuple(d["stride"]), "padding": tuple(d["padding"]),
                     "kernel": tuple(d["kernel"])}) for d in state["ops"]]
        return cls(ops, state["input_shape"], ConversionSettings.from_dict(state["settings"]))


def _checkerboard(x: torch.Tensor) -> torch.Tensor:
    """+1 and -1 alternating over x's positions (rows and columns of a map, or features)."""
    if x.dim() == 4:
        h, w = x.shape[-2:]
        idx = torch.arange(h, device=x.device)[:, None] + torch.arange(w, device=x.device)
    else:
        idx = torch.arange(x.shape[-1], device=x.device)
    return (idx % 2 * 2 - 1).to(x.dtype)


def _bias_map(op: Op, out: torch.Tensor) -> torch.Tensor:
    """op's bias, shaped to broadcast over its output `out`."""
    return op.bias.reshape(1, -1, *([1] * (out.dim() - 2)))
