"""Level-Based Foraging from jumanji, scenarios named ``GRIDxGRID-Np-Mf[-coop]``.

jumanji's LBF step is deterministic and takes no key (its state carries an unused key), so
the step key is ignored; a trajectory is fixed by the reset keys alone. Rewards are per
agent and normalised so that eating all food sums to 1 over agents: team reward is "sum".

Two rule sets (``rules``): ``jumanji`` (its generator and step as they are) and ``lbforaging``
(semitable/lb-foraging v1.1.1, the papers' LBF): its spawn (``_lbforaging_generator``), every action
available with invalid ones as no-ops, and its movement (``lbforaging_moves``) before jumanji's
loading and reward, which agree with lb-foraging's once no cell touches two foods (its spacing).
docs/envs.md lists every rule and every remaining difference.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from psjax.envs.base import Env, EnvSpec, make_env_from_raw
from psjax.fields import ConfigError

DEFAULT_TIME_LIMIT = 50
MAX_AGENT_LEVEL = 2
SEPS_MAX_LEVEL = 3  # lb-foraging's seps branch: agent i has level i % 3 + 1
NUM_ACTIONS = 6  # noop, up, down, left, right, load
RULES = ("jumanji", "lbforaging")
_NOOP, _LOAD = 0, 5
_MOVES = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1], [0, 0]])  # jumanji's and lb-foraging's order
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


def seps_levels(num_agents: int) -> tuple[int, ...]:
    """lb-foraging's ``seps`` branch: agent ``i`` has level ``i % 3 + 1`` in every episode."""
    return tuple(i % 3 + 1 for i in range(num_agents))


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


def _food_blocks(grid: int, row: chex.Array, col: chex.Array) -> chex.Array:
    """``bool[grid, grid]``: the cells where lb-foraging's spawn allows no other food beside a food at
    ``(row, col)``: its 3 x 3 block and the cells 2 away in its row or column (a symmetric rule)."""
    dr = jnp.abs(jnp.arange(grid)[:, None] - row)
    dc = jnp.abs(jnp.arange(grid)[None, :] - col)
    return (jnp.maximum(dr, dc) <= 1) | ((dr == 0) & (dc <= 2)) | ((dc == 0) & (dr <= 2))


def _lbforaging_generator(base_cls, levels: tuple[int, ...] | None):
    """A jumanji LBF generator with lb-foraging v1.1.1's spawn (``ForagingEnv.reset``): agents first, on
    distinct cells anywhere; agent levels ``levels`` or uniform in ``1..MAX_AGENT_LEVEL``; then food, one at
    a time, uniform over the inner cells that hold no agent and no food within ``_food_blocks``; food levels
    the sum ``L`` of the three lowest agent levels (force_coop) or uniform in ``1..L-1`` (``1`` when
    ``L = 1``). A food that finds no free cell is not spawned (eaten from the start, level 0), as
    lb-foraging spawns fewer food when its attempts run out."""

    class LBForagingSpawn(base_cls):
        def __call__(self, key):
            from jumanji.environments.routing.lbf.types import Agent, Food, State

            g, n, f = self.grid_size, self.num_agents, self.num_food
            k_cells, k_level, k_food_level, key = jax.random.split(key, 4)
            # One uniform score per cell; each agent, then each food, takes the free cell of highest score. The
            # scores of the cells left are exchangeable whatever was taken before, so every pick is uniform over
            # the cells free at that point, as lb-foraging's repeated random tries are, for G^2 random numbers
            # in all.
            score = jax.random.uniform(k_cells, (g * g,))
            _, flat = jax.lax.top_k(score, n)
            agent_pos = jnp.stack([flat // g, flat % g], axis=1).astype(jnp.int32)
            if levels is None:
                agent_levels = jax.random.randint(k_level, (n,), 1, MAX_AGENT_LEVEL + 1)
            else:
                agent_levels = jnp.asarray(levels, jnp.int32)
            inner = jnp.zeros((g, g), bool).at[1:-1, 1:-1].set(True).ravel()

            def place_food(free, _):
                cell = jnp.argmax(jnp.where(free, score, -1.0))
                placed = free[cell]
                blocks = _food_blocks(g, cell // g, cell % g).ravel()
                return free & ~(blocks & placed), (jnp.stack([cell // g, cell % g]).astype(jnp.int32), placed)

            free = inner.at[flat].set(False)
            _, (food_pos, placed) = jax.lax.scan(place_food, free, None, length=f, unroll=True)
            top = jnp.sum(jnp.sort(agent_levels)[:3])
            drawn = jax.random.randint(k_food_level, (f,), 1, jnp.maximum(top - 1, 1) + 1)
            food_levels = jnp.where(self.force_coop, top, drawn)
            agents = jax.vmap(Agent)(
                id=jnp.arange(n), position=agent_pos, level=agent_levels, loading=jnp.zeros((n,), bool),
            )
            food_items = jax.vmap(Food)(
                id=jnp.arange(f), position=food_pos, level=jnp.where(placed, food_levels, 0), eaten=~placed,
            )
            return State(key=key, step_count=jnp.array(0, jnp.int32), agents=agents, food_items=food_items)

    return LBForagingSpawn


def lbforaging_moves(position: chex.Array, actions: chex.Array, food_position: chex.Array,
                     food_eaten: chex.Array, grid: int) -> chex.Array:
    """lb-foraging v1.1.1's movement (``ForagingEnv.step``): ``position int[N, 2]``, ``actions int[N]``,
    ``food_position int[F, 2]``, ``food_eaten bool[F]`` -> new ``position int[N, 2]``.

    A move off the grid or onto uneaten food is a no-op (lb-foraging's invalid actions; a move onto an
    agent is valid). Each agent then claims its target cell (its own for no-ops and LOAD); an agent moves
    only when no other agent claims the same cell. So agents may follow one another and swap; and an agent
    that moves onto one whose own move was blocked ends in that agent's cell (two agents share it), as there.
    """
    chex.assert_shape(position, (None, 2))
    target = position + jnp.asarray(_MOVES, position.dtype)[actions]
    inside = jnp.all((target >= 0) & (target < grid), axis=-1)
    on_food = jnp.any(jnp.all(target[:, None] == food_position[None], axis=-1) & ~food_eaten[None], axis=-1)
    target = jnp.where((inside & ~on_food)[:, None], target, position)
    claims = jnp.sum(jnp.all(target[:, None] == target[None], axis=-1), axis=-1)
    return jnp.where((claims == 1)[:, None], target, position)


def check_lbf_options(rules: str, persistent_levels: bool, seps: bool, grid_obs: bool = False,
                      grid_hide_levels: bool = False) -> None:
    """Raise ConfigError for an unknown rule set, two level modes at once, or hidden grid levels without grid
    observations."""
    if rules not in RULES:
        raise ConfigError(f"env.lbf_rules={rules!r} is not allowed; allowed: {', '.join(map(repr, RULES))}")
    if persistent_levels and seps:
        raise ConfigError("env.lbf_fixed_levels and env.lbf_seps_levels both fix the agent levels; choose one")
    if grid_hide_levels and not grid_obs:
        raise ConfigError("env.lbf_grid_hide_levels=true needs env.lbf_grid_obs=true (the vector observation hides "
                          "levels with env.lbf_seps_levels)")


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
    persistent_levels: bool = False, levels_seed: int = 0, rules: str = "jumanji", seps: bool = False,
    grid_hide_levels: bool = False,
) -> Env:
    """jumanji LevelBasedForaging with the vector observer (default) or the grid observer.

    Vector obs ``[N, 3 * (F + N)]`` float32: per food (x, y, level), then self, then the other
    agents, each (-1, -1, 0) when outside the field of view or eaten, all divided by the grid size.
    Grid obs (``grid_obs``) ``[N, V * V * 3]`` with ``V = 2 * fov + 1`` (``fov`` = grid size when
    -1): jumanji's three layers around each agent, channels last and flattened in C order
    (``spec.obs_shape = (V, V, 3)``): agent levels / MAX_AGENT_LEVEL (/ 3 with ``seps``), uneaten food levels /
    (3 * MAX_AGENT_LEVEL), and access (1 on an empty in-grid cell, 0 on agents, food and walls
    beyond the grid); all in [0, 1].
    avail ``[N, 6]``: jumanji's action mask, or all True under ``lbforaging``; state ``[3N + 4F]`` =
    agent positions [N, 2], agent levels [N], food positions [F, 2], food levels [F], food eaten [F],
    flattened in that order and divided by the grid size.
    ``persistent_levels``: agent levels are ``fixed_levels(N, levels_seed)`` in every episode; food
    levels follow them. ``seps``: agent ``i`` has level ``i % 3 + 1`` in every episode and the agent
    levels of the vector observation are 0 (lb-foraging's ``seps`` branch, the SePS / AdaPS papers' LBF;
    food levels, the grid observation and the state keep them). With either, ``spec.agent_types`` are
    the levels minus 1 (the task's kinds); otherwise all 0.
    ``grid_hide_levels`` (grid obs only): the agent layer is 1 where an agent stands, whatever its level, so
    agents whose levels differ see nothing of it (with ``seps``: a task whose kinds are unseen, where image
    agent indication is what tells an agent its kind).
    ``rules``: ``jumanji`` (its spawn and step) or ``lbforaging`` (lb-foraging v1.1.1's spawn, food-level
    bound and movement; every action available, invalid ones no-ops; see the module docstring).
    ``terminated`` when all food is eaten (jumanji's LAST step with discount 0), which also
    counts as ``won``; ``truncated`` at the time limit (default 50).
    """
    LevelBasedForaging, RandomGenerator = _jumanji_lbf()

    sc = parse_lbf_scenario(scenario, fov)
    check_lbf_options(rules, persistent_levels, seps, grid_obs, grid_hide_levels)
    max_steps = time_limit if time_limit > 0 else DEFAULT_TIME_LIMIT
    view = sc.grid_size if fov == -1 else fov
    levels = None
    if persistent_levels:
        levels = fixed_levels(sc.num_agents, levels_seed)
    elif seps:
        levels = seps_levels(sc.num_agents)
    if rules == "lbforaging":
        gen_cls = _lbforaging_generator(RandomGenerator, levels)
    elif levels is not None:
        gen_cls = _persistent_generator(RandomGenerator, levels)
    else:
        gen_cls = RandomGenerator
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
        state_dim=3 * n + 4 * f, num_actions=NUM_ACTIONS, max_steps=max_steps,
        agent_types=(0,) * n if levels is None else tuple(v - 1 for v in levels),
        team_reward="sum", has_won=True, obs_shape=obs_shape,
    )

    # positions and levels are grid-sized integers: divide by the grid size to keep the
    # networks' inputs (and QMIX's hypernetwork outputs) near unit scale
    scale = float(sc.grid_size)
    top_level = SEPS_MAX_LEVEL if seps else MAX_AGENT_LEVEL
    layer_scale = jnp.asarray([top_level, 3 * MAX_AGENT_LEVEL, 1], jnp.float32)
    # the agents' level entries of the vector observation: food (x, y, level) * F, then agents (x, y, level) * N
    hidden = np.zeros(3 * (n + f), bool)
    hidden[3 * f + 2::3] = seps
    all_avail = jnp.ones((n, NUM_ACTIONS), bool)

    def global_state(st):
        parts = (
            st.agents.position, st.agents.level, st.food_items.position, st.food_items.level,
            st.food_items.eaten,
        )
        return jnp.concatenate([jnp.ravel(p).astype(jnp.float32) for p in parts]) / scale

    def observe(view_):
        if grid_obs:  # [N, 3, V, V] -> [N, V, V, 3] -> [N, V*V*3]
            img = jnp.moveaxis(view_.astype(jnp.float32), 1, -1) / layer_scale
            if grid_hide_levels:
                img = img.at[..., 0].set((img[..., 0] > 0).astype(jnp.float32))
            return img.reshape(n, -1)
        return jnp.where(hidden, 0.0, view_.astype(jnp.float32) / scale)

    def avail(ts):
        return all_avail if rules == "lbforaging" else ts.observation.action_mask

    def reset_raw(key):
        with _quiet_observer():
            st, ts = env.reset(key)
        return st, observe(ts.observation.agents_view), global_state(st), avail(ts)

    def step_raw(key, st, actions):
        del key  # jumanji's LBF step is deterministic
        actions = actions.astype(jnp.int32)
        if rules == "lbforaging":  # lb-foraging's movement, then jumanji's step with the moves done (no-ops)
            moved = lbforaging_moves(st.agents.position, actions, st.food_items.position, st.food_items.eaten,
                                     sc.grid_size)
            st = st.replace(agents=st.agents.replace(position=moved))
            actions = jnp.where(actions == _LOAD, _LOAD, _NOOP)
        with _quiet_observer():
            st, ts = env.step(st, actions)
        last = ts.last()
        terminated = last & jnp.all(ts.discount == 0)
        truncated = last & ~terminated
        obs = observe(ts.observation.agents_view)
        return st, obs, global_state(st), avail(ts), ts.reward, terminated, truncated, terminated

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
