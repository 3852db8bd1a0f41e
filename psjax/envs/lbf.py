"""Level-Based Foraging from jumanji, scenarios named ``GRIDxGRID-Np-Mf[-coop]``.

jumanji's LBF step is deterministic and takes no key (its state carries an unused key), so
the step key is ignored; a trajectory is fixed by the reset keys alone. Rewards are per
agent and normalised so that eating all food sums to 1 over agents: team reward is "sum".
"""

from __future__ import annotations

import contextlib
import re
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from psjax.envs.base import Env, EnvSpec, make_env_from_raw
from psjax.fields import ConfigError

DEFAULT_TIME_LIMIT = 50
MAX_AGENT_LEVEL = 2
NUM_ACTIONS = 6  # noop, up, down, left, right, load
SCENARIO_FORM = "GRIDxGRID-Np-Mf[-coop] (e.g. 8x8-2p-2f-coop, 10x10-3p-3f)"
_SCENARIO_RE = re.compile(r"^(\d+)x(\d+)-(\d+)p-(\d+)f(-coop)?$")


@contextlib.contextmanager
def _quiet_observer():
    """jumanji's grid observer scatters an int 0 into a bool mask, which JAX warns about at trace time
    (harmless): silence that one warning around jumanji's reset and step."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "scatter inputs have incompatible types", FutureWarning)
        yield


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
    m = _SCENARIO_RE.match(scenario)
    if m is None:
        raise ConfigError(
            f"env.scenario={scenario!r} is not a valid LBF scenario; expected {SCENARIO_FORM}"
        )
    w, h, n, f = (int(g) for g in m.groups()[:4])
    if w != h:
        raise ConfigError(
            f"env.scenario={scenario!r}: LBF grids are square ({w}x{h} given); expected {SCENARIO_FORM}"
        )
    if w < 5:
        raise ConfigError(f"env.scenario={scenario!r}: grid size {w} is below jumanji's minimum 5")
    if n < 1 or f < 1:
        raise ConfigError(f"env.scenario={scenario!r}: needs at least 1 agent and 1 food")
    if (w - 2) ** 2 - n <= 5 * f:
        raise ConfigError(
            f"env.scenario={scenario!r}: {n} agents and {f} food do not fit a {w}x{w} grid "
            f"(need (grid-2)^2 - agents > 5 * food, i.e. {(w - 2) ** 2 - n} > {5 * f})"
        )
    if fov != -1 and not 1 <= fov <= w:
        raise ConfigError(
            f"env.fov={fov} is not allowed for a {w}x{w} grid; allowed: -1 (whole grid) or 1..{w}"
        )
    return LBFScenario(w, n, f, m.group(5) is not None)


def fixed_levels(num_agents: int, seed: int) -> tuple[int, ...]:
    """Persistent agent levels ``1..MAX_AGENT_LEVEL`` drawn once from ``seed`` (same draw as jumanji's)."""
    levels = jax.random.randint(jax.random.PRNGKey(seed), (num_agents,), 1, MAX_AGENT_LEVEL + 1)
    return tuple(int(v) for v in np.asarray(levels))


def _persistent_generator(base_cls, levels: tuple[int, ...]):
    """A jumanji LBF generator whose agents always have ``levels``; food levels follow them as
    jumanji's rule does (force_coop: the sum of the three lowest agent levels; otherwise uniform
    in 1..that sum, drawn with the key jumanji would use)."""

    class PersistentLevels(base_cls):
        def __call__(self, key):
            st = super().__call__(key)
            _, _, key_food_level, _, _ = jax.random.split(key, 5)  # jumanji's split order
            agent_levels = jnp.asarray(levels, st.agents.level.dtype)
            max_food = jnp.sum(jnp.sort(agent_levels)[:3])
            food_levels = jnp.where(
                self.force_coop, jnp.full((self.num_food,), max_food),
                self.sample_levels(max_food, (self.num_food,), key_food_level),
            ).astype(st.food_items.level.dtype)
            return st.replace(  # chex dataclasses
                agents=st.agents.replace(level=agent_levels),
                food_items=st.food_items.replace(level=food_levels),
            )

    return PersistentLevels


def _jumanji_lbf():
    """jumanji's LBF environment and generator classes, imported with IPython's flag hidden.

    Importing ``jumanji.environments`` inside a Jupyter kernel switches matplotlib to the ipympl
    widget backend, which fails where ipympl is not installed (local Jupyter; Colab gets
    ``inline``); psjax draws its own figures and needs none of that.
    """
    import builtins

    ipython_flag = builtins.__dict__.pop("__IPYTHON__", None)
    try:
        from jumanji.environments.routing.lbf import LevelBasedForaging
        from jumanji.environments.routing.lbf.generator import RandomGenerator
    finally:
        if ipython_flag is not None:
            builtins.__IPYTHON__ = ipython_flag
    return LevelBasedForaging, RandomGenerator


def make_lbf(
    scenario: str = "8x8-2p-2f-coop", fov: int = -1, time_limit: int = 0, grid_obs: bool = False,
    persistent_levels: bool = False, levels_seed: int = 0,
) -> Env:
    """jumanji LevelBasedForaging with the vector observer (default) or the grid observer.

    Vector obs ``[N, 3 * (F + N)]`` float32: per food (x, y, level), then self, then the other
    agents, each (-1, -1, 0) when outside the field of view or eaten, all divided by the grid size.
    Grid obs (``grid_obs``) ``[N, V * V * 3]`` with ``V = 2 * fov + 1`` (``fov`` = grid size when
    -1): jumanji's three layers around each agent, channels last and flattened in C order
    (``spec.obs_shape = (V, V, 3)``): agent levels / MAX_AGENT_LEVEL, uneaten food levels /
    (3 * MAX_AGENT_LEVEL), and access (1 on an empty in-grid cell, 0 on agents, food and walls
    beyond the grid); all in [0, 1].
    avail ``[N, 6]`` (jumanji's action mask); state ``[3N + 4F]`` = agent positions [N, 2], agent
    levels [N], food positions [F, 2], food levels [F], food eaten [F], flattened in that order and
    divided by the grid size.
    ``persistent_levels``: agent levels are ``fixed_levels(N, levels_seed)`` in every episode (the
    SePS paper's LBF, where an agent's level is part of its identity); food levels follow them.
    ``terminated`` when all food is eaten (jumanji's LAST step with discount 0), which also
    counts as ``won``; ``truncated`` at the time limit (default 50).
    """
    LevelBasedForaging, RandomGenerator = _jumanji_lbf()

    sc = parse_lbf_scenario(scenario, fov)
    max_steps = time_limit if time_limit > 0 else DEFAULT_TIME_LIMIT
    view = sc.grid_size if fov == -1 else fov
    gen_cls = RandomGenerator
    if persistent_levels:
        gen_cls = _persistent_generator(RandomGenerator, fixed_levels(sc.num_agents, levels_seed))
    generator = gen_cls(
        grid_size=sc.grid_size, fov=view, num_agents=sc.num_agents,
        num_food=sc.num_food, max_agent_level=MAX_AGENT_LEVEL, force_coop=sc.force_coop,
    )
    env = LevelBasedForaging(generator=generator, time_limit=max_steps, grid_observation=grid_obs)
    n, f = sc.num_agents, sc.num_food
    side = 2 * view + 1
    obs_shape = (side, side, 3) if grid_obs else ()
    spec = EnvSpec(
        name="lbf", num_agents=n, obs_dim=side * side * 3 if grid_obs else 3 * (n + f),
        state_dim=3 * n + 4 * f, num_actions=NUM_ACTIONS, max_steps=max_steps, agent_types=(0,) * n,
        team_reward="sum", has_won=True, obs_shape=obs_shape,
    )

    # positions and levels are grid-sized integers: divide by the grid size to keep the
    # networks' inputs (and QMIX's hypernetwork outputs) near unit scale
    scale = float(sc.grid_size)
    layer_scale = jnp.asarray([MAX_AGENT_LEVEL, 3 * MAX_AGENT_LEVEL, 1], jnp.float32)

    def global_state(st):
        parts = (
            st.agents.position, st.agents.level, st.food_items.position, st.food_items.level,
            st.food_items.eaten,
        )
        return jnp.concatenate([jnp.ravel(p).astype(jnp.float32) for p in parts]) / scale

    def observe(view_):
        if grid_obs:  # [N, 3, V, V] -> [N, V, V, 3] -> [N, V*V*3]
            img = jnp.moveaxis(view_.astype(jnp.float32), 1, -1) / layer_scale
            return img.reshape(n, -1)
        return view_.astype(jnp.float32) / scale

    def reset_raw(key):
        with _quiet_observer():
            st, ts = env.reset(key)
        return st, observe(ts.observation.agents_view), global_state(st), ts.observation.action_mask

    def step_raw(key, st, actions):
        del key  # jumanji's LBF step is deterministic
        with _quiet_observer():
            st, ts = env.step(st, actions.astype(jnp.int32))
        last = ts.last()
        terminated = last & jnp.all(ts.discount == 0)
        truncated = last & ~terminated
        return (
            st, observe(ts.observation.agents_view), global_state(st), ts.observation.action_mask,
            ts.reward, terminated, truncated, terminated,
        )

    return make_env_from_raw(spec, reset_raw, step_raw)


def render_lbf(st, ax, grid: int, title: str = "LBF") -> None:
    """Draw one jumanji LBF state on a matplotlib axis: agents as circles and food as squares,
    each labelled with its level (eaten food is not drawn); ``grid`` is the grid size. Rows are
    jumanji's first coordinate, columns its second, as in the grid observation."""
    pos, lev = np.asarray(st.agents.position), np.asarray(st.agents.level)
    fpos, flev, eaten = (np.asarray(st.food_items.position), np.asarray(st.food_items.level),
                         np.asarray(st.food_items.eaten))
    for i in range(pos.shape[0]):
        ax.scatter(pos[i, 1], pos[i, 0], s=300, c="tab:blue", edgecolors="k")
        ax.text(pos[i, 1], pos[i, 0], str(lev[i]), ha="center", va="center", color="w")
    for k in range(fpos.shape[0]):
        if not eaten[k]:
            ax.scatter(fpos[k, 1], fpos[k, 0], s=300, marker="s", c="tab:green", edgecolors="k")
            ax.text(fpos[k, 1], fpos[k, 0], str(flev[k]), ha="center", va="center", color="w")
    from psjax.envs.grid import grid_axes

    grid_axes(ax, grid, grid, title, grid_color="0.8")
