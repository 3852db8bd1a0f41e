"""Bootstrap values where a stored rollout has none: the network run only on the steps that need it.

Inside an episode the value (or the utilities) of what step t led to is the next stored step's, computed
with the same parameters, state and observation; only where a time limit ended the episode does the
ended episode's last observation need the network (a terminal step's bootstrap is dropped). The actor-critic
learners' ``V(o'_t)`` and the Q learners' ``q_final`` both come from here. Replay items keep those last
observations at the truncated steps only (``at_truncations``; ``from_truncations`` undoes it).
"""

from __future__ import annotations

from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp


def fill_where(value_of: Callable, inputs: Any, shifted: chex.Array, need: chex.Array) -> chex.Array:
    """``shifted`` with ``value_of``'s output at the steps marked ``need``, computed on those steps only.

    The network runs in chunks of ``E`` needed steps: a ``while_loop`` of as many chunks as there are such
    steps (none where episodes end only by termination; exact for any count, under vmap too). A while_loop is
    not reverse-differentiable, so ``value_of``'s inputs and parameters must carry no gradient (callers read
    these values without differentiating them; ``jax.lax.stop_gradient`` them inside a loss).

    Args:
      value_of: ``inputs`` leaves ``[M, ...]`` -> ``[M, ...]`` (one row per step, like ``shifted``'s rows).
      inputs: pytree, leaves ``[T, E, ...]``; shifted: ``[T, E, ...]``; need: bool ``[T, E]``.
    Returns:
      ``[T, E, ...]``: ``value_of(inputs[t, e])`` where ``need[t, e]``, else ``shifted[t, e]``.
    """
    t_len, e_len = need.shape
    chex.assert_shape(shifted, (t_len, e_len, ...))
    size = t_len * e_len
    if size == 0:
        return shifted
    flat = jax.tree.map(lambda x: x.reshape(size, *x.shape[2:]), inputs)
    need = need.reshape(-1)
    rank = jnp.cumsum(need) - 1

    def chunk_values(carry):
        i, out = carry
        idx = jnp.nonzero(need & (rank // e_len == i), size=e_len, fill_value=size)[0]
        v = value_of(jax.tree.map(lambda x: x[jnp.minimum(idx, size - 1)], flat))
        return i + 1, out.at[idx].set(v.astype(out.dtype), mode="drop")

    out = jnp.zeros((size, *shifted.shape[2:]), shifted.dtype)
    _, out = jax.lax.while_loop(lambda c: c[0] * e_len < need.sum(), chunk_values, (jnp.int32(0), out))
    mask = need.reshape(t_len, e_len, *(1,) * (shifted.ndim - 2))
    return jnp.where(mask, out.reshape(shifted.shape), shifted)


def truncation_slots(num_steps: int, max_steps: int) -> int:
    """How many time-limit ends ``num_steps`` consecutive steps of one env can hold.

    An episode is truncated only when it reaches ``max_steps`` steps (``psjax.envs.base``), so two truncations
    of one env lie at least ``max_steps`` steps apart: at most ``ceil(num_steps / max_steps)`` of them
    (``num_steps`` when the env has no time limit)."""
    if max_steps <= 0:
        return num_steps
    return min(num_steps, -(-num_steps // max_steps))


def at_truncations(truncated: chex.Array, values: Any, slots: int) -> tuple[chex.Array, Any]:
    """Each env's ``values`` at its truncated steps only, the compact form a replay item stores.

    Args:
      truncated: bool ``[E, T]``, at most ``slots`` per env (``truncation_slots``); values: pytree, leaves
        ``[E, T, ...]``.
    Returns:
      ``(step [E, slots], values [E, slots, ...])``: the truncated steps in order, padded with ``T`` (no step;
      the padded values are step ``T - 1``'s and never read back).
    """
    t_len = truncated.shape[1]
    step = jax.vmap(lambda row: jnp.nonzero(row, size=slots, fill_value=t_len)[0])(truncated)
    pick = jnp.minimum(step, t_len - 1)
    return step, jax.tree.map(lambda x: jax.vmap(lambda xe, i: xe[i])(x, pick), values)


def from_truncations(step: chex.Array, values: Any, elsewhere: Any) -> Any:
    """``at_truncations`` undone: ``elsewhere`` (leaves ``[B, T, ...]``) with row ``b``, step ``step[b, k]``
    replaced by ``values[b, k]`` (leaves ``[B, slots, ...]``); padded steps (``T``) change nothing."""
    return jax.tree.map(
        lambda base, v: jax.vmap(lambda x, i, u: x.at[i].set(u.astype(x.dtype), mode="drop"))(base, step, v),
        elsewhere, values)
