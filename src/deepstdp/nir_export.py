"""Export the converted network (and an STDP clusterer's layer) to NIR, the Neuromorphic
Intermediate Representation (Pedersen et al. 2024), read by snnTorch, Norse, Lava, Sinabs,
SpiNNaker2 and others.

Discrete time, one step per NIR time unit (dt = 1); a recurrent edge carries the previous step's
output. The CNN part is exact, i.e. it reproduces `SpikingNet.simulate` spike for spike:

- input: the normalised image (x - input_mean) / input_std, presented as a constant current at
  every step; Conv2d 'sobel' is the fixed grayscale+Sobel filter.
- Conv2d/Affine carry the folded, threshold-scaled weights; AvgPool2d and Flatten are linear.
- IF layers with reset by subtraction (the default) cannot be NIR `IF` nodes, which reset to a
  fixed v_reset. Each becomes an integrator `I` (r = 1), a `Threshold` and a `Scale(-threshold)`
  fed back into the integrator: v_t = v_{t-1} + x_t - threshold * s_{t-1}, s_t = v_t > theta.
  The start at v_init * threshold is a shift of theta to (1 - v_init) * threshold.
- With reset to zero, each layer is a NIR `IF` (r = 1, v_threshold = (1 - v_init) * threshold,
  v_reset = -v_init * threshold: the same shift).
- Output 'output': the feature layer's spikes; count / T * metadata feature_threshold gives the
  features that the run's projection and PCA-whitening (not exported: they are not spiking
  operations) take.

An STDP clusterer adds a second, separate input 'stdp.input' (its 2*D on/off input spike
trains) -> Linear 'stdp.weights' -> LIF 'stdp.lif' <-> Linear 'stdp.inhibition' (lateral
inhibition) -> Output 'stdp.output'. That part is approximate, as NIR has no refractory period
and no one-winner-per-step rule; both are recorded in the metadata, with the Poisson encoding and
the neuron -> cluster map.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deepstdp.clustering import Clusterer
from deepstdp.conversion import (
    SpikingNet,
    clusterer_from_checkpoint,
    load_checkpoint,
    load_spiking,
    model_from_checkpoint,
)
from deepstdp.util import DeepSTDPError, atomic_write


def _nir() -> Any:
    try:
        import nir
    except ImportError:
        raise DeepSTDPError(
            "NIR export needs the nir package: pip install 'deepstdp[nir]'") from None
    return nir


def _np(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def cnn_nodes(snn: SpikingNet) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """NIR nodes and edges of the converted CNN, from 'input' to 'output'."""
    nir = _nir()
    nodes: dict[str, Any] = {"input": nir.Input(input_type={"input": np.array(snn.input_shape)})}
    edges: list[tuple[str, str]] = []
    last, shape = "input", snn.input_shape
    for op, out_shape in zip(snn.ops, snn.shapes, strict=True):
        full = np.ones(out_shape, dtype=np.float32)
        first = op.name
        if op.kind == "conv":
            bias = np.zeros(op.weight.shape[0], np.float32) if op.bias is None else _np(op.bias)
            nodes[op.name] = nir.Conv2d(input_shape=tuple(shape[1:]), weight=_np(op.weight),
                                        stride=op.stride, padding=op.padding, dilation=1,
                                        groups=1, bias=bias)
        elif op.kind == "linear":
            nodes[op.name] = (nir.Linear(weight=_np(op.weight)) if op.bias is None else
                              nir.Affine(weight=_np(op.weight), bias=_np(op.bias)))
        elif op.kind == "avgpool":
            nodes[op.name] = nir.AvgPool2d(kernel_size=np.array(op.kernel),
                                           stride=np.array(op.stride), padding=np.zeros(2, int))
        elif op.kind == "flatten":
            nodes[op.name] = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0,
                                         end_dim=-1)
        elif op.kind == "if" and snn.reset == "zero":
            nodes[op.name] = nir.IF(r=full, v_threshold=(1 - snn.v_init) * op.threshold * full,
                                    v_reset=-snn.v_init * op.threshold * full)
        elif op.kind == "if":
            first = f"{op.name}.v"
            nodes[first] = nir.I(r=full)
            nodes[op.name] = nir.Threshold(threshold=(1 - snn.v_init) * op.threshold * full)
            nodes[f"{op.name}.reset"] = nir.Scale(scale=-op.threshold * full)
            edges += [(first, op.name), (op.name, f"{op.name}.reset"),
                      (f"{op.name}.reset", first)]
        edges.append((last, first))
        last, shape = op.name, out_shape
    nodes["output"] = nir.Output(output_type={"output": np.array(shape)})
    edges.append((last, "output"))
    return nodes, edges


def stdp_nodes(clusterer: Clusterer) -> tuple[dict[str, Any], list[tuple[str, str]],
                                               dict[str, Any]]:
    """NIR nodes, edges and metadata of a fitted STDP clusterer's spiking layer."""
    nir = _nir()
    c: Any = clusterer
    w = np.asarray(c.weights_, dtype=np.float32)  # (2 * D inputs, neurons)
    n = w.shape[1]
    full = np.ones(n, dtype=np.float32)
    nodes = {
        "stdp.input": nir.Input(input_type={"input": np.array([w.shape[0]])}),
        "stdp.weights": nir.Linear(weight=np.ascontiguousarray(w.T)),
        # tau dv/dt = (v_leak - v) + r I with r = tau / dt: an input spike of weight w adds w mV.
        "stdp.lif": nir.LIF(tau=c.tau_m * full, r=c.tau_m / c.dt * full,
                            v_leak=c.v_rest * full,
                            v_threshold=(c.v_thresh + np.asarray(c.theta_)).astype(np.float32),
                            v_reset=c.v_reset * full),
        "stdp.inhibition": nir.Linear(weight=(-c.inhibition * (1 - np.eye(n))).astype(np.float32)),
        "stdp.output": nir.Output(output_type={"output": np.array([n])}),
    }
    edges = [("stdp.input", "stdp.weights"), ("stdp.weights", "stdp.lif"),
             ("stdp.lif", "stdp.inhibition"), ("stdp.inhibition", "stdp.lif"),
             ("stdp.lif", "stdp.output")]
    meta = {
        "stdp_units": "ms and mV; dt = stdp_dt_ms",
        "stdp_dt_ms": c.dt, "stdp_steps": c.time, "stdp_refractory_ms": c.refractory,
        "stdp_neuron_cluster": np.asarray(c.neuron_cluster_),
        "stdp_encoding": (
            "PCA-whitened features x (see the run's checkpoint) -> inputs [max(x,0), max(-x,0)] "
            "/ max|x| * stdp_intensity_hz, Bernoulli spikes per step"),
        "stdp_intensity_hz": c.intensity,
        "stdp_not_in_nir": (
            "refractory period; per step only the neuron furthest above its threshold spikes; "
            "cluster = stdp_neuron_cluster of the neuron spiking most"),
    }
    return nodes, edges, meta


def to_nir(snn: SpikingNet, clusterer: Clusterer | None = None,
           metadata: dict[str, Any] | None = None) -> Any:
    """The NIR graph of the converted CNN, plus the STDP layer when `clusterer` has one."""
    nir = _nir()
    nodes, edges = cnn_nodes(snn)
    meta = {"source": "deepstdp", "dt": 1.0, "reset": snn.reset, "v_init": snn.v_init,
            "feature_threshold": snn.feature_threshold,
            "input": "normalised image, presented as a constant current at every step",
            "readout": "features = output spike count / T * feature_threshold",
            "recurrent_edges": "carry the previous step's output", **(metadata or {})}
    if clusterer is not None and hasattr(clusterer, "weights_"):
        more, more_edges, more_meta = stdp_nodes(clusterer)
        nodes.update(more)
        edges += more_edges
        meta.update(more_meta)
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def export_run(run_dir: str | Path, path: str | Path, progress: bool = False) -> Any:
    """Write RUN_DIR's converted network (converting it first if needed) to a NIR file."""
    nir = _nir()
    ck = load_checkpoint(run_dir)
    _, cfg = model_from_checkpoint(ck)
    snn = load_spiking(run_dir, progress)
    clusterer = clusterer_from_checkpoint(ck, cfg) if cfg.clusterer == "stdp" else None
    meta = {"input_mean": np.asarray(ck["input_mean"], dtype=np.float32),
            "input_std": np.asarray(ck["input_std"], dtype=np.float32)}
    graph = to_nir(snn, clusterer, meta)
    atomic_write(path, lambda p: nir.write(p, graph))
    return graph
