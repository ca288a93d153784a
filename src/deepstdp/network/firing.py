"""The converted network's firing as a training penalty: fewer spikes at equal accuracy.

A spike of a neuron in layer l costs one accumulate in every synapse it reaches (its fan-out),
so the converted network's synaptic operations per step are about
sum_l fanout_l * sum_neurons(rate), the rate of a neuron being its activation over its
threshold (QCFS: its trained lambda; ReLU: a high percentile of the batch's positive values,
as the conversion balances it). `FiringCost` measures that sum during training, divided by the
CNN's MACs, so `TrainConfig.sparsity` weighs "synaptic operations per step, as a fraction of
one CNN pass" against the cross-entropy. The feature layer's spikes reach nothing (they are
read out) and cost nothing. docs/conversion.md measures what it buys.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from deepstdp.config import RELU_PERCENTILE
from deepstdp.network.activations import QCFS

RELU_SCALE_QUANTILE = round(RELU_PERCENTILE / 100, 12)  # 0.999, not 0.9990000000000001
"""A ReLU layer's threshold in the penalty: this quantile of the batch's positive
activations, where the conversion puts it by default."""
_SAMPLE = 100_000
"""Values a ReLU layer's quantile is estimated from (a seeded sample: torch.quantile's limit
and cost)."""


def _fanouts(seq: list[nn.Module], shapes: list[torch.Size]) -> list[tuple[int, float]]:
    """(index, fan-out per neuron) of each activation in `seq` whose spikes reach a weighted
    layer: the next conv's C_out * kernel area, or the next linear's width, shared out over a
    pooling window on the way (one synapse more for the pooling neuron that re-encodes it)."""
    out = []
    for i, m in enumerate(seq):
        if not isinstance(m, nn.ReLU | QCFS):
            continue
        area, fan = 1.0, 0.0
        for j in range(i + 1, len(seq)):
            nxt = seq[j]
            if isinstance(nxt, nn.AvgPool2d | nn.MaxPool2d | nn.AdaptiveAvgPool2d):
                area *= shapes[j - 1][-1] * shapes[j - 1][-2] / (shapes[j][-1] * shapes[j][-2])
            elif isinstance(nxt, nn.Conv2d):
                fan = nxt.out_channels * math.prod(nxt.kernel_size) / math.prod(nxt.stride) ** 2
                break
            elif isinstance(nxt, nn.Linear):
                fan = float(nxt.out_features)
                break
        if fan:
            out.append((i, fan / area + (area > 1)))
    return out


class FiringCost:
    """Hooks on a ConvNet's activations that estimate its converted network's synaptic
    operations per step over the CNN's MACs, differentiably, for the batch just run.

    Use as a context manager around the training steps (the hooks hold each batch's
    activations, so they are removed outside training); `pop()` after each forward pass.
    """

    def __init__(self, model: nn.Module, sample_input: torch.Tensor):
        seq = [model.sobel, *model.body, *model.head]
        shapes, macs = [], 0.0
        x = sample_input[:1]
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for m in seq:
                y = m(x)
                if isinstance(m, nn.Conv2d):
                    macs += y[0].numel() * m.in_channels * math.prod(m.kernel_size)
                elif isinstance(m, nn.Linear):
                    macs += y[0].numel() * m.in_features
                shapes.append(y.shape)
                x = y
        model.train(was_training)
        self.macs = macs
        self.layers = [(seq[i], fan) for i, fan in _fanouts(seq, shapes)]
        self._outputs: list[torch.Tensor | None] = [None] * len(self.layers)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._gen = torch.Generator().manual_seed(0)

    def __enter__(self) -> FiringCost:
        for k, (m, _) in enumerate(self.layers):
            self._handles.append(m.register_forward_hook(self._keeper(k)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._outputs = [None] * len(self.layers)

    def _keeper(self, k: int):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...],
                 output: torch.Tensor) -> None:
            self._outputs[k] = output
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
        total = None
        for k, (m, fan) in enumerate(self.layers):
            a = self._outputs[k]
            if a is None:
                continue
            rate = a.float().flatten(1).sum(1).mean() / self._threshold(m, a).clamp_min(1e-12)
            term = rate * (fan / self.macs)
            total = term if total is None else total + term
        self._outputs = [None] * len(self.layers)
        if total is None:
            raise RuntimeError("FiringCost.pop() before a forward pass of its model")
        return total
