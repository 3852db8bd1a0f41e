"""LBF under lb-foraging's rules (``env.lbf_rules=lbforaging``, semitable/lb-foraging v1.1.1) and the SePS
persistent levels (``env.lbf_seps_levels``, its ``seps`` branch): hand-built states for each rule, then
statistics over 2,000 vmapped resets. Three programs are compiled (a vmapped reset, one step, the SePS reset)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psjax.config import ConfigError, EnvConfig
from psjax.envs import check_env_config, make_env
from psjax.envs.lbf import lbforaging_moves

NOOP, UP, DOWN, LEFT, RIGHT, LOAD = range(6)
GRID, N, F = 10, 3, 3
RESETS = 2000


@functools.cache
def lbforaging():
    """The 10x10-3p-3f task under lb-foraging's rules, its jitted step and 2,000 reset states (numpy)."""
    env = make_env(EnvConfig(name="lbf", scenario="10x10-3p-3f", lbf_rules="lbforaging", time_limit=50))
    states, ts = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), RESETS))
    first = jax.tree.map(lambda x: x[0], states)
    return env, jax.jit(env.step), first, jax.tree.map(np.asarray, (states.env_state, ts))


def build(agents, food):
    """An env state of the 10x10-3p-3f task: ``agents`` [(row, col, level)] * 3, ``food`` [(row, col, level,
    eaten)] * 3."""
    _, _, first, _ = lbforaging()
    st = first.env_state
    st = st.replace(
        agents=st.agents.replace(position=jnp.asarray([a[:2] for a in agents], jnp.int32),
                                 level=jnp.asarray([a[2] for a in agents], jnp.int32)),
        food_items=st.food_items.replace(position=jnp.asarray([f[:2] for f in food], jnp.int32),
                                         level=jnp.asarray([f[2] for f in food], jnp.int32),
                                         eaten=jnp.asarray([f[3] for f in food], bool)),
    )
    return first._replace(env_state=st)


def step(state, actions):
    env, step_fn, _, _ = lbforaging()
    state, ts = step_fn(jax.random.PRNGKey(1), state, jnp.asarray(actions, jnp.int32))
    return state.env_state, ts


FAR_FOOD = [(8, 8, 1, False), (8, 2, 1, False)]  # two foods out of the way (levels count in the normaliser)


# ------------------------------------------------------------------ actions and movement (hand-built)


def test_every_action_available_and_invalid_actions_are_noops():
    _, _, _, (_, ts) = lbforaging()
    assert ts.avail_actions.all()
    # agent 0 in the corner moves off the grid, agent 1 into food, agent 2 loads with no food beside it
    state = build([(0, 0, 1), (4, 3, 1), (6, 6, 1)], [(4, 4, 2, False), *FAR_FOOD])
    st, ts = step(state, [UP, RIGHT, LOAD])
    np.testing.assert_array_equal(st.agents.position, [[0, 0], [4, 3], [6, 6]])
    assert not st.food_items.eaten.any() and np.all(ts.reward == 0) and ts.avail_actions.all()
    # a move onto eaten food is valid
    state = build([(0, 0, 1), (4, 3, 1), (6, 6, 1)], [(4, 4, 2, True), *FAR_FOOD])
    st, _ = step(state, [NOOP, RIGHT, NOOP])
    np.testing.assert_array_equal(st.agents.position[1], [4, 4])


def test_two_agents_moving_into_one_cell_both_stay():
    pos = jnp.asarray([[2, 2], [2, 4], [7, 7]])
    new = lbforaging_moves(pos, jnp.asarray([RIGHT, LEFT, NOOP]), jnp.zeros((1, 2), jnp.int32),
                           jnp.ones((1,), bool), GRID)
    np.testing.assert_array_equal(new, pos)
    # the same through the env's step
    st, _ = step(build([(2, 2, 1), (2, 4, 1), (7, 7, 1)], [(5, 5, 1, False), *FAR_FOOD]), [RIGHT, LEFT, NOOP])
    np.testing.assert_array_equal(st.agents.position, pos)


def test_moves_onto_agents_follow_swap_and_block_as_lbforaging():
    no_food, eaten = jnp.zeros((1, 2), jnp.int32), jnp.ones((1,), bool)

    def moves(pos, act):
        return np.asarray(lbforaging_moves(jnp.asarray(pos), jnp.asarray(act), no_food, eaten, GRID))

    # onto an agent that stays: the cell is claimed twice, the mover stays
    np.testing.assert_array_equal(moves([[2, 2], [2, 3], [7, 7]], [RIGHT, NOOP, NOOP]), [[2, 2], [2, 3], [7, 7]])
    # into a cell its agent leaves in the same step (jumanji refuses this one): both move
    np.testing.assert_array_equal(moves([[2, 2], [2, 3], [7, 7]], [RIGHT, RIGHT, NOOP]), [[2, 3], [2, 4], [7, 7]])
    # a swap goes through
    np.testing.assert_array_equal(moves([[2, 2], [2, 3], [7, 7]], [RIGHT, LEFT, NOOP]), [[2, 3], [2, 2], [7, 7]])
    # a chain into a staying agent: 1 is blocked by 2, and 0 still takes 1's cell (lb-foraging only checks
    # that a target cell is claimed once), so 0 and 1 share it
    np.testing.assert_array_equal(moves([[2, 2], [2, 3], [2, 4]], [RIGHT, RIGHT, LOAD]), [[2, 3], [2, 3], [2, 4]])


# ------------------------------------------------------------------ loading and reward (hand-built)


def test_loading_needs_the_levels_and_splits_the_reward_by_level():
    # agents of levels 1 and 2 on two sides of a level-3 food, the third agent (level 1) loading elsewhere
    food = [(4, 4, 3, False), *FAR_FOOD]
    total = 3 + 1 + 1  # the sum of the spawned food levels normalises rewards
    st, ts = step(build([(3, 4, 1), (4, 5, 2), (0, 0, 1)], food), [LOAD, LOAD, LOAD])
    assert st.food_items.eaten.tolist() == [True, False, False]
    np.testing.assert_allclose(ts.reward, [1 * 3 / (3 * total), 2 * 3 / (3 * total), 0.0], rtol=1e-6)
    # the level-2 agent alone cannot load it; an adjacent agent that does not load adds nothing
    st, ts = step(build([(3, 4, 1), (4, 5, 2), (0, 0, 1)], food), [NOOP, LOAD, NOOP])
    assert not st.food_items.eaten.any() and np.all(ts.reward == 0)
    # an agent stepping next to the food in the same step adds nothing
    st, ts = step(build([(2, 4, 1), (4, 5, 2), (0, 0, 1)], food), [DOWN, LOAD, NOOP])
    assert not st.food_items.eaten.any() and st.agents.position[0].tolist() == [3, 4]


# ------------------------------------------------------------------ spawn statistics (2,000 resets)


def test_food_levels_stay_below_the_sum_of_the_three_lowest_agent_levels():
    _, _, _, (st, _) = lbforaging()
    bound = np.sort(st.agents.level, -1)[:, :3].sum(-1)  # [R]
    assert set(np.unique(st.agents.level)) == {1, 2}
    assert np.all(st.food_items.level >= 1) and np.all(st.food_items.level <= bound[:, None] - 1)
    # the excluded level is the bound itself; every level below it occurs (the largest ones too)
    for b in np.unique(bound):
        assert set(np.unique(st.food_items.level[bound == b])) == set(range(1, b))


def test_food_spacing_and_spawn_cells():
    _, _, _, (st, _) = lbforaging()
    fpos, apos = st.food_items.position, st.agents.position  # [R, F, 2], [R, N, 2]
    assert not st.food_items.eaten.any()  # 3 food always fit a 10x10 grid
    assert np.all((fpos >= 1) & (fpos <= GRID - 2))  # food never on the edge
    d = np.abs(fpos[:, :, None] - fpos[:, None, :])  # [R, F, F, 2]
    cheb, off = d.max(-1), ~np.eye(F, dtype=bool)
    in_line = (d.min(-1) == 0) & (cheb <= 2)
    assert not np.any(((cheb <= 1) | in_line) & off)  # no food in another's 3x3 block nor 2 cells in line
    assert np.any((cheb == 2) & ~in_line & off)  # a knight's move apart is allowed (and happens)
    # agents on distinct cells, never on food, anywhere: on the edge, and in the rows jumanji's generator
    # blanks (those indexed by any food coordinate)
    assert np.all(np.abs(apos[:, :, None] - apos[:, None, :]).max(-1)[:, ~np.eye(N, dtype=bool)] > 0)
    assert not np.any(np.all(apos[:, :, None] == fpos[:, None, :], -1))
    assert np.any((apos == 0) | (apos == GRID - 1))
    blanked = np.any(apos[:, :, 0:1] == fpos.reshape(RESETS, 1, 2 * F), -1)  # [R, N]: row = a food coordinate
    assert blanked.mean() > 0.3


# ------------------------------------------------------------------ SePS persistent levels and options


def test_seps_levels_persist_and_are_hidden_from_observations():
    env = make_env(EnvConfig(name="lbf", scenario="8x8-4p-2f-coop", lbf_rules="lbforaging", lbf_seps_levels=True))
    assert env.spec.agent_types == (0, 1, 2, 0)
    s, ts = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(3), 64))
    assert np.all(np.asarray(s.env_state.agents.level) == [1, 2, 3, 1])
    assert np.all(np.asarray(s.env_state.food_items.level) == 1 + 1 + 2)  # coop: the sum of the three lowest
    obs = np.asarray(ts.obs).reshape(64, 4, 2 + 4, 3)  # per agent: 2 food then 4 agents, (x, y, level) each
    assert np.all(obs[:, :, 2:, 2] == 0)  # every agent level hidden
    assert np.all(obs[:, :, :2, 2] == 4 / 8)  # food levels shown (divided by the grid size)
    assert make_env(EnvConfig(name="lbf", scenario="8x8-4p-2f-coop")).spec.agent_types == (0, 0, 0, 0)


def test_lbf_option_checks():
    with pytest.raises(ConfigError, match="lbf_fixed_levels.*lbf_seps_levels"):
        check_env_config(EnvConfig(name="lbf", lbf_fixed_levels=True, lbf_seps_levels=True))
    from psjax.envs.lbf import check_lbf_options

    with pytest.raises(ConfigError, match="lbf_rules='nope'"):
        check_lbf_options("nope", False, False)
