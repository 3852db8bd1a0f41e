"""Jittable k-means (k-means++ initialisation, restarts) and the Davies-Bouldin choice of K.

Written here rather than taken from a library: the maintained JAX option (ott-jax's
``ott.tools.k_means``) is jittable, but it brings four packages (ott-jax, lineax, equinox and
the deprecated jaxopt) for what is, on SePS's N agent embeddings, a few dozen lines; and it
needs K static, whereas choosing K by Davies-Bouldin wants one compiled program for every
candidate K. Here the number of clusters may be a traced integer: centres live in a
``[max_clusters, D]`` array and the rows at or beyond ``num_clusters`` are unused (never
chosen, left zero), so ``jax.vmap`` over K compiles one program for all candidates.

Labels are canonical: clusters are numbered in the order of their first point, so point 0
is always in cluster 0 and equal partitions give equal labels whatever the restart.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

_EPS = 1e-12


class KMeansResult(NamedTuple):
    labels: chex.Array  # int32[P] cluster of every point, numbered by first appearance
    centres: chex.Array  # float32[Kmax, D] cluster means; rows >= num_clusters (or empty) are zero
    inertia: chex.Array  # float32[] sum of squared distances of the points to their centres
    num_clusters: chex.Array  # int32[] K


def _sq_dists(x: chex.Array, centres: chex.Array) -> chex.Array:
    """``x[P, D], centres[K, D] -> [P, K]`` squared Euclidean distances (clipped at zero)."""
    d = (x**2).sum(-1)[:, None] - 2.0 * x @ centres.T + (centres**2).sum(-1)[None, :]
    return jnp.maximum(d, 0.0)


def kmeans_plus_plus(key: chex.PRNGKey, x: chex.Array, num_clusters, max_clusters: int) -> chex.Array:
    """k-means++ seeding: the first centre uniformly, each next one with probability proportional
    to the squared distance to the nearest centre so far (uniform when every point is covered).

    ``x[P, D] -> centres[max_clusters, D]``; rows >= ``num_clusters`` are zero.
    """
    chex.assert_rank(x, 2)
    num_points = x.shape[0]
    keys = jax.random.split(key, max_clusters)
    first = jax.random.randint(keys[0], (), 0, num_points)
    centres = jnp.zeros((max_clusters, x.shape[1]), x.dtype).at[0].set(x[first])
    nearest = ((x - x[first]) ** 2).sum(-1)

    def pick(j, carry):
        centres, nearest = carry
        total = nearest.sum()
        probs = jnp.where(total > _EPS, nearest / jnp.maximum(total, _EPS), 1.0 / num_points)
        idx = jax.random.choice(keys[j], num_points, p=probs)
        use = j < num_clusters
        centres = centres.at[j].set(jnp.where(use, x[idx], 0.0))
        nearest = jnp.where(use, jnp.minimum(nearest, ((x - x[idx]) ** 2).sum(-1)), nearest)
        return centres, nearest

    centres, _ = jax.lax.fori_loop(1, max_clusters, pick, (centres, nearest))
    return centres


def canonical_labels(labels: chex.Array, max_clusters: int) -> chex.Array:
    """Renumber clusters by the first point in each: ``int[P] -> int32[P]`` (point 0 in cluster 0)."""
    num_points = labels.shape[0]
    first = jnp.full((max_clusters,), num_points, jnp.int32).at[labels].min(jnp.arange(num_points, dtype=jnp.int32))
    rank = jnp.argsort(jnp.argsort(first))  # clusters ordered by first member; empty ones last
    return rank[labels].astype(jnp.int32)


def _lloyd(x, centres, valid, iters: int):
    """``iters`` Lloyd steps from ``centres[K, D]``; invalid rows are never assigned. Empty clusters
    keep their previous centre. Returns (labels[P], centres, inertia)."""
    max_clusters = centres.shape[0]

    def assign(centres):
        d = jnp.where(valid[None, :], _sq_dists(x, centres), jnp.inf)
        return jnp.argmin(d, axis=1), d

    def step(_, centres):
        labels, _ = assign(centres)
        onehot = jax.nn.one_hot(labels, max_clusters, dtype=x.dtype)  # [P, K]
        counts = onehot.sum(0)
        means = onehot.T @ x / jnp.maximum(counts, 1.0)[:, None]
        return jnp.where((counts > 0)[:, None], means, centres)

    centres = jax.lax.fori_loop(0, iters, step, centres)
    labels, d = assign(centres)
    inertia = jnp.take_along_axis(d, labels[:, None], axis=1).sum()
    return labels, centres, inertia


def kmeans(
    key: chex.PRNGKey,
    x: chex.Array,
    num_clusters,
    max_clusters: int | None = None,
    restarts: int = 10,
    iters: int = 50,
) -> KMeansResult:
    """k-means with k-means++ seeding; the best of ``restarts`` runs by inertia.

    Args:
      x: points ``[P, D]``.
      num_clusters: K, a Python int or a traced int32 in ``1..max_clusters``.
      max_clusters: static size of the centre array; defaults to ``num_clusters`` (then static).
      restarts: independent seedings (vmapped); iters: Lloyd steps per run (fixed: jittable).
    Returns:
      KMeansResult with canonical labels (clusters numbered by first point) and centres in that order.
    """
    chex.assert_rank(x, 2)
    if max_clusters is None:
        max_clusters = int(num_clusters)
    x = x.astype(jnp.float32)
    valid = jnp.arange(max_clusters) < num_clusters

    def one_run(k):
        return _lloyd(x, kmeans_plus_plus(k, x, num_clusters, max_clusters), valid, iters)

    labels, centres, inertia = jax.vmap(one_run)(jax.random.split(key, restarts))
    best = jnp.argmin(inertia)
    labels, centres, inertia = labels[best], centres[best], inertia[best]
    canonical = canonical_labels(labels, max_clusters)
    # reorder the centres to the canonical numbering; unused and empty clusters become zero rows
    onehot = jax.nn.one_hot(canonical, max_clusters, dtype=x.dtype)
    counts = onehot.sum(0)
    ordered = jnp.zeros_like(centres).at[canonical].set(centres[labels])
    ordered = jnp.where((counts > 0)[:, None], ordered, 0.0)
    return KMeansResult(canonical, ordered, inertia, jnp.asarray(num_clusters, jnp.int32))


def davies_bouldin(x: chex.Array, labels: chex.Array, max_clusters: int) -> chex.Array:
    """Davies-Bouldin score of a partition (lower is better), ``x[P, D], labels[P] -> []``.

    ``s_k`` = mean distance of cluster k's points to its centroid, ``M_kl`` = distance between
    centroids, ``DB = mean_k max_{l != k} (s_k + s_l) / M_kl`` over the non-empty clusters (as
    sklearn's ``davies_bouldin_score``; coinciding centroids count as a ratio of zero).
    """
    onehot = jax.nn.one_hot(labels, max_clusters, dtype=jnp.float32)  # [P, K]
    counts = onehot.sum(0)
    present = counts > 0
    centroids = onehot.T @ x / jnp.maximum(counts, 1.0)[:, None]
    dist_to_own = jnp.sqrt(jnp.maximum(((x - centroids[labels]) ** 2).sum(-1), 0.0))
    scatter = onehot.T @ dist_to_own / jnp.maximum(counts, 1.0)
    sep = jnp.sqrt(_sq_dists(centroids, centroids))
    pair = present[:, None] & present[None, :] & ~jnp.eye(max_clusters, dtype=bool)
    ratio = jnp.where(pair & (sep > 1e-9), (scatter[:, None] + scatter[None, :]) / jnp.maximum(sep, 1e-9), 0.0)
    worst = ratio.max(axis=1)
    return jnp.where(present, worst, 0.0).sum() / jnp.maximum(present.sum(), 1)


def silhouette(x: chex.Array, labels: chex.Array, max_clusters: int) -> chex.Array:
    """Mean silhouette of a partition (higher is better), ``x[P, D], labels[P] -> []``.

    Point i: ``a_i`` = mean distance to the other points of its cluster, ``b_i`` = the lowest mean distance to
    the points of another cluster, ``s_i = (b_i - a_i) / max(a_i, b_i)``; 0 for a point alone in its cluster
    (as sklearn's ``silhouette_score``). A singleton scores 0, so splitting a cluster apart is not rewarded
    the way Davies-Bouldin rewards it (a singleton has zero scatter there).
    """
    onehot = jax.nn.one_hot(labels, max_clusters, dtype=jnp.float32)  # [P, K]
    counts = onehot.sum(0)
    dist = jnp.sqrt(_sq_dists(x, x))  # [P, P]
    to_cluster = dist @ onehot  # [P, K] summed distance from point i to cluster k's points
    own = onehot.astype(bool)
    size_own = counts[labels]
    a = (to_cluster * onehot).sum(-1) / jnp.maximum(size_own - 1.0, 1.0)
    mean_other = jnp.where(own | (counts[None, :] == 0), jnp.inf, to_cluster / jnp.maximum(counts[None, :], 1.0))
    b = mean_other.min(-1)
    s = jnp.where((size_own > 1) & jnp.isfinite(b), (b - a) / jnp.maximum(jnp.maximum(a, b), 1e-12), 0.0)
    return s.mean()


K_RULES = {  # rule -> (score of a partition, whether higher is better)
    "davies_bouldin": (davies_bouldin, False),
    "silhouette": (silhouette, True),
}


def select_k(
    key: chex.PRNGKey,
    x: chex.Array,
    min_clusters: int,
    max_clusters: int,
    restarts: int = 10,
    iters: int = 50,
    rule: str = "davies_bouldin",
) -> tuple[KMeansResult, chex.Array]:
    """k-means for every K in ``min_clusters..max_clusters`` (one vmapped program) and the
    partition with the best score under ``rule`` (``K_RULES``: the lowest Davies-Bouldin score or the
    highest mean silhouette; the smallest K on ties).

    Returns the chosen KMeansResult (centres ``[max_clusters, D]``) and the scores ``[num_candidates]``.
    """
    if not 1 <= min_clusters <= max_clusters:
        raise ValueError(f"need 1 <= min_clusters={min_clusters} <= max_clusters={max_clusters}")
    if rule not in K_RULES:
        raise ValueError(f"unknown rule {rule!r}; allowed: {', '.join(map(repr, K_RULES))}")
    score, higher_better = K_RULES[rule]
    ks = jnp.arange(min_clusters, max_clusters + 1, dtype=jnp.int32)
    keys = jax.random.split(key, ks.shape[0])
    results = jax.vmap(lambda k, n: kmeans(k, x, n, max_clusters, restarts, iters))(keys, ks)
    scores = jax.vmap(lambda labels: score(x.astype(jnp.float32), labels, max_clusters))(results.labels)
    best = jnp.argmax(scores) if higher_better else jnp.argmin(scores)
    return jax.tree.map(lambda r: r[best], results), scores
