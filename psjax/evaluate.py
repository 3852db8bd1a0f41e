"""Episode statistics, evaluation metric names, and the random-policy reference every learner must beat.

Evaluation of a trained runner lives in ``train.py`` (it reuses the training rollout, acting greedily
or with the training policy: ``TrainConfig.eval_policy``); both it and ``random_policy_score`` summarise
episodes with ``episode_means``. Every evaluation figure names its policy: ``eval_<policy>_<stat>``
(``eval_sample_return``, ``eval_greedy_won``), and the primary policy (``TrainConfig.eval_policies[0]``)
is also reported unqualified as ``eval_<stat>``.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from psjax.envs.base import Env, TimeStep

EVAL_STATS = ("return", "won", "length")  # what an evaluation reports for each policy
POLICY_NAMES = {"greedy": "greedy", "sample": "sampled"}  # figures and tables say "sampled policy"


def eval_key(stat: str, policy: str | None = None) -> str:
    """A metric name: ``eval_return`` (the primary policy) or, with ``policy``, ``eval_sample_return``."""
    return f"eval_{policy}_{stat}" if policy else f"eval_{stat}"


def policy_metrics(per_policy: dict[str, dict]) -> dict:
    """``{policy: {stat: value}}`` (primary policy first) to flat metrics: every policy under its qualified
    names, the primary one also under the plain ``eval_<stat>``."""
    primary = next(iter(per_policy))
    out = {eval_key(stat): v for stat, v in per_policy[primary].items()}
    for policy, stats in per_policy.items():
        out.update({eval_key(stat, policy): v for stat, v in stats.items()})
    return out


class EpisodeEnd(NamedTuple):
    """What a step reports about the episode it ended (the part of a ``TimeStep`` that episode statistics read;
    a rollout keeps only this per step, not the observations twice). Shapes as the TimeStep's, e.g. ``[T, E]``."""

    done: chex.Array  # bool, the step ended an episode
    episode_return: chex.Array  # float32, at done: the ended episode's team return
    episode_length: chex.Array  # int32, at done: its length
    won: chex.Array  # bool, at done: whether it was won


def episode_end(ts: TimeStep) -> EpisodeEnd:
    return EpisodeEnd(ts.done, ts.episode_return, ts.episode_length, ts.won)


def episode_means(ended: jax.Array, step_ts: EpisodeEnd | TimeStep) -> dict:
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


def first_episodes(step_ts: EpisodeEnd | TimeStep) -> jax.Array:
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
        return (state, ts), episode_end(ts)

    _, step_ts = jax.lax.scan(step, (state, ts), jax.random.split(k_roll, env.spec.max_steps))
    return episode_means(first_episodes(step_ts), step_ts)
