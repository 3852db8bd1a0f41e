"""Level-Based Foraging from jumanji, scenarios named ``GRIDxGRID-Np-Mf[-coop]``.

jumanji's LBF step is deterministic and takes no key (its state carries an unused key), so
the step key is ignored; a trajectory is fixed by the reset keys alone. Rewards are per
agent and normalised so that eating all food sums to 1 over agents: team reward is "sum".
"""

from __future__ import annotations

import re
from typing import NamedTuple

import jax.numpy as jnp

from psjax.envs.base import Env, EnvSpec, make_env_from_raw

DEFAULT_TIME_LIMIT = 50
MAX_AGENT_LEVEL = 2
NUM_ACTIONS = 6  # noop, up, down, left, right, load
SCENARIO_FORM = "GRIDxGRID-Np-Mf[-coop] (e.g. 8x8-2p-2f-coop, 10x10-3p-3f)"
_SCENARIO_RE = re.compile(r"^(\d+)x(\d+)-(\d+)p-(\d+)f(-coop)?$")


class LBFScenario(NamedTuple):
    grid_size: int
    num_agents: int
    num_food: int
    force_coop: bool


def parse_lbf_scenario(scenario: str, fov: int = -1) -> LBFScenario:
    """Parse and check ``GRIDxGRID-Np-Mf[-coop]``; raise ConfigError naming the bad value.

    Checks what jumanji's generator would otherwise assert (or silently get wrong): a square
    grid of at least 5, fov in 1..grid (or -1), and room for food that is not adjacent to
    other food nor on the edge: (grid - 2)^2 - agents > 5 * food.
    """
    from psjax import config as psconfig  # here, not at the top: psjax.config may import psjax.envs

    m = _SCENARIO_RE.match(scenario)
    if m is None:
        raise psconfig.ConfigError(
            f"env.scenario={scenario!r} is not a valid LBF scenario; expected {SCENARIO_FORM}"
        )
    w, h, n, f = (int(g) for g in m.groups()[:4])
    if w != h:
        raise psconfig.ConfigError(
            f"env.scenario={scenario!r}: LBF grids are square ({w}x{h} given); expected {SCENARIO_FORM}"
        )
    if w < 5:
        raise psconfig.ConfigError(f"env.scenario={scenario!r}: grid size {w} is below jumanji's minimum 5")
    if n < 1 or f < 1:
        raise psconfig.ConfigError(f"env.scenario={scenario!r}: needs at least 1 agent and 1 food")
    if (w - 2) ** 2 - n <= 5 * f:
        raise psconfig.ConfigError(
            f"env.scenario={scenario!r}: {n} agents and {f} food do not fit a {w}x{w} grid "
            f"(need (grid-2)^2 - agents > 5 * food, i.e. {(w - 2) ** 2 - n} > {5 * f})"
        )
    if fov != -1 and not 1 <= fov <= w:
        raise psconfig.ConfigError(
            f"env.fov={fov} is not allowed for a {w}x{w} grid; allowed: -1 (whole grid) or 1..{w}"
        )
    return LBFScenario(w, n, f, m.group(5) is not None)


def make_lbf(scenario: str = "8x8-2p-2f-coop", fov: int = -1, time_limit: int = 0) -> Env:
    """jumanji LevelBasedForaging with the vector observer.

    obs ``[N, 3 * (F + N)]`` float32: per food (x, y, level), then self, then the other
    agents, each (-1, -1, 0) when outside the field of view or eaten, all divided by the grid size; avail ``[N, 6]``
    (jumanji's action mask); state ``[3N + 4F]`` = agent positions [N, 2], agent levels [N],
    food positions [F, 2], food levels [F], food eaten [F], flattened in that order and divided
    by the grid size.
    ``terminated`` when all food is eaten (jumanji's LAST step with discount 0), which also
    counts as ``won``; ``truncated`` at the time limit (default 50).
    """
    from jumanji.environments.routing.lbf import LevelBasedForaging
    from jumanji.environments.routing.lbf.generator import RandomGenerator

    sc = parse_lbf_scenario(scenario, fov)
    max_steps = time_limit if time_limit > 0 else DEFAULT_TIME_LIMIT
    generator = RandomGenerator(
        grid_size=sc.grid_size, fov=sc.grid_size if fov == -1 else fov, num_agents=sc.num_agents,
        num_food=sc.num_food, max_agent_level=MAX_AGENT_LEVEL, force_coop=sc.force_coop,
    )
    env = LevelBasedForaging(generator=generator, time_limit=max_steps)
    n, f = sc.num_agents, sc.num_food
    spec = EnvSpec(
        name="lbf", num_agents=n, obs_dim=3 * (n + f), state_dim=3 * n + 4 * f,
        num_actions=NUM_ACTIONS, max_steps=max_steps, agent_types=(0,) * n,
        team_reward="sum", has_won=True,
    )

    # positions and levels are grid-sized integers: divide by the grid size to keep the
    # networks' inputs (and QMIX's hypernetwork outputs) near unit scale
    scale = float(sc.grid_size)

    def global_state(st):
        parts = (
            st.agents.position, st.agents.level, st.food_items.position, st.food_items.level,
            st.food_items.eaten,
        )
        return jnp.concatenate([jnp.ravel(p).astype(jnp.float32) for p in parts]) / scale

    def observe(view):
        return view.astype(jnp.float32) / scale

    def reset_raw(key):
        st, ts = env.reset(key)
        return st, observe(ts.observation.agents_view), global_state(st), ts.observation.action_mask

    def step_raw(key, st, actions):
        del key  # jumanji's LBF step is deterministic
        st, ts = env.step(st, actions.astype(jnp.int32))
        last = ts.last()
        terminated = last & jnp.all(ts.discount == 0)
        truncated = last & ~terminated
        return (
            st, observe(ts.observation.agents_view), global_state(st), ts.observation.action_mask,
            ts.reward, terminated, truncated, terminated,
        )

    return make_env_from_raw(spec, reset_raw, step_raw)
