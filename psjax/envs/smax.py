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
import numpy as np

from psjax.envs._jaxmarl import jaxmarl_module
from psjax.envs.base import Env, EnvSpec, make_env_from_raw

DEFAULT_MAX_STEPS = 100  # jaxmarl's SMAX default


def smax_map_names() -> tuple[str, ...]:
    """Every map name jaxmarl's ``map_name_to_scenario`` knows (built-in and registered)."""
    smax_env = jaxmarl_module("environments.smax.smax_env")
    return tuple(smax_env.MAP_NAME_TO_SCENARIO)


def _world_state_scale(env) -> jnp.ndarray:
    """Per-feature factors that bring jaxmarl's world state to the unit scale of the observations.

    jaxmarl's world state holds raw positions (up to the map size), weapon cooldowns and
    integer unit types; fed raw to QMIX's hypernetworks they make the initial Q_tot hundreds
    of times larger than any return. Layout: per unit (health, x, y, cooldown, type one-hot),
    then every unit's team, then every unit's type.
    """
    inner = env._env
    per_unit = np.ones(len(inner.own_features), np.float32)
    per_unit[1], per_unit[2] = 1.0 / inner.map_width, 1.0 / inner.map_height
    per_unit[3] = 1.0 / float(np.max(np.asarray(inner.unit_type_weapon_cooldowns)))
    num_units = inner.num_agents
    num_types = len(np.asarray(inner.unit_type_health))
    return jnp.asarray(np.concatenate([
        np.tile(per_unit, num_units), np.ones(num_units, np.float32),
        np.full(num_units, 1.0 / max(num_types - 1, 1), np.float32),
    ]))


def make_smax(map_name: str = "3m", time_limit: int = 0) -> Env:
    """HeuristicEnemySMAX on ``map_name``.

    obs ``[N_allies, D]`` (unit-list observation; 3m: D = 75), state ``[S]`` = jaxmarl's
    world_state rescaled to unit range (3m: S = 72), avail ``[N_allies, 5 + N_enemies]``, reward ``[N_allies]`` (the
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
        team_reward="mean", has_won=True, headline="won",
    )

    state_scale = _world_state_scale(env)

    def observe(obs, st):
        avail = env.get_avail_actions(st)
        return (
            jnp.stack([obs[a] for a in agents]),
            obs["world_state"] * state_scale,
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
