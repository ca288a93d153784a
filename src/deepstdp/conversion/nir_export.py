"""Export the converted network (and an STDP clusterer's layer) to NIR, the Neuromorphic
Intermediate Representation (Pedersen et al. 2024), in one of two formats.

NIR has no neuron that resets by subtraction, and the importers of today each read a different
subset of it, so no file is both exact and runnable by all of them. Tested with nir 1.0.8,
nirtorch 2.6, snntorch 1.0.0, norse 1.1.0, torch 2.13; spike counts of the feature layer against
`SpikingNet.simulate` on a 5-epoch avg-pool digits run (nine spiking layers, 50 images, T = 64;
docs/nir.md has the commands):

+----------+--------------------------------+--------------------------------------------------+
| format   | nodes                          | reader: spike counts                             |
+==========+================================+==================================================+
| exact    | Input, Conv2d, AvgPool2d,      | nirtorch `nir_to_torch(g, nirtorch_node_map())`: |
| (default)| Flatten, Affine; I + Threshold | 190,647 vs 190,639 (float32 ties). snnTorch,     |
|          | + Scale per layer (or IF with  | Norse: refuse I/Threshold/Scale (and IF,         |
|          | reset to zero); STDP: Linear,  | AvgPool2d).                                      |
|          | LIF, a second input/output     |                                                  |
+----------+--------------------------------+--------------------------------------------------+
| portable | Input, Conv2d, CubaLIF, Output | Norse `from_nir(g, dt=1e-4, reset_method=        |
|          |                                | reset_subtract)`: the network with v_init 0      |
|          |                                | (187,468; exact when converted so).              |
|          |                                | snnTorch `import_from_nir(g)`, Norse without     |
|          |                                | reset_method: the network with reset to zero     |
|          |                                | and v_init 0 (151,014; exact when converted so). |
+----------+--------------------------------+--------------------------------------------------+

exact (the default: the file is the network, spike for spike). Discrete time, dt = 1; a
recurrent edge carries the previous step's output.

- input: the normalised image (x - input_mean) / input_std, a constant current every step;
  Conv2d 'sobel' (runs with Sobel) is the fixed grayscale+Sobel filter; Conv2d/Affine carry the
  folded, threshold-scaled weights; AvgPool2d and Flatten are linear.
- IF layers with reset by subtraction (the default) cannot be NIR `IF` nodes, which reset to a
  fixed v_reset. Each becomes an integrator `I` (r = 1), a `Threshold` and a `Scale(-threshold)`
  fed back into the integrator: v_t = v_{t-1} + x_t - threshold * s_{t-1}, s_t = v_t > theta.
  The start at v_init * threshold is a shift of theta to (1 - v_init) * threshold.
- With reset to zero, each layer is a NIR `IF` (r = 1, v_threshold = (1 - v_init) * threshold,
  v_reset = -v_init * threshold: the same shift).
- Output 'output': the feature layer's spikes; count / T * metadata feature_threshold gives the
  features that the run's PCA-whitening (not exported: not a spiking operation) takes.
- An STDP clusterer adds a second input 'stdp.input' (its 2*D on/off spike trains) -> Linear
  'stdp.weights' -> LIF 'stdp.lif' <-> Linear 'stdp.inhibition' -> Output 'stdp.output'. That
  part is approximate: NIR has no refractory period and no one-winner-per-step rule; both are in
  the metadata, with the Poisson encoding and the neuron -> cluster map.

portable: only the node types that snnTorch 1.0, Norse 1.1 and nirtorch 2.6 all map correctly.
Pooling, flattening and linear layers become Conv2d (snnTorch has no SumPool2d, Norse no
AvgPool2d; all three read NIR Flatten's dims as torch dims, flattening the batch; nirtorch's
default Affine drops the bias), so the output is (features, 1, 1). Each IF layer is a CubaLIF with
tau_syn = dt (the synapse passes its input through), tau_mem = 1e4 s and r = tau_mem / dt (one
unit of input adds one to v; the leak, 1e-8 per step, rounds away in float32), v_leak = 0,
v_reset = 0, at dt = 1e-4 s, the step snnTorch's importer assumes. The file is exact for a
network converted with reset to zero and v_init 0. Otherwise metadata 'differences' says what it
changes: membranes start at 0, and reset by subtraction is NIR's reset to v_reset (Norse restores
it with reset_method=reset_subtract; snnTorch 1.0 cannot). The STDP layer is left out (its LIF
has v_leak != 0, which snnTorch refuses, and nirtorch 2.6 loops forever on a second output).

sinabs: the nodes that Sinabs's `from_nir` maps; sinabs_from_nir sets up the imported IAF neurons
as the network's (spike for spike). See sinabs_nodes below and docs/nir.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepstdp.clustering.base import Clusterer
from deepstdp.conversion.converter import load_or_convert
from deepstdp.conversion.network import SpikingNet
from deepstdp.conversion.settings import NIR_FORMATS
from deepstdp.run.loaded import clusterer_from_checkpoint
from deepstdp.run.rundir import load_checkpoint
from deepstdp.runtime.util import DeepSTDPError, atomic_write

PORTABLE_DT = 1e-4
"""Seconds per step of a portable file: snnTorch 1.0's importer hard-codes this dt."""
PORTABLE_TAU_MEM = 1e4
"""Seconds: 1e8 steps, so snnTorch's beta = 1 - dt / tau_mem rounds to exactly 1 in float32."""


def _nir() -> Any:
    try:
        import nir
    except ImportError:
        raise DeepSTDPError(
            "NIR export needs the nir package: pip install 'deepstdp[nir]'") from None
    return nir


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def _check_exportable(snn: SpikingNet) -> None:
    for op in snn.ops:
        if op.kind not in ("conv", "linear", "avgpool", "flatten", "if"):
            what = "spiking max pooling" if op.kind == "maxgate" else op.kind
            raise DeepSTDPError(f"layer {op.name} ({what}) has no NIR counterpart: only "
                                "networks with average pooling can be exported")


def _start(snn: SpikingNet) -> tuple[Any, dict[str, Any], list[tuple[str, str]]]:
    """The nir module, and a graph of the input node alone, for an exportable network."""
    nir = _nir()
    _check_exportable(snn)
    return nir, {"input": nir.Input(input_type={"input": np.array(snn.input_shape)})}, []


def cnn_nodes(snn: SpikingNet) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Exact format: NIR nodes and edges of the converted CNN, from 'input' to 'output'."""
    nir, nodes, edges = _start(snn)
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
        elif snn.reset == "zero":
            nodes[op.name] = nir.IF(r=full, v_threshold=(1 - snn.v_init) * op.threshold * full,
                                    v_reset=-snn.v_init * op.threshold * full)
        else:
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


def _as_conv(op: Any, shape: tuple[int, ...]) -> tuple[np.ndarray, Any, Any, Any]:
    """Weight, bias, stride and padding of a conv that computes `op` on a (C, H, W) input."""
    if op.kind == "conv":
        return _np(op.weight), op.bias, op.stride, op.padding
    if op.kind == "avgpool":  # channel c's window mean, as a dense conv (nir 1.0.8 mistypes groups)
        window = np.full(op.kernel, 1 / np.prod(op.kernel))
        weight = np.eye(shape[0])[:, :, None, None] * window
        return weight.astype(np.float32), None, op.stride, (0, 0)
    # linear: the input is kept (C, H, W), or (features, 1, 1) after a first linear
    return _np(op.weight).reshape(op.weight.shape[0], *shape), op.bias, (1, 1), (0, 0)


def portable_nodes(snn: SpikingNet) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Portable format: the CNN as Input, Conv2d, CubaLIF and Output nodes only."""
    nir, nodes, edges = _start(snn)
    last, shape = "input", snn.input_shape
    for op in snn.ops:
        if op.kind == "flatten":
            continue
        if op.kind == "if":
            full = np.ones(shape, dtype=np.float32)
            nodes[op.name] = nir.CubaLIF(
                tau_syn=PORTABLE_DT * full, tau_mem=PORTABLE_TAU_MEM * full,
                r=PORTABLE_TAU_MEM / PORTABLE_DT * full, v_leak=0 * full,
                v_threshold=op.threshold * full, v_reset=0 * full, w_in=full)
        else:
            weight, bias, stride, padding = _as_conv(op, shape)
            nodes[op.name] = nir.Conv2d(
                input_shape=tuple(shape[1:]), weight=weight, stride=stride, padding=padding,
                dilation=1, groups=1,
                bias=np.zeros(len(weight), np.float32) if bias is None else _np(bias))
            size = [(n + 2 * p - k) // s + 1 for n, p, k, s in
                    zip(shape[1:], padding, weight.shape[2:], stride, strict=True)]
            shape = (len(weight), *size)
        edges.append((last, op.name))
        last = op.name
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


def _portable_differences(snn: SpikingNet, stdp: bool) -> str:
    """What a portable file changes about the network, '' when nothing."""
    notes = []
    if snn.v_init:
        notes.append(f"membranes start at 0, not at {snn.v_init:g} * threshold")
    if snn.reset == "subtract":
        notes.append("reset by subtraction is written as NIR's reset to v_reset = 0 (Norse "
                     "restores it with from_nir(..., reset_method=reset_subtract); snnTorch "
                     "1.0 cannot)")
    if stdp:
        notes.append("the STDP layer is left out")
    return "; ".join(notes)


# ------------------------------------------------------------------------ sinabs format

SINABS_READER = (
    "deepstdp.conversion.nir_import.sinabs_from_nir(graph, B), i.e. sinabs.from_nir(graph, "
    "batch_size=B) and, in each sinabs.layers.IAFSqueeze, "
    "spike_fn = sinabs.activation.SingleSpike, min_v_mem = None, "
    "reset_fn = sinabs.activation.MembraneReset() when reset is 'zero', "
    "v_mem = v_init * spike_threshold for the B samples; input (B * T, C, H, W), each "
    "sample's T copies of the image in a row")


def sinabs_nodes(snn: SpikingNet) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Sinabs format: Input, Conv2d, IF, SumPool2d, Flatten, Affine and Output, the nodes that
    Sinabs 2.0-3.1's `from_nir` maps (it lacks I, Threshold, Scale, AvgPool2d, Linear, CubaLIF).

    - AvgPool2d becomes SumPool2d, its 1/k^2 moved into the next op: the IF layer's threshold
      times k^2 (the pooling neurons), or the next Conv2d/Affine's weights / k^2. Exact on spikes
      for k^2 a power of two (2x2 pooling).
    - Each IF layer is a NIR IF whose v_threshold is the threshold rounded up by one float32
      step: Sinabs spikes at v >= v_threshold, the network at v > threshold (the difference is
      real: pooled spike counts hit the pooling neurons' threshold exactly).
    Sinabs reads IF as its IAF: reset by subtraction, v from 0, floor(v / threshold) spikes per
    step and v clipped at -threshold; sinabs_from_nir sets the network's neurons instead. Read
    by NIR's definitions (reset to v_reset = 0), the file is the network with reset to zero and
    membranes starting at 0, like the portable one.
    """
    nir, nodes, edges = _start(snn)
    last, shape, pooled = "input", snn.input_shape, 1.0  # pooled: the pending k^2 factors
    for op, out_shape in zip(snn.ops, snn.shapes, strict=True):
        if op.kind in ("conv", "linear"):
            weight = _np(op.weight) / np.float32(pooled)
            bias = np.zeros(len(weight), np.float32) if op.bias is None else _np(op.bias)
            nodes[op.name] = (
                nir.Affine(weight=weight, bias=bias) if op.kind == "linear" else
                nir.Conv2d(input_shape=tuple(shape[1:]), weight=weight, stride=op.stride,
                           padding=op.padding, dilation=1, groups=1, bias=bias))
            pooled = 1.0
        elif op.kind == "avgpool":
            nodes[op.name] = nir.SumPool2d(kernel_size=np.array(op.kernel),
                                           stride=np.array(op.stride), padding=np.zeros(2, int))
            pooled *= float(np.prod(op.kernel))
        elif op.kind == "flatten":
            nodes[op.name] = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0,
                                         end_dim=-1)
        else:
            full = np.ones(out_shape, dtype=np.float32)
            threshold = np.nextafter(np.float32(pooled * op.threshold), np.float32(np.inf))
            nodes[op.name] = nir.IF(r=full, v_threshold=threshold * full, v_reset=0 * full)
            pooled = 1.0
        edges.append((last, op.name))
        last, shape = op.name, out_shape
    nodes["output"] = nir.Output(output_type={"output": np.array(shape)})
    edges.append((last, "output"))
    return nodes, edges


def _sinabs_differences(stdp: bool) -> str:
    """What a sinabs file run by sinabs_from_nir changes about the network, '' when nothing."""
    return "the STDP layer is left out" if stdp else ""


def to_nir(snn: SpikingNet, clusterer: Clusterer | None = None,
           metadata: dict[str, Any] | None = None, fmt: str = NIR_FORMATS[0]) -> Any:
    """The NIR graph of the converted CNN in format `fmt` (see NIR_FORMATS), plus the STDP layer
    when `clusterer` has one and the format is exact."""
    nir = _nir()
    stdp = clusterer is not None and hasattr(clusterer, "weights_")
    meta = {"source": "deepstdp", "format": fmt, "reset": snn.reset, "v_init": snn.v_init,
            "feature_threshold": snn.feature_threshold,
            "input": "normalised image, presented as a constant current at every step",
            "readout": "features = output spike count / T * feature_threshold"}
    if fmt == "exact":
        nodes, edges = cnn_nodes(snn)
        meta.update({"dt": 1.0, "recurrent_edges": "carry the previous step's output"})
        if stdp:
            more, more_edges, more_meta = stdp_nodes(clusterer)
            nodes.update(more)
            edges += more_edges
            meta.update(more_meta)
    elif fmt == "portable":
        nodes, edges = portable_nodes(snn)
        meta.update({"dt": PORTABLE_DT, "output_shape": "(features, 1, 1)",
                     "differences": _portable_differences(snn, stdp)})
    elif fmt == "sinabs":
        nodes, edges = sinabs_nodes(snn)
        meta.update({"dt": 1.0, "reader": SINABS_READER,
                     "differences": _sinabs_differences(stdp)})
    else:
        raise DeepSTDPError(f"unknown NIR format {fmt!r}: choose one of {', '.join(NIR_FORMATS)}")
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={**meta, **(metadata or {})})


def export_run(run_dir: str | Path, path: str | Path, fmt: str = NIR_FORMATS[0],
               progress: bool = False) -> Any:
    """Write RUN_DIR's converted network (converting it first if needed) to a NIR file."""
    nir = _nir()
    if fmt not in NIR_FORMATS:
        raise DeepSTDPError(f"unknown NIR format {fmt!r}: choose one of {', '.join(NIR_FORMATS)}")
    ck = load_checkpoint(run_dir)
    snn = load_or_convert(run_dir, progress)
    clusterer = clusterer_from_checkpoint(ck) if ck.config.clusterer == "stdp" else None
    meta = {"input_mean": np.asarray(ck.input_mean, dtype=np.float32),
            "input_std": np.asarray(ck.input_std, dtype=np.float32)}
    graph = to_nir(snn, clusterer, meta, fmt)
    atomic_write(path, lambda p: nir.write(p, graph))
    return graph
