"""What a spike costs: the synapses it reaches (its fan-out), neuron by neuron.

One module owns the count so that the firing penalty (network.firing, on the CNN's modules,
during training) and the simulator (conversion.network, on the converted ops, counting SOPs)
cannot drift apart: both describe the ops after a layer of neurons as `Link`s and ask `fanout`.
The network stage sits below the conversion, so the model lives here and speaks in plain
geometry (kinds, kernels, strides, padding, widths) rather than either side's objects.
docs/conversion.md ("Costs") defines what is counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from deepstdp.runtime.util import DeepSTDPError

WEIGHTED = ("conv", "linear")
"""Link kinds with synapses of their own: a spike's fan-out ends at the first of them."""


@dataclass(frozen=True)
class Link:
    """One op between a layer of neurons and the synapses its spikes reach, as the cost model
    sees it: geometry, no weights (every synapse costs one accumulate, whatever its weight)."""

    kind: str
    """conv, linear, avgpool or flatten (a max-pooling gate is a spiking stage of its own)."""
    out: int = 0
    """Output channels (conv) or features (linear)."""
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)


def pair(v: int | Sequence[int]) -> tuple[int, int]:
    """A torch size argument (one int or two) as (height, width)."""
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def pool_link(name: str, m: nn.AvgPool2d | nn.AdaptiveAvgPool2d | nn.MaxPool2d,
              map_size: Sequence[int]) -> Link | None:
    """A CNN pooling module as the converted network pools (`map_size`: the map it sees, which
    sets an adaptive pooling's windows); None where it is the identity and vanishes.

    Raises DeepSTDPError for what has no spiking counterpart: uneven adaptive windows, padding,
    dilation, ceil_mode.
    """
    if isinstance(m, nn.AdaptiveAvgPool2d):
        (h, w), (oh, ow) = map_size, pair(m.output_size)
        if h % oh or w % ow:
            raise DeepSTDPError(
                f"layer {name} (AdaptiveAvgPool2d) cannot be converted: a {h}x{w} map gives "
                f"uneven {oh}x{ow} windows; use an image size that the pooling layers divide "
                "evenly")
        kind, kernel, stride = "avgpool", (h // oh, w // ow), (h // oh, w // ow)
    else:
        plain = pair(m.padding) == (0, 0) and not m.ceil_mode
        if isinstance(m, nn.MaxPool2d):
            plain = plain and pair(m.dilation) == (1, 1) and not m.return_indices
        if not plain:
            raise DeepSTDPError(f"layer {name} ({m}) cannot be converted: pooling needs "
                                "padding=0, no dilation and ceil_mode=False")
        kind = "maxpool" if isinstance(m, nn.MaxPool2d) else "avgpool"
        kernel, stride = pair(m.kernel_size), pair(m.stride or m.kernel_size)
    return None if kernel == (1, 1) == stride else Link(kind, kernel=kernel, stride=stride)


def _reach(x: torch.Tensor, links: Sequence[Link]) -> torch.Tensor:
    """x through `links` up to the first weighted one, with all-ones weights and sum pooling:
    the sum of the result counts every (input neuron, synapse) pair once."""
    for link in links:
        if link.kind == "conv":
            ones = x.new_ones(link.out, x.shape[1], *link.kernel)
            return F.conv2d(x, ones, None, link.stride, link.padding)
        if link.kind == "linear":
            return F.linear(x, x.new_ones(link.out, x.shape[1]))
        if link.kind == "avgpool":
            x = F.avg_pool2d(x, link.kernel, link.stride) * (link.kernel[0] * link.kernel[1])
        elif link.kind == "flatten":
            x = x.flatten(1)
        else:
            raise ValueError(f"{link.kind} does not carry spikes to synapses")
    return x


def fanout(shape: Sequence[int], links: Sequence[Link]) -> torch.Tensor:
    """Synapses each neuron of a layer of `shape` (no batch) reaches through `links`: in the
    first weighted link (zero padding is not counted), through pooling (each pooled cell it
    belongs to) and flattening; without a weighted link, the pooled cells themselves (the
    pooling neurons' synapses). Float64 (integers), of `shape`; zeros without links (read out,
    or routed by a max-pooling gate, which costs no synapse).

    It is the gradient of the summed output of the links with all-ones weights and sum pooling.
    """
    if not links:
        return torch.zeros(tuple(shape), dtype=torch.float64)
    with torch.enable_grad():
        x = torch.ones(1, *shape, dtype=torch.float64, requires_grad=True)
        _reach(x, links).sum().backward()
    return x.grad[0]


def spike_cost(shape: Sequence[int], links: Sequence[Link]) -> torch.Tensor:
    """Synapses per step that a rate of one spike per step of each neuron costs the converted
    network of the default settings, whose pooling neurons re-encode every average-pooled cell
    of spikes (a run of poolings counts as one): one synapse into each cell's pooling neuron,
    plus that neuron's fan-out shared over the cell, since it fires at the cell's mean rate
    (exact on average; docs/conversion.md, "Pooling neurons"). Without pooling: `fanout`.
    """
    pools = next((i for i, link in enumerate(links) if link.kind != "avgpool"), len(links))
    if not pools:
        return fanout(shape, links)
    area = math.prod(link.kernel[0] * link.kernel[1] for link in links[:pools])
    with torch.enable_grad():
        x = torch.ones(1, *shape, dtype=torch.float64, requires_grad=True)
        cells = _reach(x, links[:pools])  # each cell's sum: area times its pooling neuron's rate
        paid = fanout(cells.shape[1:], links[pools:])
        (cells * (1 + paid / area)).sum().backward()
    return x.grad[0]
