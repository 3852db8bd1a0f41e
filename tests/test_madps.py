"""MADPS: fusion / division on constructed distance matrices (Algorithm 1 of the seed, both
contradiction cases), the division's row copy (equal right after, free to diverge), the per-layer
gather of front / back slots, config rules, and one jitted, seed-vmapped training run."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psjax import registry
from psjax.config import ConfigError, make_config
from psjax.nets.agents import block_params, blocks
from psjax.sharing import madps
from psjax.train import init_runner, make_parts, make_train

EPS0, EPS1, EPS2 = 0.25, 0.5, 1.0


def _run(d, front, back, eps=(EPS0, EPS1, EPS2)):
    out = jax.jit(madps.restructure, static_argnums=(3, 4, 5))(
        jnp.asarray(d, jnp.float32), jnp.asarray(front, jnp.int32), jnp.asarray(back, jnp.int32), *eps)
    return tuple(np.asarray(x).tolist() for x in out)


def _matrix(n, far=5.0, **pairs):
    """A symmetric [n, n] matrix, ``far`` off the diagonal except ``pairs`` like ``d01=0.1``."""
    d = np.full((n, n), far, np.float32)
    np.fill_diagonal(d, 0.0)
    for name, v in pairs.items():
        i, j = int(name[1]), int(name[2])
        d[i, j] = d[j, i] = v
    return d


# --------------------------------------------------------------------------- restructuring


def test_far_apart_agents_sharing_a_front_divide_one_per_visiting_agent():
    # all on front slot 0, everyone far apart: agent 0 divides agent 1 (its first j) and stops (the reference's
    # break: one change per visiting agent); agent 1 now has its own front, so it shares with nobody; agent 2
    # divides agent 3. Agent 2 divides at a later round.
    front, back, copy, changed = _run(_matrix(4), [0, 0, 0, 0], [0, 1, 2, 3])
    assert front == [0, 1, 0, 3]
    assert back == [0, 1, 2, 3]
    assert copy == [-1, 0, -1, 0]  # each new row starts as a copy of the shared row 0
    assert changed == [True, False, True, False]
    assert _run(_matrix(4), front, back)[0] == [0, 1, 2, 3]


def test_division_copies_the_shared_row_not_the_visiting_agents_stale_row():
    # agents 1 and 2 share front slot 0 (agent 0's row); agent 0 is elsewhere (slot 3)
    front, _, copy, _ = _run(_matrix(4, d03=1.5, d13=5.0), [3, 0, 0, 3], [0, 1, 2, 3])
    assert front[2] == 2 and copy[2] == 0


def test_identical_policies_fuse_their_backs():
    d = _matrix(3, far=0.7, d01=0.0, d02=0.1, d12=0.1)  # 0.7: between eps1 and eps2, no division
    front, back, copy, changed = _run(d, [0, 0, 0], [0, 1, 2])
    # i=0: j=1 fuses its back into back[0] (D[back[0]=0, 1] = 0 < eps0); i=1: j=2 joins back[1] = 0
    assert front == [0, 0, 0]
    assert back == [0, 0, 0]
    assert copy == [-1, -1, -1]
    assert changed == [True, True, False]


def test_back_fusion_to_the_visiting_agents_row_before_the_round_when_its_new_back_is_too_far():
    # agent 0 fuses agent 1's back into row 0 (d01 < eps0); agent 2 is close to agent 1 but far from agent 0:
    # it joins agent 1's back from before the round (row 1)
    d = _matrix(3, far=0.7, d12=0.1, d01=0.2)
    _, back, _, _ = _run(d, [0, 0, 0], [0, 1, 2])
    assert back == [0, 0, 1]
    # agent 1's back row was already row 0 before the round: agent 2 joins row 0, never a stale row 1
    assert _run(d, [0, 0, 0], [0, 0, 2])[1] == [0, 0, 0]


def test_close_agents_on_different_fronts_fuse():
    d = _matrix(3, d01=0.2, d02=0.3, d12=0.3)
    front, back, copy, _ = _run(d, [0, 1, 2], [0, 1, 2])
    assert front == [0, 0, 0]  # 1 -> 0 (agent 0's visit), then 2 -> front[1] = 0 (agent 1's visit)
    assert back == [0, 1, 2] and copy == [-1, -1, -1]


def test_middle_ranges_change_nothing():
    # eps1 <= d <= eps2 on different fronts, eps0 <= d <= eps2 on a shared front: independence is kept
    assert _run(_matrix(3, far=0.8), [0, 1, 2], [0, 1, 2])[:2] == ([0, 1, 2], [0, 1, 2])
    assert _run(_matrix(3, far=0.4), [0, 0, 0], [0, 1, 2])[:2] == ([0, 0, 0], [0, 1, 2])


def test_second_contradiction_j_joins_the_visiting_agents_own_row():
    # the seed's Fig. 1 (right): d12 = d23 = d0 < eps1 but d13 = 2 d0 > eps1 (agents 1, 2, 3 -> indices 0, 1, 2)
    d0 = 0.4
    d = _matrix(3, d01=d0, d12=d0, d02=2 * d0)
    front, _, _, _ = _run(d, [0, 1, 2], [0, 1, 2])
    # agent 1 fuses into agent 0's network; agent 2 is close to agent 1 but not to agent 1's new network (row 0):
    # it fuses with agent 1's original network (row 1), not with row 0
    assert front == [0, 0, 1]
    # when the new network is still close enough, j follows it
    d_close = _matrix(3, d01=d0, d12=d0, d02=0.45)
    assert _run(d_close, [0, 1, 2], [0, 1, 2])[0] == [0, 0, 0]


def test_first_contradiction_cannot_happen_with_eps2_at_least_twice_eps1():
    # shared front, d01 = d12 = d0 < eps1 (but above eps0), d02 = 2 d0 > eps1: with eps2 = 2 eps1 the far pair
    # stays below eps2 (triangle inequality), so nothing divides ...
    d0 = 0.45
    d = _matrix(3, d01=d0, d12=d0, d02=2 * d0)
    assert _run(d, [0, 0, 0], [0, 1, 2])[0] == [0, 0, 0]
    # ... whereas with eps2 < 2 eps1 the round contradicts itself: agent 0 divides agent 2 (d02 > eps2) and
    # agent 1, within eps1 of agent 2, fuses it straight back (into agent 1's network, row 0)
    front, _, copy, changed = _run(d, [0, 0, 0], [0, 1, 2], (EPS0, EPS1, 0.8))
    assert copy[2] == 0 and changed[:2] == [True, True] and front == [0, 0, 0]
    with pytest.raises(ConfigError, match="madps_divide_threshold"):
        make_config({"alg": "madps", "madps_fuse_threshold": 0.5, "madps_divide_threshold": 0.8})


def test_config_rules():
    with pytest.raises(ConfigError, match="allowed: a2c, ppo"):
        make_config({"alg": "madps", "learner": "qmix"})
    cfg = make_config({"alg": "madps"})
    assert cfg.learner_name == "a2c"
    assert madps.thresholds(cfg) == pytest.approx((0.25, 0.5, 1.0))  # the reference code's eps0, eps1, eps2
    assert cfg.sharing.madps_init == "reference"
    # a round every ~20k env steps whatever the rollout size; the first round only measures
    assert madps.schedule(cfg) == (500, 1000)  # A2C: 8 envs x 5 steps
    assert madps.schedule(make_config({"alg": "madps", "learner": "ppo"})) == (10, 20)  # 16 x 128
    assert madps.schedule(make_config({"alg": "madps", "madps_interval": 7})) == (7, 14)
    assert madps.schedule(make_config({"alg": "madps", "madps_interval": 7, "madps_start": 0})) == (7, 0)
    assert madps.thresholds(make_config({"alg": "madps", "madps_fuse_threshold": 0.1})) == (0.05, 0.1, 0.2)
    with pytest.raises(ConfigError, match="madps_init"):
        make_config({"alg": "madps", "madps_init": "xavier"})
    assert make_config({"alg": "madps", "learner": "ppo"}).learner_name == "ppo"


def test_distinct_counts_slots_in_use():
    assert int(madps.distinct(jnp.array([0, 0, 3, 3, 1]))) == 3


# --------------------------------------------------------------------------- banks


def _madps_parts(**over):
    cfg = make_config({"alg": "madps", "env": "mpe_spread", "ac.num_envs": 2, "ac.rollout_len": 4, **over})
    return cfg, make_parts(cfg)


def _actor_shapes(cfg):
    parts = make_parts(cfg)
    return jax.tree.map(lambda x: x.shape, jax.eval_shape(parts.learner.init, jax.random.PRNGKey(0)).params["actor"])


def test_madps_actor_front_is_two_dense_layers_and_back_is_64_64_a():
    cfg, parts = _madps_parts()
    n, d, a = parts.env.spec.num_agents, parts.env.spec.obs_dim, parts.env.spec.num_actions
    shapes = _actor_shapes(cfg)["params"]
    assert shapes == {  # N rows each: obs -> 64 -> 64 (front), 64 -> 64 -> A (back)
        "front_0": {"kernel": (n, d, 64), "bias": (n, 64)}, "front_1": {"kernel": (n, 64, 64), "bias": (n, 64)},
        "back_0": {"kernel": (n, 64, 64), "bias": (n, 64)}, "back_out": {"kernel": (n, 64, a), "bias": (n, a)},
    }
    assert madps.front_layers(_actor_shapes(cfg)) == {"front_0", "front_1"}
    # every other method keeps the two-hidden-layer actor with flax's auto names
    other = _actor_shapes(make_config({"alg": "nops", "learner": "a2c", "env": "mpe_spread"}))["params"]
    assert sorted(blocks(other).values()) == ["head", "hidden_0", "hidden_1"]
    assert block_params(other, "hidden_0")["kernel"] == (n, d, 64)
    with pytest.raises(ValueError, match="front_0"):
        madps.front_layers({"params": other})


def test_front_block_takes_the_conv_torso_by_name():
    from psjax.nets.agents import MLP

    net = MLP(8, 3, depth=3, names=madps.FRONT + madps.BACK, obs_shape=(3, 3, 2))
    params = jax.eval_shape(net.init, jax.random.PRNGKey(0), jnp.zeros((18,)))
    assert sorted(params["params"]) == ["back_0", "back_out", "front_0", "front_1", "front_torso"]
    assert madps.front_layers(params) == {"front_torso", "front_0", "front_1"}


def test_reference_init_is_orthogonal_with_gain_half_plus_gaussian_noise():
    from psjax.nets.init import orthogonal_plus_noise

    key = jax.random.PRNGKey(3)
    base = np.asarray(orthogonal_plus_noise(0.5, 0.0)(key, (64, 64)), np.float64)
    np.testing.assert_allclose(base.T @ base, 0.25 * np.eye(64), atol=1e-5)  # gain 0.5
    noise = np.asarray(orthogonal_plus_noise(0.5, 0.2)(key, (64, 64)), np.float64) - base  # the same draw + noise
    assert noise.std() == pytest.approx(0.2, rel=0.03) and abs(noise.mean()) < 0.01
    assert abs(np.corrcoef(noise.ravel(), base.ravel())[0, 1]) < 0.05  # independent of the orthogonal part


def test_madps_init_reference_draws_noisy_actor_weights_psjax_a_near_uniform_output():
    ref = jax.jit(_madps_parts()[1].learner.init)(jax.random.PRNGKey(0)).params["actor"]["params"]
    own = jax.jit(_madps_parts(madps_init="psjax")[1].learner.init)(jax.random.PRNGKey(0)).params["actor"]["params"]
    for layer in ref:  # reference: N(0, 0.2) noise on every bias
        assert 0.15 < float(jnp.std(ref[layer]["bias"])) < 0.25
        np.testing.assert_array_equal(own[layer]["bias"], 0.0)
    # kernels: 0.5 x orthogonal (entry variance 0.25 / 64 on 64 x 64) plus N(0, 0.2^2): std sqrt(0.25 / 64 + 0.04)
    for layer in ("front_1", "back_0"):
        assert float(jnp.std(ref[layer]["kernel"])) == pytest.approx(np.sqrt(0.25 / 64 + 0.04), rel=0.03)
    # psjax: output kernel orthogonal with gain 0.01 (64 -> A: orthonormal columns times 0.01)
    w = np.asarray(own["back_out"]["kernel"][0], np.float64)
    np.testing.assert_allclose(w.T @ w, 1e-4 * np.eye(w.shape[1]), atol=1e-9)


def test_agents_gather_front_and_back_rows_per_layer():
    _, parts = _madps_parts()
    state = jax.jit(parts.learner.init)(jax.random.PRNGKey(0))
    sharing = parts.scheme.init(jax.random.PRNGKey(0))
    sharing = sharing._replace(slots=jnp.array([2, 0, 1]),
                                     extra=sharing.extra._replace(front=jnp.array([1, 1, 0])))
    actor = state.params["actor"]
    params, axes = parts.scheme.agent_params("actor", actor, None, sharing)
    assert axes == 0
    p = params["params"]
    for layer in ("front_0", "front_1"):  # the front block: obs -> 64 -> 64, gathered by the front slots
        np.testing.assert_array_equal(p[layer]["kernel"], actor["params"][layer]["kernel"][jnp.array([1, 1, 0])])
    for layer in ("back_0", "back_out"):  # the back block: 64 -> 64 -> A, by the back slots
        np.testing.assert_array_equal(p[layer]["kernel"], actor["params"][layer]["kernel"][jnp.array([2, 0, 1])])
    critic, _ = parts.scheme.agent_params("critic", state.params["critic"], None, sharing)
    np.testing.assert_array_equal(block_params(critic, "hidden_0")["bias"],
                                  block_params(state.params["critic"], "hidden_0")["bias"][jnp.array([2, 0, 1])])


def test_rounds_before_madps_start_only_measure():
    _, parts = _madps_parts(madps_interval=2, madps_start=4)
    learner = jax.jit(parts.learner.init)(jax.random.PRNGKey(0))
    sharing = parts.scheme.init(jax.random.PRNGKey(0))
    restructure = jax.jit(parts.scheme.driven_by.act)
    d = jnp.asarray(_matrix(3, far=5.0))  # every pair far apart: agents 1 and 2 would divide
    sharing1, learner1 = restructure(sharing, learner, d, jax.random.PRNGKey(1))  # round 1 at iteration 2 < 4
    assert sharing1.extra.front.tolist() == [0, 0, 0] and sharing1.slots.tolist() == [0, 1, 2]
    assert int(sharing1.extra.rounds) == 1 and int(sharing1.extra.changes) == 0
    jax.tree.map(np.testing.assert_array_equal, learner1.params, learner.params)
    sharing2, _ = restructure(sharing1, learner1, d, jax.random.PRNGKey(2))  # round 2 at iteration 4: acts
    assert sharing2.extra.front.tolist() == [0, 1, 0] and int(sharing2.extra.changes) == 1
    assert int(sharing2.extra.rounds) == 2


def test_division_copies_both_front_layers_equal_right_after_and_diverging_with_training():
    from psjax.train import train_iteration

    cfg, parts = _madps_parts(madps_start=0, madps_fuse_threshold=0.5)  # eps (0.25, 0.5, 1.0)
    step = jax.jit(lambda r: train_iteration(parts, r))
    runner, _ = step(jax.jit(lambda k: init_runner(parts, k))(jax.random.PRNGKey(0)))  # non-zero Adam moments
    # agents 0 and 2 far apart on the shared front: a round divides agent 1 (agent 0's first j) ... make it 2:
    d = _matrix(3, far=0.7, d02=3.0)
    sharing, learner = parts.scheme.driven_by.act(runner.sharing, runner.learner, jnp.asarray(d), jax.random.PRNGKey(1))
    assert sharing.extra.front.tolist() == [0, 0, 2]
    actor, before = learner.params["actor"]["params"], runner.learner.params["actor"]["params"]
    moments = [learner.opt_state[1][0].mu["actor"]["params"], learner.opt_state[1][0].nu["actor"]["params"]]
    for layer in ("front_0", "front_1"):  # both front layers (obs -> 64 -> 64), parameters and Adam moments
        assert actor[layer]["kernel"].shape[-1] == cfg.ac.hidden
        for leaf in ("kernel", "bias"):
            np.testing.assert_array_equal(actor[layer][leaf][2], before[layer][leaf][0])
            np.testing.assert_array_equal(actor[layer][leaf][:2], before[layer][leaf][:2])  # other rows kept
            for m in moments:
                np.testing.assert_array_equal(m[layer][leaf][2], m[layer][leaf][0])
        assert not np.array_equal(before[layer]["kernel"][2], before[layer]["kernel"][0])  # the copy changed row 2
        assert float(jnp.abs(moments[0][layer]["kernel"][0]).max()) > 0.0
    # the back block is untouched by a division
    for layer in ("back_0", "back_out"):
        np.testing.assert_array_equal(actor[layer]["kernel"], before[layer]["kernel"])
    # a few learner updates on fresh rollouts: agents 0 / 1 train row 0, agent 2 trains row 2
    runner = runner._replace(sharing=sharing, learner=learner)
    for _ in range(3):
        runner, _ = step(runner)
    for layer in ("front_0", "front_1"):
        front = runner.learner.params["actor"]["params"][layer]["kernel"]
        assert float(jnp.abs(front[2] - front[0]).max()) > 1e-5
    assert runner.sharing.extra.front.tolist() == [0, 0, 2]


def test_madps_jits_once_and_vmaps_over_seeds():
    cfg = make_config({"alg": "madps", "env": "mpe_spread", "ac.num_envs": 2, "ac.rollout_len": 4, "steps": 48,
                       "madps_interval": 2, "mapd_epochs": 2, "mapd_batch_size": 32, "mapd_pool_size": 48,
                       "madps_fuse_threshold": 1e-3, "madps_start": 0})
    train = jax.jit(jax.vmap(make_train(cfg)))
    _, metrics = train(jax.random.split(jax.random.PRNGKey(0), 2))
    assert train._cache_size() == 1
    d = np.asarray(metrics["mapd_distance"])  # [S, iterations, N, N]
    assert np.isnan(d[:, 0::2]).all() and np.isfinite(d[:, 1::2]).all()
    assert not np.allclose(d[0, 1::2], d[1, 1::2])  # seeds differ
    rounds = np.asarray(metrics["madps_rounds"])
    np.testing.assert_array_equal(rounds[0], [(i + 1) // 2 for i in range(6)])
    for name in ("madps_front", "madps_back"):
        assert metrics[name].shape == (2, 6, 3)
        assert ((metrics[name] >= 0) & (metrics[name] < 3)).all()
    counts = np.asarray(metrics["madps_front_slots"])
    assert ((counts >= 1) & (counts <= 3)).all()


def test_sharing_png_shows_front_and_back_slots(tmp_path):
    import json

    from psjax.sharing.report import plot_sharing, sharing_tables

    rows = [{"seed": s, "iteration": 1, "env_steps": 40, **{f"madps_front[{i}]": [0, 0, 2][i] for i in range(3)},
             **{f"madps_back[{i}]": [0, 1, 1][i] for i in range(3)}} for s in (0, 1)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert sharing_tables(tmp_path) is None  # report.py reads no method's names: MADPS hands over its tables
    tables = sharing_tables(tmp_path, madps.front_back_tables)
    np.testing.assert_array_equal(tables["cluster"], [[0, 0, 2], [0, 1, 1], [0, 0, 2], [0, 1, 1]])
    np.testing.assert_allclose(tables["mean_overlap"], [1 / 3, 1 / 3])
    assert plot_sharing(tmp_path) is None and plot_sharing(tmp_path, madps.front_back_tables).exists()
    picture = registry.get("madps").pictures[0]
    assert picture(tmp_path, None, None, None) == tmp_path / "sharing.png"
