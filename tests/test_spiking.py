"""The simulator's accounting: synaptic operations counted by hand on a two-layer network, the
costs derived from them, and the max-pooling gate."""

import pytest
import torch

from deepstdp.conversion.network import PJ_PER_AC, PJ_PER_MAC, Op, SpikingNet, max_gate
from deepstdp.conversion.settings import ConversionSettings

SETTINGS = ConversionSettings(reset="subtract", v_init=0.5)


def two_layer_net() -> SpikingNet:
    """Analog 1x1 conv (a per-pixel gain) -> IF -> 3x3 conv (padding 1, 2 maps) -> IF."""
    gain = Op("conv", "in", torch.ones(1, 1, 1, 1))
    conv = Op("conv", "conv", torch.ones(2, 1, 3, 3), padding=(1, 1))
    return SpikingNet([gain, Op("if", "a", threshold=1.0), conv, Op("if", "b", threshold=1.0)],
                      (1, 3, 3), SETTINGS)


def test_sops_counted_by_hand_on_two_layers():
    snn = two_layer_net()
    x = torch.zeros(1, 1, 3, 3)
    # Membranes start at 0.5 and spike above 1: a current of 1 spikes every step, 0.5 every
    # second step (steps 2, 4), 0.25 every fourth (steps 3, 7).
    x[0, 0, 1, 1], x[0, 0, 0, 0], x[0, 0, 0, 1] = 1.0, 0.5, 0.25
    res = snn.simulate(x, [1, 2, 4])
    # Fan-out into a 3x3 conv with padding 1 and 2 maps: centre 2 * 9, corner 2 * 4, edge 2 * 6.
    # T = 1: the centre once. T = 2: centre twice, corner once. T = 4: centre 4, corner 2,
    # edge once. The feature layer's spikes are read out: no synapses.
    assert [res.sops[t].item() for t in (1, 2, 4)] == [18, 2 * 18 + 8, 4 * 18 + 2 * 8 + 12]
    costs = snn.costs(res.sops[4].item(), 4)
    # MACs: the gain's 9 synapses; the conv's real (not padded) ones: 2 maps * 7 * 7.
    assert costs["macs_per_image"] == 9 + 2 * 49 and costs["input_macs_per_image"] == 9
    assert costs["bias_adds_per_image"] == 9 * 4  # the first layer's current, every step
    assert costs["energy_snn_uj"] == pytest.approx((9 * PJ_PER_MAC + (100 + 36) * PJ_PER_AC)
                                                   * 1e-6)
    assert costs["energy_ann_uj"] == pytest.approx(107 * PJ_PER_MAC * 1e-6)
    assert res.seconds[1] <= res.seconds[2] <= res.seconds[4]


def test_max_gate_passes_the_spikes_of_the_most_charged_neuron():
    op = Op("maxgate", "pool", kernel=(2, 2), stride=(2, 2))
    # One 2x2 window over 4 steps: neurons 0 and 3 receive 0.6 and 0.5 per step, but neuron 3
    # fires at steps 0 and 2, neuron 0 at steps 1 and 3.
    current = torch.tensor([[[[0.6, 0.0], [0.0, 0.5]]]])
    spikes = torch.zeros(4, 1, 1, 2, 2)
    spikes[[1, 3], 0, 0, 0, 0] = 1
    spikes[[0, 2], 0, 0, 1, 1] = 1
    out = [max_gate(current * (t + 1), s, op).item() for t, s in enumerate(spikes)]
    # Neuron 0 has the larger charge throughout: only its spikes pass.
    assert out == [0, 1, 0, 1]
    # A tie goes to the first neuron of the window.
    assert max_gate(torch.ones(1, 1, 2, 2), torch.eye(2).reshape(1, 1, 2, 2), op).item() == 1
