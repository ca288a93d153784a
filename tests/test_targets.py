"""From partitions to training targets, and the feature diagnostics (k-NN, linear probe)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepstdp.config import TrainConfig
from deepstdp.loop.targets import centroids, sinkhorn, uniform_sample
from deepstdp.loop.training import learning_rate
from deepstdp.measures.probes import knn_accuracy, linear_probe_accuracy


def test_sinkhorn_gives_equal_cluster_mass_even_for_skewed_scores():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(512, 20, generator=g) * 0.3
    scores[:, 0] += 0.5  # one prototype preferred by every sample
    q = sinkhorn(scores, iterations=50)
    assert torch.allclose(q.sum(1), torch.ones(512), atol=1e-5)
    mass = q.sum(0) / 512
    assert torch.allclose(mass, torch.full((20,), 1 / 20), rtol=0.01)
    hard = np.bincount(q.argmax(1).numpy(), minlength=20)
    assert hard.max() < 3 * 512 / 20  # the argmax is no longer dominated by prototype 0


def test_centroids_are_unit_mean_directions_and_empty_clusters_zero():
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    c = centroids(e, np.array([0, 0, 2]), 3)
    assert torch.allclose(c[0], torch.tensor([0.7071, 0.7071]), atol=1e-4)
    assert torch.equal(c[1], torch.zeros(2)) and torch.allclose(c[2], torch.tensor([1.0, 0.0]))


def separable(n=300, d=16, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, d)) * 4
    y = rng.integers(0, classes, n)
    return (centres[y] + rng.normal(size=(n, d))).astype(np.float32), y


def test_knn_and_probe_read_separable_features_and_not_noise():
    x, y = separable(n=600)
    x, y, xt, yt = x[:300], y[:300], x[300:], y[300:]
    assert knn_accuracy(x, y, xt, yt) > 0.95
    assert linear_probe_accuracy(x, y, xt, yt) > 0.95
    noise = np.random.default_rng(2).normal(size=x.shape).astype(np.float32)
    assert knn_accuracy(noise, y, xt, yt) < 0.6
    assert linear_probe_accuracy(noise, y, xt, yt) < 0.6


def test_cosine_schedule_warms_up_then_decays_to_zero():
    cfg = TrainConfig(epochs=10, lr=0.2, warmup_epochs=2)
    lrs = [learning_rate(cfg, s, 5) for s in range(50)]
    assert lrs[0] == pytest.approx(0.02) and lrs[9] == pytest.approx(0.2)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lrs[-1] < 0.001
    assert learning_rate(TrainConfig(schedule="constant", lr=0.3), 17, 5) == 0.3


def test_surest_keeps_the_highest_margins_of_every_cluster():
    from deepstdp.loop.training import surest

    labels = np.array([0, 0, 0, 1, 1, 2])
    margins = np.array([0.1, 0.9, 0.5, 0.2, 0.2, 0.0])
    np.testing.assert_array_equal(surest(labels, margins, 0.5),
                                  [False, True, True, True, False, True])
    assert surest(labels, margins, 1.0).all()


def test_uniform_sample_draws_only_kept_images():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 25)
    keep = np.arange(100) % 3 == 0
    idx = uniform_sample(labels, 100, rng, keep)
    assert len(idx) == 100 and keep[idx].all() and set(labels[idx]) == {0, 1, 2, 3}
    same = uniform_sample(labels, 100, np.random.default_rng(1), np.ones(100, bool))
    np.testing.assert_array_equal(same, uniform_sample(labels, 100, np.random.default_rng(1)))


def test_kept_targets_matches_cluster_ids_one_to_one():
    from deepstdp.loop.training import kept_targets

    last = np.array([0, 0, 1, 1, 2, 2])
    assert kept_targets(None, last) is None
    assert kept_targets(last, (last + 1) % 3) == 1.0  # the same partition, ids permuted
    assert kept_targets(last, np.array([0, 0, 1, 2, 2, 2])) == 5 / 6
