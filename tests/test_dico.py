"""DiCo (``alg=dico``) and System Neural Diversity (``psjax.sharing.snd``), the metric it controls."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psjax import registry
from psjax.config import make_config
from psjax.fields import ConfigError
from psjax.run import run
from psjax.sharing.dico import POLICY, DicoState, rescale
from psjax.sharing.snd import aitchison, measure_snd, pairwise_snd, system_neural_diversity
from psjax.train import init_runner, make_parts, make_train
from psjax.types import Transition

NEG = -1e9  # the learners' logit at unavailable actions


def test_aitchison_distance_by_hand():
    a = jnp.array([1.0, 2.0, 3.0])
    # centred: [-1, 0, 1] against [0, 0, 0]
    np.testing.assert_allclose(aitchison(a, jnp.zeros(3)), math.sqrt(2), rtol=1e-6)
    np.testing.assert_allclose(aitchison(a + 7.0, jnp.zeros(3)), math.sqrt(2), rtol=1e-6)  # behaviour only
    np.testing.assert_allclose(aitchison(3 * a, jnp.zeros(3)), 3 * math.sqrt(2), rtol=1e-6)  # scales with logits
    # an unavailable action counts for neither policy
    masked = aitchison(jnp.array([1.0, 2.0, 3.0, NEG]), jnp.array([5.0, 5.0, 5.0, NEG]))
    np.testing.assert_allclose(masked, math.sqrt(2), rtol=1e-6)
    assert float(aitchison(jnp.array([4.0, NEG]), jnp.array([-2.0, NEG]))) == 0.0  # one choice: no diversity


def test_snd_is_the_mean_over_pairs_and_weighted_observations():
    # 3 agents, 2 observations (the second weighs 0), 2 actions: centred logits are +-(l0 - l1) / 2
    logits = jnp.array([[[0.0, 0.0], [9.0, 0.0]],
                        [[2.0, 0.0], [0.0, 9.0]],
                        [[0.0, 4.0], [1.0, 1.0]]])
    weight = jnp.array([1.0, 0.0])
    d = np.asarray(pairwise_snd(logits, weight))
    r2 = math.sqrt(2)
    expected = np.array([[0, r2, 2 * r2], [r2, 0, 3 * r2], [2 * r2, 3 * r2, 0]])  # |dl_i - dl_j| / sqrt(2)
    np.testing.assert_allclose(d, expected, rtol=1e-6)
    np.testing.assert_allclose(system_neural_diversity(logits, weight), 2 * r2, rtol=1e-6)  # (1 + 2 + 3) r2 / 3


def test_rescale_by_hand():
    state = DicoState(jnp.float32(2.0), jnp.float32(jnp.nan))
    first = rescale(state, jnp.float32(0.5), target=1.5, tau=0.1)  # deviations' SND 0.5 / 2 = 0.25
    np.testing.assert_allclose([first.estimate, first.scale], [0.25, 6.0], rtol=1e-6)
    second = rescale(first, jnp.float32(3.0), target=1.5, tau=0.1)  # 3 / 6 = 0.5; estimate 0.9 * 0.25 + 0.05
    np.testing.assert_allclose([second.estimate, second.scale], [0.275, 1.5 / 0.275], rtol=1e-6)
    assert float(rescale(state, jnp.float32(0.5), target=0.0, tau=1.0).scale) == 2.0  # target 0: untouched
    unconstrained = rescale(state, jnp.float32(0.5), target=-1.0, tau=1.0)
    assert float(unconstrained.scale) == 2.0 and float(unconstrained.estimate) == 0.25
    same = rescale(state, jnp.float32(0.0), target=1.5, tau=1.0)  # identical deviations: scale kept
    assert float(same.scale) == 2.0


def _spread_parts(target=1.0, **extra):
    cfg = make_config({"env": "mpe_spread", "alg": "dico", "learner": "ppo", "dico_snd": target,
                       "ac.hidden": 16, "ac.num_envs": 4, "ac.rollout_len": 8, **extra})
    parts = make_parts(cfg)
    return cfg, parts, init_runner(parts, jax.random.PRNGKey(0))


def _observations(spec, steps=6, envs=4):
    """Random observations ``[T, E, N, D]`` (E = ``_spread_parts``' env count, for the recurrent actors' hidden
    state); an episode ends at step 2 of env 0 (recurrent actors reset)."""
    obs = jax.random.normal(jax.random.PRNGKey(3), (steps, envs, spec.num_agents, spec.obs_dim))
    avail = jnp.ones((steps, envs, spec.num_agents, spec.num_actions), bool)
    done = jnp.zeros((steps, envs), bool).at[2, 0].set(True)
    return Transition(obs, (), avail, jnp.zeros((steps, envs, spec.num_agents), jnp.int32), (), done, (), {})


RECURRENT = {"ac.recurrent": True, "ac.last_action": True}


@pytest.mark.parametrize("target,extra", [(0.7, {}), (0.7, RECURRENT), pytest.param(2.5, {}, marks=pytest.mark.slow)],
                         ids=["feedforward", "recurrent", "feedforward-2.5"])
def test_dico_final_snd_equals_the_target_after_rescaling(target, extra):
    cfg, parts, runner = _spread_parts(target, **extra)
    traj = _observations(parts.env.spec)
    learner, sharing = runner.learner, runner.sharing
    snd_of = lambda sh: float(measure_snd(parts.learner.policy_logits, learner, sh, traj, runner.hidden))  # noqa: E731
    before = snd_of(sharing)
    assert before > 0 and not math.isclose(before, target, rel_tol=0.05)
    sharing, _ = parts.scheme.driven_by.act(sharing, None, jnp.float32(before), None)
    np.testing.assert_allclose(snd_of(sharing), target, rtol=1e-4)
    # target 0: the shared policy alone, every agent the same function
    cfg, parts, runner = _spread_parts(0.0, **extra)
    assert float(measure_snd(parts.learner.policy_logits, runner.learner, runner.sharing, traj, runner.hidden)) == 0


@pytest.mark.parametrize("extra", [{}, RECURRENT], ids=["feedforward", "recurrent"])
def test_dico_gradients_reach_the_shared_policy_and_every_deviation(extra):
    cfg, parts, runner = _spread_parts(**extra)
    traj = _observations(parts.env.spec, steps=5)

    def loss(params):
        logits = parts.learner.policy_logits(runner.learner._replace(params=params), runner.sharing, traj,
                                             runner.hidden)
        return jnp.sum(jnp.tanh(logits))

    grads = jax.grad(loss)(runner.learner.params)
    assert all(np.any(g != 0) for g in jax.tree.leaves(grads["sharing"][POLICY]))
    for g in jax.tree.leaves(grads["actor"]):  # every agent's deviation network
        assert np.all(np.abs(np.asarray(g)).reshape(g.shape[0], -1).sum(-1) > 0)


def test_recurrent_dico_step_is_both_networks_side_by_side():
    """One recurrent step by hand: the state is [deviation's GRU state, shared policy's], the logits the shared
    policy's plus the scale times the deviation's; an unroll along a sequence with a reset equals stepping."""
    from psjax.nets.agents import RecurrentNet
    from psjax.sharing.bank import SharingState, SlotLayout, unroll_agents
    from psjax.sharing.dico import DeviationActor

    net = RecurrentNet(8, 3)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(keys[0], (5, 2, 4))  # [T, B, D], one agent
    deviation, shared = (net.init(k, jnp.zeros(8), jnp.zeros(4)) for k in keys[1:])
    params = {"deviation": deviation, "shared": shared, "scale": jnp.float32(0.3)}
    pair = DeviationActor(net, recurrent=True)
    assert pair.state_size == 16
    h = jax.random.normal(keys[0], (2, 16))
    h1, logits = pair.apply(params, h, x[0])
    h_dev, dev = net.apply(deviation, h[:, :8], x[0])
    h_shared, base = net.apply(shared, h[:, 8:], x[0])
    np.testing.assert_allclose(h1, jnp.concatenate([h_dev, h_shared], -1), rtol=1e-6)
    np.testing.assert_allclose(logits, base + 0.3 * dev, rtol=1e-5, atol=1e-6)
    # unrolled (one agent, its parameters derived as DiCo's scheme does) against stepping with a reset at t=3
    resets = jnp.zeros((5, 2), bool).at[3, 1].set(True)
    sharing = SharingState(jnp.zeros(1, jnp.int32), (), ())
    bank = jax.tree.map(lambda p: p[None], deviation)
    derive = lambda b: ({"deviation": b, "shared": shared, "scale": params["scale"]},  # noqa: E731
                        {"deviation": 0, "shared": None, "scale": None})
    states, out = unroll_agents(pair, bank, SlotLayout(1, "identity", False), sharing, h[:, None], x[:, :, None],
                                resets, derive=derive)
    carry = h
    for t in range(5):
        carry = jnp.where(resets[t][:, None], 0.0, carry)
        carry, step_logits = pair.apply(params, carry, x[t])
        np.testing.assert_allclose(states[t, :, 0], carry, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out[t, :, 0], step_logits, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("learner,extra", [("ppo", {}), ("ppo", RECURRENT),
                                           pytest.param("a2c", {}, marks=pytest.mark.slow),
                                           pytest.param("a2c", RECURRENT, marks=pytest.mark.slow)],
                         ids=["ppo", "ppo-recurrent", "a2c", "a2c-recurrent"])
def test_dico_trains_and_holds_its_target(learner, extra):
    cfg = make_config({"env": "mpe_spread", "alg": "dico", "learner": learner, "steps": 6000, "eval_every": 0,
                       "dico_snd": 0.5, "ac.hidden": 16, "ac.num_envs": 8, "ac.rollout_len": 25, **extra})
    runner, metrics = jax.jit(make_train(cfg))(jax.random.PRNGKey(0))
    assert np.all(np.isfinite(np.asarray(metrics["loss"])))
    snd = np.asarray(metrics["snd"])
    assert np.all(np.isfinite(snd)) and np.all(np.asarray(metrics["dico_scale"]) > 0)
    # measured after each update, before rescaling: one update moves it, the next rescale brings it back
    np.testing.assert_allclose(np.median(snd[len(snd) // 2:]), 0.5, rtol=0.25)


def test_snd_metric_for_any_method():
    def final_snd(alg, learner="ppo", **extra):
        cfg = make_config({"env": "typed", "num_agents": 4, "alg": alg, "learner": learner, "steps": 1024,
                           "eval_every": 0, "snd_interval": 2, **extra})
        _, metrics = jax.jit(make_train(cfg))(jax.random.PRNGKey(0))
        return np.asarray(metrics["snd"])

    fups = final_snd("fups")
    assert np.isnan(fups[0]) and np.all(fups[1::2] == 0.0)  # every other iteration; one network, no id: 0
    assert np.all(final_snd("nops")[1::2] > 0)
    qmix = final_snd("nops", "qmix", **{"q.num_envs": 4, "q.rollout_len": 16, "q.learning_starts": 0,
                                          "q.batch_size": 4, "q.buffer_size": 16, "q.hidden": 16})
    assert np.all(qmix[1::2] > 0)  # recurrent Q networks, unrolled along the rollout


def test_dico_config_errors():
    base = {"env": "mpe_spread", "alg": "dico"}
    with pytest.raises(ConfigError, match="ac.shared_torso=true"):
        make_config({**base, "ac.recurrent": True, "ac.shared_torso": True})
    with pytest.raises(ConfigError, match="env.agent_id='onehot'"):
        make_config({**base, "env.agent_id": "onehot"})
    with pytest.raises(ConfigError, match="dico_snd=-0.5"):
        make_config({**base, "dico_snd": -0.5})
    with pytest.raises(ConfigError, match="dico_tau=0.0"):
        make_config({**base, "dico_tau": 0.0})
    with pytest.raises(ConfigError, match="learner='qmix'"):
        make_config({**base, "learner": "qmix"})


def test_dico_run_draws_snd_over_time(tmp_path):
    cfg = make_config({"env": "mpe_spread", "alg": "dico", "learner": "ppo", "steps": 2000, "eval_every": 0.5,
                       "eval_envs": 2, "ac.hidden": 16, "ac.num_envs": 4, "ac.rollout_len": 25,
                       "out_dir": str(tmp_path), "run_name": "dico", "progress": False, "checkpoint": False})
    run(cfg)
    assert (tmp_path / "dico" / "snd.png").stat().st_size > 0


@pytest.mark.slow  # DiCo's scale is one more leaf of the sharing state; HyperMARL's vmapped test covers a scheme
def test_dico_vmapped_seeds_equal_single_runs(vmapped_check):
    cfg = make_config({"env": "mpe_spread", "alg": "dico", "learner": "ppo", "steps": 800, "eval_every": 0,
                       "ac.hidden": 16, "ac.num_envs": 4, "ac.rollout_len": 25})
    vmapped_check(make_train(cfg), jax.random.split(jax.random.PRNGKey(5), 2), rtol=2e-4, atol=2e-5)


def test_snd_series_and_picture_from_metrics(tmp_path):
    import json

    from psjax.sharing.report import plot_snd, snd_series

    rows = [{"seed": s, "env_steps": 10 * (i + 1), "snd": (1.0 + s if i % 2 else None), "dico_snd_target": 1.0}
            for s in range(2) for i in range(800)]  # NaN (None) between measurements
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    found = snd_series(tmp_path)
    assert sorted(found["series"]) == [0, 1]
    steps, snd = found["series"][1]
    assert len(steps) == 400 and np.all(snd == 2.0) and steps[0] == 20
    assert plot_snd(tmp_path).stat().st_size > 0  # binned: 400 points per seed
    plain = plot_snd(tmp_path).read_bytes()
    cfg = make_config({"alg": "dico", "dico_snd": 0.5})
    assert registry.get("dico").pictures[0](tmp_path, cfg, None, None) == tmp_path / "snd.png"
    assert (tmp_path / "snd.png").read_bytes() != plain  # DiCo's replaces the plain one: its target drawn in
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"seed": 0, "env_steps": 1, "return": 0.0}))
    assert snd_series(tmp_path) is None and plot_snd(tmp_path) is None
