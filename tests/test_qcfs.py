"""QCFS (Bu et al. 2022): the activation is the quantised clipped ReLU, lambda learns, and the
converted network reproduces it: exactly for one layer at T = L, closely for a deep one."""

import numpy as np
import pytest
import torch
from test_conversion import random_net

from deepstdp.activations import QCFS, qcfs
from deepstdp.config import TrainConfig
from deepstdp.conversion import convert, fold_network, relu_percentiles
from deepstdp.models import ConvNet
from deepstdp.spiking import Op, SpikingNet
from deepstdp.util import DeepSTDPError


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
    snn = SpikingNet([conv, Op("if", "if", threshold=lam)], (2, 6, 6),
                     {"reset": "subtract", "v_init": 0.5})
    x = torch.randn(32, 2, 6, 6)
    counts = snn.simulate(x, [levels], dtype=torch.float64).counts[levels]
    want = qcfs(conv.to(torch.float64)(x.double()), lam, levels)
    assert torch.allclose(counts / levels * lam, want)


def qcfs_net(pool: str, x: torch.Tensor) -> ConvNet:
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
    x = torch.randn(64, 1, 16, 16)
    model = qcfs_net("avg", x)
    snn = convert(model, x)
    assert [op.threshold for op in snn.ops if op.kind == "if" and "neurons" not in op.name] \
        == [m.threshold.item() for m in model.modules() if isinstance(m, QCFS)]
    with torch.no_grad():
        a = model.features(x)
    res = snn.simulate(x, [8, 256])
    err = {t: float((res.counts[t] / t * snn.feature_threshold - a).abs().mean() / a.mean())
           for t in (8, 256)}
    # Measured 5.0% at T = L = 8 and 4.3% at T = 256, where the rates approach the clipped
    # (unquantised) ReLU: the CNN's own quantisation error, 4.3% here.
    assert err[8] < 0.08 and err[256] < 0.06


def test_qcfs_settings_are_validated():
    with pytest.raises(DeepSTDPError, match="activation"):
        TrainConfig(activation="gelu").validate()
    with pytest.raises(DeepSTDPError, match="qcfs_levels"):
        TrainConfig(activation="qcfs", qcfs_levels=0).validate()
    model = ConvNet(1, 5, widths="4,M", feat_dim=8, activation="qcfs")
    model.body[2].threshold.data.fill_(-1.0)
    model.body[2].initialised.fill_(True)
    with pytest.raises(DeepSTDPError, match=r"body\.2 \(QCFS\).*not positive"):
        convert(model, torch.randn(4, 1, 8, 8))
