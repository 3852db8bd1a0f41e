"""Learner maths against hand computations: targets, returns, masking, mixers, buffer."""

import jax
import jax.numpy as jnp
import numpy as np

from psjax.learners import replay
from psjax.learners.actor_critic import gae
from psjax.learners.qmix import epsilon_greedy, masked_argmax, sequence_targets, td_targets
from psjax.nets.mixers import QMixer, VDNMixer


def test_td_targets_cut_at_done():
    r = jnp.array([1.0, 2.0, 3.0])
    done = jnp.array([False, True, False])
    q_next = jnp.array([10.0, 20.0, 30.0])
    np.testing.assert_allclose(td_targets(r, done, q_next, 0.9), [1 + 9.0, 2.0, 3 + 27.0])


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
    pred, y = sequence_targets(q, q_target, seq, gamma=0.5, double_q=True)
    np.testing.assert_allclose(pred[:, 0, 0], [2.0, 1.0])
    np.testing.assert_allclose(y[:, 0, 0], [1.0 + 0.5 * 8.0, 2.0])
    # without double-Q: max of the target among available actions at obs 1 is 8 as well; change it
    q_target2 = q_target.at[1, 0, 0, 0].set(50.0)
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
        "avail": jnp.ones((3, 1, 2, 2), bool),
        "state": jnp.zeros((3, 1, 1)),
    }
    vdn = VDNMixer()
    mix = lambda q_t, s: vdn.apply({}, q_t, s)  # noqa: E731
    pred, y = sequence_targets(q, q, seq, 1.0, True, mix, mix, lambda r: r.mean(-1))
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


def test_n_step_returns_and_gae_by_hand():
    r = jnp.array([1.0, 1.0, 1.0, 1.0])
    v = jnp.array([0.5, 0.4, 0.3, 0.2])
    done = jnp.array([False, True, False, False])
    last = jnp.array(10.0)
    g = 0.9
    adv, ret = gae(r, v, done, last, g, 1.0)
    # n-step returns cut at the episode end after step 1
    expected = [1 + g * 1, 1.0, 1 + g * 1 + g**2 * 10, 1 + g * 10]
    np.testing.assert_allclose(ret, expected, rtol=1e-6)
    np.testing.assert_allclose(adv, np.array(expected) - v, rtol=1e-6)
    lam = 0.5
    adv, _ = gae(r, v, done, last, g, lam)
    d3 = 1 + g * 10 - 0.2
    d2 = 1 + g * 0.2 - 0.3
    d1 = 1 - 0.4
    d0 = 1 + g * 0.4 - 0.5
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
    np.testing.assert_allclose(td_targets(r, done, q_next, g, lam), [g0, g1, g2], rtol=1e-6)
    np.testing.assert_allclose(td_targets(r, done, q_next, g, 0.0), [1 + g * 10.0, 2 + g * 20.0, 3.0])
    # lambda = 1 without episode end: the discounted return bootstrapped from the last next-value
    np.testing.assert_allclose(td_targets(r, jnp.zeros(3, bool), q_next, g, 1.0),
                               [1 + g * 2 + g**2 * 3 + g**3 * 30.0, 2 + g * 3 + g**2 * 30.0, 3 + g * 30.0])
