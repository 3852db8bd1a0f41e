"""Bootstrap values where a stored rollout has none: the network run only on the steps that need it.

Inside an episode the value (or the utilities) of what step t led to is the next stored step's, computed
with the same parameters, state and observation; only where a time limit ended the episode does the
ended episode's last observation need the network (a terminal step's bootstrap is dropped). An episode is
truncated only at its time limit, so a window of ``T`` steps holds at most ``truncation_slots`` truncations
per env: the network runs on those slots in one batched pass of fixed size (no loop, no step-wise pass),
and the results are written over the next stored step's values. The actor-critic learners' ``V(o'_t)``, the
Q learners' ``q_final`` and the replay items' final observations all use these slots.
"""

from __future__ import annotations

from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp


def truncation_slots(num_steps: int, max_steps: int) -> int:
    """How many time-limit ends ``num_steps`` consecutive steps of one env can hold.

    An episode is truncated only when it reaches ``max_steps`` steps (``psjax.envs.base``), so two truncations
    of one env lie at least ``max_steps`` steps apart: at most ``ceil(num_steps / max_steps)`` of them
    (``num_steps`` when the env has no time limit)."""
    if max_steps <= 0:
        return num_steps
    return min(num_steps, -(-num_steps // max_steps))


def truncation_steps(truncated: chex.Array, slots: int) -> chex.Array:
    """Each env's truncated steps in order, padded with ``T`` (no step): bool ``[T, B]`` -> int ``[slots, B]``
    (at most ``slots`` truncations per env, ``truncation_slots``)."""
    t_len = truncated.shape[0]
    return jax.vmap(lambda col: jnp.nonzero(col, size=slots, fill_value=t_len)[0], 1, 1)(truncated)


def at_steps(values: Any, step: chex.Array) -> Any:
    """``values`` (leaves ``[T, B, ...]``) at ``step [K, B]``: leaves ``[K, B, ...]``; a padded step (``T``)
    reads step ``T - 1``, a finite value that nothing uses."""
    def pick(x):
        return jax.vmap(lambda xb, ib: xb[jnp.minimum(ib, x.shape[0] - 1)], 1, 1)(x, step)

    return jax.tree.map(pick, values)


def with_steps(base: Any, step: chex.Array, values: Any) -> Any:
    """``at_steps`` undone: ``base`` (leaves ``[T, B, ...]``) with ``[step[k, b], b]`` replaced by
    ``values[k, b]`` (leaves ``[K, B, ...]``); padded steps (``T``) change nothing."""
    def put(x, v):
        return jax.vmap(lambda xb, ib, vb: xb.at[ib].set(vb.astype(xb.dtype), mode="drop"), 1, 1)(x, step, v)

    return jax.tree.map(put, base, values)


def apply_rows(value_of: Callable, inputs: Any) -> chex.Array:
    """``value_of`` on ``inputs`` (leaves ``[K, B, ...]``) as one batched call of ``K * B`` rows: ``value_of``
    maps leaves ``[M, ...]`` to ``[M, ...]``. Returns ``[K, B, ...]``."""
    k_len, b_len = jax.tree.leaves(inputs)[0].shape[:2]
    out = value_of(jax.tree.map(lambda x: x.reshape(k_len * b_len, *x.shape[2:]), inputs))
    return out.reshape(k_len, b_len, *out.shape[1:])
