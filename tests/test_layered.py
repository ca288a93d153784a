"""Layered coding (SpikingNet.simulate_layered): each IF layer integrates its whole input
window, then fires. Its spike counts are then the CNN's activations rounded to T levels, layer
by layer, exactly; a QCFS network at T = L is its CNN."""

import dataclasses

import pytest
import torch
from test_conversion import random_net
from test_qcfs import qcfs_net

from deepstdp.conversion.converter import convert
from deepstdp.conversion.network import SpikingNet, run_ops
from deepstdp.network.activations import QCFS
from deepstdp.runtime.util import DeepSTDPError


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def rounded_network(snn: SpikingNet, x: torch.Tensor, t: int,
                    pooling: str = "down") -> list[torch.Tensor]:
    """Each spiking stage's spikes per step in the ANN whose every IF layer's activation is
    rounded to t levels of its threshold (QCFS with t levels, but ties rounded down: a neuron
    fires above its threshold, not at it), max gates max-pooling. Pooling neurons, whose
    pooled means meet ties: `pooling` 'down' rounds them down too, 'checkerboard' up on
    alternate positions (columns + rows odd), 'exact' passes the mean on unchanged."""
    a, out = run_ops([op.to(x.dtype) for op in snn.analog], x), []
    for (op, post), pooled in zip(snn.stages, snn.pooled, strict=True):
        post = [p.to(x.dtype) for p in post]
        if op.kind == "maxgate":
            u = torch.nn.functional.max_pool2d(out[-1], op.kernel, op.stride)
        elif pooled and pooling == "exact":
            u = a
        else:
            shift = 0.0
            if pooled and pooling == "checkerboard":
                h, w = a.shape[-2:]
                odd = (torch.arange(h)[:, None] + torch.arange(w)) % 2
                shift = (odd * 2 - 1).double() / (2 * pooled)
            u = torch.ceil(a * t / op.threshold + shift - 0.5).clamp(0, t) / t
        out.append(u)
        a = run_ops(post, u)
    return out


@pytest.mark.parametrize(("pool", "pool_first"), [("avg", False), ("avg", True), ("max", True)])
def test_layered_counts_are_the_relu_network_rounded_to_T_levels(pool, pool_first):
    torch.manual_seed(2)
    x = torch.randn(48, 1, 8, 8)
    snn = convert(random_net(pool, pool_first=pool_first), x)
    x = x.double()
    # Pooling neurons only where a ReLU network pools after its activation.
    assert any(op.name.endswith(".neurons") for op in snn.ops) == (pool == "avg"
                                                                   and not pool_first)
    # T a power of two, so that the reference's ties (pooled means of counts) are exact.
    res = snn.simulate(x, [2, 4], dtype=torch.float64, every_layer=True,
                       coding="layered")
    for t in (2, 4):
        for got, want in zip(res.layer_counts[t], rounded_network(snn, x, t), strict=True):
            assert torch.allclose(got / t, want, atol=1e-9)
        assert res.counts[t].max() <= t and res.counts[t].sum() > 0
    # The binary code at T steps is the same network rounded to 2^T - 1 levels, its pooling
    # neurons splitting ties by a checkerboard (the default) or passing the pooled mean on
    # exactly (2 more steps for 2x2 pooling).
    assert snn.pooled == ([0, 4, 0, 4, 0] if pool == "avg" and not pool_first
                          else [0] * len(snn.stages))
    for pooling, reference in (("rounded", "checkerboard"), ("exact", "exact")):
        snn.settings = dataclasses.replace(snn.settings, binary_pooling=pooling)
        binary = snn.simulate(x, [2, 3], dtype=torch.float64, every_layer=True,
                              coding="binary")
        for t in (2, 3):
            assert binary.levels[t] == 2**t - 1
            for got, want in zip(binary.layer_counts[t],
                                 rounded_network(snn, x, 2**t - 1, reference), strict=True):
                assert torch.allclose(got / (2**t - 1), want, atol=1e-9)
    # Synchronous coding differs: a spike's timing matters there.
    sync = snn.simulate(x, [4], dtype=torch.float64, coding="synchronous")
    assert not torch.equal(sync.counts[4], res.counts[4])


def test_layered_qcfs_network_is_its_cnn_at_T_equal_L():
    torch.manual_seed(1)
    x = torch.randn(64, 1, 8, 8)
    model = qcfs_net(x)
    levels = next(m for m in model.modules() if isinstance(m, QCFS)).levels
    snn = convert(model, x)
    res = snn.simulate(x.double(), [levels], dtype=torch.float64, coding="layered")
    with torch.no_grad():
        want = model.double().features(x.double())
    # Exactly (to rounding), where synchronous coding is 1.2% off (test_qcfs).
    assert torch.allclose(res.counts[levels] / levels * snn.feature_threshold, want, atol=1e-9)
    assert torch.allclose(snn.features(res, levels, "count"), want, atol=1e-9)
    assert torch.allclose(snn.features(res, levels, "membrane"), want, atol=1e-9)


def popcount(levels: torch.Tensor) -> torch.Tensor:
    c, n = levels.round().long(), torch.zeros_like(levels, dtype=torch.long)
    while bool((c > 0).any()):
        n, c = n + (c & 1), c >> 1
    return n.double()


def test_layered_sops_count_every_spike_once():
    """The same accounting as synchronous coding, each spike paying its fan-out: the rate
    code's spikes are its levels, the binary code's the binary digits of its levels."""
    torch.manual_seed(3)
    x = torch.randn(16, 1, 8, 8)
    snn = convert(random_net("avg", pool_first=True), x)
    for coding, spikes in (("layered", lambda c: c.double()), ("binary", popcount)):
        res = snn.simulate(x, [4], every_layer=True, coding=coding)
        want = sum((spikes(c).flatten(1) @ fan.flatten().double())
                   for c, fan in zip(res.layer_counts[4], snn.fanouts, strict=True))
        assert torch.allclose(res.sops[4], want)
    # Binary: 15 levels at 4 steps, for fewer spikes than the rate code's 4 levels would
    # need at 15 steps.
    rate = snn.simulate(x, [15], coding="layered")
    assert torch.equal(res.counts[4], rate.counts[15])
    assert (res.sops[4] < rate.sops[15]).all()


def test_an_unknown_coding_is_refused():
    snn = convert(random_net("avg"), torch.randn(8, 1, 8, 8))
    with pytest.raises(DeepSTDPError, match="coding"):
        snn.simulate(torch.randn(2, 1, 8, 8), [2], coding="sideways")


def test_relu_networks_pool_after_their_relu_unless_told_to_pool_first():
    from torch import nn

    from deepstdp.config import TrainConfig
    from deepstdp.network.models import ConvNet

    def order(cfg: TrainConfig) -> list[str]:
        body = ConvNet.from_config(cfg, 3, 10).body
        return [type(m).__name__ for m in body if isinstance(m, nn.ReLU | nn.AvgPool2d)]

    cfg = TrainConfig()
    assert not cfg.pool_first and order(cfg)[:2] == ["ReLU", "AvgPool2d"]
    # A run saved before 0.8 has no pool_first: it loads with the default, its own order.
    old = TrainConfig.from_saved({k: v for k, v in cfg.to_dict().items() if k != "pool_first"})
    assert old == cfg
    first = TrainConfig(pool_first=True)
    assert TrainConfig.from_saved(first.to_dict()).pool_first
    assert order(first)[:2] == ["AvgPool2d", "ReLU"]
