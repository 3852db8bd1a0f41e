"""MPE environments from jaxmarl: simple_spread and simple_speaker_listener.

jaxmarl's MPE has no terminal condition: episodes end only at the time limit, which is a
truncation (bootstrap through it), never ``terminated``. jaxmarl's own done flag is raised
one step late (it compares the step count *before* incrementing it, giving max_steps + 1
steps), so the time limit is taken from the step counter here and enforced exactly by
``make_env_from_raw`` through ``spec.max_steps``.
"""

from __future__ import annotations

import jax.numpy as jnp

from psjax.envs._jaxmarl import jaxmarl_module
from psjax.envs.base import Env, EnvSpec, make_env_from_raw
from psjax.envs.wrappers import Padding, pad_raw

DEFAULT_MAX_STEPS = 25  # jaxmarl's MPE default (as in PettingZoo)


def _stack(d, agents):
    return jnp.stack([d[a] for a in agents])


def make_mpe_spread(num_agents: int = 3, num_landmarks: int = 3, time_limit: int = 0) -> Env:
    """MPE simple_spread: obs ``[N, 4 + 4(N-1) + 2L]`` (own vel, pos, landmarks, others, comm),
    state ``[N * D]`` = all observations concatenated, 5 actions all available, per-agent
    reward = 0.5 * own collisions + 0.5 * global coverage (team reward: mean)."""
    mpe = jaxmarl_module("environments.mpe")
    max_steps = time_limit if time_limit > 0 else DEFAULT_MAX_STEPS
    env = mpe.SimpleSpreadMPE(num_agents=num_agents, num_landmarks=num_landmarks, max_steps=max_steps)
    agents = env.agents
    obs_dim = env.observation_spaces[agents[0]].shape[0]
    num_actions = env.action_spaces[agents[0]].n
    spec = EnvSpec(
        name="mpe_spread", num_agents=num_agents, obs_dim=obs_dim, state_dim=num_agents * obs_dim,
        num_actions=num_actions, max_steps=max_steps, agent_types=(0,) * num_agents,
        team_reward="mean", has_won=False,
    )
    avail = jnp.ones((num_agents, num_actions), jnp.bool_)

    def reset_raw(key):
        obs, st = env.reset(key)
        obs = _stack(obs, agents)
        return st, obs, obs.reshape(-1), avail

    def step_raw(key, st, actions):
        obs, st, rew, _, _ = env.step_env(key, st, {a: actions[i] for i, a in enumerate(agents)})
        obs = _stack(obs, agents)
        false = jnp.zeros((), jnp.bool_)
        truncated = st.step >= max_steps
        return st, obs, obs.reshape(-1), avail, _stack(rew, agents), false, truncated, false

    return make_env_from_raw(spec, reset_raw, step_raw)


def make_speaker_listener(time_limit: int = 0) -> Env:
    """MPE simple_speaker_listener through the padding wrapper.

    Agent 0 (speaker, type 0) sees the goal colour ``[3]`` and has 3 actions (say landmark k);
    agent 1 (listener, type 1) sees ``[11]`` (vel, landmark offsets, speaker message) and has
    5 moves. obs ``[2, 11]`` (speaker zero-padded), avail ``[2, 5]`` (speaker's actions 3, 4
    unavailable), state ``[14]`` = both unpadded observations. Both get the same reward.
    """
    mpe = jaxmarl_module("environments.mpe")
    max_steps = time_limit if time_limit > 0 else DEFAULT_MAX_STEPS
    env = mpe.SimpleSpeakerListenerMPE(max_steps=max_steps)
    agents = env.agents
    padding = Padding(
        obs_sizes=tuple(env.observation_spaces[a].shape[0] for a in agents),
        action_counts=tuple(env.action_spaces[a].n for a in agents),
    )
    spec = EnvSpec(
        name="speaker_listener", num_agents=len(agents), obs_dim=padding.obs_dim,
        state_dim=sum(padding.obs_sizes), num_actions=padding.num_actions, max_steps=max_steps,
        agent_types=tuple(range(len(agents))), team_reward="mean", has_won=False,
    )

    def reset_het(key):
        obs, st = env.reset(key)
        obs = [obs[a] for a in agents]
        return st, obs, jnp.concatenate(obs), None

    def step_het(key, st, actions):
        obs, st, rew, _, _ = env.step_env(key, st, {a: actions[i] for i, a in enumerate(agents)})
        obs = [obs[a] for a in agents]
        false = jnp.zeros((), jnp.bool_)
        truncated = st.step >= max_steps
        return st, obs, jnp.concatenate(obs), None, _stack(rew, agents), false, truncated, false

    reset_raw, step_raw = pad_raw(padding, reset_het, step_het)
    return make_env_from_raw(spec, reset_raw, step_raw)
