"""Consensus of many clusterings: batched K-Means, label matching, membership consensus, agreement, prediction."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from custseg.clustering import (ConsensusKMeans, batched_kmeans, consensus_clustering, label_matching, match_labels,
                                member_agreement, membership_matrix, order_by_size)
from custseg.exceptions import ConfigError


def blobs(n_per: int = 60, n_blobs: int = 3, dim: int = 4, spread: float = 12.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, spread, (n_blobs, dim))
    truth = np.repeat(np.arange(n_blobs), n_per)
    return centres[truth] + rng.normal(0, 1, (len(truth), dim)), truth


def test_batched_kmeans_finds_each_data_sets_blobs_as_sklearn_does():
    sets, truths = zip(*(blobs(seed=s) for s in range(3)))
    labels, centers, inertia, n_iter = batched_kmeans(np.stack(sets), 3, n_init=3, random_state=0)
    assert labels.shape == (3, 180) and centers.shape == (3, 3, 4) and n_iter >= 1
    for X, truth, lab, inert in zip(sets, truths, labels, inertia):
        assert adjusted_rand_score(truth, lab) == 1.0
        assert inert == pytest.approx(KMeans(3, n_init=3, random_state=0).fit(X).inertia_, rel=1e-4)


def test_batched_kmeans_same_seed_same_result():
    X = np.stack([blobs(seed=1)[0], blobs(seed=2)[0]])
    a, b = batched_kmeans(X, 4, random_state=5), batched_kmeans(X, 4, random_state=5)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()


def test_label_matching_is_the_best_one_to_one_renumbering():
    reference = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    labels = np.array([2, 2, 1, 0, 0, 1, 1, 1])
    assert label_matching(labels, reference, 3).tolist() == [1, 2, 0]
    assert match_labels(labels, reference, 3).tolist() == [0, 0, 2, 1, 1, 2, 2, 2]


def test_membership_matrix_is_one_hot_per_member():
    H = membership_matrix(np.array([[0, 1, 1], [2, 2, 0]]), 3).toarray()
    assert H.tolist() == [[1, 0, 0, 0, 0, 1], [0, 1, 0, 0, 0, 1], [0, 1, 0, 1, 0, 0]]


def test_order_by_size_numbers_the_largest_cluster_zero():
    assert order_by_size(np.array([5, 5, 3, 3, 3, 1]), 6).tolist() == [1, 1, 0, 0, 0, 2]


def test_consensus_recovers_the_majority_partition_whatever_each_member_calls_it():
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1, 2], 40)
    members = []
    for _ in range(15):
        noisy = truth.copy()
        flip = rng.random(len(truth)) < 0.15  # each member misplaces 15% of the rows
        noisy[flip] = rng.integers(0, 3, flip.sum())
        members.append(rng.permutation(3)[noisy])  # and numbers its clusters its own way
    members = np.array(members)
    labels, centers = consensus_clustering(members, 3, n_init=10, random_state=0)
    assert adjusted_rand_score(truth, labels) == 1.0
    assert centers.shape == (3, 45)
    agreement = member_agreement(members, labels, 3)
    assert agreement.shape == (120,)
    assert 0.8 < agreement.mean() < 0.95  # 85% of members plus the flips that land on the right cluster
    # agreement 1 exactly where every member, once renumbered, says the consensus cluster
    same = np.all(np.array([match_labels(m, labels, 3) for m in members]) == labels, axis=0)
    np.testing.assert_array_equal(agreement == 1.0, same)


def test_consensus_is_the_same_whatever_the_members_order():
    rng = np.random.default_rng(1)
    truth = np.repeat([0, 1, 2, 3], 25)
    members = np.array([np.where(rng.random(100) < 0.2, rng.integers(0, 4, 100), truth) for _ in range(9)])
    a, _ = consensus_clustering(members, 4, n_init=10, random_state=0)
    b, _ = consensus_clustering(members[::-1], 4, n_init=10, random_state=3)
    # numbered by size, so equal partitions give equal numbers, not just equal groupings
    np.testing.assert_array_equal(a, b)


def test_consensus_kmeans_fits_predicts_and_agrees_on_blobs():
    X1, truth = blobs(seed=0)
    rng = np.random.default_rng(3)
    # three "members": the same blobs seen through different random rotations and scales
    blocks = [X1 @ np.linalg.qr(rng.normal(size=(4, 4)))[0] * s for s in (1.0, 2.0, 0.5)]
    X = np.hstack(blocks)
    ck = ConsensusKMeans(n_clusters=3, n_members=3, n_init=5, random_state=0).fit(X)
    assert adjusted_rand_score(truth, ck.labels_) == 1.0
    assert ck.member_labels_.shape == (3, 180) and ck.member_centers_.shape == (3, 3, 4)
    np.testing.assert_array_equal(ck.agreement_, 1.0)
    np.testing.assert_array_equal(ck.predict(X), ck.labels_)
    labels, agreement = ck.predict_with_agreement(X[:10])
    np.testing.assert_array_equal(labels, ck.labels_[:10])
    np.testing.assert_array_equal(agreement, 1.0)


def test_members_nearest_centres_in_one_product_are_sklearns_per_member():
    # ConsensusKMeans assigns every member's rows in one batched product; the answer of one
    # pairwise_distances_argmin_min per member, on many random rows and on single rows
    from sklearn.metrics import pairwise_distances_argmin_min

    from custseg.clustering import _nearest_member_centers

    rng = np.random.default_rng(7)
    z, centers = rng.normal(size=(40, 2000, 8)), rng.normal(size=(40, 7, 8))
    expected = np.vstack([pairwise_distances_argmin_min(z[m], centers[m])[0] for m in range(40)])
    np.testing.assert_array_equal(_nearest_member_centers(z, centers), expected)
    np.testing.assert_array_equal(_nearest_member_centers(z[:, [5]], centers), expected[:, [5]])
    assert len(np.unique(expected)) == 7


def test_consensus_kmeans_agreement_drops_where_a_member_disagrees():
    X1, truth = blobs(seed=0)
    rng = np.random.default_rng(4)
    noise = rng.normal(size=X1.shape)  # a member that sees only noise
    X = np.hstack([X1, X1 * 1.5, noise])
    ck = ConsensusKMeans(n_clusters=3, n_members=3, n_init=5, random_state=0).fit(X)
    assert adjusted_rand_score(truth, ck.labels_) == 1.0
    assert ck.agreement_.max() == 1.0 and ck.agreement_.min() <= 2 / 3 + 1e-12
    assert 0.7 < ck.agreement_.mean() < 1.0


def test_consensus_kmeans_same_seed_same_bytes():
    X = np.hstack([blobs(seed=0)[0], blobs(seed=0)[0][::-1]])
    a = ConsensusKMeans(n_clusters=3, n_members=2, n_init=3, random_state=7).fit(X)
    b = ConsensusKMeans(n_clusters=3, n_members=2, n_init=3, random_state=7).fit(X)
    assert a.labels_.tobytes() == b.labels_.tobytes() and a.agreement_.tobytes() == b.agreement_.tobytes()


@pytest.mark.parametrize("param, value", [("n_clusters", 0), ("n_members", 2.0), ("n_init", -1)])
def test_consensus_kmeans_bad_parameters_are_named(param, value):
    with pytest.raises(ConfigError, match=f"The '{param}' parameter of ConsensusKMeans must be an int >= 1"):
        ConsensusKMeans(**{param: value}).fit(np.zeros((10, 4)))


def test_consensus_kmeans_blocks_must_split_evenly():
    with pytest.raises(ConfigError, match="5 features, which do not split into n_members=2 equal blocks"):
        ConsensusKMeans(n_clusters=2, n_members=2).fit(np.random.default_rng(0).normal(size=(20, 5)))


@pytest.mark.parametrize("consensus", ["latent", "membership"])
def test_the_assigned_cluster_is_the_nearest_centre_of_the_assignment_space(consensus):
    # the confidence model works in this space: the assigned cluster must be its nearest centre there
    X, _ = blobs(n_per=80, spread=2.5, seed=3)
    X = np.hstack([X, X + np.random.default_rng(1).normal(0, 2.0, X.shape)])  # two noisy members
    ck = ConsensusKMeans(n_clusters=4, n_members=2, consensus=consensus, n_init=5, random_state=0).fit(X)
    new = X + np.random.default_rng(2).normal(0, 1.0, X.shape)
    for rows in (X, new):
        space = ck.assignment_space(rows)
        nearest = ((space[:, None, :] - ck.consensus_centers_[None]) ** 2).sum(-1).argmin(axis=1)
        assert (nearest == ck.predict(rows)).all()
        assert space.shape == (len(rows), X.shape[1] if consensus == "latent" else 2 * 4)
        # scoring computes clusters, agreement and the space in one pass: the same arrays, bit for bit
        labels, agreement, once = ck.predict_in_space(rows)
        expected_labels, expected_agreement = ck.predict_with_agreement(rows)
        assert np.array_equal(labels, expected_labels) and np.array_equal(agreement, expected_agreement)
        assert np.array_equal(once, space)
