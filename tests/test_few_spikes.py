"""Fewer synaptic operations: the firing penalty's estimate, bias calibration, and the
confident half of the agreement (docs/conversion.md, "Fewer operations")."""

import json

import numpy as np
import pytest
import torch
from test_conversion import TINY, random_net
from test_qcfs import qcfs_net

from deepstdp.cli import main
from deepstdp.config import TrainConfig
from deepstdp.conversion.converter import analog_rates, calibrate, convert, load_or_convert
from deepstdp.loop.training import train
from deepstdp.network.firing import FiringCost
from deepstdp.network.synapses import Link, fanout, spike_cost


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("net, size", [("qcfs", 8), ("avg", 16), ("max", 16)])
def test_firing_cost_estimates_the_simulated_operations(net, size):
    """Against the synchronous simulation at T = 64: QCFS, a ReLU network with pooling neurons,
    one with max-pooling gates."""
    torch.manual_seed(1)
    x = torch.randn(64, 1, size, size)
    model = (qcfs_net(x) if net == "qcfs" else random_net(net, seed=1)).eval()
    snn = convert(model, x)
    cost = FiringCost(model, x)
    with cost, torch.no_grad():
        model.features(x)
        estimate = float(cost.pop())
    res = snn.simulate(x, [64])
    simulated = float(res.sops[64].mean()) / 64 / snn.synapses()
    # Measured 0.983 (QCFS), 1.018 (pooling neurons), 1.000 (gates) times the simulated count:
    # the rates of 64 synchronous steps, not the synapses, make the difference.
    assert estimate == pytest.approx(simulated, rel=0.05)
    with pytest.raises(RuntimeError, match="before a forward pass"):
        cost.pop()
    # Outside the context no hook is left behind.
    assert all(not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_firing_cost_is_the_simulators_count_at_the_networks_rates(pool):
    """One cost model (network.synapses): at the rates of the network the SNN stands for, the
    penalty counts the simulator's synapses, pooling neurons (the 4x4 -> 2x2 pooling before the
    head) and max-pooling gates included, and its MACs are the simulator's."""
    torch.manual_seed(0)
    x = torch.randn(16, 1, 16, 16)
    model = qcfs_net(x, pool).eval()
    snn = convert(model, x)
    cost = FiringCost(model, x)
    with cost, torch.no_grad():
        model.features(x)
        estimate = float(cost.pop())
    counted = sum(float((r.flatten(1).double() @ fan.flatten()).mean())
                  for r, fan in zip(analog_rates(snn, x), snn.fanouts, strict=True))
    assert cost.macs == snn.synapses()
    assert estimate == pytest.approx(counted / snn.synapses(), rel=1e-5)
    # The pooling neurons' stage folds into the layer they pool.
    assert len(cost.stages) == sum(bool(fan.any()) for fan in snn.fanouts) - 1


def test_a_pooled_spike_pays_its_pooling_neuron_and_a_share_of_its_fanout():
    pool = Link("avgpool", kernel=(2, 2), stride=(2, 2))
    conv = Link("conv", 16, (3, 3), padding=(1, 1))
    cost = spike_cost((8, 16, 16), [pool, conv])
    # One synapse into the cell's pooling neuron, a quarter of its 3x3 conv's fan-out.
    assert cost[0, 5, 5] == 1 + 16 * 9 / 4 and cost[3, 0, 0] == 1 + 16 * 4 / 4
    assert torch.equal(fanout((8, 16, 16), [pool]), torch.ones(8, 16, 16))
    assert torch.equal(spike_cost((8, 8, 8), [conv]), fanout((8, 8, 8), [conv]))


def test_firing_cost_is_differentiable_and_sparsity_lowers_it():
    torch.manual_seed(0)
    x = torch.randn(32, 1, 8, 8)
    model = qcfs_net(x).train()
    cost = FiringCost(model, x)
    opt = torch.optim.SGD(model.parameters(), lr=5.0)
    with cost:
        model.features(x)
        first = cost.pop()
        first.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        for _ in range(20):
            opt.zero_grad()
            model.features(x)
            cost.pop().backward()
            opt.step()
        model.features(x)
        assert float(cost.pop().detach()) < 0.7 * float(first.detach())


def test_sparsity_setting_is_validated_and_trains_reproducibly(tmp_path, capsys):
    with pytest.raises(Exception, match="sparsity"):
        TrainConfig(sparsity=-0.1).validate()
    assert main(["train", "--sparsity", "-1", "--out", str(tmp_path / "bad")]) == 2
    assert "sparsity" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    cfg = TrainConfig(**{**TINY, "pool": "avg", "activation": "qcfs", "image_size": 8,
                         "sparsity": 1.0})
    rows = [train(cfg, tmp_path / f"run{i}", quiet=True) for i in range(2)]
    a, b = ([json.loads(line) for line in (tmp_path / f"run{i}" / "metrics.jsonl")
             .read_text().splitlines()] for i in range(2))
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert rows is not None
    # A run saved before the setting existed resumes and loads as it ran: no penalty.
    assert TrainConfig.from_saved({k: v for k, v in cfg.to_dict().items()
                                   if k != "sparsity"}).sparsity == 0.0


def _feature_error(snn, x, want, steps):
    res = snn.simulate(x, [steps])
    got = snn.features(res, steps, "membrane") / snn.feature_threshold
    return float((got - want).mean(0).abs().mean())


def test_calibration_removes_the_mean_error_at_its_steps():
    torch.manual_seed(2)
    x = torch.randn(128, 1, 8, 8)
    model = qcfs_net(x)
    snn = convert(model, x)
    want = analog_rates(snn, x)[-1]
    before = _feature_error(snn, x, want, 3)
    calibrate(snn, x, 3, "membrane", coding="synchronous")
    after = _feature_error(snn, x, want, 3)
    assert after < 0.5 * before
    assert snn.settings.calibrate_steps == 3
    with pytest.raises(Exception, match="at least 1"):
        calibrate(snn, x, 0)
    with pytest.raises(Exception, match="unknown readout"):
        calibrate(snn, x, 3, "voltage")


def test_calibrated_conversion_of_a_run_round_trips(tmp_path, capsys):
    run = tmp_path / "run"
    cfg = TrainConfig(**{**TINY, "pool": "avg", "activation": "qcfs", "image_size": 8})
    train(cfg, run, quiet=True)
    assert main(["convert", str(run), "--calibrate", "2", "--readout", "membrane",
                 "--calib-images", "64", "--threads", "1", "--quiet"]) == 0
    saved = load_or_convert(run)
    assert saved.settings.calibrate_steps == 2
    assert saved.settings.calibrate_readout == "membrane"
    assert main(["convert", str(run), "--calibrate", "-1", "--quiet"]) == 2
    assert "--calibrate must be in [0, 4096], got -1" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--spiking", "--timesteps", "2,4", "--limit", "100",
                 "--readout", "membrane", "--threads", "1", "--quiet"]) == 0
    rows = json.loads((run / "spiking.json").read_text())
    for r in rows:  # the surer half agrees at least as often as all images, give or take
        assert 0 <= r["agreement_confident"] <= 1
        assert r["agreement_confident"] >= r["agreement"] - 0.05
    assert "surer half" in (run / "spiking.md").read_text()
    assert np.isfinite([r["val_agreement_confident"] for r in rows]).all()
