"""Episode statistics, and the random-policy reference every learner must beat.

Greedy evaluation of a trained runner lives in ``train.py`` (it reuses the training
rollout); both it and ``random_policy_score`` summarise episodes with ``episode_means``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from psjax.envs.base import Env, TimeStep


def episode_means(ended: jax.Array, step_ts: TimeStep) -> dict:
    """Mean return / win / length over the episodes marked ``ended`` (NaN when none).

    ``ended`` and the ``step_ts`` leaves share their leading axes, e.g. ``[T, E]``; a step's
    statistics describe the episode that ended on it.
    """
    count = ended.sum()

    def mean(values):
        total = jnp.sum(jnp.where(ended, values.astype(jnp.float32), 0.0))
        return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)

    return {"return": mean(step_ts.episode_return), "won": mean(step_ts.won),
            "length": mean(step_ts.episode_length)}


def first_episodes(step_ts: TimeStep) -> jax.Array:
    """``[T, E]`` mask of the step that ended each env's first episode."""
    return step_ts.done & (jnp.cumsum(step_ts.done, axis=0) == 1)


def random_policy_score(env: Env, key, num_envs: int = 64) -> dict:
    """Mean return / win rate / length of the first episode of ``num_envs`` envs under uniformly
    random available actions."""
    k_reset, k_roll = jax.random.split(key)
    state, ts = jax.vmap(env.reset)(jax.random.split(k_reset, num_envs))

    def step(carry, k):
        state, ts = carry
        k_act, k_env = jax.random.split(k)
        actions = jax.random.categorical(k_act, jnp.where(ts.avail_actions, 0.0, -1e9))
        state, ts = jax.vmap(env.step)(jax.random.split(k_env, num_envs), state, actions)
        return (state, ts), ts

    _, step_ts = jax.lax.scan(step, (state, ts), jax.random.split(k_roll, env.spec.max_steps))
    return episode_means(first_episodes(step_ts), step_ts)
