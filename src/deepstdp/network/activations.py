"""Activations of the CNN: ReLU, or QCFS for low-latency spiking conversion.

QCFS, the quantisation-clip-floor-shift activation of Bu et al. (ICLR 2022, "Optimal ANN-SNN
conversion for high-accuracy and low-latency spiking neural networks"), is what an
integrate-and-fire neuron with threshold lambda, reset by subtraction and a membrane that starts
at lambda / 2 computes over L steps of a constant input: lambda * clip(floor(x L / lambda + 1/2)
/ L, 0, 1). A CNN trained with it has no clipping error once converted, and its expected
quantisation error is zero at any T (their theorem 2), so it needs about L steps where a ReLU
network needs tens to hundreds.
"""

from __future__ import annotations

import torch
from torch import nn

from deepstdp.config import ACTIVATIONS
from deepstdp.runtime.util import DeepSTDPError

QCFS_INIT_PERCENTILE = 99.0
"""Initial lambda: this percentile of the positive inputs of the layer's first training batch.
Bu et al. start every layer at 8 and train 300 epochs; in our 40, lambda barely moves from where
it starts (4.0 -> 3.9 in 18 epochs on digits), so it must start on the scale of the inputs it
quantises. docs/conversion.md compares the choices."""


class _FloorSTE(torch.autograd.Function):
    """floor in the forward pass, the identity in the backward pass (straight-through)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.floor()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


def qcfs(x: torch.Tensor, threshold: torch.Tensor | float, levels: int) -> torch.Tensor:
    """lambda * floor(clip(x / lambda, 0, 1) * L + 1/2) / L, Bu et al.'s order of operations.

    Equal to lambda * clip(floor(x L / lambda + 1/2) / L, 0, 1) in the forward pass; clipping
    first gives their gradients: 1 for x in (0, lambda) and 0 outside for x; for lambda, 1 where
    x is clipped at the top and the (small) quantisation error / lambda inside.
    """
    u = torch.clamp(x / threshold, 0, 1)
    return _FloorSTE.apply(u * levels + 0.5) / levels * threshold


class QCFS(nn.Module):
    """QCFS with a trainable threshold lambda (one per layer) and `levels` quantisation levels.

    Without a `threshold`, lambda is set at the first forward pass in training mode, to the
    QCFS_INIT_PERCENTILE-th percentile of the positive inputs; until then the layer is a ReLU.
    An untrained network in eval mode (BatchNorm not yet normalising) has activations far below
    any fixed lambda / L, which would all quantise to zero; its first clusters, and so the loop's
    first targets, would be degenerate. The `initialised` flag is saved with the weights.
    """

    def __init__(self, levels: int = 8, threshold: float | None = None):
        super().__init__()
        if levels < 1:
            raise DeepSTDPError(f"QCFS needs at least 1 level, got {levels}")
        self.levels = levels
        self.threshold = nn.Parameter(torch.tensor(1.0 if threshold is None else float(threshold)))
        self.register_buffer("initialised", torch.tensor(threshold is not None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.initialised:
            if not self.training:
                return torch.relu(x)
            self._initialise(x.detach())
        return qcfs(x, self.threshold, self.levels)

    @torch.no_grad()
    def _initialise(self, x: torch.Tensor, max_values: int = 1_000_000) -> None:
        pos = x[x > 0].float()
        if len(pos) > max_values:  # a seeded sample bounds the cost on large maps
            gen = torch.Generator().manual_seed(0)
            pos = pos[torch.randint(len(pos), (max_values,), generator=gen)]
        if len(pos):
            k = max(1, round(len(pos) * QCFS_INIT_PERCENTILE / 100))
            self.threshold.fill_(pos.kthvalue(k).values)
        self.initialised.fill_(True)

    def extra_repr(self) -> str:
        state = f"{self.threshold.item():.4g}" if self.initialised else "set by the first batch"
        return f"levels={self.levels}, threshold={state}"


def make_activation(name: str, levels: int = 8) -> nn.Module:
    """A fresh activation layer: 'relu' or 'qcfs' (with `levels` levels)."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "qcfs":
        return QCFS(levels)
    raise DeepSTDPError(f"unknown activation {name!r}: use {' or '.join(ACTIVATIONS)}")
