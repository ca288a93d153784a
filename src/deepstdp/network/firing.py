"""The converted network's firing as a training penalty: fewer spikes at equal accuracy.

A spike of a neuron costs one accumulate in every synapse it reaches (its fan-out), so the
converted network's synaptic operations per step are sum_neurons(rate * cost), the rate of a
neuron being its activation over its threshold (QCFS: its trained lambda; ReLU: a high percentile
of the batch's positive values, as the conversion balances it) and its cost the exact per-neuron
map of network.synapses, the simulator's own count (zero padding left out; an average-pooled
layer pays its pooling neurons' synapses, a max-pooled one its gate's, which passes the
window's largest rate). `FiringCost` measures that sum during training, divided by the CNN's
MACs (its synapses, counted the same way), so `TrainConfig.sparsity` weighs "synaptic operations
per step, as a fraction of one CNN pass" against the cross-entropy. The feature layer's spikes
reach nothing (they are read out) and cost nothing. docs/conversion.md measures what it buys.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from deepstdp.config import RELU_PERCENTILE
from deepstdp.network.activations import QCFS
from deepstdp.network.models import Sobel
from deepstdp.network.synapses import WEIGHTED, Link, fanout, pool_link, spike_cost

RELU_SCALE_QUANTILE = round(RELU_PERCENTILE / 100, 12)  # 0.999, not 0.9990000000000001
"""A ReLU layer's threshold in the penalty: this quantile of the batch's positive
activations, where the conversion puts it by default."""
_SAMPLE = 100_000
"""Values a ReLU layer's quantile is estimated from (a seeded sample: torch.quantile's limit
and cost)."""
ACTIVATION = nn.ReLU | QCFS
POOLING = nn.AvgPool2d | nn.AdaptiveAvgPool2d | nn.MaxPool2d


def _link(name: str, m: nn.Module, shape: Sequence[int]) -> Link | None:
    """A module of the CNN's feature path as the cost model sees it, `shape` being its input's
    (no batch); None for what vanishes at inference (dropout, identity pooling) or adds no
    synapse (BatchNorm, folded into the layer before it)."""
    if isinstance(m, Sobel):
        return Link("conv", m.kernel.shape[0], tuple(m.kernel.shape[2:]), padding=m.padding)
    if isinstance(m, nn.Conv2d):
        return Link("conv", m.out_channels, m.kernel_size, m.stride, m.padding)
    if isinstance(m, nn.Linear):
        return Link("linear", m.out_features)
    if isinstance(m, POOLING):
        return pool_link(name, m, shape[-2:])
    return Link("flatten") if isinstance(m, nn.Flatten) else None


def _stages(seq: Sequence[nn.Module], links: Sequence[Link | None],
            shapes: Sequence[Sequence[int]]) -> list[tuple[int, int, torch.Tensor]]:
    """(index of the module whose output spikes, index of the activation whose threshold
    scales it, cost map of its output) of each spiking layer of the converted network whose
    spikes reach a synapse: an activation (IF neurons), and a max pooling after one (the gate,
    which passes the spikes of its window's most active neuron). A layer's links run to the
    first weighted one; an activation's stop at a gate, whose routing costs no synapse."""
    out, source = [], None
    for i, (m, link) in enumerate(zip(seq, links, strict=True)):
        source = i if isinstance(m, ACTIVATION) else source
        gate = link is not None and link.kind == "maxpool"
        if source is None or not (source == i or gate):  # before the spikes: analog
            continue
        after: list[Link] = []
        for m_next, nxt in zip(seq[i + 1:], links[i + 1:], strict=True):
            if isinstance(m_next, ACTIVATION) or nxt is not None and nxt.kind == "maxpool":
                break
            if nxt is None:
                continue
            after.append(nxt)
            if nxt.kind in WEIGHTED:
                break
        cost = spike_cost(shapes[i], after)
        if cost.any():
            out.append((i, source, cost.float()))
    return out


class FiringCost:
    """Hooks on a ConvNet's spiking layers that estimate its converted network's synaptic
    operations per step over the CNN's MACs, differentiably, for the batch just run.

    Use as a context manager around the training steps (the hooks hold each batch's
    activations, so they are removed outside training); `pop()` after each forward pass.
    The cost maps are fixed by `sample_input`'s image size, which training keeps.
    """

    def __init__(self, model: nn.Module, sample_input: torch.Tensor):
        names = ["sobel", *(f"body.{i}" for i in range(len(model.body))),
                 *(f"head.{i}" for i in range(len(model.head)))]
        seq = [model.sobel, *model.body, *model.head]
        shapes, links = [], []
        x = sample_input[:1]
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for name, m in zip(names, seq, strict=True):
                links.append(_link(name, m, x.shape[1:]))
                shapes.append(x.shape[1:])
                x = m(x)
        model.train(was_training)
        # Synapses of the weighted layers (the simulator's count: zero padding left out).
        self.macs = sum(float(fanout(shape, [link]).sum()) for shape, link in
                        zip(shapes, links, strict=True) if link and link.kind in WEIGHTED)
        stages = _stages(seq, links, [*shapes[1:], x.shape[1:]])
        self._seq = seq
        self.stages = [(i, source) for i, source, _ in stages]
        self.costs = [cost for _, _, cost in stages]
        """Per stage, synapses per step that one spike per step of each neuron costs (float32,
        moved to the activations' device on first use)."""
        self._outputs: dict[int, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._gen = torch.Generator().manual_seed(0)

    def __enter__(self) -> FiringCost:
        for i in sorted({i for stage in self.stages for i in stage}):
            self._handles.append(self._seq[i].register_forward_hook(self._keeper(i)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._outputs.clear()

    def _keeper(self, i: int):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...],
                 output: torch.Tensor) -> None:
            self._outputs[i] = output
        return hook

    def _threshold(self, m: nn.Module, a: torch.Tensor) -> torch.Tensor:
        if isinstance(m, QCFS) and m.initialised:
            return m.threshold.detach().float()
        pos = a.detach().float()
        pos = pos[pos > 0]
        if len(pos) > _SAMPLE:
            pos = pos[torch.randint(len(pos), (_SAMPLE,), generator=self._gen)
                      .to(pos.device)]
        return pos.quantile(RELU_SCALE_QUANTILE) if len(pos) else pos.new_tensor(1.0)

    def pop(self) -> torch.Tensor:
        """Synaptic operations per step per image / MACs for the last forward pass (a
        differentiable scalar), then forget that pass."""
        if not self._outputs:
            raise RuntimeError("FiringCost.pop() before a forward pass of its model")
        thresholds = {j: self._threshold(self._seq[j], self._outputs[j])  # in layer order
                      for j in dict.fromkeys(source for _, source in self.stages)}
        total = None
        for k, (i, source) in enumerate(self.stages):
            a, cost = self._outputs[i], self.costs[k]
            if cost.device != a.device:
                cost = self.costs[k] = cost.to(a.device)
            sops = (a.float().flatten(1) @ cost.flatten()).mean()
            term = sops / thresholds[source].clamp_min(1e-12) / self.macs
            total = term if total is None else total + term
        self._outputs.clear()
        return total
