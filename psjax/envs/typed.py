"""A constructed environment with two known agent types, for testing identity-based sharing.

N agents; the first ``ceil(N / 2)`` are type 0, the rest type 1. Every step each agent sees a
fresh random cue ``c_i`` in ``0..A-1`` (one-hot, ``A`` = number of actions) and is rewarded 1
when its action matches its type's rule: type 0 must play ``c_i``, type 1 ``(c_i + 1) mod A``.
Rewards are per agent; the team reward is their mean, so an episode of ``L`` steps returns at
most ``L``. The observation does not reveal the type: one network shared by every agent
(FuPS) can do no better than half the agents right (return ``L / 2``), while a network per
type, or masks per type, can reach ``L``. SePS and AdaPS must find the two types from the
rewards alone. A random policy returns ``L / A``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from psjax.envs.base import Env, EnvSpec, make_env_from_raw

DEFAULT_EPISODE_LENGTH = 10
NUM_ACTIONS = 3


def agent_types(num_agents: int) -> tuple[int, ...]:
    """Type of every agent: the first ``ceil(N / 2)`` are type 0, the rest type 1."""
    return tuple(int(i >= (num_agents + 1) // 2) for i in range(num_agents))


def make_typed(num_agents: int = 4, time_limit: int = 0, num_actions: int = NUM_ACTIONS) -> Env:
    """The two-type cue game: obs ``[N, A]`` one-hot cues, state ``[N * A]`` (all cues),
    avail ``[N, A]`` all True, reward ``[N]`` per agent (1 for the type's action, else 0)."""
    if num_agents < 2 or num_actions < 2:
        raise ValueError(f"typed env needs num_agents >= 2 and num_actions >= 2, got {num_agents}, {num_actions}")
    types = agent_types(num_agents)
    spec = EnvSpec(
        name="typed", num_agents=num_agents, obs_dim=num_actions, state_dim=num_agents * num_actions,
        num_actions=num_actions, max_steps=time_limit if time_limit > 0 else DEFAULT_EPISODE_LENGTH,
        agent_types=types, team_reward="mean", has_won=False,
    )
    shift = jnp.asarray(types, jnp.int32)  # type 0: play the cue; type 1: the next action
    avail = jnp.ones((num_agents, num_actions), jnp.bool_)

    def observe(cues):
        obs = jax.nn.one_hot(cues, num_actions)
        return obs, obs.reshape(-1), avail

    def draw(key):
        return jax.random.randint(key, (num_agents,), 0, num_actions, dtype=jnp.int32)

    def reset_raw(key):
        cues = draw(key)
        return (cues, *observe(cues))

    def step_raw(key, cues, actions):
        reward = (actions == (cues + shift) % num_actions).astype(jnp.float32)
        cues = draw(key)
        false = jnp.zeros((), jnp.bool_)
        return (cues, *observe(cues), reward, false, false, false)

    return make_env_from_raw(spec, reset_raw, step_raw)
