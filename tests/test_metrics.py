import numpy as np
import pytest

from deepstdp.measures.metrics import cluster_acc, cluster_metrics, cluster_sizes, contingency


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


def test_majority_vote_names_mixed_empty_and_unseen_clusters():
    from deepstdp.measures.metrics import majority_accuracy, majority_metrics, majority_names

    # Cluster 0 holds classes 0,0,1 (named 0); cluster 1 holds 2,1,1 (named 1); cluster 2 holds
    # one image of class 2; cluster 3 holds none (unnamed); cluster 4 ties 1 and 0 (named 0).
    y = np.array([0, 0, 1, 2, 1, 1, 2, 1, 0])
    c = np.array([0, 0, 0, 1, 1, 1, 2, 4, 4])
    names = majority_names(y, c, 5)
    assert names.tolist() == [0, 1, 2, -1, 0]
    assert majority_accuracy(y, c, names) == pytest.approx(6 / 9)
    # Val: an image in the empty cluster counts as an error; class 3 names no cluster, so its
    # image is an error wherever it lands; many clusters may share a name.
    y_val = np.array([0, 1, 3, 2, 0])
    c_val = np.array([0, 1, 0, 3, 4])
    m = majority_metrics(y, c, y_val, c_val, 5)
    assert m == {"mv_acc": pytest.approx(6 / 9), "val_mv_acc": pytest.approx(3 / 5)}


def test_majority_vote_rewards_overclustering_where_hungarian_does_not():
    from deepstdp.measures.metrics import majority_accuracy, majority_names

    y = np.array([0, 0, 1, 1])
    p = np.array([0, 1, 2, 3])  # one image a cluster: every cluster pure
    assert majority_accuracy(y, p, majority_names(y, p, 4)) == 1.0
    assert cluster_acc(y, p) == pytest.approx(0.5)
