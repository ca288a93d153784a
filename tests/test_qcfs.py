"""QCFS (Bu et al. 2022): the activation is the quantised clipped ReLU, lambda learns, and the
converted network reproduces it: exactly for one layer at T = L, closely for a deep one."""

import json

import numpy as np
import pytest
import torch
from test_conversion import random_net

from deepstdp.config import TrainConfig
from deepstdp.conversion.converter import convert, fold_network, relu_percentiles
from deepstdp.conversion.network import Op, SpikingNet
from deepstdp.conversion.settings import ConversionSettings
from deepstdp.network.activations import QCFS, qcfs
from deepstdp.network.models import ConvNet
from deepstdp.runtime.util import DeepSTDPError


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize(("threshold", "levels"), [(1.0, 8), (2.5, 4), (0.7, 16)])
def test_qcfs_is_the_quantised_clipped_relu(threshold, levels):
    x = np.linspace(-2, 2 * threshold, 2001)
    want = threshold * np.clip(np.floor(x * levels / threshold + 0.5) / levels, 0, 1)
    got = QCFS(levels, threshold)(torch.from_numpy(x)).detach().numpy()
    assert np.allclose(got, want, atol=1e-12)
    assert len(np.unique(got)) == levels + 1  # 0, lambda / L, ..., lambda


def test_gradients_reach_lambda_and_pass_straight_through_floor():
    layer = QCFS(4, threshold=2.0)
    x = torch.tensor([-1.0, 0.3, 0.9, 1.6, 2.5, 3.0], requires_grad=True)
    layer(x).sum().backward()
    # Inside (0, lambda) d/dx = 1 (floor passes the gradient on), outside 0.
    assert x.grad.tolist() == [0, 1, 1, 1, 0, 0]
    # d/dlambda: 1 per clipped input, plus floor(u) / L - x / lambda per input inside.
    inside = x.detach()[1:4]
    want = 2 + float((torch.floor(inside / 2 * 4 + 0.5) / 4 - inside / 2).sum())
    assert layer.threshold.grad.item() == pytest.approx(want)
    model = ConvNet(1, 5, widths="4,M", feat_dim=8, activation="qcfs", qcfs_levels=4)
    model(torch.randn(6, 1, 8, 8)).square().sum().backward()
    thresholds = [m.threshold for m in model.modules() if isinstance(m, QCFS)]
    assert len(thresholds) == 2 and all(t.grad is not None and t.grad != 0 for t in thresholds)


def test_lambda_starts_from_the_first_training_batch():
    layer = QCFS(8)
    x = torch.randn(4000) * 3
    assert torch.equal(layer.eval()(x), x.relu())  # untrained, in eval mode: a ReLU
    assert not layer.initialised
    layer.train()(x)
    assert layer.initialised
    assert layer.threshold.item() == pytest.approx(np.percentile(x[x > 0].numpy(), 99), rel=0.01)
    saved = layer.state_dict()
    again = QCFS(8)
    again.load_state_dict(saved)
    assert torch.equal(again.eval()(x), layer.eval()(x))
    # An untrained QCFS network converts as the ReLU network it still is.
    ops = fold_network(ConvNet(1, 5, widths="4,M", feat_dim=8, activation="qcfs"), (1, 8, 8))
    assert [op.kind for op in ops].count("relu") == 2


def test_one_if_layer_equals_qcfs_at_T_equal_L():
    """Bu et al.'s equivalence: threshold lambda, start at lambda / 2, reset by subtraction:
    after L steps of a constant input the spike count is QCFS's level."""
    levels, lam = 8, 1.5
    torch.manual_seed(0)
    conv = Op("conv", "conv", torch.randn(4, 2, 3, 3) / 3, torch.randn(4) / 4, padding=(1, 1))
    snn = SpikingNet([conv, Op("if", "if", threshold=lam, levels=levels)], (2, 6, 6),
                     ConversionSettings(reset="subtract", v_init=0.5))
    x = torch.randn(32, 2, 6, 6)
    res = snn.simulate(x, [3, levels], dtype=torch.float64)
    want = qcfs(conv.to(torch.float64)(x.double()), lam, levels)
    assert torch.allclose(res.counts[levels] / levels * lam, want)
    assert torch.allclose(snn.features(res, levels, "count"), want)
    # The membrane readout decodes the integrated input: exact at any T for a constant input,
    # where 3 spike counts cannot express 9 levels.
    assert torch.allclose(snn.features(res, 3, "membrane"), want)
    assert not torch.allclose(snn.features(res, 3, "count"), want)


def qcfs_net(x: torch.Tensor, pool: str = "avg") -> ConvNet:
    """A QCFS network with random BatchNorm whose lambdas are those the ReLU network of the same
    weights would get from threshold balancing (trained lambdas land on that scale)."""
    model = random_net(pool, activation="qcfs", qcfs_levels=8)
    relu_ops = fold_network(model, x.shape[1:])  # lambdas not yet set: ReLUs
    layers = [m for m in model.modules() if isinstance(m, QCFS)]
    for layer, lam in zip(layers, relu_percentiles(relu_ops, x, 99.9), strict=True):
        layer.threshold.data.fill_(lam)
        layer.initialised.fill_(True)
    return model


def test_spiking_qcfs_network_matches_its_cnn():
    torch.manual_seed(1)
    x = torch.randn(64, 1, 8, 8)  # 8 -> 4 -> 2: the 2x2 grid before the head is the identity
    model = qcfs_net(x)
    snn = convert(model, x)
    layers = [m for m in model.modules() if isinstance(m, QCFS)]
    # Every spiking layer is one of the CNN's QCFS layers: pooling comes before them, so no
    # pooling neurons are needed.
    assert [op.threshold for op in snn.ops if op.kind == "if"] == [
        m.threshold.item() for m in layers]
    with torch.no_grad():
        a = model.features(x)
        for layer in layers:  # the same network without quantisation: clipped ReLUs
            layer.levels = 1 << 20
        clipped = model.features(x)
    res = snn.simulate(x, [8, 256])

    def error(t: int, want: torch.Tensor) -> float:
        return float((res.counts[t] / t * snn.feature_threshold - want).abs().mean() / want.mean())

    # At T = L = 8 the spiking network is the QCFS network (1.2% apart; the rest comes from
    # uneven spike timing between layers). As T grows its rates approach the clipped ReLU
    # network's activations (0.2% apart at T = 256), 6.2% from the QCFS network's.
    assert error(8, a) < 0.03 and error(256, clipped) < 0.01


def test_qcfs_settings_are_validated():
    with pytest.raises(DeepSTDPError, match="activation"):
        TrainConfig(activation="gelu").validate()
    with pytest.raises(DeepSTDPError, match="qcfs_levels"):
        TrainConfig(activation="qcfs", qcfs_levels=0).validate()
    model = ConvNet(1, 5, widths="4,M", feat_dim=8, activation="qcfs")
    layer = next(m for m in model.modules() if isinstance(m, QCFS))
    layer.threshold.data.fill_(-1.0)
    layer.initialised.fill_(True)
    with pytest.raises(DeepSTDPError, match=r"body\.\d \(QCFS\).*not positive"):
        convert(model, torch.randn(4, 1, 8, 8))


def test_trained_qcfs_run_converts_at_few_steps(tmp_path):
    from test_conversion import TINY

    from deepstdp.cli import main
    from deepstdp.loop.training import train

    run = tmp_path / "run"
    # 8 -> 4 -> 2: every spiking layer is a QCFS (no pooling before the head)
    cfg = TrainConfig(**{**TINY, "pool": "avg", "activation": "qcfs", "image_size": 8})
    train(cfg, run, quiet=True)
    assert main(["evaluate", str(run), "--spiking", "--timesteps", "8", "--limit", "300",
                 "--threads", "1", "--quiet"]) == 0
    row = json.loads((run / "spiking.json").read_text())[0]
    # Measured after this single epoch: agreement 0.907 / 0.877 at T = L = 8, ACC 0.687 against
    # the CNN's 0.680; a barely trained network has many images near a cluster boundary.
    assert row["agreement"] >= 0.85 and row["val_agreement"] >= 0.85
    assert abs(row["acc"] - row["ann_acc"]) <= 0.03
