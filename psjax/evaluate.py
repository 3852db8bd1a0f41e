"""Reference scores: a uniformly random policy's return, the bar every learner must clear."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from psjax.envs.base import Env


def random_policy_score(env: Env, key, num_envs: int = 64) -> dict:
    """Mean return / win rate / length of the first episode of ``num_envs`` envs under uniformly
    random available actions."""
    k_reset, k_roll = jax.random.split(key)
    state, ts = jax.vmap(env.reset)(jax.random.split(k_reset, num_envs))

    def step(carry, k):
        state, ts, finished, totals = carry
        k_act, k_env = jax.random.split(k)
        actions = jax.random.categorical(k_act, jnp.where(ts.avail_actions, 0.0, -1e9))
        state, ts = jax.vmap(env.step)(jax.random.split(k_env, num_envs), state, actions)
        first = ts.done & ~finished
        stats = jnp.stack(
            [ts.episode_return, ts.won.astype(jnp.float32), ts.episode_length.astype(jnp.float32)]
        )
        totals = jnp.where(first, stats, totals)
        return (state, ts, finished | ts.done, totals), None

    init = (state, ts, jnp.zeros(num_envs, bool), jnp.zeros((3, num_envs)))
    (_, _, _, totals), _ = jax.lax.scan(step, init, jax.random.split(k_roll, env.spec.max_steps))
    ret, won, length = totals.mean(axis=1)
    return {"return": ret, "won": won, "length": length}
