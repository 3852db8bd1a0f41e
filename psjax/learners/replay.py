"""A jitted circular replay buffer of fixed-length sequences.

Each item is one env's rollout of T steps plus the observation after it, so
targets for every stored step can be computed without crossing items. Episode
boundaries inside an item are marked by ``done``; the recurrent state at the
item's first step is stored with it (R2D2's stored-state strategy).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp


class Replay(NamedTuple):
    data: Any  # pytree, every leaf [capacity, ...]
    ptr: chex.Array  # int32, next write position
    size: chex.Array  # int32, items stored (<= capacity)


def init(example_item: Any, capacity: int) -> Replay:
    """An empty buffer shaped after one item (leaves without the capacity axis)."""
    data = jax.tree.map(lambda x: jnp.zeros((capacity, *x.shape), x.dtype), example_item)
    return Replay(data, jnp.int32(0), jnp.int32(0))


def add(buffer: Replay, items: Any) -> Replay:
    """Write a batch of items (leaves [B, ...]), overwriting the oldest when full."""
    capacity = jax.tree.leaves(buffer.data)[0].shape[0]
    batch = jax.tree.leaves(items)[0].shape[0]
    idx = (buffer.ptr + jnp.arange(batch)) % capacity
    data = jax.tree.map(lambda d, x: d.at[idx].set(x), buffer.data, items)
    return Replay(data, (buffer.ptr + batch) % capacity, jnp.minimum(buffer.size + batch, capacity))


def sample(buffer: Replay, key: chex.PRNGKey, batch_size: int) -> Any:
    """Uniformly sample ``batch_size`` stored items (with replacement)."""
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1))
    return jax.tree.map(lambda d: d[idx], buffer.data)
