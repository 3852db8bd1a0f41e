"""k-means (k-means++ seeding, restarts) and the Davies-Bouldin choice of K, on hand-made points."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psjax.sharing.kmeans import canonical_labels, davies_bouldin, kmeans, kmeans_plus_plus, select_k, silhouette

# jitted once per static (num_clusters, max_clusters, restarts): op-by-op k-means is slow to dispatch
KMEANS = jax.jit(kmeans, static_argnums=(2, 3, 4))
SQUARE = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [0.1, 0.1]])  # centre (0.05, 0.05), each point 0.005 away


def _blobs(offsets, seed=0):
    """Copies of SQUARE at ``offsets``, shuffled; returns (points [P, 2], true blob index [P])."""
    points = np.concatenate([SQUARE + o for o in offsets])
    truth = np.repeat(np.arange(len(offsets)), len(SQUARE))
    perm = np.random.RandomState(seed).permutation(len(points))
    return jnp.asarray(points[perm], jnp.float32), truth[perm]


def _same_partition(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.array_equal(a[:, None] == a[None, :], b[:, None] == b[None, :])


def test_kmeans_recovers_three_blobs_with_hand_computed_centres_and_inertia():
    offsets = [(0.0, 0.0), (5.0, 0.0), (0.0, 5.0)]
    x, truth = _blobs(offsets)
    result = KMEANS(jax.random.PRNGKey(0), x, 3)
    assert _same_partition(result.labels, truth)
    assert result.labels[0] == 0  # canonical numbering: the first point's cluster is 0
    for k in range(3):
        expected = np.asarray(x)[np.asarray(result.labels) == k].mean(0)
        np.testing.assert_allclose(result.centres[k], expected, atol=1e-5)
    np.testing.assert_allclose(result.inertia, 3 * 4 * 0.005, rtol=1e-3)  # 12 points, 0.005 each
    assert int(result.num_clusters) == 3


def test_canonical_labels_number_clusters_by_first_point():
    labels = jnp.array([2, 2, 0, 1, 0])
    np.testing.assert_array_equal(canonical_labels(labels, 4), [0, 0, 1, 2, 1])


def test_kmeans_plus_plus_picks_distinct_points_and_zero_rows_beyond_k():
    x = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [7.0, 7.0], [-4.0, 2.0]])
    seeding = jax.jit(kmeans_plus_plus, static_argnums=3)
    for seed in range(5):
        centres = np.asarray(seeding(jax.random.PRNGKey(seed), x, 5, 5))
        # every point picked exactly once: D^2 sampling never repeats a covered point
        assert sorted(map(tuple, centres)) == sorted(map(tuple, np.asarray(x)))
        partial = np.asarray(seeding(jax.random.PRNGKey(seed), x, 2, 5))
        assert np.all(partial[2:] == 0.0) and len({tuple(c) for c in partial[:2]}) == 2
    result = KMEANS(jax.random.PRNGKey(0), x, 5)
    assert sorted(np.asarray(result.labels).tolist()) == [0, 1, 2, 3, 4]
    assert float(result.inertia) == 0.0


def test_traced_cluster_count_leaves_unused_slots_empty():
    x, truth = _blobs([(0.0, 0.0), (6.0, 1.0)])
    fn = jax.jit(lambda key, k: kmeans(key, x, k, max_clusters=5))
    result = fn(jax.random.PRNGKey(1), jnp.int32(2))
    assert _same_partition(result.labels, truth)
    assert set(np.asarray(result.labels).tolist()) == {0, 1}
    np.testing.assert_array_equal(result.centres[2:], 0.0)
    static = KMEANS(jax.random.PRNGKey(1), x, 2)
    np.testing.assert_allclose(result.inertia, static.inertia, rtol=1e-5)
    np.testing.assert_allclose(result.centres[:2], static.centres, atol=1e-5)


def test_restarts_never_do_worse_than_one_run():
    # four blobs on a wide rectangle: the optimum for K = 2 splits left from right
    x, truth = _blobs([(0.0, 0.0), (0.0, 2.0), (9.0, 0.0), (9.0, 2.0)])
    left = (np.asarray(x)[:, 0] < 4.5).astype(int)
    centre_dist = ((np.asarray(x) - np.where(left[:, None], [0.05, 1.05], [9.05, 1.05])) ** 2).sum()
    for seed in range(8):
        key = jax.random.PRNGKey(seed)
        best = KMEANS(key, x, 2, None, 10)
        one = KMEANS(key, x, 2, None, 1)
        assert float(best.inertia) <= float(one.inertia) + 1e-5
        assert _same_partition(best.labels, left)
        np.testing.assert_allclose(best.inertia, centre_dist, rtol=1e-4)


def test_davies_bouldin_hand_computed():
    # 1-D: cluster 0 = {0, 2} (centroid 1, scatter 1), cluster 1 = {10, 12, 14} (centroid 12, scatter 4/3);
    # centroid distance 11: both clusters' worst ratio is (1 + 4/3) / 11
    x = jnp.array([[0.0], [2.0], [10.0], [12.0], [14.0]])
    labels = jnp.array([0, 0, 1, 1, 1])
    score = jax.jit(davies_bouldin, static_argnums=2)
    np.testing.assert_allclose(score(x, labels, 4), (1 + 4 / 3) / 11, rtol=1e-5)
    # a third, singleton cluster at 30: its scatter is 0, worst ratio (4/3 + 0) / 18 against cluster 1
    x3 = jnp.concatenate([x, jnp.array([[30.0]])])
    labels3 = jnp.array([0, 0, 1, 1, 1, 2])
    expected = ((1 + 4 / 3) / 11 + max((1 + 4 / 3) / 11, (4 / 3) / 18) + max(1 / 29, (4 / 3) / 18)) / 3
    np.testing.assert_allclose(score(x3, labels3, 4), expected, rtol=1e-5)


def test_davies_bouldin_picks_the_number_of_blobs():
    choose = jax.jit(select_k, static_argnums=(2, 3))
    rng = np.random.RandomState(0)
    for offsets in ([(0.0, 0.0), (5.0, 0.0), (0.0, 5.0)], [(0.0, 0.0), (4.0, 4.0)],
                    [(0.0, 0.0), (3.0, 0.0), (0.0, 3.0), (3.0, 3.0)]):
        truth = np.arange(12) % len(offsets)  # 12 points in every case: one compiled program
        x = jnp.asarray(np.asarray(offsets)[truth] + 0.1 * rng.randn(12, 2), jnp.float32)
        result, scores = choose(jax.random.PRNGKey(0), x, 2, 7)
        assert scores.shape == (6,)
        assert int(result.num_clusters) == len(offsets), scores
        assert _same_partition(result.labels, truth)
        assert result.centres.shape == (7, 2)
        np.testing.assert_array_equal(result.centres[len(offsets):], 0.0)  # slots allocated for K = 7, unused


def test_silhouette_hand_computed():
    # 1-D: {0, 2} and {10, 12, 14}. Point 0: a = 2, b = mean(10, 12, 14) = 12 -> 10 / 12; point 2: a = 2, b = 10
    # -> 8 / 10; point 10: a = (2 + 4) / 2 = 3, b = mean(10, 8) = 9 -> 6 / 9; point 12: a = 2, b = 11 -> 9 / 11;
    # point 14: a = 3, b = 13 -> 10 / 13
    x = jnp.array([[0.0], [2.0], [10.0], [12.0], [14.0]])
    score = jax.jit(silhouette, static_argnums=2)
    expected = np.mean([10 / 12, 8 / 10, 6 / 9, 9 / 11, 10 / 13])
    np.testing.assert_allclose(score(x, jnp.array([0, 0, 1, 1, 1]), 4), expected, rtol=1e-5)
    # a singleton scores 0 (sklearn's convention): {0, 2}, {10}, {12, 14}; point 0: a = 2, b = min(10, 13);
    # point 2: a = 2, b = min(8, 11); point 10 alone: 0; point 12: a = 2, b = min(2, 11); point 14: a = 2, b = 4
    expected = np.mean([(10 - 2) / 10, (8 - 2) / 8, 0.0, 0.0, (4 - 2) / 4])
    np.testing.assert_allclose(score(x, jnp.array([0, 0, 1, 2, 2]), 4), expected, rtol=1e-5)


def test_silhouette_keeps_pairs_where_davies_bouldin_splits_them():
    """Two kinds of two agents each (the typed env's case): Davies-Bouldin prefers K = 3 (a split pair's two
    singletons have no scatter), the silhouette K = 2."""
    x = jnp.array([[0.0, 0.0], [0.3, 0.0], [5.0, 5.0], [5.0, 5.4]])
    truth = np.array([0, 0, 1, 1])
    by_db, _ = select_k(jax.random.PRNGKey(0), x, 2, 3, rule="davies_bouldin")
    by_sil, _ = select_k(jax.random.PRNGKey(0), x, 2, 3, rule="silhouette")
    assert int(by_db.num_clusters) == 3
    assert int(by_sil.num_clusters) == 2 and _same_partition(by_sil.labels, truth)
    with pytest.raises(ValueError, match="'silhouette'"):
        select_k(jax.random.PRNGKey(0), x, 2, 3, rule="gap")


def test_kmeans_jits_once_vmaps_over_keys_and_is_deterministic():
    traces = []

    def fn(key, x):
        traces.append(1)
        return kmeans(key, x, 3)

    x, _ = _blobs([(0.0, 0.0), (5.0, 0.0), (0.0, 5.0)])
    batched = jax.jit(jax.vmap(fn, in_axes=(0, None)))
    keys = jax.random.split(jax.random.PRNGKey(3), 4)
    first = batched(keys, x)
    second = batched(keys, x)
    assert len(traces) == 1
    jax.tree.map(np.testing.assert_array_equal, first, second)
    for i in range(4):  # vmapped seeds equal single runs
        single = KMEANS(keys[i], x, 3)
        np.testing.assert_array_equal(first.labels[i], single.labels)
        np.testing.assert_allclose(first.centres[i], single.centres, atol=1e-6)
