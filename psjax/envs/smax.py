"""SMAX (jaxmarl's JAX StarCraft micromanagement) against the built-in heuristic enemy.

The inner ``step_env`` is called rather than jaxmarl's auto-resetting ``step`` so that the
terminal state can be read: ``won`` = every enemy dead and at least one ally alive.
jaxmarl's own done flag checks the time limit on the step count *before* incrementing it
(one step late), so the limit is enforced on the incremented counter here instead.

Actions per ally: 0-3 move (N, E, S, W), 4 stop, 5 + j attack enemy j. Dead allies can only
stop (jaxmarl's availability mask), which the trainer must honour.
"""

from __future__ import annotations

import jax.numpy as jnp

from psjax.envs._jaxmarl import jaxmarl_module
from psjax.envs.base import Env, EnvSpec, make_env_from_raw

DEFAULT_MAX_STEPS = 100  # jaxmarl's SMAX default


def smax_map_names() -> tuple[str, ...]:
    """Every map name jaxmarl's ``map_name_to_scenario`` knows (built-in and registered)."""
    smax_env = jaxmarl_module("environments.smax.smax_env")
    return tuple(smax_env.MAP_NAME_TO_SCENARIO)


def make_smax(map_name: str = "3m", time_limit: int = 0) -> Env:
    """HeuristicEnemySMAX on ``map_name``.

    obs ``[N_allies, D]`` (unit-list observation; 3m: D = 75), state ``[S]`` = jaxmarl's
    world_state (3m: S = 72), avail ``[N_allies, 5 + N_enemies]``, reward ``[N_allies]`` (the
    same team reward for every ally: enemy health removed, normalised, plus 1 for a win).
    """
    smax = jaxmarl_module("environments.smax")
    scenario = smax.map_name_to_scenario(map_name)
    max_steps = time_limit if time_limit > 0 else DEFAULT_MAX_STEPS
    env = smax.HeuristicEnemySMAX(scenario=scenario, max_steps=max_steps)
    agents = env.agents  # allies only, in order
    n_allies = env.num_allies
    # SMACv2 maps draw unit types per episode; the scenario's static types are then placeholders.
    agent_types = tuple(int(t) for t in scenario.unit_types[:n_allies])
    spec = EnvSpec(
        name="smax", num_agents=n_allies, obs_dim=env.obs_size, state_dim=env.state_size,
        num_actions=env.num_ally_actions, max_steps=max_steps, agent_types=agent_types,
        team_reward="mean", has_won=True,
    )

    def observe(obs, st):
        avail = env.get_avail_actions(st)
        return (
            jnp.stack([obs[a] for a in agents]),
            obs["world_state"],
            jnp.stack([avail[a] for a in agents]).astype(jnp.bool_),
        )

    def reset_raw(key):
        obs, st = env.reset(key)
        return (st, *observe(obs, st))

    def step_raw(key, st, actions):
        obs, st, rew, _, _ = env.step_env(key, st, {a: actions[i] for i, a in enumerate(agents)})
        alive = st.state.unit_alive  # [allies + enemies], allies first
        allies_dead = ~jnp.any(alive[:n_allies])
        enemies_dead = ~jnp.any(alive[n_allies:])
        terminated = allies_dead | enemies_dead
        won = enemies_dead & ~allies_dead
        truncated = (st.state.step >= max_steps) & ~terminated
        reward = jnp.stack([rew[a] for a in agents])
        return (st, *observe(obs, st), reward, terminated, truncated, won)

    return make_env_from_raw(spec, reset_raw, step_raw)
