"""Learner maths against hand computations: targets, returns, masking, mixers, buffer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psjax.learners import replay
from psjax.learners.actor_critic import gae
from psjax.learners.qmix import epsilon_greedy, masked_argmax, sequence_targets, td_targets
from psjax.nets.agents import block_params, module_of
from psjax.nets.mixers import QMixer, VDNMixer


def test_td_targets_cut_at_termination_only():
    r = jnp.array([1.0, 2.0, 3.0])
    done = jnp.array([False, True, False])
    q_next = jnp.array([10.0, 20.0, 30.0])
    np.testing.assert_allclose(td_targets(r, done, done, q_next, 0.9), [1 + 9.0, 2.0, 3 + 27.0])


def test_one_step_targets_bootstrap_through_truncation():
    """Step 1 ends its episode by the time limit: its target still reads the value of the episode's
    last observation (q_next[1] = 20), where a termination would cut it."""
    r = jnp.array([1.0, 2.0, 3.0])
    done = jnp.array([False, True, False])
    terminated = jnp.zeros(3, bool)
    q_next = jnp.array([10.0, 20.0, 30.0])
    np.testing.assert_allclose(td_targets(r, terminated, done, q_next, 0.9), [1 + 9.0, 2 + 18.0, 3 + 27.0])


def test_td_lambda_targets_bootstrap_through_truncation():
    """TD(lambda): a truncation at step 1 bootstraps from its own next value only (the lambda-return
    must not read step 2, which belongs to the next episode)."""
    r = jnp.array([1.0, 2.0, 3.0])
    done = jnp.array([False, True, False])
    terminated = jnp.zeros(3, bool)
    q_next = jnp.array([10.0, 20.0, 30.0])
    g, lam = 0.5, 0.5
    g2 = 3.0 + g * 30.0
    g1 = 2.0 + g * 20.0  # truncated: one-step bootstrap from the last observation's value
    g0 = 1.0 + g * ((1 - lam) * 10.0 + lam * g1)
    np.testing.assert_allclose(td_targets(r, terminated, done, q_next, g, lam), [g0, g1, g2], rtol=1e-6)


def test_sequence_targets_read_final_observation_after_time_limit():
    """T=2, B=1, N=1, A=2. Step 0 ends its episode by the time limit: stored obs 1 is the next
    episode's first observation (q = [100, 100]), but the target must read the final observation's
    utilities (q_final at its slot) with its own availability (action 1 unavailable) and state. Two slots: the
    second is padding (step T = 2) and must change nothing."""
    q = jnp.array([[1.0, 2.0], [100.0, 100.0], [0.0, 0.0]])[:, None, None, :]
    q_final = jnp.array([[3.0, 9.0], [-50.0, 70.0]])[:, None, None, :]  # [K=2, B, N, A]
    seq = {
        "action": jnp.array([[[1]], [[0]]]),
        "reward": jnp.array([[[1.0]], [[2.0]]]),
        "done": jnp.array([[True], [False]]),
        "terminated": jnp.array([[False], [False]]),
        "avail": jnp.ones((3, 1, 1, 2), bool),
        "final_step": jnp.array([[0], [2]]),
        "final_avail": jnp.array([[True, False], [True, True]])[:, None, None, :],
    }
    pred, y = sequence_targets((q, q_final), (q, q_final), seq, gamma=0.5, double_q=True)
    np.testing.assert_allclose(pred[:, 0, 0], [2.0, 100.0])
    np.testing.assert_allclose(y[:, 0, 0], [1.0 + 0.5 * 3.0, 2.0 + 0.0])
    # the same step ended by a termination: no bootstrap at all
    _, y_term = sequence_targets((q, q_final), (q, q_final), {**seq, "terminated": seq["done"]}, 0.5, True)
    np.testing.assert_allclose(y_term[0, 0, 0], 1.0)


def test_sequence_targets_double_q_with_masks_and_alignment():
    """T=2, B=1, N=1, A=3: step 0 bootstraps from obs 1 via the online argmax among available
    actions evaluated by the target; step 1 ends the episode so it does not bootstrap."""
    q = jnp.array([[5.0, 1.0, 2.0], [1.0, 9.0, 3.0], [7.0, 0.0, 0.0]])[:, None, None, :]  # [T+1, B, N, A]
    q_target = jnp.array([[0.0, 0.0, 0.0], [4.0, 6.0, 8.0], [100.0, 100.0, 100.0]])[:, None, None, :]
    seq = {
        "action": jnp.array([[[2]], [[0]]]),
        "reward": jnp.array([[[1.0]], [[2.0]]]),
        "done": jnp.array([[False], [True]]),
        # at obs 1 the online argmax (action 1) is unavailable: the choice falls to action 2 (q=3)
        "avail": jnp.array([[True, True, True], [True, False, True], [True, True, True]])[:, None, None, :],
    }
    seq["terminated"] = seq["done"]
    seq["final_step"] = jnp.array([[2]])  # no truncation: one padded slot
    seq["final_avail"] = jnp.zeros((1, 1, 1, 3), bool)
    q, q_target = (q, -q[:1]), (q_target, -q_target[:1])
    pred, y = sequence_targets(q, q_target, seq, gamma=0.5, double_q=True)
    np.testing.assert_allclose(pred[:, 0, 0], [2.0, 1.0])
    np.testing.assert_allclose(y[:, 0, 0], [1.0 + 0.5 * 8.0, 2.0])
    # without double-Q: max of the target among available actions at obs 1 is 8 as well; change it
    q_target2 = (q_target[0].at[1, 0, 0, 0].set(50.0), q_target[1])
    _, y2 = sequence_targets(q, q_target2, seq, gamma=0.5, double_q=False)
    _, y3 = sequence_targets(q, q_target2, seq, gamma=0.5, double_q=True)
    np.testing.assert_allclose(y2[0, 0, 0], 1.0 + 0.5 * 50.0)
    np.testing.assert_allclose(y3[0, 0, 0], 1.0 + 0.5 * 8.0)


def test_sequence_targets_with_vdn_team_reward():
    q = jnp.arange(3 * 1 * 2 * 2, dtype=jnp.float32).reshape(3, 1, 2, 2)
    seq = {
        "action": jnp.zeros((2, 1, 2), jnp.int32),
        "reward": jnp.ones((2, 1, 2)),
        "done": jnp.array([[False], [False]]),
        "terminated": jnp.array([[False], [False]]),
        "avail": jnp.ones((3, 1, 2, 2), bool),
        "final_step": jnp.array([[2]]),  # no truncation: one padded slot
        "final_avail": jnp.ones((1, 1, 2, 2), bool),
        "state": jnp.zeros((3, 1, 1)),
        "final_state": jnp.zeros((1, 1, 1)),
    }
    vdn = VDNMixer()
    mix = lambda q_t, s: vdn.apply({}, q_t, s)  # noqa: E731
    pred, y = sequence_targets((q, q[:1]), (q, q[:1]), seq, 1.0, True, mix, mix, lambda r: r.mean(-1))
    # step 0: taken q = q[0,0,:,0] = [0, 2] -> 2; next: max per agent at t=1 = [5, 7] -> 12; y = 1 + 12
    np.testing.assert_allclose(pred[:, 0], [2.0, 4.0 + 6.0])
    np.testing.assert_allclose(y[:, 0], [13.0, 1.0 + 9.0 + 11.0])


def test_masked_action_selection_never_picks_unavailable():
    q = jax.random.normal(jax.random.PRNGKey(0), (1000, 4, 6)) + jnp.arange(6) * 10.0
    avail = jax.random.bernoulli(jax.random.PRNGKey(1), 0.5, (1000, 4, 6)).at[..., 0].set(True)
    greedy = masked_argmax(q, avail)
    assert bool(jnp.all(jnp.take_along_axis(avail, greedy[..., None], -1)))
    for eps in (0.0, 0.5, 1.0):
        a = epsilon_greedy(jax.random.PRNGKey(2), q, avail, eps)
        assert bool(jnp.all(jnp.take_along_axis(avail, a[..., None], -1)))
    explored = epsilon_greedy(jax.random.PRNGKey(3), q, avail, 1.0)
    assert float(jnp.mean(explored != greedy)) > 0.3


def _next_values(v, last):
    """V(o'_t) when no episode is truncated: the next step's value, ``last`` after the rollout."""
    return jnp.concatenate([v[1:], jnp.asarray(last)[None]])


def test_n_step_returns_and_gae_by_hand():
    r = jnp.array([1.0, 1.0, 1.0, 1.0])
    v = jnp.array([0.5, 0.4, 0.3, 0.2])
    done = jnp.array([False, True, False, False])
    last = jnp.array(10.0)
    g = 0.9
    adv, ret = gae(r, v, _next_values(v, last), done, done, g, 1.0)
    # n-step returns cut at the terminal step 1
    expected = [1 + g * 1, 1.0, 1 + g * 1 + g**2 * 10, 1 + g * 10]
    np.testing.assert_allclose(ret, expected, rtol=1e-6)
    np.testing.assert_allclose(adv, np.array(expected) - v, rtol=1e-6)
    lam = 0.5
    adv, _ = gae(r, v, _next_values(v, last), done, done, g, lam)
    d3 = 1 + g * 10 - 0.2
    d2 = 1 + g * 0.2 - 0.3
    d1 = 1 - 0.4
    d0 = 1 + g * 0.4 - 0.5
    np.testing.assert_allclose(adv, [d0 + g * lam * d1, d1, d2 + g * lam * d3, d3], rtol=1e-6)


def test_n_step_returns_and_gae_bootstrap_through_truncation():
    """Step 1 ends its episode by the time limit, the episode's last observation worth V = 7: the
    n-step return of steps 0 and 1 bootstraps from 7 (not from step 2's value, another episode)."""
    r = jnp.array([1.0, 1.0, 1.0, 1.0])
    v = jnp.array([0.5, 0.4, 0.3, 0.2])
    done = jnp.array([False, True, False, False])
    terminated = jnp.zeros(4, bool)
    next_v = jnp.array([0.4, 7.0, 0.2, 10.0])  # V(o'_1) = 7: the final observation's value
    g = 0.9
    _, ret = gae(r, v, next_v, terminated, done, g, 1.0)
    expected = [1 + g * 1 + g**2 * 7, 1 + g * 7, 1 + g * 1 + g**2 * 10, 1 + g * 10]
    np.testing.assert_allclose(ret, expected, rtol=1e-6)
    lam = 0.5
    adv, _ = gae(r, v, next_v, terminated, done, g, lam)
    d1 = 1 + g * 7 - 0.4
    d0 = 1 + g * 0.4 - 0.5
    d3 = 1 + g * 10 - 0.2
    d2 = 1 + g * 0.2 - 0.3
    np.testing.assert_allclose(adv, [d0 + g * lam * d1, d1, d2 + g * lam * d3, d3], rtol=1e-6)


def test_qmix_mixer_is_monotonic():
    n, s = 4, 6
    mixer = QMixer(n, 8, 16)
    params = mixer.init(jax.random.PRNGKey(0), jnp.zeros(n), jnp.zeros(s))
    qs = jax.random.normal(jax.random.PRNGKey(1), (256, n)) * 5
    states = jax.random.normal(jax.random.PRNGKey(2), (256, s)) * 3
    grads = jax.vmap(jax.grad(lambda q, st: mixer.apply(params, q, st)))(qs, states)
    assert bool(jnp.all(grads >= 0.0))
    assert bool(jnp.any(grads > 0.0))


def test_replay_buffer_wraps_and_samples_stored_items():
    buf = replay.init({"x": jnp.zeros((2,))}, capacity=5)
    for start in (0, 3):
        items = {"x": jnp.arange(start, start + 3, dtype=jnp.float32)[:, None] * jnp.ones(2)}
        buf = replay.add(buf, items)
    assert int(buf.size) == 5 and int(buf.ptr) == 1
    np.testing.assert_array_equal(buf.data["x"][:, 0], [5, 1, 2, 3, 4])  # item 5 overwrote item 0
    sampled = replay.sample(buf, jax.random.PRNGKey(0), 200)["x"][:, 0]
    assert set(np.unique(np.asarray(sampled))) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    partial = replay.add(replay.init({"x": jnp.zeros(())}, 10), {"x": jnp.array([7.0, 8.0])})
    assert set(np.unique(np.asarray(replay.sample(partial, jax.random.PRNGKey(1), 100)["x"]))) == {7.0, 8.0}


def test_td_lambda_targets_by_hand():
    r = jnp.array([1.0, 2.0, 3.0])
    done = jnp.array([False, False, True])
    q_next = jnp.array([10.0, 20.0, 30.0])
    g, lam = 0.5, 0.5
    g2 = 3.0  # episode ends: no bootstrap
    g1 = 2.0 + g * ((1 - lam) * 20.0 + lam * g2)  # q_next[t] is the value of observation t+1
    g0 = 1.0 + g * ((1 - lam) * 10.0 + lam * g1)
    np.testing.assert_allclose(td_targets(r, done, done, q_next, g, lam), [g0, g1, g2], rtol=1e-6)
    np.testing.assert_allclose(td_targets(r, done, done, q_next, g, 0.0), [1 + g * 10.0, 2 + g * 20.0, 3.0])
    # lambda = 1 without episode end: the discounted return bootstrapped from the last next-value
    none = jnp.zeros(3, bool)
    np.testing.assert_allclose(td_targets(r, none, none, q_next, g, 1.0),
                               [1 + g * 2 + g**2 * 3 + g**3 * 30.0, 2 + g * 3 + g**2 * 30.0, 3 + g * 30.0])


def _constant_critic_a2c_update(learner_name, overrides, old_value=None):
    """One actor-critic update on a constructed rollout (T = 2, E = 1, N = 2, 3 actions): the critic's output
    layer set to V = 1 everywhere, the actor's to the uniform policy, so that every term is known by hand.
    ``old_value`` ``[T, E, N]``: the values the rollout stored (default: the critic's, 1)."""
    import types

    from psjax.config import make_config
    from psjax.envs.base import EnvSpec
    from psjax.learners import make_learner
    from psjax.sharing.methods import make_scheme
    from psjax.types import Transition

    spec = EnvSpec("toy", 2, obs_dim=4, state_dim=5, num_actions=3, max_steps=10, agent_types=(0, 0),
                   team_reward="sum", has_won=False)
    cfg = make_config({"env": "matrix", "alg": "fups", "learner": learner_name, "ac.num_envs": 1,
                       "ac.rollout_len": 2, "ac.gamma": 0.5, "ac.hidden": 8, **overrides})
    scheme = make_scheme(cfg, spec, cfg.ac.hidden, 2)
    learner = make_learner(cfg, spec, scheme)
    state = learner.init(jax.random.PRNGKey(0))
    params = jax.tree.map(lambda x: x, state.params)  # fresh dicts: the edits below do not touch state.params
    head = lambda bank, bias: {"kernel": jnp.zeros_like(block_params(bank, "head")["kernel"]),  # noqa: E731
                               "bias": jnp.full_like(block_params(bank, "head")["bias"], bias)}
    params["critic"]["params"][module_of(params["critic"], "head")] = head(params["critic"], 1.0)
    params["actor"]["params"][module_of(params["actor"], "head")] = head(params["actor"], 0.0)
    state = state._replace(params=params)
    t, e, n = 2, 1, 2
    reward = jnp.array([[[1.0, 3.0]], [[2.0, 0.0]]])
    traj = Transition(
        obs=jnp.zeros((t, e, n, 4)), state=jnp.zeros((t, e, 5)), avail=jnp.ones((t, e, n, 3), bool),
        action=jnp.zeros((t, e, n), jnp.int32), reward=reward, done=jnp.zeros((t, e), bool),
        terminated=jnp.zeros((t, e), bool),
        extras={"logp": jnp.full((t, e, n), -np.log(3.0), jnp.float32),
                "value": jnp.ones((t, e, n)) if old_value is None else jnp.asarray(old_value, jnp.float32)},
        next_obs=jnp.zeros((t, e, n, 4)), next_state=jnp.zeros((t, e, 5)), next_avail=jnp.ones((t, e, n, 3), bool),
    )
    last = types.SimpleNamespace(obs=jnp.zeros((e, n, 4)), state=jnp.zeros((e, 5)))
    sharing = scheme.init(jax.random.PRNGKey(1))
    _, metrics = learner.update(state, sharing, traj, last, None, jax.random.PRNGKey(2), 0)
    return cfg, metrics


def test_a2c_value_loss_weight_by_hand():
    """A2C weighs the plain squared error by vf_coef = 0.5, as the SePS code (ac.py: value_loss_coef 0.5 x
    (R - V)^2); PPO's preset weighs it by 0.25 = JaxMARL IPPO's 0.5 x 0.5. Returns with gamma 0.5 from
    V = 1: R_1 = r_1 + 0.5, R_0 = r_0 + 0.5 r_1 + 0.25; agent 0: [2.25, 2.5], agent 1: [3.25, 0.5].
    Advantages R - 1: [1.25, 2.25, 1.5, -0.5]; squared error mean 9.125 / 4; policy loss -mean A =
    -1.125 (ratio 1); entropy log 3 (uniform)."""
    mse, policy, entropy = 9.125 / 4, -1.125, np.log(3.0)
    for name, overrides, weight in [
        ("a2c", {}, 0.5),
        ("ppo", {"ac.epochs": 1, "ac.num_minibatches": 1, "ac.normalize_adv": False, "ac.gae_lambda": 1.0}, 0.25),
    ]:
        cfg, metrics = _constant_critic_a2c_update(name, overrides)
        assert cfg.ac.vf_coef == weight
        np.testing.assert_allclose(metrics["value_loss"], mse, rtol=1e-6)
        np.testing.assert_allclose(metrics["policy_loss"], policy, rtol=1e-6)
        np.testing.assert_allclose(metrics["entropy"], entropy, rtol=1e-6)
        np.testing.assert_allclose(metrics["loss"], policy + weight * mse - 0.01 * entropy, rtol=1e-5, atol=1e-7)


def test_ppo_value_clipping_by_hand():
    """ac.clip_value (JaxMARL's IPPO / MAPPO): the new value V = 1 is also clipped to within clip_eps = 0.2 of the
    rollout's stored value and the larger squared error counts. Returns (lambda 1, gamma 0.5, as above) [t, agent]:
    [[2.25, 3.25], [2.5, 0.5]], independent of the stored values. Stored [[1.1, 0.5], [2.0, 1.0]]: clipped
    values [[1.0, 0.7], [1.8, 1.0]]; errors max((1 - R)^2, (clipped - R)^2) = 1.5625, max(5.0625, 6.5025),
    max(2.25, 0.49), 0.25: mean 10.565 / 4. Unclipped: the plain mean 9.125 / 4."""
    ppo = {"ac.epochs": 1, "ac.num_minibatches": 1, "ac.normalize_adv": False, "ac.gae_lambda": 1.0}
    stored = [[[1.1, 0.5]], [[2.0, 1.0]]]
    for clip, want in [(True, 10.565 / 4), (False, 9.125 / 4)]:
        _, metrics = _constant_critic_a2c_update("ppo", {**ppo, "ac.clip_value": clip}, old_value=stored)
        np.testing.assert_allclose(metrics["value_loss"], want, rtol=1e-6)


def test_jaxmarl_ppo_presets_clip_the_value():
    from psjax.config import make_config

    for preset in ("smax_ippo_rnn", "smax_mappo_rnn", "smax_mappo_rnn_cpu"):
        assert make_config(preset=preset).ac.clip_value, preset
    assert not make_config({"env": "smax", "learner": "ppo"}).ac.clip_value


def test_burn_in_leaves_the_first_steps_out_of_the_loss_by_hand():
    """q.burn_in = 2 of T = 4: weights [0, 0, 1, 1] along time (broadcast over batch and agents); the masked mean
    of squared errors [1, 4, 9, 16] is (9 + 16) / 2, where every step counted would give 7.5."""
    from psjax.learners.qmix import loss_steps, masked_mean

    w = loss_steps((4, 3, 2), 2)
    np.testing.assert_array_equal(w[:, 0, 0], [0, 0, 1, 1])
    assert w.shape == (4, 3, 2) and float(w.sum()) == 12
    sq = jnp.broadcast_to(jnp.array([1.0, 4.0, 9.0, 16.0])[:, None], (4, 3))
    np.testing.assert_allclose(masked_mean(sq, loss_steps(sq.shape, 2)), 12.5)
    np.testing.assert_allclose(masked_mean(sq, loss_steps(sq.shape, 0)), 7.5)


@pytest.mark.parametrize("stored_state", [True, False])
def test_replay_items_start_from_the_recorded_state(stored_state):
    """q.stored_state (the default, R2D2): an item stored after a rollout that started mid-episode starts from
    the GRU state and last action the agents had then; false: from zeros (psjax's form before issue 39)."""
    from psjax.config import make_config
    from psjax.train import init_runner, make_parts, rollout_steps

    cfg = make_config({"env": "smax", "map": "3m", "alg": "fups_id", "learner": "qmix", "q.last_action": True,
                       "q.num_envs": 2, "q.rollout_len": 8, "q.learning_starts": 0, "q.buffer_size": 4,
                       "q.batch_size": 2, "steps": 64, "q.stored_state": stored_state})
    from psjax.schema import burn_in_steps

    default = make_config({"learner": "qmix"}).q
    assert default.stored_state and burn_in_steps(default) == 8 and burn_in_steps(cfg.q) == 2
    parts = make_parts(cfg)
    runner = init_runner(parts, jax.random.PRNGKey(0))
    (env_state, ts, hidden), _ = rollout_steps(parts, runner.learner, runner.sharing, runner.env_state, runner.ts,
                                             runner.hidden, jax.random.PRNGKey(1), 0, 5, greedy=False)
    assert float(jnp.abs(hidden["h"]).max()) > 0 and float(hidden["last_action"].sum()) > 0
    _, (traj, _) = rollout_steps(parts, runner.learner, runner.sharing, env_state, ts, hidden, jax.random.PRNGKey(2),
                            0, 8, greedy=False)
    state, _ = jax.jit(parts.learner.update)(runner.learner, runner.sharing, traj, ts, hidden,
                                             jax.random.PRNGKey(3), 64)
    stored = jax.tree.map(lambda x: x[:2], state.buffer.data["hidden0"])  # the 2 items just stored
    for key in ("h", "last_action"):
        want = np.asarray(hidden[key]) if stored_state else np.zeros_like(hidden[key])
        np.testing.assert_array_equal(np.asarray(stored[key]), want)
