"""How a method's structure compares with the task's ground truth (``EnvSpec.agent_types``).

Two measures any method can log inside the compiled program:

* ``type_ari``: the adjusted Rand index (Hubert & Arabie 1985) between a partition of the agents the method
  made (SePS / AdaPS clusters, MADPS slots, BDPS roles and groups) and the agents' true kinds: 1 when the
  partition is exactly the kinds (up to relabelling), ~0 for an unrelated one (its expectation under random
  labelling is 0), negative when worse than chance. As scikit-learn's ``adjusted_rand_score``, two partitions
  that are both one group or both all singletons score 1.
* ``type_distance_ratio``: mean distance between agents of one kind over mean distance between agents of
  different kinds, for a policy distance matrix (MAPD's or SND's): well below 1 when the policies tell the
  kinds apart, ~1 when they do not. NaN where it is undefined (one kind, or no two agents of one kind).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np


def _pairs(x: chex.Array) -> chex.Array:
    """``x choose 2``, elementwise."""
    return x * (x - 1.0) / 2.0


def adjusted_rand_index(labels: chex.Array, truth: chex.Array, num_labels: int, num_truth: int) -> chex.Array:
    """ARI between two partitions of N items: ``labels int[..., N]`` in ``0..num_labels-1`` and ``truth int[N]`` (or
    ``[..., N]``) in ``0..num_truth-1`` -> ``[...]`` float32."""
    n = labels.shape[-1]
    truth = jnp.broadcast_to(truth, labels.shape)
    table = jnp.einsum("...ni,...nj->...ij", jax.nn.one_hot(labels, num_labels), jax.nn.one_hot(truth, num_truth))
    index = _pairs(table).sum((-2, -1))
    sum_rows, sum_cols = _pairs(table.sum(-1)).sum(-1), _pairs(table.sum(-2)).sum(-1)
    expected = sum_rows * sum_cols / max(_pairs(float(n)), 1.0)
    best = 0.5 * (sum_rows + sum_cols)
    denominator = best - expected
    # both partitions one group, or both all singletons: identical partitions (scikit-learn's convention)
    return jnp.where(denominator == 0.0, 1.0, (index - expected) / jnp.where(denominator == 0.0, 1.0, denominator))


def type_ari(labels: chex.Array, agent_types: tuple[int, ...], num_labels: int) -> chex.Array:
    """``adjusted_rand_index`` of ``labels int[..., N]`` against the env's ``agent_types``."""
    kinds, truth = np.unique(np.asarray(agent_types), return_inverse=True)  # SMAX's unit types are not 0..K-1
    chex.assert_axis_dimension(labels, -1, truth.shape[0])
    return adjusted_rand_index(labels, jnp.asarray(truth, jnp.int32), num_labels, len(kinds))


def joint_labels(first: chex.Array, second: chex.Array, num_second: int) -> chex.Array:
    """One label per distinct ``(first, second)`` pair: the partition two slot assignments make together."""
    return first * num_second + second


def type_distance_ratio(distance: chex.Array, agent_types: tuple[int, ...]) -> chex.Array:
    """``distance[N, N]`` -> ``[]``: mean over pairs i != j of one kind over mean over pairs of different kinds."""
    types = np.asarray(agent_types)
    same = types[:, None] == types[None, :]
    within, between = same & ~np.eye(len(types), dtype=bool), ~same
    if not within.any() or not between.any():
        return jnp.full((), jnp.nan, jnp.float32)
    mean_within = (distance * within).sum() / within.sum()
    mean_between = (distance * between).sum() / between.sum()
    return (mean_within / jnp.maximum(mean_between, 1e-12)).astype(jnp.float32)
