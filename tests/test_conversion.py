"""ANN-to-SNN conversion: exact BatchNorm folding, rates that converge to the ReLU activations
(average and max pooling), cluster assignments kept on a trained digits run of the default
network, and one-line errors. QCFS is in test_qcfs.py, the cost accounting in test_spiking.py,
NIR export in test_nir.py."""

import json

import pytest
import torch
from torch import nn

from deepstdp.cli import main
from deepstdp.config import TrainConfig
from deepstdp.conversion.converter import convert, fold_network
from deepstdp.conversion.network import run_ops
from deepstdp.conversion.settings import ConversionSettings
from deepstdp.loop.training import train
from deepstdp.network.models import ConvNet
from deepstdp.runtime.util import DeepSTDPError

# The default network (pooling, activation, ...) made small: what `deepstdp train` gives.
TINY = dict(epochs=1, widths="16,M,32,M", feat_dim=64, pca_dim=32, image_size=16, threads=1,
            precision="fp32", k_train=20)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def random_net(pool: str = "avg", seed: int = 0, **kwargs) -> ConvNet:
    """A small ConvNet with random BatchNorm statistics, so that folding has work to do."""
    torch.manual_seed(seed)
    return randomise_bn(ConvNet(1, 10, widths="8,M,16,M", feat_dim=32, pool=pool, **kwargs))


def randomise_bn(model: ConvNet) -> ConvNet:
    """Random BatchNorm statistics and affine parameters; the model in eval mode."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.4)
    return model.eval()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny trained digits run (a few seconds)."""
    out = tmp_path_factory.mktemp("conv") / "run"
    train(TrainConfig(**TINY), out, quiet=True)
    return out


def test_batchnorm_folding_leaves_outputs_unchanged():
    model = random_net()
    x = torch.randn(32, 1, 16, 16)
    ops = fold_network(model, x.shape[1:])
    assert not any(isinstance(op, nn.BatchNorm2d) for op in ops)
    with torch.no_grad():
        want = model.features(x)
        got = run_ops(ops, x)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6 * want.abs().max())


@pytest.mark.parametrize("kwargs", [dict(pool="max"), dict(pool="avg", pool_first=True),
                                    dict(pool="avg", activation="qcfs"), dict(sobel=False)])
def test_the_inference_copy_folds_batchnorm_and_keeps_the_features(kwargs):
    """What feature extraction runs (ConvNet.for_inference): no BatchNorm left, the same
    features up to float rounding, and the original untouched."""
    model = random_net(**kwargs)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = model.for_inference()
    assert not any(isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(32, 1, 16, 16)
    with torch.no_grad():
        want, got = model.features(x), folded.features(x)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6 * want.abs().max())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert folded.for_inference() is folded and not model.inference_only


def rate_errors(model: ConvNet, x: torch.Tensor, timesteps: list[int]) -> list[float]:
    """Mean |count / T * threshold - activation| / mean activation of the feature layer."""
    snn = convert(model, x, ConversionSettings(percentile=99.9))
    with torch.no_grad():
        a = model.features(x)
    res = snn.simulate(x, timesteps)
    return [float((res.counts[t] / t * snn.feature_threshold - a).abs().mean() / a.mean())
            for t in timesteps]


@pytest.mark.parametrize(("pool", "tolerance"), [("avg", 0.01), ("max", 0.02)])
def test_spiking_rates_approach_relu_activations_as_T_grows(pool, tolerance):
    torch.manual_seed(1)
    err = rate_errors(random_net(pool), torch.randn(64, 1, 16, 16), [16, 64, 256])
    assert err[0] > err[1] > err[2]
    # At T = 256: 0.27% with average pooling, 1.0% through the max-pooling gate.
    assert err[2] < tolerance


def test_default_network_converts():
    """The network of the default settings (whatever its pooling) converts and its spiking
    features approach the CNN's."""
    cfg = TrainConfig()
    torch.manual_seed(0)
    model = randomise_bn(ConvNet.from_config(cfg, 3, 10))
    x = torch.randn(16, 3, cfg.image_size, cfg.image_size)
    err = rate_errors(model, x, [32, 256])
    # At T = 256: 0.42% with average pooling, 3.1% through four max-pooling gates.
    assert err[0] > err[1] and err[1] < (0.01 if cfg.pool == "avg" else 0.05)


def test_fanout_and_synapses_count_real_connections():
    x = torch.randn(8, 1, 16, 16)
    snn = convert(random_net(), x, ConversionSettings(pool_neurons=False))
    # Layer 1 (8 maps 16x16) -> 2x2 avg pool -> 3x3 conv (pad 1) with 16 outputs on 8x8.
    fan = snn.fanouts[0]
    assert fan[0, 5, 5] == 16 * 9 and fan[0, 0, 0] == 16 * 4 and fan[3, 0, 7] == 16 * 6
    # With pooling neurons a spike reaches its cell's neuron, whose spike pays the conv fan-out.
    pooled = convert(random_net(), x)
    assert (pooled.fanouts[0] == 1).all() and pooled.fanouts[1][0, 3, 3] == 16 * 9
    assert pooled.n_neurons() == snn.n_neurons() + 8 * 8 * 8 + 16 * 2 * 2
    assert pooled.n_neurons(driven=True) == snn.n_neurons()
    # A 3x3 conv with padding 1 on an HxW map has (3H - 2)(3W - 2) real synapses per map pair.
    sobel, conv1 = snn.ops[0], snn.ops[1]
    assert snn.synapses([sobel]) == 2 * 1 * 46 * 46 and snn.synapses([conv1]) == 8 * 2 * 46 * 46
    assert snn.synapses(snn.analog) == snn.synapses([sobel, conv1])


def test_unconvertible_layers_are_named():
    model = random_net()
    model.body[3] = nn.MaxPool2d(2, padding=1)
    with pytest.raises(DeepSTDPError, match=r"body\.3 \(MaxPool2d.*padding=0"):
        convert(model, torch.randn(4, 1, 16, 16))
    model = random_net()
    model.body[2] = nn.Sigmoid()
    with pytest.raises(DeepSTDPError, match=r"body\.2 \(Sigmoid\) cannot be converted"):
        convert(model, torch.randn(4, 1, 16, 16))
    with pytest.raises(DeepSTDPError, match="uneven"):
        convert(random_net(), torch.randn(4, 1, 12, 12))  # 12 -> 6 -> 3: 3x3 into 2x2 cells


def test_missing_checkpoint_is_a_one_line_error(tmp_path, capsys):
    for args in (["convert", str(tmp_path)], ["evaluate", str(tmp_path), "--spiking"],
                 ["export", str(tmp_path), "--nir", str(tmp_path / "x.nir")]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "checkpoint.pt not found" in err and err.count("\n") == 1
    assert main(["evaluate", str(tmp_path), "--spiking", "--timesteps", "0,8"]) == 2
    assert "bad timesteps" in capsys.readouterr().err


def test_converted_digits_run_keeps_its_cluster_assignments(run_dir, capsys):
    assert main(["convert", str(run_dir), "--quiet"]) == 0
    assert (run_dir / "spiking.pt").exists()
    # The binary code (the default) keeps the assignments in 6 steps per layer (measured:
    # 0.987 / 0.977 at 6, 0.980 / 0.940 at 5).
    assert main(["evaluate", str(run_dir), "--spiking", "--timesteps", "2,6", "--limit",
                 "300", "--threads", "1", "--quiet"]) == 0
    binary = json.loads((run_dir / "spiking.json").read_text())
    assert [r["coding"] for r in binary] == ["binary"] * 2
    assert binary[-1]["agreement"] >= 0.95 and binary[-1]["val_agreement"] >= 0.95
    assert binary[0]["sops_per_image"] < binary[-1]["sops_per_image"]
    assert main(["evaluate", str(run_dir), "--spiking", "--coding", "synchronous",
                 "--timesteps", "32,256", "--limit", "300", "--threads", "1", "--quiet"]) == 0
    rows = json.loads((run_dir / "spiking.json").read_text())
    assert (run_dir / "spiking.png").stat().st_size > 0
    assert "| 256 |" in (run_dir / "spiking.md").read_text()
    assert [r["timesteps"] for r in rows] == [32, 256]
    last = rows[-1]
    for key in ("agreement", "acc", "nmi", "ari", "val_acc", "val_nmi", "val_ari",
                "sops_per_image", "macs_per_image", "energy_snn_uj", "energy_ann_uj"):
        assert key in last
    assert rows[0]["seconds_per_image"] < last["seconds_per_image"]
    # 0.99-1.00 measured at T=256 (docs/conversion.md); 0.95 leaves room for other seeds.
    assert last["agreement"] >= 0.95 and last["val_agreement"] >= 0.95
    assert abs(last["acc"] - last["ann_acc"]) <= 0.02
    assert rows[0]["sops_per_image"] < last["sops_per_image"]
    assert "T=256" in capsys.readouterr().out
