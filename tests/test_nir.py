"""NIR export (docs/nir.md): the exact format reproduces the simulator's spike counts in an
independent interpreter of the NIR definitions and in nirtorch; the portable format runs in
snnTorch and Norse, the sinabs format in Sinabs (each skipped when not installed) with the counts
of the network it states."""

import contextlib
import dataclasses
import io

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from deepstdp.cli import main
from deepstdp.config import TrainConfig
from deepstdp.conversion.converter import convert
from deepstdp.conversion.network import SpikingNet
from deepstdp.conversion.nir_export import PORTABLE_DT, to_nir
from deepstdp.conversion.nir_import import nirtorch_node_map, sinabs_from_nir
from deepstdp.conversion.settings import NIR_FORMATS, ConversionSettings
from deepstdp.data.datasets import Data
from deepstdp.loop.training import train
from deepstdp.network.models import ConvNet
from deepstdp.run.loaded import model_from_checkpoint
from deepstdp.run.rundir import load_checkpoint
from deepstdp.runtime.util import DeepSTDPError

nir = pytest.importorskip("nir")

# A tiny digits run with average pooling (max pooling has no NIR node).
TINY = dict(epochs=1, warmup_epochs=0, widths="16,M,32,M", feat_dim=64, pca_dim=32,
            image_size=16, threads=1, precision="fp32", k_train=20, pool="avg")
STEPS = 48


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny trained digits run (a few seconds)."""
    out = tmp_path_factory.mktemp("nir") / "run"
    train(TrainConfig(**TINY), out, quiet=True)
    return out


@pytest.fixture(scope="module")
def digits(run_dir):
    """The run's CNN and 20 training images spread over the split."""
    ck = load_checkpoint(run_dir)
    model, cfg = model_from_checkpoint(ck), ck.config
    x = Data(**cfg.data_options(), progress=False).x_train
    return model, x[:256], x[::len(x) // 20][:20]


def small_net(pool: str = "avg") -> ConvNet:
    torch.manual_seed(0)
    return ConvNet(1, 10, widths="8,M,16,M", feat_dim=32, pool=pool).eval()


def roundtrip(graph, tmp_path):
    nir.write(tmp_path / "net.nir", graph)
    return nir.read(tmp_path / "net.nir")


def variant(snn: SpikingNet, **settings) -> SpikingNet:
    """The same ops and thresholds with other neuron settings (reset, v_init)."""
    return SpikingNet(snn.ops, snn.input_shape, dataclasses.replace(snn.settings, **settings))


def counts(snn: SpikingNet, x: torch.Tensor, dtype=torch.float32) -> np.ndarray:
    return snn.simulate(x, [STEPS], dtype=dtype).counts[STEPS].flatten(1).numpy()


def run_module(module, x: torch.Tensor) -> np.ndarray:
    """Output spike counts of a torch module that maps (input, state) to (output, state)."""
    total, state = 0, None
    with torch.no_grad():
        for _ in range(STEPS):
            out, state = module(x, state)
            total = total + out
    return total.flatten(1).numpy()


def assert_same_counts(got: np.ndarray, want: np.ndarray) -> None:
    # The same arithmetic on both sides: identical counts are expected (and measured). The
    # tolerance, at most one spike on at most 1% of the features, only absorbs threshold ties
    # that rounding (summation order; Norse's dt * (1 / tau) = 1 +- 1e-7) can flip.
    diff = np.abs(got - want)
    assert want.sum() > 0 and diff.max() <= 1 and (diff > 0).mean() <= 0.01


# ------------------------------------------------ an independent reading of the NIR definitions


def _order(graph) -> list[str]:
    """Nodes in topological order once the back edges of cycles are dropped (DFS from inputs)."""
    succ = {k: [b for a, b in graph.edges if a == k] for k in graph.nodes}
    done: list[str] = []
    seen: set[str] = set()

    def visit(k):
        seen.add(k)
        for n in succ[k]:
            if n not in seen:
                visit(n)
        done.append(k)

    for k in graph.inputs:
        visit(k)
    return done[::-1]


def _windows(x, kernel, stride, padding):
    x = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    w = sliding_window_view(x, tuple(kernel), axis=(2, 3))
    return w[:, :, ::stride[0], ::stride[1]]  # (B, C, H', W', kh, kw)


def nir_simulate(graph, inputs: dict, steps: int) -> np.ndarray:
    """Spike counts at 'output': an independent numpy reading of the NIR node definitions.

    Euler steps of the metadata's dt; inputs are held constant; an edge from a node later in the
    order (a recurrent edge) delivers that node's output of the previous step.
    """
    dt = float(graph.metadata["dt"])
    order = _order(graph)
    preds = {k: [a for a, b in graph.edges if b == k] for k in graph.nodes}
    out = {k: 0.0 for k in graph.nodes}
    v: dict = {}
    syn: dict = {}
    total = 0.0
    for _ in range(steps):
        for k in order:
            n, x = graph.nodes[k], sum(out[p] for p in preds[k])
            if isinstance(n, nir.Input):
                y = inputs[k]
            elif isinstance(n, nir.Conv2d):
                w = _windows(x, n.weight.shape[2:], n.stride, n.padding)
                y = np.tensordot(w, n.weight, ([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)
                y = y + n.bias[:, None, None]
            elif isinstance(n, nir.Affine):
                y = x @ n.weight.T + n.bias
            elif isinstance(n, nir.Linear):
                y = x @ n.weight.T
            elif isinstance(n, nir.AvgPool2d | nir.SumPool2d):
                y = _windows(x, n.kernel_size, n.stride, n.padding).sum(axis=(4, 5))
                y = y / np.prod(n.kernel_size) if isinstance(n, nir.AvgPool2d) else y
            elif isinstance(n, nir.Flatten):
                y = x.reshape(len(x), -1)
            elif isinstance(n, nir.I):
                v[k] = v.get(k, 0.0) + dt * n.r * x
                y = v[k]
            elif isinstance(n, nir.Threshold):
                y = (x > n.threshold).astype(np.float64)
            elif isinstance(n, nir.Scale):
                y = x * n.scale
            elif isinstance(n, nir.IF):
                u = v.get(k, 0.0) + dt * n.r * x
                y = (u > n.v_threshold).astype(np.float64)
                v[k] = np.where(y > 0, n.v_reset, u)
            elif isinstance(n, nir.CubaLIF):
                i = syn.get(k, 0.0)
                syn[k] = i = i + dt / n.tau_syn * (n.w_in * x - i)
                u = v.get(k, 0.0)
                u = u + dt / n.tau_mem * (n.v_leak - u + n.r * i)
                y = (u > n.v_threshold).astype(np.float64)
                v[k] = np.where(y > 0, n.v_reset, u)
            elif isinstance(n, nir.Output):
                y = x
            else:
                raise NotImplementedError(type(n).__name__)
            out[k] = y
        total = total + out["output"]
    return total.reshape(len(total), -1)


# --------------------------------------------------------------------------- exact format


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_exact_file_reproduces_the_spike_counts(digits, tmp_path, reset):
    model, calib, x = digits
    snn = convert(model, calib, ConversionSettings(reset=reset))
    graph = roundtrip(to_nir(snn), tmp_path)
    images = x[:5].double()
    got = nir_simulate(graph, {"input": images.numpy()}, STEPS)
    assert_same_counts(got, counts(snn, images, torch.float64))
    assert float(graph.metadata["feature_threshold"]) == pytest.approx(snn.feature_threshold)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_nirtorch_runs_the_exact_file_spike_for_spike(digits, tmp_path, reset):
    nirtorch = pytest.importorskip("nirtorch")
    model, calib, x = digits
    snn = convert(model, calib, ConversionSettings(reset=reset))
    module = nirtorch.nir_to_torch(roundtrip(to_nir(snn), tmp_path), nirtorch_node_map())
    assert_same_counts(run_module(module, x), counts(snn, x))


# --------------------------------------------------------------------------- portable format


def test_portable_file_is_the_network_with_reset_to_zero_from_rest(digits, tmp_path):
    model, calib, x = digits
    snn = convert(model, calib)  # subtract, v_init 0.5: what NIR's CubaLIF cannot say
    graph = roundtrip(to_nir(snn, fmt="portable"), tmp_path)
    kinds = {type(n).__name__ for n in graph.nodes.values()}
    assert kinds == {"Input", "Conv2d", "CubaLIF", "Output"}
    assert "start at 0" in graph.metadata["differences"]
    assert "subtraction" in graph.metadata["differences"]
    images = x[:5].double()
    got = nir_simulate(graph, {"input": images.numpy()}, STEPS)
    assert_same_counts(got, counts(variant(snn, reset="zero", v_init=0.0), images, torch.float64))


def test_snntorch_runs_the_portable_file_exactly_for_reset_to_zero(digits, tmp_path):
    import_nir = pytest.importorskip("snntorch.import_nir")
    model, calib, x = digits
    snn = convert(model, calib, ConversionSettings(reset="zero", v_init=0.0))
    graph = roundtrip(to_nir(snn, fmt="portable"), tmp_path)
    assert graph.metadata["differences"] == ""
    with contextlib.redirect_stdout(io.StringIO()):  # it prints what it does
        module = import_nir.import_from_nir(graph)
    assert_same_counts(run_module(module, x), counts(snn, x))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Norse calls nirtorch.load
def test_norse_runs_the_portable_file_with_reset_by_subtraction(digits, tmp_path):
    norse = pytest.importorskip("norse.torch")
    from norse.torch.functional.reset import reset_subtract

    model, calib, x = digits
    snn = convert(model, calib)
    graph = roundtrip(to_nir(snn, fmt="portable"), tmp_path)
    module = norse.from_nir(graph, dt=PORTABLE_DT, reset_method=reset_subtract)
    # Exactly the network with membranes starting at 0 (the one difference left).
    assert_same_counts(run_module(module, x), counts(variant(snn, v_init=0.0), x))


# --------------------------------------------------------------------------- sinabs format


class SinabsIAF(SpikingNet):
    """The network with the IAF neurons that plain sinabs.from_nir makes of the file's IF nodes:
    v from 0, floor(v / threshold) spikes per step (v >= threshold: one), reset by subtraction,
    v clipped at -threshold; the thresholds one float32 step up, as in the file."""

    def _fire(self, k, threshold, inp, v):
        th = float(np.nextafter(np.float32(threshold), np.float32(np.inf)))
        v[k] = inp if v[k] is None else v[k] + inp
        s = torch.where(v[k] > 0, torch.div(v[k], th, rounding_mode="trunc"), 0.0)
        v[k] = torch.clamp(v[k] - th * s, min=-th)
        return s


def run_sinabs(module, x: torch.Tensor) -> np.ndarray:
    """Output spike counts of a Sinabs module over STEPS steps of the images x."""
    frames = x.unsqueeze(1).expand(len(x), STEPS, *x.shape[1:]).flatten(0, 1)  # (B * T, C, H, W)
    with torch.no_grad():
        out, _ = module(frames)
    return out.unflatten(0, (len(x), STEPS)).sum(1).flatten(1).numpy()


@pytest.mark.parametrize("pool_neurons", [True, False])
def test_sinabs_file_is_the_network_with_reset_to_zero_from_rest_in_nir(digits, tmp_path,
                                                                         pool_neurons):
    model, calib, x = digits
    snn = convert(model, calib, ConversionSettings(pool_neurons=pool_neurons))
    graph = roundtrip(to_nir(snn, fmt="sinabs"), tmp_path)
    kinds = {type(n).__name__ for n in graph.nodes.values()}
    assert kinds == {"Input", "Conv2d", "IF", "SumPool2d", "Flatten", "Affine", "Output"}
    assert graph.metadata["differences"] == "" and "sinabs_from_nir" in graph.metadata["reader"]
    images = x[:5].double()  # SumPool2d with the 1/4 in the next threshold or weights: exact
    got = nir_simulate(graph, {"input": images.numpy()}, STEPS)
    assert_same_counts(got, counts(variant(snn, reset="zero", v_init=0.0), images, torch.float64))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Sinabs calls nirtorch.load
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_sinabs_runs_the_sinabs_file_spike_for_spike(digits, tmp_path, reset):
    sinabs = pytest.importorskip("sinabs")
    model, calib, x = digits
    snn = convert(model, calib, ConversionSettings(reset=reset))  # v_init 0.5
    graph = roundtrip(to_nir(snn, fmt="sinabs"), tmp_path)
    assert_same_counts(run_sinabs(sinabs_from_nir(graph, len(x)), x), counts(snn, x))
    if reset == "subtract":  # plain from_nir: the same layers with Sinabs's IAF (SinabsIAF)
        module = sinabs.from_nir(graph, batch_size=len(x))
        assert_same_counts(run_sinabs(module, x), counts(SinabsIAF(snn.ops, snn.input_shape,
                                                                   snn.settings), x))


# --------------------------------------------------------------------------- both formats


def test_export_command_writes_either_format(run_dir, tmp_path, capsys):
    path = tmp_path / "run.nir"
    assert main(["export", str(run_dir), "--nir", str(path), "--quiet"]) == 0
    graph = nir.read(path)
    assert graph.metadata["format"] == "exact" and set(graph.inputs) == {"input"}
    assert not any(k.startswith("stdp") for k in graph.nodes)  # a k-means run: the CNN only
    snn = SpikingNet.from_state_dict(torch.load(run_dir / "spiking.pt", weights_only=True))
    assert np.allclose(graph.nodes["head.2"].weight, snn.ops[-2].weight.numpy())
    assert capsys.readouterr().err == ""

    assert main(["export", str(run_dir), "--nir", str(path), "--format", "portable"]) == 2
    assert "exists; replace it (force)" in capsys.readouterr().err  # never over a file unasked
    assert main(["export", str(run_dir), "--nir", str(path), "--format", "portable",
                 "--force"]) == 0
    graph = nir.read(path)
    assert graph.metadata["format"] == "portable"
    assert graph.nodes["head.2"].weight.shape == (64, 32, 2, 2)  # the linear layer as a conv
    assert "portable format" in (out := capsys.readouterr()).out and "start at 0" in out.err

    assert main(["export", str(run_dir), "--nir", str(path), "--format", "sinabs",
                 "--force"]) == 0
    graph = nir.read(path)
    assert graph.metadata["format"] == "sinabs" and "SingleSpike" in graph.metadata["reader"]
    assert isinstance(graph.nodes["body.3"], nir.SumPool2d)
    assert "sinabs format" in (out := capsys.readouterr()).out and out.err == ""


def test_stdp_layer_is_in_the_exact_file_only():
    from deepstdp.clustering.stdp.estimator import STDPClustering

    feats = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    stdp = STDPClustering(3, n_neurons=4, time=30, random_state=0).fit(feats)
    snn = convert(small_net(), torch.randn(8, 1, 16, 16))
    g = to_nir(snn, stdp)
    assert set(g.inputs) == {"input", "stdp.input"}
    assert np.allclose(g.nodes["stdp.weights"].weight, stdp.weights_.T)
    assert np.allclose(g.nodes["stdp.lif"].v_threshold, stdp.v_thresh + stdp.theta_)
    assert np.array_equal(g.metadata["stdp_neuron_cluster"], stdp.neuron_cluster_)
    assert ("stdp.inhibition", "stdp.lif") in g.edges
    for fmt in ("portable", "sinabs"):
        other = to_nir(snn, stdp, fmt=fmt)
        assert set(other.inputs) == {"input"}
        assert "STDP layer is left out" in other.metadata["differences"]


def test_unexportable_networks_and_formats_are_one_line_errors():
    snn = convert(small_net(pool="max"), torch.randn(8, 1, 16, 16))
    for fmt in NIR_FORMATS:
        with pytest.raises(DeepSTDPError, match=r"body\.3 \(spiking max pooling\).*average"):
            to_nir(snn, fmt=fmt)
    with pytest.raises(DeepSTDPError, match="unknown NIR format 'lava'"):
        to_nir(convert(small_net(), torch.randn(8, 1, 16, 16)), fmt="lava")
