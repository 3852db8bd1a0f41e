"""Row operations on the parameter banks inside a learner state, and ``run_if`` to run them rarely.

Dynamic methods (PPS aggregation, SePS's move from one slot to K, MADPS fusion) rewrite
rows of every bank: the online parameters and, optionally, the target copy and the
optimiser's per-parameter moments, which have the same tree structure as the parameters.
These helpers do that without knowing which learner or optimiser produced the state.
"""

from __future__ import annotations

from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp

# fn(path, leaf[K, ...]) -> leaf[K, ...]; ``path`` is the key path inside one bank, e.g.
# ("params", "Dense_0", "kernel"), so a method can treat layers differently.
RowFn = Callable[[tuple[str, ...], chex.Array], chex.Array]


def _path_names(path) -> tuple[str, ...]:
    return tuple(str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))) for p in path)


def map_bank_tree(params: dict, bank_names: tuple[str, ...], fn: RowFn) -> dict:
    """Apply ``fn`` to every leaf of the banks ``params[name]`` for name in ``bank_names``."""
    return {
        name: jax.tree_util.tree_map_with_path(lambda p, x: fn(_path_names(p), x), sub)
        if name in bank_names else sub
        for name, sub in params.items()
    }


def map_banks(state: Any, bank_names: tuple[str, ...], fn: RowFn, target: bool = True, moments: bool = True) -> Any:
    """``fn`` applied to the banks of ``state.params`` and, when asked, of ``state.target`` and of
    every params-shaped subtree of ``state.opt_state`` (Adam's mu and nu).

    ``state`` is a learner-state NamedTuple with ``params``, ``opt_state`` and optionally ``target`` (``()`` where
    the learner keeps no target network, PQN).
    """
    structure = jax.tree.structure(state.params)
    changes = {"params": map_bank_tree(state.params, bank_names, fn)}
    if target and isinstance(getattr(state, "target", None), dict):
        changes["target"] = map_bank_tree(state.target, bank_names, fn)
    if moments:
        def is_params(x):
            return isinstance(x, dict) and jax.tree.structure(x) == structure

        changes["opt_state"] = jax.tree.map(
            lambda x: map_bank_tree(x, bank_names, fn) if is_params(x) else x,
            state.opt_state,
            is_leaf=is_params,
        )
    return state._replace(**changes)


def weighted_mean_rows(x: chex.Array, weights: chex.Array) -> chex.Array:
    """Every row replaced by ``sum_k weights[k] * x[k]``: ``x[K, ...], weights[K] -> [K, ...]``."""
    mean = jnp.tensordot(weights.astype(x.dtype), x, axes=1)
    return jnp.broadcast_to(mean, x.shape)


def copy_row(x: chex.Array, source: int | chex.Array) -> chex.Array:
    """Every row replaced by row ``source``: ``x[K, ...] -> [K, ...]``."""
    return jnp.broadcast_to(x[source], x.shape)


def run_if(pred: chex.Array, fn: Callable[[Any, chex.PRNGKey], Any], operand: Any, key: chex.PRNGKey) -> Any:
    """``fn(operand, key')`` if ``pred`` else ``operand``, running ``fn`` only when some element needs it.

    A while loop of zero or one trip: unlike ``lax.cond``, it stays a branch under ``vmap`` with a
    batched ``pred`` (the loop runs while any seed's predicate holds; seeds without it keep their
    operand). ``fn`` must return the operand's structure, shapes and dtypes. Its key ``key'`` is
    folded with the loop's trip flag: work that depends only on values from outside the loop (a
    key, the closed-over buffer) is otherwise loop-invariant, and XLA hoists it out of the loop,
    where it runs on every call (measured: the whole VAE training, every iteration).
    """
    def body(carry):
        flag, x = carry
        return jnp.zeros((), jnp.bool_), fn(x, jax.random.fold_in(key, flag.astype(jnp.int32)))

    return jax.lax.while_loop(lambda c: c[0], body, (jnp.asarray(pred, jnp.bool_), operand))[1]
