"""Minibatches of a rollout, shared by the on-policy learners (PPO / A2C and PQN)."""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp


def minibatches(tree: Any, key: chex.PRNGKey, axis: int, num: int) -> Any:
    """``tree``'s leaves shuffled along ``axis`` (one permutation for all) and split into ``num`` equal parts
    stacked in front: ``[..., B, ...] -> [num, ..., B / num, ...]``. ``num = 1`` keeps the order (one
    minibatch is the whole batch: its order cannot matter)."""
    sizes = {x.shape[axis] for x in jax.tree.leaves(tree)}
    if len(sizes) != 1:
        raise ValueError(f"minibatches: leaves differ in size along axis {axis}: {sorted(sizes)}")
    # drawn once: XLA does not merge the sorts of identical permutations drawn leaf by leaf
    order = jax.random.permutation(key, sizes.pop()) if num > 1 else None

    def split(x):
        if order is not None:
            x = jnp.take(x, order, axis=axis)
        x = x.reshape(*x.shape[:axis], num, x.shape[axis] // num, *x.shape[axis + 1:])
        return jnp.moveaxis(x, axis, 0)

    return jax.tree.map(split, tree)
