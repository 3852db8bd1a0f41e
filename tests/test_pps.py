"""PPS (A / RS / PP): aggregated rows equal the hand-computed weighted mean, personal layers are
untouched, RS weights by hand (reward buffer in episodes and in steps), PP-PPS with the RS weights,
nothing happens between intervals, one jitted vmapped program."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from psjax.config import ConfigError, make_config
from psjax.envs.base import EnvSpec
from psjax.learners import make_learner
from psjax.nets.agents import block_params
from psjax.plan import seed_keys
from psjax.sharing.methods import make_scheme
from psjax.sharing.pps import (
    LAYERS,
    episode_returns,
    interval_crossed,
    push_episodes,
    push_rewards,
    reward_weights,
    shared_layers,
)
from psjax.train import make_program, make_train
from psjax.types import Transition

N, T, E = 3, 2, 2
SPEC = EnvSpec("toy", N, obs_dim=4, state_dim=5, num_actions=3, max_steps=10, agent_types=(0, 0, 0),
               team_reward="sum", has_won=False)
SMALL = {"env": "matrix", "q.hidden": 8, "q.rollout_len": 4, "q.buffer_size": 4, "q.batch_size": 2, "q.num_envs": E}


@functools.cache
def _learner_state():
    """A QMIX learner state whose bank rows, target and Adam moments all differ (the same for every
    PPS variant: they share the layout, so it is built once)."""
    cfg = make_config({**SMALL, "alg": "pps_a"})
    state = make_learner(cfg, SPEC, make_scheme(cfg, SPEC, cfg.q.hidden, 2)).init(jax.random.PRNGKey(0))
    leaves, treedef = jax.tree.flatten(state.opt_state)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    noisy = [jax.random.normal(k, x.shape) if jnp.issubdtype(x.dtype, jnp.floating) else x
             for k, x in zip(keys, leaves)]
    target = jax.tree.map(lambda p: p + 0.5 * jax.random.normal(jax.random.PRNGKey(2), p.shape), state.params)
    return state._replace(opt_state=jax.tree.unflatten(treedef, noisy), target=target)


def _setup(alg, **sharing):
    """Scheme, SharingState and the learner state for PPS variant ``alg`` with interval 10, window 4."""
    cfg = make_config({**SMALL, "alg": alg, "pps_interval": 10, "pps_window": 4, **sharing})
    scheme = make_scheme(cfg, SPEC, cfg.q.hidden, 2)
    return scheme, scheme.init(jax.random.PRNGKey(3)), _learner_state()


def _traj(reward, done=None):
    """A Transition ``[T, E, ...]`` with the given per-agent rewards ``[T, E, N]`` and episode ends
    ``done[T, E]`` (none by default); PPS reads only those."""
    reward = jnp.asarray(reward, jnp.float32)
    t, e, n = reward.shape
    done = jnp.zeros((t, e), bool) if done is None else jnp.asarray(done, bool)
    return Transition(
        obs=jnp.zeros((t, e, n, SPEC.obs_dim)), state=jnp.zeros((t, e, SPEC.state_dim)),
        avail=jnp.ones((t, e, n, SPEC.num_actions), bool), action=jnp.zeros((t, e, n), jnp.int32),
        reward=reward, done=done, terminated=jnp.zeros((t, e), bool), extras={},
    )


def _adam(opt_state) -> optax.ScaleByAdamState:
    return next(x for x in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
                if isinstance(x, optax.ScaleByAdamState))


def _step(scheme, sharing, state, reward, updates, last_updates=0, done=None):
    """One sharing update after the learner moved from ``last_updates`` to ``updates`` gradient steps."""
    sharing = sharing._replace(extra=sharing.extra._replace(last_updates=jnp.int32(last_updates)))
    return scheme.update(sharing, state._replace(updates=jnp.int32(updates)), _traj(reward, done),
                         jax.random.PRNGKey(4), 0, None)


def _hand_mean(x, w):
    return np.tensordot(np.asarray(w, np.float64), np.asarray(x, np.float64), axes=1)


def _by_layer(bank):
    """``{layer: [leaves]}`` of an agent bank."""
    return {name: jax.tree.leaves(block_params(bank, name)) for name in LAYERS}


ZERO_REWARD = np.zeros((T, E, N))


# both episodes end at the rollout's last step: the episode buffer then holds the same sums as the step buffer
ENDS = [[False, False], [True, True]]


@pytest.mark.parametrize(
    ("alg", "reward", "unit", "weights"),
    [
        ("pps_a", [[[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]], "episodes",
         [1 / 3, 1 / 3, 1 / 3]),
        # steps: R = sum over steps of the mean over envs = [0.5, 1.5, 0.0] -> 0.5 / 2, 1.5 / 2, 0
        ("pps_rs", [[[1.0, 1.0, 0.0], [0.0, 2.0, 0.0]], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]], "steps",
         [0.25, 0.75, 0.0]),
        # episodes: the two episodes' returns [1, 1, 0] + [0, 2, 0] = [1, 3, 0] -> 1/4, 3/4, 0
        ("pps_rs", [[[1.0, 1.0, 0.0], [0.0, 2.0, 0.0]], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]], "episodes",
         [0.25, 0.75, 0.0]),
        # negative rewards: R = [-2, 0, 2] shifted by 2 -> [0, 2, 4] / 6
        ("pps_rs", [[[-2.0, 0.0, 2.0], [-2.0, 0.0, 2.0]], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]], "steps",
         [0.0, 1 / 3, 2 / 3]),
    ],
)
def test_aggregated_rows_equal_the_weighted_mean_by_hand(alg, reward, unit, weights):
    scheme, sharing, state = _setup(alg, pps_window_unit=unit)
    sharing2, new, metrics = _step(scheme, sharing, state, reward, updates=12, last_updates=8, done=ENDS)
    assert float(metrics["pps_aggregated"]) == 1.0
    np.testing.assert_allclose(metrics["pps_weight"], weights, atol=1e-6)
    for old, agg in zip(jax.tree.leaves(state.params["agent"]), jax.tree.leaves(new.params["agent"])):
        agg = np.asarray(agg)
        for i in range(1, N):
            np.testing.assert_array_equal(agg[i], agg[0])  # identical rows, bit for bit
        np.testing.assert_allclose(agg[0], _hand_mean(old, weights), rtol=1e-5, atol=1e-6)
    # the mixer, the target and the Adam moments are left alone by default (as the released code)
    jax.tree.map(np.testing.assert_array_equal, new.params["mixer"], state.params["mixer"])
    jax.tree.map(np.testing.assert_array_equal, new.target, state.target)
    jax.tree.map(np.testing.assert_array_equal, new.opt_state, state.opt_state)
    assert float(metrics["pps_dispersion"]) < 1e-5 < float(metrics["pps_dispersion_pre"])
    np.testing.assert_allclose(metrics["pps_dispersion_agent"], np.zeros(N), atol=1e-5)
    assert int(sharing2.extra.last_updates) == 12


@pytest.mark.parametrize(("target", "moments"), [("aggregate", True), ("copy", False), ("keep", True)])
def test_target_and_moments_follow_the_aggregation_when_asked(target, moments):
    scheme, sharing, state = _setup("pps_a", pps_target=target, pps_moments=moments)
    _, new, _ = _step(scheme, sharing, state, ZERO_REWARD, updates=10, last_updates=9)
    w = np.full(N, 1 / N)
    for old_t, new_t, new_p in zip(*(jax.tree.leaves(s["agent"]) for s in (state.target, new.target, new.params))):
        expected = {"keep": np.asarray(old_t), "aggregate": np.broadcast_to(_hand_mean(old_t, w), old_t.shape),
                    "copy": np.asarray(new_p)}[target]
        np.testing.assert_allclose(new_t, expected, rtol=1e-5, atol=1e-6)
    old_adam, new_adam = _adam(state.opt_state), _adam(new.opt_state)
    for name in ("mu", "nu"):
        for old, agg in zip(jax.tree.leaves(getattr(old_adam, name)["agent"]),
                            jax.tree.leaves(getattr(new_adam, name)["agent"])):
            expected = np.broadcast_to(_hand_mean(old, w), old.shape) if moments else np.asarray(old)
            np.testing.assert_allclose(agg, expected, rtol=1e-5, atol=1e-6)
        jax.tree.map(np.testing.assert_array_equal, getattr(new_adam, name)["mixer"], getattr(old_adam, name)["mixer"])
    jax.tree.map(np.testing.assert_array_equal, new.target["mixer"], state.target["mixer"])
    assert int(new_adam.count) == int(old_adam.count)


@pytest.mark.parametrize(
    ("boundary", "personal", "shared"),
    [(2, "front", {"head"}), (2, "back", {"hidden_0", "gru"}), (1, "front", {"gru", "head"})],
)
def test_pp_pps_aggregates_only_the_shared_layers(boundary, personal, shared):
    assert shared_layers("pps_pp", boundary, personal) == shared
    scheme, sharing, state = _setup("pps_pp", pps_pp_boundary=boundary, pps_pp_personal=personal)
    _, new, metrics = _step(scheme, sharing, state, ZERO_REWARD, updates=10, last_updates=0)
    old_layers, new_layers = _by_layer(state.params["agent"]), _by_layer(new.params["agent"])
    for layer in LAYERS:
        for old, agg in zip(old_layers[layer], new_layers[layer]):
            if layer in shared:
                np.testing.assert_allclose(agg, np.broadcast_to(_hand_mean(old, np.full(N, 1 / N)), old.shape),
                                           rtol=1e-5, atol=1e-6)
            else:  # personalised layers: untouched, bit for bit, and still different across agents
                np.testing.assert_array_equal(agg, old)
                assert old.ndim == 2 or not np.allclose(agg[0], agg[1])  # (biases start at zero)
    assert float(metrics["pps_dispersion"]) < 1e-5
    assert float(metrics["pps_dispersion_personal"]) > 0.1


@pytest.mark.parametrize(("weights", "expected"), [("reward", [0.2, 0.0, 0.8]), ("uniform", [1 / 3, 1 / 3, 1 / 3])])
def test_pp_pps_aggregates_with_the_rs_weights_by_default(weights, expected):
    """PP-PPS (paper, section 4.3): the shared part is the RS-weighted mean. Env 0 ends an episode with
    returns [1, 0, 4] at step 0, env 1 carries on; R = [1, 0, 4] -> [0.2, 0, 0.8]. The released code's
    uniform average stays an option."""
    cfg = make_config({**SMALL, "alg": "pps_pp", "pps_interval": 10, "pps_window": 4})
    assert cfg.sharing.pps_pp_weights == "reward" and cfg.sharing.pps_window_unit == "episodes"
    scheme, sharing, state = _setup("pps_pp", **({} if weights == "reward" else {"pps_pp_weights": weights}))
    reward = [[[1.0, 0.0, 4.0], [0.0, 5.0, 0.0]], [[7.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]
    _, new, metrics = _step(scheme, sharing, state, reward, updates=10, done=[[True, False], [False, False]])
    np.testing.assert_allclose(metrics["pps_reward"], [1.0, 0.0, 4.0])
    np.testing.assert_allclose(metrics["pps_weight"], expected, rtol=1e-6)
    old_layers, new_layers = _by_layer(state.params["agent"]), _by_layer(new.params["agent"])
    for old, agg in zip(old_layers["head"], new_layers["head"]):  # the shared Q head
        old = np.asarray(old, np.float64)
        row = sum(w * old[i] for i, w in enumerate(expected))  # the aggregated row, written out
        np.testing.assert_allclose(agg, np.broadcast_to(row, old.shape), rtol=1e-5, atol=1e-6)
    for layer in ("hidden_0", "gru"):  # personal: untouched
        jax.tree.map(np.testing.assert_array_equal, new_layers[layer], old_layers[layer])


def test_reward_weights_by_hand():
    ratio = lambda r: np.asarray(reward_weights(jnp.array(r, jnp.float32), "ratio"))  # noqa: E731
    np.testing.assert_allclose(ratio([1.0, 2.0, 5.0]), [1 / 8, 2 / 8, 5 / 8], rtol=1e-6)
    np.testing.assert_allclose(ratio([-1.0, 1.0, 3.0]), [0.0, 2 / 6, 4 / 6], rtol=1e-6)  # shifted by 1
    np.testing.assert_allclose(ratio([-3.0, -1.0, -2.0]), [0.0, 2 / 3, 1 / 3], rtol=1e-6)  # all negative
    third = np.full(3, 1 / 3)
    # a shared (team) reward gives equal R_i: uniform weights, RS-PPS = A-PPS; also when negative or zero
    for shared in ([2.5, 2.5, 2.5], [-4.0, -4.0, -4.0], [0.0, 0.0, 0.0]):
        np.testing.assert_allclose(ratio(shared), third, rtol=1e-6)
        np.testing.assert_allclose(reward_weights(jnp.array(shared), "softmax"), third, rtol=1e-6)
    soft = np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum()
    np.testing.assert_allclose(reward_weights(jnp.array([0.0, 2.0, 4.0]), "softmax", 2.0), soft, rtol=1e-6)
    np.testing.assert_allclose(reward_weights(jnp.array([-10.0, -8.0, -6.0]), "softmax", 2.0), soft, rtol=1e-6)


def test_reward_buffer_keeps_the_last_window_steps():
    buffer = jnp.zeros((3, 2))
    first = jnp.array([[[1.0, 0.0], [3.0, 0.0]], [[0.0, 2.0], [0.0, 4.0]]])  # [T=2, E=2, N=2]
    buffer = push_rewards(buffer, first)
    np.testing.assert_allclose(buffer, [[0.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    buffer = push_rewards(buffer, jnp.array([[[5.0, 5.0], [5.0, 7.0]], [[1.0, 1.0], [1.0, 1.0]]]))
    np.testing.assert_allclose(buffer, [[0.0, 3.0], [5.0, 6.0], [1.0, 1.0]])  # the oldest steps fell out


def test_episode_returns_and_the_episode_ring_by_hand():
    """T = 3, E = 2, N = 2. Env 0 carries 10 / 0 from the previous rollout, ends at t = 0 and t = 2; env 1
    carries 0 / 20 and ends at t = 1 and t = 2 (two envs end in the same step). In the order they ended:
    (t0, e0) [10 + 1, 0] = [11, 0]; (t1, e1) [0 + 2 + 0, 20 + 0 + 2] = [2, 22]; (t2, e0) [0 + 3, 1 + 3] = [3, 4];
    (t2, e1) [1, 1]. Both envs ended at the last step: nothing carries over."""
    reward = jnp.array([[[1.0, 0.0], [2.0, 0.0]], [[0.0, 1.0], [0.0, 2.0]], [[3.0, 3.0], [1.0, 1.0]]])
    done = jnp.array([[True, False], [False, True], [True, True]])
    returns, running = episode_returns(reward, done, jnp.array([[10.0, 0.0], [0.0, 20.0]]))
    np.testing.assert_allclose(returns[0, 0], [11.0, 0.0])
    np.testing.assert_allclose(returns[1, 1], [2.0, 22.0])
    np.testing.assert_allclose(returns[2], [[3.0, 4.0], [1.0, 1.0]])
    np.testing.assert_allclose(returns[1, 0], [0.0, 1.0])  # env 0's episode under way at t = 1
    np.testing.assert_allclose(running, np.zeros((2, 2)))
    # a ring of W = 5 that already holds 3 episodes: the four go to rows 3, 4, 0, 1
    old = jnp.array([[9.0, 9.0], [8.0, 8.0], [7.0, 7.0], [0.0, 0.0], [0.0, 0.0]])
    ring, count = push_episodes(old, jnp.int32(3), returns, done)
    np.testing.assert_allclose(ring, [[3.0, 4.0], [1.0, 1.0], [7.0, 7.0], [11.0, 0.0], [2.0, 22.0]])
    assert int(count) == 7
    # more episodes than rows (W = 3): only the last three are kept, on distinct rows 1, 2, 0
    ring, count = push_episodes(jnp.zeros((3, 2)), jnp.int32(0), returns, done)
    np.testing.assert_allclose(ring, [[1.0, 1.0], [2.0, 22.0], [3.0, 4.0]])
    assert int(count) == 4
    # an episode that does not end carries its partial return into the next rollout
    _, running = episode_returns(reward[:2], done[:2], jnp.zeros((2, 2)))
    np.testing.assert_allclose(running, [[0.0, 1.0], [0.0, 0.0]])


def test_rs_weights_from_episodes_across_rollouts_by_hand():
    """The scheme's own buffer over three rollouts (T = 2, E = 2, W = 4 episodes), weights by hand.

    rollout 1: env 0 ends [1, 0, 0] at t = 1 (over two steps); env 1 runs on with [0, 2, 0] so far.
    rollout 2: env 1 ends at t = 0 with [0, 2, 0] + [0, 0, 3] = [0, 2, 3]; env 0 ends [0, 0, 1] at t = 0 and
      [2, 0, 0] at t = 1. Buffer: [1, 0, 0], [0, 0, 1], [0, 2, 3], [2, 0, 0]: R = [3, 2, 4] -> [3, 2, 4] / 9.
    rollout 3: both envs end at t = 0, env 0 [0, 6, 0], env 1 [0, 0, 0]: the two oldest fall out;
      R = [0, 2, 3] + [2, 0, 0] + [0, 6, 0] + 0 = [2, 8, 3] -> [2, 8, 3] / 13.
    The step unit on the same rewards sees only the mean over envs of the last 4 steps.
    """
    rollouts = [
        ([[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]], [[False, False], [True, False]]),
        ([[[0.0, 0.0, 1.0], [0.0, 0.0, 3.0]], [[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]], [[True, True], [True, False]]),
        ([[[0.0, 6.0, 0.0], [0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]], [[True, True], [False, False]]),
    ]
    expected = {"episodes": ([3.0, 2.0, 4.0], [2.0, 8.0, 3.0]),
                # steps: per-step means over envs, last 4 steps: rollouts 2 and 3
                "steps": ([1.5, 1.0, 2.0], [1.0, 3.0, 2.0])}
    for unit, (r2, r3) in expected.items():
        scheme, sharing, state = _setup("pps_rs", pps_window_unit=unit)
        got = []
        for reward, done in rollouts:
            sharing, _, metrics = _step(scheme, sharing, state, reward, updates=1, done=done)
            got.append(np.asarray(metrics["pps_reward"]))
        np.testing.assert_allclose(got[1], r2, rtol=1e-6)
        np.testing.assert_allclose(got[2], r3, rtol=1e-6)
        np.testing.assert_allclose(metrics["pps_weight"], np.array(r3) / np.sum(r3), rtol=1e-6)
        if unit == "episodes":
            assert int(metrics["pps_episodes"]) == 4


def test_rs_pps_with_a_team_reward_equals_a_pps():
    reward = np.broadcast_to(np.array([0.0, 1.0])[:, None, None], (T, E, N))  # every agent the same reward
    out = {}
    for alg in ("pps_a", "pps_rs"):
        scheme, sharing, state = _setup(alg)
        out[alg] = _step(scheme, sharing, state, reward, updates=10, last_updates=0, done=ENDS)[1].params["agent"]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), out["pps_a"], out["pps_rs"])


def test_nothing_is_aggregated_between_intervals():
    scheme, sharing, state = _setup("pps_a")  # interval 10
    flags = []
    updates = 0
    for _ in range(8):  # the learner does 4 gradient steps per iteration: 4, 8, 12, ...
        before = state
        sharing, state, metrics = _step(scheme, sharing, state, ZERO_REWARD, updates + 4, updates)
        updates += 4
        flags.append(int(metrics["pps_aggregated"]))
        if not flags[-1]:
            jax.tree.map(np.testing.assert_array_equal, state.params, before.params)
            jax.tree.map(np.testing.assert_array_equal, state.opt_state, before.opt_state)
            assert float(metrics["pps_dispersion"]) == float(metrics["pps_dispersion_pre"])
        # move the rows apart again, as the gradient steps between aggregations do
        state = state._replace(params={**state.params, "agent": jax.tree.map(
            lambda p: p + 0.01 * jnp.arange(N, dtype=p.dtype).reshape(-1, *[1] * (p.ndim - 1)), state.params["agent"])})
    assert flags == [0, 0, 1, 0, 1, 0, 0, 1]  # crossed 10 at 12, 20 at 20, 30 at 32
    assert not bool(interval_crossed(jnp.int32(0), jnp.int32(9), 10))
    assert bool(interval_crossed(jnp.int32(9), jnp.int32(10), 10))
    assert not bool(interval_crossed(jnp.int32(10), jnp.int32(19), 10))
    assert bool(interval_crossed(jnp.int32(8), jnp.int32(31), 10))  # several multiples: one aggregation


def test_config_rules():
    assert make_config({"alg": "pps_rs"}).learner_name == "qmix"
    assert make_config({"alg": "pps_a", "learner": "iql"}).learner_name == "iql"
    cfg = make_config({"alg": "pps_pp", "pps_interval": 7, "pps_window": 5, "pps_pp_personal": "back"})
    assert (cfg.sharing.pps_interval, cfg.sharing.pps_window, cfg.sharing.pps_pp_personal) == (7, 5, "back")
    for learner in ("a2c", "ppo"):
        with pytest.raises(ConfigError, match="learner='.*'.*allowed: qmix, vdn, iql"):
            make_config({"alg": "pps_a", "learner": learner})
    with pytest.raises(ConfigError, match="pps_pp_boundary"):
        make_config({"alg": "pps_pp", "pps_pp_boundary": 3})
    with pytest.raises(ConfigError, match="pps_rs_weights"):
        make_config({"alg": "pps_rs", "pps_rs_weights": "max"})
    with pytest.raises(ConfigError, match=r"pps_window_unit='rollouts'.*allowed: 'episodes', 'steps'"):
        make_config({"alg": "pps_rs", "pps_window_unit": "rollouts"})
    preset = make_config(preset="pps_smax")
    assert preset.q.target_tau == 0.05 and preset.sharing.pps_window == 96  # the paper's Table 1
    assert (preset.sharing.pps_window_unit, preset.sharing.pps_pp_weights) == ("episodes", "reward")


TWO_STEP = {
    "env": "matrix", "matrix_game": "two_step", "steps": 12800, "q.num_envs": 16, "q.rollout_len": 8,
    "q.learning_starts": 1000, "q.eps_decay_steps": 8000, "q.buffer_size": 256, "q.target_update_interval": 10,
    "q.updates_per_rollout": 2, "q.lr": 3e-3, "q.hidden": 32, "pps_interval": 10,
}


@pytest.mark.parametrize(("alg", "learner"), [("pps_a", "qmix"), ("pps_rs", "vdn")])
def test_make_train_jits_once_vmaps_and_dispersion_drops_at_aggregation(alg, learner):
    """QMIX's two-step game: aggregation every 5 iterations (2 updates each) in one jitted,
    vmapped program; dispersion is 0 right after and grows in between. Under QMIX, every
    seed's greedy policy still finds the optimum (8)."""
    cfg = make_config({**TWO_STEP, "alg": alg, "learner": learner})
    train = make_train(cfg)
    traces = []

    def counted(key):
        traces.append(1)
        return train(key)

    program = jax.jit(jax.vmap(counted))
    runners, metrics = program(seed_keys(0, 4))
    program(seed_keys(10, 4))
    assert len(traces) == 1
    agg = np.asarray(metrics["pps_aggregated"])  # [S, iterations]
    assert np.array_equal(agg, np.broadcast_to(agg[0], agg.shape)) and agg[0].sum() >= 15
    after, before = np.asarray(metrics["pps_dispersion"]), np.asarray(metrics["pps_dispersion_pre"])
    assert np.all(after[agg == 1] < 1e-5)
    assert np.all(before[agg == 1] > 1e-3)  # the agents had drifted apart since the last aggregation
    assert np.all(after[agg == 0] > 1e-4)  # between aggregations the agents' own updates pull them apart
    assert np.all(after[:, 0] > 0.1)  # independently initialised agents before the first aggregation
    per_agent = np.asarray(metrics["pps_dispersion_agent"])
    np.testing.assert_allclose(per_agent.mean(-1), after, rtol=1e-5)
    assert not np.allclose(jax.tree.leaves(runners.learner.params)[0][0], jax.tree.leaves(runners.learner.params)[0][1])
    if learner == "qmix":
        evaluate = jax.jit(jax.vmap(make_program(cfg, 1).evaluate))
        returns = np.asarray(evaluate(runners, seed_keys(123, 4))["eval_return"])
        np.testing.assert_array_equal(returns, np.full(4, 8.0))
