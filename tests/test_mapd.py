"""MAPD policy distance: closed forms on hand-made Gaussians, the metric properties of the seed's
propositions (identical policies at distance zero, symmetry, non-negativity, triangle inequality),
validity weights, the conditional VAE round, and the distance as a logged metric through make_train."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psjax.config import ConfigError, make_config
from psjax.envs.base import TimeStep
from psjax.sharing import mapd
from psjax.sharing.report import last_distance, plot_distance
from psjax.train import make_parts, make_train
from psjax.types import Transition

TINY_VAE = {"mapd_epochs": 2, "mapd_batch_size": 32, "mapd_pool_size": 64, "mapd_buffer_size": 16}


def _gauss(mu, var):
    return jnp.asarray(mu, jnp.float32), jnp.log(jnp.asarray(var, jnp.float32))


# --------------------------------------------------------------------------- closed forms


def test_wasserstein_closed_form():
    a, b = _gauss([0.0, 0.0], [1.0, 1.0]), _gauss([3.0, 4.0], [1.0, 1.0])
    assert float(mapd.wasserstein(*a, *b)) == pytest.approx(5.0, rel=1e-6)
    c = _gauss([3.0, 4.0], [4.0, 1.0])  # sd 2 vs 1 in the first dimension: + (2 - 1)^2
    assert float(mapd.wasserstein(*a, *c)) == pytest.approx(math.sqrt(26.0), rel=1e-6)


def test_bhattacharyya_and_hellinger_closed_forms():
    # equal variances: BD = (mu1 - mu2)^2 / (8 var)
    a, b = _gauss([0.0], [1.0]), _gauss([2.0], [1.0])
    assert float(mapd.bhattacharyya(*a, *b)) == pytest.approx(0.5, rel=1e-6)
    assert float(mapd.hellinger(*a, *b)) == pytest.approx(math.sqrt(1 - math.exp(-0.5)), rel=1e-6)
    # var 1 and 4: S = 2.5; 4 / (8 * 2.5) + 0.5 * ln(2.5 / sqrt(1 * 4)); two identical dimensions add up
    c = _gauss([2.0, 2.0], [4.0, 4.0])
    one_dim = 4.0 / 20.0 + 0.5 * math.log(2.5 / 2.0)
    assert float(mapd.bhattacharyya(*_gauss([0.0, 0.0], [1.0, 1.0]), *c)) == pytest.approx(2 * one_dim, rel=1e-5)
    assert float(mapd.hellinger(*_gauss([0.0, 0.0], [1.0, 1.0]), *c)) == pytest.approx(
        math.sqrt(1 - math.exp(-2 * one_dim)), rel=1e-5)


@pytest.mark.parametrize("kind", mapd.DISTANCES)
def test_distance_of_a_gaussian_to_itself_is_zero(kind):
    mu, logvar = _gauss([0.3, -1.2, 2.0], [0.5, 2.0, 1.0])
    assert float(mapd._DISTANCE_FNS[kind](mu, logvar, mu, logvar)) == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------------------- the matrix: metric properties


def _random_latents(key, n=5, p=7, z=4):
    k1, k2 = jax.random.split(key)
    return jax.random.normal(k1, (n, p, z)), 0.5 * jax.random.normal(k2, (n, p, z))


@pytest.mark.parametrize("kind", mapd.DISTANCES)
def test_matrix_symmetric_nonnegative_zero_for_identical_policies(kind):
    mu, logvar = _random_latents(jax.random.PRNGKey(0))
    mu, logvar = mu.at[3].set(mu[1]), logvar.at[3].set(logvar[1])  # agents 1 and 3: the same policy
    d = np.asarray(mapd.pairwise_distance(mu, logvar, jnp.ones(mu.shape[1]), kind))
    np.testing.assert_allclose(d, d.T, atol=1e-6)
    assert (d >= 0).all()
    np.testing.assert_array_equal(np.diag(d), 0.0)
    assert d[1, 3] == pytest.approx(0.0, abs=1e-6)
    others = ~np.eye(5, dtype=bool)
    others[1, 3] = others[3, 1] = False
    assert (d[others] > 1e-3).all()  # every other pair is apart


@pytest.mark.parametrize("kind", ["wasserstein", "hellinger"])
def test_triangle_inequality_on_random_inputs(kind):
    for seed in range(5):
        mu, logvar = _random_latents(jax.random.PRNGKey(seed), n=6)
        weight = jax.random.uniform(jax.random.PRNGKey(100 + seed), (mu.shape[1],))
        d = np.asarray(mapd.pairwise_distance(mu, logvar, weight, kind), np.float64)
        # d_ij <= d_ik + d_kj for every triple: rhs[i, k, j] = d[i, k] + d[k, j]
        assert (d[:, None, :] <= d[:, :, None] + d[None, :, :] + 1e-5).all()


def test_bhattacharyya_is_not_a_metric():
    # same variance: BD grows with the squared mean gap, so 0 -> 2 is more than 0 -> 1 -> 2
    mu = jnp.array([[[0.0]], [[1.0]], [[2.0]]])
    d = np.asarray(mapd.pairwise_distance(mu, jnp.zeros_like(mu), jnp.ones(1), "bhattacharyya"))
    assert d[0, 2] > d[0, 1] + d[1, 2]
    np.testing.assert_allclose([d[0, 1], d[0, 2]], [1 / 8, 4 / 8], rtol=1e-6)


def test_observations_with_zero_weight_do_not_count():
    mu, logvar = _random_latents(jax.random.PRNGKey(1), n=3, p=4)
    weight = jnp.array([1.0, 1.0, 0.0, 1.0])
    d = mapd.pairwise_distance(mu, logvar, weight)
    d_changed = mapd.pairwise_distance(mu.at[:, 2].set(100.0 * jnp.arange(3.0)[:, None]), logvar, weight)
    np.testing.assert_allclose(d, d_changed, rtol=1e-6)
    kept = mapd.pairwise_distance(mu[:, [0, 1, 3]], logvar[:, [0, 1, 3]], jnp.ones(3))
    np.testing.assert_allclose(d, kept, rtol=1e-5)


def test_dead_agents_all_zero_observations_get_zero_weight():
    obs = jnp.array([[[0.0, 0.0], [1.0, 0.0]], [[0.0, 2.0], [0.0, 0.0]]])[None]  # [T=1, E=2, N=2, D=2]
    logits = jnp.zeros((2, 1, 2, 2, 3))
    _, pooled, weight = mapd.pool_observations(jax.random.PRNGKey(0), logits, obs, pool_size=100)
    np.testing.assert_array_equal(np.asarray(weight), np.any(np.asarray(pooled) != 0, -1).astype(np.float32))
    assert float(weight.sum()) == 2.0


def test_id_relabel_gives_each_policy_its_own_code():
    codes = np.eye(3, dtype=np.float32)
    obs = jnp.concatenate([jnp.ones((2, 3, 2)), jnp.broadcast_to(jnp.eye(3)[1], (2, 3, 3))], -1)  # agent 1's obs
    out = np.asarray(mapd.id_relabel(codes)(obs))
    np.testing.assert_array_equal(out[..., :2], 1.0)
    np.testing.assert_array_equal(out[0, :, 2:], np.eye(3))


# --------------------------------------------------------------------------- a VAE round


def test_round_zero_for_identical_policies_and_positive_for_a_different_one():
    sc = make_config({"alg": "nops", "learner": "a2c", "mapd_epochs": 5}).sharing
    k_obs, k_logits, k_round = jax.random.split(jax.random.PRNGKey(3), 3)
    obs = jax.random.normal(k_obs, (200, 4))
    base = jax.random.normal(k_logits, (200, 5))
    logits = jnp.stack([base, base, -base])  # agents 0 and 1 identical, agent 2 prefers other actions
    round_fn = jax.jit(lambda k: mapd.policy_distance(k, logits, obs, jnp.ones(200), sc))
    d, losses = round_fn(k_round)
    d = np.asarray(d)
    assert d[0, 1] == pytest.approx(0.0, abs=1e-6)
    assert d[0, 2] > 0.05 and d[1, 2] > 0.05
    np.testing.assert_allclose(d, d.T, rtol=1e-6)
    assert np.isfinite(np.asarray(losses)).all() and losses[-1] < losses[0]  # the VAE learned something
    d2, _ = round_fn(k_round)
    np.testing.assert_allclose(np.asarray(d2), d, rtol=1e-5, atol=1e-6)  # deterministic given the key


def test_own_pairs_are_each_policy_on_its_own_agents_observations():
    # logits[i, t, e, j, a] = 100 i + 10 j + a: policy i on agent j's observation; obs[t, e, j] = j + 1
    n, a = 3, 2
    i, j, act = np.meshgrid(np.arange(n), np.arange(n), np.arange(a), indexing="ij")
    logits = jnp.broadcast_to(jnp.asarray(100 * i + 10 * j + act, jnp.float32)[:, None, None], (n, 2, 1, n, a))
    obs = jnp.broadcast_to(jnp.arange(1.0, n + 1)[None, None, :, None], (2, 1, n, 4))
    own, own_obs, weight = mapd.own_pairs(jax.random.PRNGKey(0), logits, obs, size=100)
    assert own.shape == (2 * n, a) and own_obs.shape == (2 * n, 4)
    agent = np.asarray(own_obs[:, 0]).astype(int) - 1  # every pair is agent k's observation with policy k
    np.testing.assert_array_equal(np.asarray(own[:, 0]), 110 * agent)
    np.testing.assert_array_equal(np.asarray(weight), 1.0)
    # a smaller size draws without replacement among them
    own, own_obs, _ = mapd.own_pairs(jax.random.PRNGKey(1), logits, obs, size=4)
    assert own.shape == (4, a)
    np.testing.assert_array_equal(np.asarray(own[:, 0]), 110 * (np.asarray(own_obs[:, 0]).astype(int) - 1))


@pytest.mark.parametrize("pairs", ["own", "pooled"])
def test_round_on_agents_with_their_own_observation_regions(pairs):
    """Agents observe different regions (o ~ N(3 c_j, I)); policies 0 and 1 are the same linear policy, policy 2 a
    different one: the round measures 0 for the identical pair and a clearly larger distance for the others,
    whichever pairs the VAE trains on."""
    sc = make_config({"alg": "nops", "learner": "a2c", "mapd_vae_pairs": pairs}).sharing
    k_c, k_o, k_w, k_v = jax.random.split(jax.random.PRNGKey(5), 4)
    obs = 3.0 * jax.random.normal(k_c, (3, 6)) + jax.random.normal(k_o, (256, 1, 3, 6))  # [T, E, N, D]
    w = 2.0 * jax.random.normal(k_w, (2, 6, 5)) / np.sqrt(6)
    weights = jnp.stack([w[0], w[0], w[1]])
    logits = jnp.einsum("tejd,ida->iteja", obs, weights)  # [N_pol, T, E, N_obs, A]
    d, losses = jax.jit(lambda k: mapd.distance_round(k, logits, obs, sc))(k_v)
    d = np.asarray(d)
    assert d[0, 1] == pytest.approx(0.0, abs=1e-6)
    assert d[0, 2] > 0.3 and d[1, 2] > 0.3
    assert np.isfinite(np.asarray(losses)).all() and losses[-1] < losses[0]


def test_config_rejects_unknown_distance():
    with pytest.raises(ConfigError, match="mapd_distance"):
        make_config({"alg": "nops", "mapd_distance": "kl"})


# --------------------------------------------------------------------------- the observation buffer


def _steps(t, e, n, d, first):
    """``obs[T, E, N, D]`` whose every feature is the step's number (``first`` onwards, row-major over T, E)."""
    step = first + jnp.arange(t * e, dtype=jnp.float32).reshape(t, e, 1, 1)
    return jnp.broadcast_to(step, (t, e, n, d))


def test_buffer_keeps_the_last_steps_in_a_ring():
    buf = mapd.init_buffer(rows=5, num_agents=2, obs_dim=3, num_actions=4)
    avail = jnp.ones((2, 2, 2, 4), bool)
    add = jax.jit(mapd.buffer_add, static_argnums=4)
    buf = add(buf, _steps(2, 2, 2, 3, first=1), avail, jax.random.PRNGKey(0), 4)  # steps 1..4 -> rows 0..3
    assert int(buf.count) == 4 and int(buf.pos) == 4
    buf = add(buf, _steps(2, 2, 2, 3, first=5), avail, jax.random.PRNGKey(1), 4)  # steps 5..8 -> rows 4, 0, 1, 2
    assert int(buf.count) == 5 and int(buf.pos) == 3
    np.testing.assert_array_equal(np.asarray(buf.obs[:, 0, 0]), [6.0, 7.0, 8.0, 4.0, 5.0])  # the last 5 steps
    assert bool(buf.avail.all())
    # fewer than a rollout: distinct steps of that rollout, over the oldest rows
    buf = add(buf, _steps(2, 2, 2, 3, first=9), avail, jax.random.PRNGKey(2), 2)
    new = np.asarray(buf.obs[[3, 4], 0, 0])
    assert len(set(new.tolist())) == 2 and set(new.tolist()) <= {9.0, 10.0, 11.0, 12.0}
    np.testing.assert_array_equal(np.asarray(buf.obs[:3, 0, 0]), [6.0, 7.0, 8.0])


def test_buffer_rounds_exclude_dead_agents_and_unwritten_rows():
    buf = mapd.init_buffer(rows=4, num_agents=2, obs_dim=2, num_actions=3)
    obs = jnp.ones((3, 1, 2, 2)).at[1, 0, 1].set(0.0)  # agent 1 is dead (all zeros) at the second step
    buf = mapd.buffer_add(buf, obs, jnp.ones((3, 1, 2, 3), bool), jax.random.PRNGKey(0), 3)
    traj, valid = mapd.buffer_transition(buf)
    assert traj.obs.shape == (4, 1, 2, 2)
    np.testing.assert_array_equal(np.asarray(valid[:, 0]), [[1, 1], [1, 1], [1, 1], [0, 0]])
    logits = jnp.zeros((2, 4, 1, 2, 3))
    _, pooled, weight = mapd.pool_observations(jax.random.PRNGKey(1), logits, traj.obs, 100, valid)
    # row-major [row, agent]: agent 1 dead at row 1, row 3 not written yet
    np.testing.assert_array_equal(np.asarray(weight), [1, 1, 1, 0, 1, 1, 0, 0])
    # a pool smaller than the buffer draws the valid observations first
    for seed in range(3):
        _, pooled, weight = mapd.pool_observations(jax.random.PRNGKey(seed), logits, traj.obs, 5, valid)
        assert float(weight.sum()) == 5.0 and bool((pooled != 0).any(-1).all())


def test_buffer_distance_of_two_different_policies_is_far_above_the_noise_level():
    """Two A2C agents at their initialisation (near-uniform policies: the noise level) against the same two
    with agent 1's output layer scaled up (a different, peaked policy), measured on a buffer of observations."""
    cfg = make_config({"alg": "nops", "learner": "a2c", "env": "mpe_spread", "mapd_interval": 1,
                       "mapd_buffer_size": 128, "mapd_pool_size": 256, "mapd_epochs": 4, "mapd_batch_size": 64})
    parts = make_parts(cfg)
    spec = parts.env.spec
    learner = jax.jit(parts.learner.init)(jax.random.PRNGKey(0))
    sharing = parts.scheme.init(jax.random.PRNGKey(0))
    assert sharing.distance.buffer.obs.shape == (128, spec.num_agents, spec.obs_dim)  # in the sharing state
    buf = mapd.init_buffer(128, spec.num_agents, spec.obs_dim, spec.num_actions)
    obs = jax.random.normal(jax.random.PRNGKey(1), (16, 8, spec.num_agents, spec.obs_dim))
    buf = mapd.buffer_add(buf, obs, jnp.ones((*obs.shape[:3], spec.num_actions), bool), jax.random.PRNGKey(2), 128)
    out = learner.params["actor"]["params"]
    last = max(out, key=lambda k: int(k.split("_")[-1]))
    peaked = jax.tree.map(lambda x: x, learner.params)
    peaked["actor"]["params"][last]["kernel"] = out[last]["kernel"].at[1].multiply(300.0)

    @jax.jit
    def distance(params, key):
        state = learner._replace(params=params)
        _, _, (d, _) = mapd.measure(parts.learner.policy_logits, cfg.sharing, None, None, state, sharing, None,
                                    jnp.zeros((1, spec.num_agents, 1)), key, buf)
        return d

    noise = np.stack([np.asarray(distance(learner.params, jax.random.PRNGKey(s))) for s in range(2)])
    far = np.stack([np.asarray(distance(peaked, jax.random.PRNGKey(s))) for s in range(2)])
    assert np.isfinite(noise).all() and noise[:, 0, 1].max() < 0.02
    assert far[:, 0, 1].min() > 0.1 and far[:, 0, 1].min() > 10 * noise[:, 0, 1].max()
    assert np.abs(far[0, 0, 1] - far[1, 0, 1]) < 0.2 * far[0, 0, 1]  # stable across round keys
    # agents 0 and 2 kept their (near-uniform) policies: close, as at the start
    assert far[:, 0, 2].max() < 0.02


# --------------------------------------------------------------------------- learners and the training loop


def test_actor_critic_policy_logits_diagonal_is_each_agents_own_policy():
    cfg = make_config({"alg": "nops", "learner": "a2c", "env": "mpe_spread", "ac.num_envs": 2})
    parts = make_parts(cfg)
    n, a, d = parts.env.spec.num_agents, parts.env.spec.num_actions, parts.env.spec.obs_dim
    avail = jnp.ones((2, n, a), bool).at[0, 1, 2].set(False)  # one unavailable action

    @jax.jit
    def act_and_logits(key):
        k_init, k_obs, k_act = jax.random.split(key, 3)
        state, sharing = parts.learner.init(k_init), parts.scheme.init(k_init)
        obs, env_state, zeros = jax.random.normal(k_obs, (2, n, d)), jnp.zeros((2, parts.env.spec.state_dim)), \
            jnp.zeros(2)
        ts = TimeStep(obs=obs, state=env_state, avail_actions=avail, reward=zeros, terminated=zeros, truncated=zeros,
                      episode_return=zeros, episode_length=zeros, won=zeros, final_obs=obs, final_state=env_state,
                      final_avail=avail)
        actions, _, extras = parts.learner.act(state, sharing, parts.learner.init_hidden(2), ts, k_act, 0, False)
        traj = Transition(ts.obs[None], ts.state[None], avail[None], actions[None], (), (), (), {})
        return actions, extras["logp"], parts.learner.policy_logits(state, sharing, traj, None)

    actions, logp, logits = act_and_logits(jax.random.PRNGKey(0))
    assert logits.shape == (n, 1, 2, n, a)
    assert float(logits[0, 0, 0, 1, 2]) < -1e8  # agent 1's unavailable action, for every policy
    for i in range(n):  # policy i on agent i's observations = what agent i acted with
        probs = jax.nn.softmax(logits[i, 0, :, i], -1)
        taken = jnp.take_along_axis(probs, actions[:, i, None], -1)[..., 0]
        np.testing.assert_allclose(np.log(np.asarray(taken)), np.asarray(logp[:, i]), atol=1e-5)


@pytest.mark.parametrize("over", [
    {"alg": "fups_id", "learner": "qmix", "env": "mpe_spread", "q.num_envs": 2, "q.rollout_len": 8,
     "learning_starts": 0, "steps": 64},
    pytest.param({"alg": "nops", "learner": "a2c", "env": "lbf", "ac.num_envs": 2, "ac.rollout_len": 4,
                  "steps": 32}, marks=pytest.mark.slow),  # the buffer path: test_buffer_distance_* in make test
])
def test_distance_metric_through_make_train(over, tmp_path):
    cfg = make_config({**over, "mapd_interval": 2, **TINY_VAE})
    _, metrics = jax.jit(make_train(cfg))(jax.random.PRNGKey(0))
    d = np.asarray(metrics["mapd_distance"])  # [iterations, N, N]
    n = d.shape[1]
    assert np.isnan(d[0::2]).all()  # between rounds
    rounds = d[1::2]
    assert np.isfinite(rounds).all()
    np.testing.assert_allclose(rounds, rounds.transpose(0, 2, 1), rtol=1e-5, atol=1e-7)
    assert (rounds[:, ~np.eye(n, dtype=bool)] > 0).all()  # FuPS+id: the id makes the policies differ
    np.testing.assert_allclose(np.asarray(metrics["mapd_distance_mean"])[1::2],
                               rounds[:, ~np.eye(n, dtype=bool)].mean(-1), rtol=1e-5)


def test_distance_heatmap_from_metrics(tmp_path):
    rows = [{"seed": s, "iteration": it, "env_steps": it, **{f"mapd_distance[{i},{j}]": (None if it == 2 else
             float(abs(i - j) * (s + 1))) for i in range(3) for j in range(3)}} for it in (1, 2) for s in (0, 1)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(__import__("json").dumps(r) for r in rows) + "\n")
    d, iteration = last_distance(tmp_path)
    assert iteration == 1
    np.testing.assert_allclose(d, 1.5 * np.abs(np.arange(3)[:, None] - np.arange(3)[None, :]))
    assert plot_distance(tmp_path).exists()
