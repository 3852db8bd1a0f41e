"""The papers' own environments: blind-particle spread, coloured warehouse, LBF variants (persistent
levels, grid observations) and image agent indication.

Contract checks (shapes, determinism, auto-reset) run on one jitted, vmapped rollout per
environment; hand-built states go through the same compiled step functions.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psjax.config import ConfigError, EnvConfig
from psjax.envs import AutoResetState, check_env_config, make_env, num_agents
from psjax.envs.bps import BPSState, bps_reward
from psjax.envs.lbf import MAX_AGENT_LEVEL, fixed_levels
from psjax.envs.wrappers import image_indication, indication_channels

B, T = 3, 14

CONFIGS = {
    "bps": EnvConfig(name="bps", agents_per_colour="2,1", time_limit=5),
    "crware": EnvConfig(name="crware", variant="mini", time_limit=5),
    "lbf_grid": EnvConfig(name="lbf", scenario="6x6-3p-1f", fov=1, time_limit=5, lbf_grid_obs=True,
                          lbf_fixed_levels=True, lbf_levels_seed=1),
}


class Harness:
    def __init__(self, cfg: EnvConfig):
        self.env = make_env(cfg)
        self.spec = self.env.spec
        self.reset = jax.jit(jax.vmap(self.env.reset))
        self.step = jax.jit(jax.vmap(self.env.step))

    def rollout(self, key):
        key, k0 = jax.random.split(key)
        s, ts0 = self.reset(jax.random.split(k0, B))
        out_ts, out_s = [], []
        ts = ts0
        for _ in range(T):
            key, k_a, k_s = jax.random.split(key, 3)
            a = jax.random.categorical(k_a, jnp.where(ts.avail_actions, 0.0, -jnp.inf)).astype(jnp.int32)
            s, ts = self.step(jax.random.split(k_s, B), s, a)
            out_ts.append(ts)
            out_s.append(s)
        stack = lambda xs: jax.tree.map(lambda *x: np.stack(x), *xs)  # noqa: E731
        return ts0, stack(out_ts), stack(out_s)


_H: dict[str, Harness] = {}
_R: dict[str, tuple] = {}


def harness(name):
    if name not in _H:
        _H[name] = Harness(CONFIGS[name])
    return _H[name]


def rollout(name):
    if name not in _R:
        _R[name] = harness(name).rollout(jax.random.PRNGKey(3))
    return _R[name]


def one_step(name, env_state, actions):
    """Step one hand-built raw state through the compiled vmapped step (batch of B copies)."""
    h = harness(name)
    batch = lambda x: jnp.stack([jnp.asarray(x)] * B)  # noqa: E731
    ws = AutoResetState(jax.tree.map(batch, env_state), jnp.zeros((B,), jnp.float32), jnp.zeros((B,), jnp.int32))
    s, ts = h.step(jax.random.split(jax.random.PRNGKey(0), B), ws, batch(jnp.asarray(actions, jnp.int32)))
    return jax.tree.map(lambda x: np.asarray(x[0]), s.env_state), jax.tree.map(lambda x: np.asarray(x[0]), ts)


# ------------------------------------------------------------------ contract, every new env


@pytest.mark.parametrize("name", tuple(CONFIGS))
def test_shapes_determinism_autoreset(name):
    spec = harness(name).spec
    ts0, ts, _ = rollout(name)
    n, d, a = spec.num_agents, spec.obs_dim, spec.num_actions
    assert ts.obs.shape == (T, B, n, d) and ts.obs.dtype == np.float32
    assert ts.state.shape == (T, B, spec.state_dim) and ts.avail_actions.shape == (T, B, n, a)
    assert ts.reward.shape == (T, B, n) and ts0.obs.shape == (B, n, d)
    assert len(spec.agent_types) == n and np.all(np.isfinite(ts.obs)) and np.all(ts.avail_actions.any(-1))
    if spec.obs_shape:
        assert int(np.prod(spec.obs_shape)) == d
    # auto-reset: an episode ends at the time limit 5 (or, in LBF, when the food is eaten) and the
    # counter restarts on the next step
    done = ts.terminated | ts.truncated
    length = ts.episode_length
    assert np.all(length[0] == 1)
    assert np.all(length[1:] == np.where(done[:-1], 1, length[:-1] + 1))
    assert np.all(ts.truncated == ((length == 5) & ~ts.terminated)) and np.all(length <= 5)
    assert done.sum() >= 2 * B
    if spec.name != "lbf":
        assert not ts.terminated.any()
    # determinism: the same keys give the same trajectory, other keys another
    _, ts_again, _ = harness(name).rollout(jax.random.PRNGKey(3))
    np.testing.assert_array_equal(ts.obs, ts_again.obs)
    np.testing.assert_array_equal(ts.reward, ts_again.reward)
    _, ts_other, _ = harness(name).rollout(jax.random.PRNGKey(4))
    assert not np.array_equal(ts.obs, ts_other.obs)


def test_config_errors_and_num_agents():
    assert num_agents(EnvConfig(name="bps", variant="30a5c")) == 30
    assert num_agents(EnvConfig(name="bps", num_agents=7, num_colours=3)) == 7
    assert num_agents(EnvConfig(name="crware", variant="tiny")) == 4
    assert num_agents(EnvConfig(name="crware", variant="medium")) == 16
    assert num_agents(EnvConfig(name="crware", agents_per_colour="2,1")) == 3
    for cfg, words in (
        (EnvConfig(name="bps", variant="nope"), ("'nope'", "'15a3c'")),
        (EnvConfig(name="bps", agents_per_colour="5,x"), ("'5,x'",)),
        (EnvConfig(name="bps", num_agents=2, num_colours=3), ("num_agents=2",)),
        (EnvConfig(name="crware", variant="huge"), ("'huge'", "'mini'", "'medium'")),
        # mini has 8 shelves: 4 + 4 robots on easy would request 16 of them
        (EnvConfig(name="crware", variant="mini", agents_per_colour="4,4", crware_difficulty="easy"),
         ("'4,4'", "shelves")),
        (EnvConfig(name="lbf", image_indication="inversion"), ("'inversion'", "lbf_grid_obs")),
        (EnvConfig(name="lbf", lbf_grid_hide_levels=True), ("lbf_grid_hide_levels", "lbf_grid_obs")),
    ):
        with pytest.raises(ConfigError) as err:
            check_env_config(cfg)
        assert all(w in str(err.value) for w in words), str(err.value)


# ------------------------------------------------------------------ BPS


def test_bps_reward_own_colour_only():
    landmarks = jnp.asarray([[0.5, 0.5], [-0.5, -0.5]])
    colours = jnp.asarray([0, 0, 1])
    pos = jnp.asarray([[0.5, 0.5], [-0.5, -0.5], [-0.5, -0.5]])  # own, other colour's, own
    # the reference's local_ratio 0.5 times minus the distance to the own colour's landmark
    np.testing.assert_allclose(bps_reward(colours, pos, landmarks), [0.0, -0.5 * np.sqrt(2.0), 0.0], atol=1e-6)
    # through the env's step: agents standing still (noop, zero velocity) keep these rewards
    st = BPSState(pos=pos, vel=jnp.zeros((3, 2)), landmarks=landmarks)
    _, ts = one_step("bps", st, [0, 0, 0])
    np.testing.assert_allclose(ts.reward, [0.0, -0.5 * np.sqrt(2.0), 0.0], atol=1e-6)
    assert harness("bps").spec.agent_types == (0, 0, 1)


def test_bps_hides_colours():
    """Two colour splits of the same three agents: identical observations, different rewards."""
    other = make_env(EnvConfig(name="bps", agents_per_colour="1,2", time_limit=5))
    keys = jax.random.split(jax.random.PRNGKey(11), B)
    s1, ts1 = harness("bps").reset(keys)
    s2, ts2 = jax.jit(jax.vmap(other.reset))(keys)
    np.testing.assert_array_equal(ts1.obs, ts2.obs)
    a = jnp.asarray([[1, 2, 3]] * B)
    _, ts1 = harness("bps").step(keys, s1, a)
    _, ts2 = jax.jit(jax.vmap(other.step))(keys, s2, a)
    ts1, ts2 = jax.tree.map(lambda x: x[0], ts1), jax.tree.map(lambda x: x[0], ts2)
    np.testing.assert_array_equal(ts1.obs, ts2.obs)
    assert not np.allclose(ts1.reward[1], ts2.reward[1])  # agent 1 changes colour
    np.testing.assert_allclose(ts1.reward[0], ts2.reward[0])


# ------------------------------------------------------------------ C-RWARE
# The rules against the reference (semitable/robotic-warehouse, branch color) are tested with hand-built states
# in tests/test_crware_reference.py. The tests that stood here encoded psjax's earlier C-RWARE (own-colour loading,
# a sixth "backward" action for odd colours, fixed shelf colours, per-colour requests, the lower-index collision
# rule), which the reference does not have; what remains here is random play on mini.


def test_crware_random_play_keeps_robots_apart():
    spec = harness("crware").spec
    assert spec.num_actions == 5 and spec.agent_types == (0, 1) and spec.obs_dim == 44
    ts0, ts, s = rollout("crware")
    assert ts.avail_actions.all() and ts0.avail_actions.all()
    p = s.env_state.pos  # [T, B, N, 2]
    assert not np.any(np.all(p[:, :, 0] == p[:, :, 1], -1))
    # a carried shelf travels with its robot
    st = s.env_state
    carried = st.carrying >= 0  # [T, B, N]
    shelf_at = np.take_along_axis(st.shelf_pos, np.maximum(st.carrying, 0)[..., None], axis=2)  # [T, B, N, 2]
    assert np.all(np.where(carried[..., None], shelf_at == p, True))


# ------------------------------------------------------------------ LBF variants


def test_lbf_levels_persist_across_resets():
    _, _, s = rollout("lbf_grid")  # 14 steps, time limit 5: three episodes per env
    levels = s.env_state.agents.level  # [T, B, N]
    want = fixed_levels(3, 1)
    assert len(set(want)) > 1, "seed 1 should give distinct levels, or the check below proves little"
    assert np.all(levels == np.asarray(want))
    # food is force-coop-free here: its level stays within the sum of the three lowest agent levels
    assert np.all(s.env_state.food_items.level <= sum(sorted(want)[:3]))
    # without persistence, levels change between resets
    free = make_env(EnvConfig(name="lbf", scenario="6x6-3p-1f", fov=1, lbf_grid_obs=True))
    free_state, _ = jax.jit(jax.vmap(free.reset))(jax.random.split(jax.random.PRNGKey(0), 6))
    drawn = np.asarray(free_state.env_state.agents.level)
    assert len({tuple(r) for r in drawn}) > 1


def test_lbf_grid_observation_layers():
    spec = harness("lbf_grid").spec
    assert spec.obs_shape == (3, 3, 3)
    _, ts, s = rollout("lbf_grid")
    st = jax.tree.map(lambda x: x[0, 0], s.env_state)
    img = ts.obs[0, 0].reshape(3, 3, 3, 3)  # [N, V, V, C]
    pos, lev = st.agents.position, st.agents.level
    for i in range(3):
        assert img[i, 1, 1, 0] == lev[i] / MAX_AGENT_LEVEL  # self at the centre of the agents layer
        assert img[i, 1, 1, 2] == 0.0  # own cell not accessible
        for j in range(3):  # other agents in view appear at their offset
            dx, dy = pos[j] - pos[i]
            if abs(dx) <= 1 and abs(dy) <= 1:
                assert img[i, 1 + dx, 1 + dy, 0] == lev[j] / MAX_AGENT_LEVEL
        for k, (fx, fy) in enumerate(st.food_items.position):
            dx, dy = fx - pos[i][0], fy - pos[i][1]
            if abs(dx) <= 1 and abs(dy) <= 1 and not st.food_items.eaten[k]:
                assert img[i, 1 + dx, 1 + dy, 1] == st.food_items.level[k] / (3 * MAX_AGENT_LEVEL)
        if pos[i][0] == 0:  # beyond the top wall: not accessible
            assert np.all(img[i, 0, :, 2] == 0.0)
    assert img.min() >= 0.0 and img.max() <= 1.0


def test_lbf_grid_hide_levels_marks_agents_only():
    """The image indication task: SePS levels 1, 2 (kinds 0, 1), hidden from the grid's agent layer."""
    cfg = EnvConfig(name="lbf", scenario="6x6-2p-2f", fov=2, lbf_grid_obs=True, lbf_rules="lbforaging",
                    lbf_seps_levels=True)
    shown, hidden = make_env(cfg), make_env(dataclasses.replace(cfg, lbf_grid_hide_levels=True))
    assert hidden.spec.agent_types == (0, 1) and hidden.spec.obs_shape == shown.spec.obs_shape == (5, 5, 3)
    key = jax.random.PRNGKey(3)
    a, b = (np.asarray(env.reset(key)[1].obs).reshape(2, 5, 5, 3) for env in (shown, hidden))
    assert a[0, 2, 2, 0] != a[1, 2, 2, 0]  # levels 1 and 2 tell the agents apart at the centre
    assert b[0, 2, 2, 0] == b[1, 2, 2, 0] == 1.0  # hidden: both see only "an agent here"
    np.testing.assert_array_equal(b[..., 0], (a[..., 0] > 0).astype(np.float32))
    np.testing.assert_array_equal(b[..., 1:], a[..., 1:])  # food and access layers unchanged


# ------------------------------------------------------------------ image agent indication


def test_image_indication_channels():
    img = jnp.asarray(np.array([[[0.0, 0.25], [1.0, 0.5]]] * 3, np.float32))[..., None]  # [3 agents, 2, 2, 1]
    x = np.asarray(img)
    out = {k: np.asarray(image_indication(img, k)) for k in
           ("identity", "geometric", "binary", "inversion", "inversion_replacement")}
    np.testing.assert_array_equal(out["identity"], x)
    board = np.array([[0, 1], [1, 0]], np.float32)
    assert out["geometric"].shape == (3, 2, 2, 2)
    np.testing.assert_array_equal(out["geometric"][..., 0], x[..., 0])
    np.testing.assert_array_equal(out["geometric"][0, ..., 1], board)
    np.testing.assert_array_equal(out["geometric"][1, ..., 1], 1 - board)  # shifted by one pixel
    np.testing.assert_array_equal(out["geometric"][2, ..., 1], board)
    assert out["binary"].shape == (3, 2, 2, 3)  # ceil(log2 3) = 2 extra channels
    for i, bits in enumerate(([0, 0], [0, 1], [1, 0])):
        np.testing.assert_array_equal(out["binary"][i, ..., 1:], np.broadcast_to(bits, (2, 2, 2)))
    assert out["inversion"].shape == (3, 2, 2, 2)
    np.testing.assert_array_equal(out["inversion"][..., 0], x[..., 0])
    np.testing.assert_array_equal(out["inversion"][0, ..., 1], x[0, ..., 0])  # even agents: a copy
    np.testing.assert_array_equal(out["inversion"][1, ..., 1], 1 - x[1, ..., 0])  # odd agents: inverted
    np.testing.assert_array_equal(out["inversion_replacement"][0], x[0])
    np.testing.assert_array_equal(out["inversion_replacement"][1], 1 - x[1])
    for k, v in out.items():
        assert v.shape[-1] == indication_channels(1, 3, k)


def test_image_indication_wrapper_on_lbf():
    cfg = EnvConfig(name="lbf", scenario="6x6-3p-1f", fov=1, lbf_grid_obs=True, image_indication="inversion",
                    agent_id="onehot")
    env = make_env(cfg)
    assert env.spec.obs_shape == (3, 3, 6) and env.spec.obs_dim == 3 * 3 * 6 + 3
    base = make_env(dataclasses.replace(cfg, image_indication="none", agent_id="none"))
    key = jax.random.PRNGKey(2)
    _, ts = jax.jit(env.reset)(key)
    _, ts_base = jax.jit(base.reset)(key)
    img = np.asarray(ts.obs[:, :54]).reshape(3, 3, 3, 6)
    raw = np.asarray(ts_base.obs).reshape(3, 3, 3, 3)
    np.testing.assert_array_equal(img[..., :3], raw)
    np.testing.assert_array_equal(img[1, ..., 3:], 1 - raw[1])
    np.testing.assert_array_equal(np.asarray(ts.obs[:, 54:]), np.eye(3))  # agent ids stay after the image


# ------------------------------------------------------------------ pictures


def test_render_each_env(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from psjax.envs.bps import render_bps
    from psjax.envs.crware import VARIANTS, render_crware
    from psjax.envs.lbf import render_lbf

    pick = lambda name: jax.tree.map(lambda x: x[-1, 0], rollout(name)[2].env_state)  # noqa: E731
    for name, draw in (
        ("bps", lambda ax: render_bps(pick("bps"), (2, 1), ax)),
        ("crware", lambda ax: render_crware(pick("crware"), VARIANTS["mini"], ax)),
        ("lbf", lambda ax: render_lbf(pick("lbf_grid"), ax, 6)),
    ):
        fig, ax = plt.subplots()
        draw(ax)
        fig.savefig(tmp_path / f"{name}.png")
        plt.close(fig)
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


# ------------------------------------------------------------------ conv torso


def test_conv_torso_reads_image_and_extra_features():
    from psjax.nets.agents import MLP, RecurrentNet, block_params, blocks

    shape = (5, 5, 3)
    d = 5 * 5 * 3 + 2  # image + two appended id features
    x = jax.random.uniform(jax.random.PRNGKey(0), (4, d))
    net = MLP(8, 6, obs_shape=shape)
    params = jax.jit(net.init)(jax.random.PRNGKey(1), x[0])
    conv = block_params(params, "conv")
    assert conv["Conv_0"]["kernel"].shape == (3, 3, 3, 16) and conv["Conv_1"]["kernel"].shape == (3, 3, 16, 32)
    assert block_params(params, "hidden_0")["kernel"].shape == (3 * 3 * 32 + 2, 8)  # stride 2: 5x5 -> 3x3
    apply = jax.jit(net.apply)
    out = apply(params, x)
    assert out.shape == (4, 6)
    np.testing.assert_allclose(jax.jit(jax.vmap(apply, (None, 0)))(params, x), out, rtol=1e-5, atol=1e-6)
    assert not np.allclose(apply(params, x.at[:, -1].add(1.0)), out)  # the id features reach the output
    # without an image shape the network is the plain MLP (no conv parameters)
    assert "conv" not in blocks(jax.eval_shape(MLP(8, 6).init, jax.random.PRNGKey(1), x[0])).values()
    q = RecurrentNet(8, 6, obs_shape=shape)
    h0 = jnp.zeros((4, 8))
    qp = jax.jit(q.init)(jax.random.PRNGKey(2), h0[0], x[0])
    h, qs = jax.jit(q.apply)(qp, h0, x)
    assert h.shape == (4, 8) and qs.shape == (4, 6) and "conv" in blocks(qp).values()


@pytest.mark.parametrize("alg,learner", [("fups_id", "qmix"), pytest.param("pps_pp", "qmix", marks=pytest.mark.slow),
                                         pytest.param("nops", "a2c", marks=pytest.mark.slow)])
def test_learners_train_on_image_observations_through_the_conv_torso(alg, learner):
    from psjax.config import make_config
    from psjax.nets.agents import blocks
    from psjax.train import make_parts, make_train

    tiny = {"qmix": {"num_envs": 2, "rollout_len": 8, "hidden": 8, "buffer_size": 4, "batch_size": 2,
                     "learning_starts": 0, "updates_per_rollout": 1},
            "a2c": {"num_envs": 2, "rollout_len": 4, "hidden": 8}}[learner]
    cfg = make_config({"env": "lbf", "lbf_grid_obs": True, "fov": 1, "alg": alg, "learner": learner,
                       "steps": 2 * tiny["num_envs"] * tiny["rollout_len"], **tiny})
    parts = make_parts(cfg)
    assert parts.env.spec.obs_shape  # an image: the networks must read it through their conv torso
    params = parts.learner.params(jax.eval_shape(parts.learner.init, jax.random.PRNGKey(0)))
    bank = params["agent" if learner == "qmix" else "actor"]["params"]
    assert "conv" in blocks(bank).values()
    runner, metrics = jax.jit(make_train(cfg))(jax.random.PRNGKey(0))
    assert all(bool(jnp.isfinite(leaf).all()) for leaf in jax.tree.leaves(runner.learner.params))
    assert int(runner.env_steps) == cfg.num_iterations * cfg.steps_per_iteration
