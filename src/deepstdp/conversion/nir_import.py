"""Reading deepstdp's NIR files back into torch: the exact format through nirtorch with the
node map it needs (`nirtorch_node_map`), the sinabs format through Sinabs (`sinabs_from_nir`).
Apart from nir_export, which writes them, so that the export needs neither nirtorch nor Sinabs;
docs/nir.md measures how closely each reader runs the network."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from deepstdp.conversion.nir_export import _nir
from deepstdp.runtime.util import DeepSTDPError


def sinabs_from_nir(graph: Any, batch_size: int) -> nn.Module:
    """Sinabs module that runs a sinabs-format graph as the network, for one batch of
    `batch_size` samples: input (batch_size * T, C, H, W), each sample's T steps in a row;
    returns (output spikes of the same layout, state). A new batch needs a new module.

    sinabs.from_nir, then in each IAF layer the network's neurons: one spike per step
    (SingleSpike, not Sinabs's default floor(v / threshold)), no floor on v (from_nir clips
    it at -threshold), reset to zero if the metadata says so, and v starting at metadata
    v_init * threshold.
    """
    try:
        import sinabs
    except ImportError:
        raise DeepSTDPError("running a sinabs file needs Sinabs: pip install "
                            "'deepstdp[nir-interop]'") from None
    module = sinabs.from_nir(graph, batch_size=batch_size)
    v_init = float(graph.metadata.get("v_init", 0.0))
    for layer in module.modules():
        if isinstance(layer, sinabs.layers.IAF):
            layer.spike_fn, layer.min_v_mem = sinabs.activation.SingleSpike, None
            if graph.metadata.get("reset") == "zero":
                layer.reset_fn = sinabs.activation.MembraneReset()
            threshold = layer.spike_threshold.detach()
            layer.v_mem = (v_init * threshold).expand(batch_size, *threshold.shape).clone()
    return module


class _Integrator(nn.Module):
    """NIR I at dt = 1: v += r * x; outputs v."""

    def __init__(self, node: Any):
        super().__init__()
        self.register_buffer("r", torch.as_tensor(node.r))

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None):
        v = self.r * x if state is None else state + self.r * x
        return v, v


class _Threshold(nn.Module):
    def __init__(self, node: Any):
        super().__init__()
        self.register_buffer("threshold", torch.as_tensor(node.threshold))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > self.threshold).to(x.dtype)


class _Scale(nn.Module):
    def __init__(self, node: Any):
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(node.scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class _IF(nn.Module):
    """NIR IF at dt = 1, from v = 0: v += r * x; spike where v > v_threshold, then v = v_reset."""

    def __init__(self, node: Any):
        super().__init__()
        for key in ("r", "v_threshold", "v_reset"):
            self.register_buffer(key, torch.as_tensor(getattr(node, key)))

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None):
        v = self.r * x if state is None else state + self.r * x
        s = (v > self.v_threshold).to(x.dtype)
        return s, torch.where(s > 0, self.v_reset, v)


def _affine(node: Any) -> nn.Linear:
    m = nn.Linear(node.weight.shape[1], node.weight.shape[0])
    m.weight.data = torch.as_tensor(node.weight)
    m.bias.data = torch.as_tensor(node.bias)
    return m


def _flatten(node: Any) -> nn.Flatten:
    """NIR's dims leave out the batch; torch's count it."""
    return nn.Flatten(node.start_dim + 1, node.end_dim + (node.end_dim >= 0))


def nirtorch_node_map() -> dict[Any, Any]:
    """Node map for nirtorch.nir_to_torch that runs an exact-format CNN file spike for spike.

    It adds the node types nirtorch 2.6 lacks (I, Threshold, Scale, IF) and replaces two of its
    defaults: Affine (which leaves the bias at its random initial value) and Flatten (which
    reads NIR's dims as torch's, flattening the batch). The module returns (output, state).
    """
    nir = _nir()
    return {nir.I: _Integrator, nir.Threshold: _Threshold, nir.Scale: _Scale, nir.IF: _IF,
            nir.Affine: _affine, nir.Flatten: _flatten}
