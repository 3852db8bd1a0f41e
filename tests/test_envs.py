"""Environment contract: jit + vmap, shapes and dtypes per spec, auto-reset, episode stats,
done alignment, action masks, determinism, and the hand-checkable pieces (payoffs, agent
indication, padding, win flag, LBF termination, config errors).

Compiles are kept few: each environment's vmapped reset and step are jitted once (module
scope) and reused by every test of that environment, including the hand-built states.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psjax import registry
from psjax.config import ConfigError, EnvConfig
from psjax.envs import (
    EnvSpec,
    Padding,
    agent_id_features,
    check_env_config,
    make_env,
    make_env_from_raw,
    pad_raw,
    parse_lbf_scenario,
    reported_return,
)

B = 4  # vmapped environments
T = 36  # rollout steps: at least three episodes at every test time limit below

CONFIGS = {
    "matrix": EnvConfig(name="matrix", matrix_game="climbing"),
    "mpe_spread": EnvConfig(name="mpe_spread", num_agents=3, num_landmarks=3, time_limit=10),
    "speaker_listener": EnvConfig(name="speaker_listener", time_limit=10),
    "lbf": EnvConfig(name="lbf", scenario="8x8-2p-2f-coop", time_limit=12),
    "smax": EnvConfig(name="smax", map="3m", time_limit=12),
}
ENV_NAMES = tuple(CONFIGS)


class Harness:
    """One environment with its jitted, vmapped reset and step (compiled once)."""

    def __init__(self, cfg: EnvConfig):
        self.env = make_env(cfg)
        self.spec = self.env.spec
        self.reset = jax.jit(jax.vmap(self.env.reset))
        self.step = jax.jit(jax.vmap(self.env.step))

    def rollout(self, key, steps=T):
        """Random available actions for ``steps`` steps; returns reset ts and stacked [T, B, ...] trees."""
        key, k_reset = jax.random.split(key)
        s, ts0 = self.reset(jax.random.split(k_reset, B))
        ts, out_ts, out_s, out_a = ts0, [], [], []
        for _ in range(steps):
            key, k_act, k_step = jax.random.split(key, 3)
            a = _sample(k_act, ts.avail_actions)
            s, ts = self.step(jax.random.split(k_step, B), s, a)
            out_ts.append(ts)
            out_s.append(s)
            out_a.append(a)
        stack = lambda xs: jax.tree.map(lambda *x: np.stack(x), *xs)  # noqa: E731
        return ts0, stack(out_ts), stack(out_s), np.stack(out_a)


@jax.jit
def _sample(key, avail):
    """Uniform over available actions, ``avail[B, N, A] -> [B, N]`` int32."""
    return jax.random.categorical(key, jnp.where(avail, 0.0, -jnp.inf)).astype(jnp.int32)


_HARNESSES: dict[str, Harness] = {}
_ROLLOUTS: dict[str, tuple] = {}


def harness(name: str) -> Harness:
    if name not in _HARNESSES:
        _HARNESSES[name] = Harness(CONFIGS[name])
    return _HARNESSES[name]


def rollout(name: str):
    if name not in _ROLLOUTS:
        _ROLLOUTS[name] = harness(name).rollout(jax.random.PRNGKey(7))
    return _ROLLOUTS[name]


def _batch(tree):
    return jax.tree.map(lambda x: jnp.stack([x] * B), tree)


# ---------------------------------------------------------------- generic contract, every env


@pytest.mark.parametrize("name", ENV_NAMES)
def test_shapes_dtypes_match_spec(name):
    spec = harness(name).spec
    ts0, ts, _, _ = rollout(name)
    n, d, s, a = spec.num_agents, spec.obs_dim, spec.state_dim, spec.num_actions
    assert len(spec.agent_types) == n and spec.name == name
    for lead, x in (((B,), ts0), ((T, B), ts)):
        assert x.obs.shape == (*lead, n, d) and x.obs.dtype == np.float32
        assert x.state.shape == (*lead, s) and x.state.dtype == np.float32
        assert x.avail_actions.shape == (*lead, n, a) and x.avail_actions.dtype == np.bool_
        assert x.reward.shape == (*lead, n) and x.reward.dtype == np.float32
        for f in ("terminated", "truncated", "won"):
            assert getattr(x, f).shape == lead and getattr(x, f).dtype == np.bool_
        assert x.episode_return.shape == lead and x.episode_return.dtype == np.float32
        assert x.episode_length.shape == lead and x.episode_length.dtype == np.int32
    assert np.all(np.isfinite(ts.obs)) and np.all(np.isfinite(ts.state)) and np.all(np.isfinite(ts.reward))
    # every agent always has something to do
    assert np.all(ts.avail_actions.any(-1)) and np.all(ts0.avail_actions.any(-1))


@pytest.mark.parametrize("name", ENV_NAMES)
def test_state_types_stable_across_steps(name):
    """reset and step return identically typed states, so jit does not retrace and scan carries fit."""
    env = harness(name).env
    key = jax.random.PRNGKey(0)
    s0, ts0 = jax.eval_shape(env.reset, key)
    s1, ts1 = jax.eval_shape(env.step, key, s0, jnp.zeros((env.spec.num_agents,), jnp.int32))
    assert jax.tree.structure((s0, ts0)) == jax.tree.structure((s1, ts1))
    for x, y in zip(jax.tree.leaves((s0, ts0)), jax.tree.leaves((s1, ts1))):
        assert (x.shape, x.dtype, x.weak_type) == (y.shape, y.dtype, y.weak_type)


@pytest.mark.parametrize("name", ENV_NAMES)
def test_auto_reset_and_episode_statistics(name):
    """Convention: episode_length is 0 after reset, k after the k-th step; on the done step it
    is the ended episode's length (return likewise), and the step after a done reports 1."""
    spec = harness(name).spec
    _, ts, s, _ = rollout(name)
    done = ts.terminated | ts.truncated
    assert not np.any(ts.terminated & ts.truncated)
    assert not np.any(ts.won & ~done)
    # the reported return's convention over agents (env.team_return), not the learners' team reward
    team_r = np.asarray(ts.reward).sum(-1) if reported_return(spec) == "sum" else np.asarray(ts.reward).mean(-1)
    for b in range(B):
        assert done[:, b].sum() >= 3, "every env should finish several episodes in the window"
        length, ret = 0, 0.0
        for t in range(T):
            length += 1
            ret += team_r[t, b]
            assert ts.episode_length[t, b] == length
            np.testing.assert_allclose(ts.episode_return[t, b], ret, rtol=1e-5, atol=1e-5)
            assert length <= spec.max_steps
            if ts.truncated[t, b]:
                assert length == spec.max_steps  # every env here truncates only at its time limit
            if done[t, b]:
                if t + 1 < T:
                    assert ts.episode_length[t + 1, b] == 1
                length, ret = 0, 0.0
    # the carried wrapper state restarts its statistics exactly on done steps
    np.testing.assert_array_equal(s.episode_length == 0, done)
    assert np.all(s.episode_return[done] == 0)


INNER_STEP = {  # the raw env's own step counter inside the wrapper state
    "mpe_spread": lambda s: s.env_state.step,
    "speaker_listener": lambda s: s.env_state.step,
    "lbf": lambda s: s.env_state.step_count,
    "smax": lambda s: s.env_state.state.step,
}


@pytest.mark.parametrize("name", tuple(INNER_STEP))
def test_done_step_carries_fresh_reset(name):
    """On done, the returned state is a fresh episode; otherwise the inner counter tracks the length."""
    _, ts, s, _ = rollout(name)
    inner = np.asarray(INNER_STEP[name](s))
    done = ts.terminated | ts.truncated
    np.testing.assert_array_equal(inner, np.where(done, 0, ts.episode_length))


@pytest.mark.parametrize("name", ENV_NAMES)
def test_determinism(name):
    """Same key -> identical trajectory; another key -> another one (not for the constant matrix game)."""
    h = harness(name)
    _, ts_a, _, _ = rollout(name)
    _, ts_b, _, _ = h.rollout(jax.random.PRNGKey(7))
    for x, y in zip(jax.tree.leaves(ts_a), jax.tree.leaves(ts_b)):
        np.testing.assert_array_equal(x, y)
    if name != "matrix":
        _, ts_c, _, _ = h.rollout(jax.random.PRNGKey(8), steps=2)
        assert not np.array_equal(ts_a.obs[:2], ts_c.obs)


def test_unbatched_jit_matches_vmapped():
    """Single-env jit equals one lane of the vmapped env (checked on MPE, cheap to compile)."""
    h = harness("mpe_spread")
    keys = jax.random.split(jax.random.PRNGKey(3), B)
    s, ts = h.reset(keys)
    a = jnp.tile(jnp.arange(h.spec.num_agents, dtype=jnp.int32) % h.spec.num_actions, (B, 1))
    s2, ts2 = h.step(keys, s, a)
    s1, _ = jax.jit(h.env.reset)(keys[1])
    _, ts1 = jax.jit(h.env.step)(keys[1], s1, a[1])
    for x, y in zip(jax.tree.leaves(ts1), jax.tree.leaves(ts2)):
        np.testing.assert_allclose(x, y[1], rtol=1e-6)


# ---------------------------------------------------------------- the generic auto-reset helper


def _counter_env(max_steps=3):
    """Toy raw env: obs = steps since reset; terminal when agent 0 plays 1; raw won when agent 1 plays 1."""
    spec = EnvSpec("counter", 2, 1, 1, 2, max_steps, (0, 0), "mean", True)

    def reset_raw(key):
        c = jnp.zeros((), jnp.int32)
        return c, jnp.zeros((2, 1)), jnp.zeros((1,)), jnp.ones((2, 2), bool)

    def step_raw(key, c, actions):
        c = c + 1
        obs = jnp.full((2, 1), c, jnp.float32)
        reward = jnp.array([1.0, 3.0])
        return c, obs, obs[0], jnp.ones((2, 2), bool), reward, actions[0] == 1, False, actions[1] == 1

    return make_env_from_raw(spec, reset_raw, step_raw)


def test_make_env_from_raw_semantics():
    env = _counter_env(max_steps=3)
    step = jax.jit(env.step)
    key = jax.random.PRNGKey(0)
    s, ts = jax.jit(env.reset)(key)
    assert ts.episode_length == 0 and ts.episode_return == 0 and not ts.done

    rows = []
    for acts in ([0, 1], [1, 1], [0, 0], [0, 0], [0, 0], [0, 0], [0, 0], [1, 0]):
        s, ts = step(key, s, jnp.array(acts))
        rows.append((float(ts.obs[0, 0]), int(ts.episode_length), float(ts.episode_return),
                     bool(ts.terminated), bool(ts.truncated), bool(ts.won)))
    assert rows == [
        (1.0, 1, 2.0, False, False, False),  # raw won=True but not done: masked
        (0.0, 2, 4.0, True, False, True),  # terminal and won; obs already from the reset
        (1.0, 1, 2.0, False, False, False),
        (2.0, 2, 4.0, False, False, False),
        (0.0, 3, 6.0, False, True, False),  # time limit: truncated, obs from the reset
        (1.0, 1, 2.0, False, False, False),
        (2.0, 2, 4.0, False, False, False),
        (0.0, 3, 6.0, True, False, False),  # terminal at the time limit: terminated, not truncated
    ]
    np.testing.assert_array_equal(ts.reward, [1.0, 3.0])  # reward of the step just taken


# ---------------------------------------------------------------- wrappers


def test_agent_id_features_exact():
    np.testing.assert_array_equal(agent_id_features(3, "onehot"), np.eye(3))
    np.testing.assert_array_equal(agent_id_features(3, "binary"), [[0, 0], [0, 1], [1, 0]])
    np.testing.assert_array_equal(agent_id_features(4, "binary"), [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(agent_id_features(5, "binary")[4], [1, 0, 0])
    np.testing.assert_array_equal(agent_id_features(1, "binary"), [[0]])  # at least one bit
    np.testing.assert_array_equal(agent_id_features(2, "binary"), [[0], [1]])
    assert agent_id_features(3, "none").shape == (3, 0)


@pytest.mark.parametrize(
    "agent_id, alg, expected",
    [
        ("auto", "fups_id", [[1, 1, 0], [1, 0, 1]]),
        ("auto", "fups", [[1], [1]]),
        ("binary", "fups", [[1, 0], [1, 1]]),
        ("none", "fups_id", [[1], [1]]),
    ],
)
def test_agent_indication_on_matrix_obs(agent_id, alg, expected):
    env = make_env(dataclasses.replace(CONFIGS["matrix"], agent_id=agent_id), registry.get(alg).agent_id)
    assert env.spec.obs_dim == len(expected[0])
    _, ts = env.reset(jax.random.PRNGKey(0))  # eager: the matrix env is trivial
    np.testing.assert_array_equal(ts.obs, expected)
    _, ts = env.step(jax.random.PRNGKey(0), _, jnp.array([0, 0]))
    np.testing.assert_array_equal(ts.obs, expected)


def test_padding_exact():
    p = Padding(obs_sizes=(2, 4), action_counts=(3, 5))
    assert (p.obs_dim, p.num_actions) == (4, 5)
    obs = p.pad_obs([jnp.array([7.0, 8.0]), jnp.array([1.0, 2.0, 3.0, 4.0])])
    np.testing.assert_array_equal(obs, [[7, 8, 0, 0], [1, 2, 3, 4]])
    np.testing.assert_array_equal(p.pad_avail(None), [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    avail = p.pad_avail([jnp.array([True, False, True]), jnp.array([False, True, True, True, False])])
    np.testing.assert_array_equal(avail, [[1, 0, 1, 0, 0], [0, 1, 1, 1, 0]])
    np.testing.assert_array_equal(p.clip_actions(jnp.array([4, 4])), [2, 4])

    # through pad_raw: the heterogeneous step sees clipped actions
    def reset_het(key):
        return 0, [jnp.ones(2), jnp.ones(4)], jnp.zeros(1), None

    def step_het(key, st, actions):
        return st, [actions[:1].astype(jnp.float32) + jnp.zeros(2), jnp.ones(4)], jnp.zeros(1), None, \
            jnp.zeros(2), False, False, False

    reset_raw, step_raw = pad_raw(p, reset_het, step_het)
    _, obs, _, avail = reset_raw(None)
    np.testing.assert_array_equal(obs, [[1, 1, 0, 0], [1, 1, 1, 1]])
    _, obs, *_ = step_raw(None, 0, jnp.array([4, 0]))
    np.testing.assert_array_equal(obs[0], [2, 2, 0, 0])


# ---------------------------------------------------------------- matrix


@pytest.mark.parametrize(
    "game, actions, payoffs",
    [
        ("climbing", [[0, 0], [0, 1], [2, 2], [1, 2]], [11, -30, 5, 6]),
        ("penalty", [[0, 0], [1, 1], [0, 2], [2, 0]], [-100, 2, 10, 10]),
    ],
)
def test_matrix_payoffs(game, actions, payoffs):
    cfg = dataclasses.replace(CONFIGS["matrix"], matrix_game=game)
    h = harness("matrix") if game == "climbing" else Harness(cfg)
    keys = jax.random.split(jax.random.PRNGKey(0), B)
    s, _ = h.reset(keys)
    _, ts = h.step(keys, s, jnp.array(actions, jnp.int32))
    np.testing.assert_array_equal(ts.reward, np.repeat(np.array(payoffs, np.float32)[:, None], 2, 1))
    assert np.all(ts.terminated) and not np.any(ts.truncated) and np.all(ts.episode_length == 1)
    np.testing.assert_array_equal(ts.episode_return, payoffs)


# ---------------------------------------------------------------- MPE


def test_mpe_spread_layout():
    spec = harness("mpe_spread").spec
    assert (spec.num_agents, spec.obs_dim, spec.state_dim, spec.num_actions) == (3, 18, 54, 5)
    ts0, ts, _, _ = rollout("mpe_spread")
    np.testing.assert_array_equal(ts.state, ts.obs.reshape(T, B, -1))
    assert np.all(ts.avail_actions) and not np.any(ts.terminated) and not np.any(ts.won)
    # time-limit only: done exactly every max_steps steps (jaxmarl's own flag would give 11)
    done_steps = np.nonzero(ts.truncated[:, 0])[0] + 1
    np.testing.assert_array_equal(done_steps, np.arange(1, T // 10 + 1) * 10)


def test_mpe_spread_configurable_sizes():
    env = make_env(EnvConfig(name="mpe_spread", num_agents=4, num_landmarks=2, time_limit=7))
    assert (env.spec.num_agents, env.spec.obs_dim, env.spec.max_steps) == (4, 4 + 12 + 4, 7)
    _, ts = jax.eval_shape(env.reset, jax.random.PRNGKey(0))  # traces the spec's shape checks
    assert ts.obs.shape == (4, 20) and ts.state.shape == (80,)


def test_speaker_listener_padding_and_masks():
    spec = harness("speaker_listener").spec
    assert (spec.num_agents, spec.obs_dim, spec.state_dim, spec.num_actions) == (2, 11, 14, 5)
    assert spec.agent_types == (0, 1)
    ts0, ts, _, a = rollout("speaker_listener")
    for x in (ts0, ts):
        avail = x.avail_actions.reshape(-1, 2, 5)
        assert np.all(avail[:, 0, :3]) and not np.any(avail[:, 0, 3:]) and np.all(avail[:, 1])
        obs = x.obs.reshape(-1, 2, 11)
        assert np.all(obs[:, 0, 3:] == 0)  # speaker's padding
        goal = obs[:, 0, :3]  # goal colour: one 0.65, two 0.15
        expected_goal = np.broadcast_to([0.15, 0.15, 0.65], goal.shape)
        np.testing.assert_allclose(np.sort(goal, -1), expected_goal, rtol=1e-6)
        np.testing.assert_array_equal(x.state.reshape(-1, 14), np.concatenate([obs[:, 0, :3], obs[:, 1]], -1))
    assert np.all(a[..., 0] < 3)  # masked actions are never sampled
    assert not np.any(ts.terminated)


# ---------------------------------------------------------------- LBF


def test_lbf_layout_and_global_state():
    spec = harness("lbf").spec
    assert (spec.num_agents, spec.obs_dim, spec.state_dim, spec.num_actions) == (2, 12, 14, 6)
    assert spec.team_reward == "sum" and spec.max_steps == 12
    ts0, _, _, _ = rollout("lbf")
    n, f = 2, 2
    grid = parse_lbf_scenario(CONFIGS["lbf"].scenario, -1).grid_size
    st = np.rint(np.asarray(ts0.state) * grid)  # state and obs are divided by the grid size
    agent_pos = st[:, : 2 * n].reshape(B, n, 2)
    agent_lvl = st[:, 2 * n : 3 * n]
    food_lvl = st[:, 3 * n + 2 * f : 3 * n + 3 * f]
    assert np.all(st[:, 3 * n + 3 * f :] == 0)  # nothing eaten at reset
    assert np.all(np.isin(agent_lvl, [1, 2]))
    coop_lvl = np.broadcast_to(agent_lvl.sum(-1, keepdims=True), food_lvl.shape)  # force_coop
    np.testing.assert_array_equal(food_lvl, coop_lvl)
    # whole-grid view: each agent's own (x, y, level) sits right after the food block
    own = np.rint(np.asarray(ts0.obs[:, :, 3 * f : 3 * f + 3]) * grid)
    np.testing.assert_array_equal(own, np.concatenate([agent_pos, agent_lvl[..., None]], -1))


def test_lbf_all_food_eaten_terminates():
    h = harness("lbf")
    keys = jax.random.split(jax.random.PRNGKey(1), B)
    s, _ = h.reset(keys)
    st = s.env_state
    # food 0 between the two agents, food 1 already eaten; loading together eats it
    agents = st.agents.replace(position=jnp.tile(jnp.array([[2, 3], [4, 3]], jnp.int32), (B, 1, 1)))
    food = st.food_items.replace(
        position=jnp.tile(jnp.array([[3, 3], [6, 6]], jnp.int32), (B, 1, 1)),
        eaten=jnp.tile(jnp.array([False, True]), (B, 1)),
    )
    s = s._replace(env_state=st.replace(agents=agents, food_items=food))
    _, ts = h.step(keys, s, jnp.full((B, 2), 5, jnp.int32))
    assert np.all(ts.terminated) and np.all(ts.won) and not np.any(ts.truncated)
    lvl = np.asarray(food.level)
    np.testing.assert_allclose(ts.reward.sum(-1), lvl[:, 0] / lvl.sum(-1), rtol=1e-6)
    np.testing.assert_allclose(ts.episode_return, ts.reward.sum(-1), rtol=1e-6)
    assert np.all(ts.episode_length == 1)


def test_lbf_scenario_parsing():
    assert parse_lbf_scenario("8x8-2p-2f-coop") == (8, 2, 2, True)
    assert parse_lbf_scenario("10x10-3p-3f") == (10, 3, 3, False)
    assert parse_lbf_scenario("15x15-4p-5f") == (15, 4, 5, False)
    for bad in ("8x8-2p", "8x8-2p-2f-co", "eight", "8x9-2p-2f", "4x4-1p-1f", "6x6-2p-4f", "8x8-0p-2f"):
        with pytest.raises(ConfigError, match="GRIDxGRID|grid|agent") as e:
            parse_lbf_scenario(bad)
        assert repr(bad) in str(e.value)
    with pytest.raises(ConfigError, match="env.fov=9"):
        parse_lbf_scenario("8x8-2p-2f", fov=9)


def test_lbf_default_time_limit():
    assert make_env(EnvConfig(name="lbf", scenario="10x10-3p-3f")).spec.max_steps == 50


# ---------------------------------------------------------------- SMAX


def test_smax_layout():
    spec = harness("smax").spec
    assert (spec.num_agents, spec.obs_dim, spec.state_dim, spec.num_actions) == (3, 75, 72, 8)
    assert spec.agent_types == (0, 0, 0) and spec.has_won and spec.max_steps == 12


def test_smax_dead_agents_can_only_stop():
    _, ts, s, _ = rollout("smax")
    alive = np.asarray(s.env_state.state.unit_alive)[..., :3]  # allies first
    stop_only = np.eye(8, dtype=bool)[4]
    assert np.all(ts.avail_actions[~alive] == stop_only)
    # a hand-killed ally, with the battle still on
    h = harness("smax")
    keys = jax.random.split(jax.random.PRNGKey(2), B)
    s, _ = h.reset(keys)
    inner = s.env_state.state
    health = inner.unit_health.at[:, 0].set(0.0)
    s = s._replace(env_state=s.env_state.replace(state=inner.replace(unit_health=health)))
    _, ts = h.step(keys, s, jnp.full((B, 3), 4, jnp.int32))
    assert not np.any(ts.done)
    np.testing.assert_array_equal(ts.avail_actions[:, 0], np.broadcast_to(stop_only, (B, 8)))
    assert np.all(ts.avail_actions[:, 1:, :4])  # living allies can move


@pytest.mark.parametrize("who_dies, won", [("enemies", True), ("allies", False)])
def test_smax_win_flag(who_dies, won):
    h = harness("smax")
    keys = jax.random.split(jax.random.PRNGKey(3), B)
    s, _ = h.reset(keys)
    inner = s.env_state.state
    dead = slice(3, None) if who_dies == "enemies" else slice(0, 3)
    health = inner.unit_health.at[:, dead].set(0.0)
    s = s._replace(env_state=s.env_state.replace(state=inner.replace(unit_health=health)))
    s2, ts = h.step(keys, s, jnp.full((B, 3), 4, jnp.int32))
    assert np.all(ts.terminated) and not np.any(ts.truncated)
    np.testing.assert_array_equal(ts.won, np.full(B, won))
    assert np.all(ts.episode_length == 1)
    if won:  # jaxmarl's win bonus (1.0) arrives on the done step itself
        assert np.all(ts.reward >= 1.0)
    assert np.all(s2.env_state.state.unit_alive)  # the next episode has begun
    assert np.all(ts.avail_actions[:, :, :4])


def test_smax_unknown_map_lists_known_maps():
    with pytest.raises(ConfigError, match=r"'4m'.*3m.*2s3z"):
        check_env_config(EnvConfig(name="smax", map="4m"))


# ---------------------------------------------------------------- config checks


@pytest.mark.parametrize(
    "cfg, pattern",
    [
        (EnvConfig(name="nope"), r"env.name='nope'.*'lbf'"),
        (EnvConfig(name="lbf", scenario="8x8-2p"), r"'8x8-2p'.*GRIDxGRID-Np-Mf"),
        (EnvConfig(name="lbf", scenario="6x6-3p-4f"), r"'6x6-3p-4f'.*do not fit"),
        (EnvConfig(name="lbf", fov=0), r"env.fov=0.*allowed"),
        (EnvConfig(name="matrix", matrix_game="prisoners"), r"'prisoners'.*'climbing'.*'penalty'"),
        (EnvConfig(agent_id="unary"), r"'unary'.*'onehot'"),
        (EnvConfig(name="mpe_spread", num_agents=0), r"num_agents=0"),
    ],
)
def test_check_env_config_names_bad_value(cfg, pattern):
    with pytest.raises(ConfigError, match=pattern):
        check_env_config(cfg)


def test_check_env_config_accepts_defaults():
    for cfg in (*CONFIGS.values(), EnvConfig(), EnvConfig(name="lbf", scenario="15x15-4p-5f", fov=2)):
        check_env_config(cfg)


def test_lbf_imports_jumanji_without_touching_a_jupyter_backend():
    # jumanji.environments calls IPython's %matplotlib magic at import when builtins.__IPYTHON__ is set;
    # outside a kernel get_ipython() is None, so that call raises: a fresh interpreter with the flag set
    # builds an LBF env only if psjax hides the flag during the import, and the flag survives it.
    script = (
        "import builtins; builtins.__IPYTHON__ = True\n"
        "from psjax.config import EnvConfig\n"
        "from psjax.envs import make_env\n"
        "make_env(EnvConfig(name='lbf'))\n"
        "assert builtins.__IPYTHON__ is True\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=300)


def test_team_return_convention_scales_the_reported_return_only():
    """env.team_return: auto = the env's papers' convention (PAPER_TEAM_RETURN, every env named); on MPE spread
    the sum over agents, exactly N x the mean, on the same keys and actions; the learners' team reward unchanged."""
    from psjax.schema import ENVS, PAPER_TEAM_RETURN

    assert set(PAPER_TEAM_RETURN) == set(ENVS) and set(PAPER_TEAM_RETURN.values()) == {"sum", "mean"}
    base = CONFIGS["mpe_spread"]
    envs = {c: make_env(dataclasses.replace(base, team_return=c)) for c in ("auto", "sum", "mean")}
    assert [reported_return(e.spec) for e in envs.values()] == ["sum", "sum", "mean"]
    assert {e.spec.team_reward for e in envs.values()} == {"mean"}  # QMIX's target as before
    returns = {}
    for name, env in envs.items():
        key = jax.random.PRNGKey(3)
        s, ts = env.reset(key)
        out = []
        for t in range(12):  # past the time limit of 10: a reset in between
            s, ts = env.step(jax.random.fold_in(key, t), s, jnp.array([t % 5, (t + 1) % 5, 2]))
            out.append(float(ts.episode_return))
        returns[name] = np.array(out)
    assert returns["mean"].min() < 0
    np.testing.assert_allclose(returns["sum"], 3 * returns["mean"], rtol=1e-5)
    np.testing.assert_array_equal(returns["auto"], returns["sum"])


def test_run_folders_written_before_team_return_keep_their_convention(tmp_path):
    """A config.yaml without env.team_return (written before it) loads as what it reported: the mean on MPE / BPS,
    auto where that was already the papers' (LBF, SMAX), so resume= neither changes a run's figures nor refuses it."""
    import yaml

    from psjax.config import load_run_config, make_config, to_dict

    for env, want in [("mpe_spread", "mean"), ("bps", "mean"), ("lbf", "auto"), ("smax", "auto")]:
        data = to_dict(make_config({"env": env, "alg": "fups"}))
        del data["env"]["team_return"]
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
        assert load_run_config(tmp_path).env.team_return == want, env
