"""Bootstrap values where a stored rollout has none: the network run only on the steps that need it.

Inside an episode the value (or the utilities) of what step t led to is the next stored step's, computed
with the same parameters, state and observation; only where a time limit ended the episode does the
ended episode's last observation need the network (a terminal step's bootstrap is dropped). The actor-critic
learners' ``V(o'_t)`` and the Q learners' ``q_final`` both come from here.
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
