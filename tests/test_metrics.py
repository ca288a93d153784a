import numpy as np
import pytest

from deepstdp.metrics import cluster_acc, cluster_metrics, cluster_sizes, contingency


def test_acc_is_invariant_to_cluster_permutation():
    y = np.array([0, 0, 1, 1, 2, 2])
    assert cluster_acc(y, np.array([2, 2, 0, 0, 1, 1])) == 1.0


def test_acc_hand_computed():
    # classes 0,0,0,1,1,2 ; clusters 1,1,0,0,0,2 -> best map 1->0 (2), 0->1 (2), 2->2 (1) = 5/6
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([1, 1, 0, 0, 0, 2])
    assert cluster_acc(y, p) == pytest.approx(5 / 6)


def test_acc_with_more_clusters_than_classes_counts_unmatched_as_errors():
    y = np.array([0, 0, 1, 1])
    p = np.array([0, 1, 2, 3])
    assert cluster_acc(y, p) == pytest.approx(0.5)


def test_nmi_ari_extremes():
    y = np.array([0, 0, 1, 1, 2, 2])
    perfect = cluster_metrics(y, np.array([5, 5, 3, 3, 4, 4]))
    assert perfect["nmi"] == pytest.approx(1.0) and perfect["ari"] == pytest.approx(1.0)
    one = cluster_metrics(y, np.zeros(6, dtype=int))
    assert one["nmi"] == pytest.approx(0.0) and one["ari"] == pytest.approx(0.0)
    assert one["acc"] == pytest.approx(1 / 3)


def test_contingency_and_sizes():
    y = np.array([0, 1, 1])
    p = np.array([1, 1, 0])
    assert contingency(y, p).tolist() == [[0, 1], [1, 1]]
    assert cluster_sizes(p, 4) == [1, 2, 0, 0]
