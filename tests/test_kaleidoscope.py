"""Kaleidoscope: effective weights and diversity loss by hand, straight-through gradients, rescaling,
resets, the starting point against FuPS, and the trained method under QMIX and PPO."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psjax.config import make_config
from psjax.envs.base import EnvSpec
from psjax.nets.agents import MLP, RecurrentNet, block_params, module_of
from psjax.plan import seed_keys
from psjax.sharing import kaleidoscope as kal
from psjax.sharing.bank import SharingState, SlotLayout, apply_agents, init_bank
from psjax.sharing.methods import agent_derive, derive_for_acting, make_scheme
from psjax.train import count_params, make_parts, make_program, make_train

N, D, H, A = 3, 10, 16, 5


def _logit(p):
    return float(np.log(p / (1 - p)))


def _spec(n=N):
    return EnvSpec("test", n, D, 4, A, 10, (0,) * n, "mean", False)


# Two layers, two agents. Agent 0's thresholds are sigmoid^-1(0.1), agent 1's sigmoid^-1(0.005).
W0 = np.array([[0.5, -0.2], [0.01, -0.003]], np.float32)
W1 = np.array([[0.3], [0.02]], np.float32)
S0, S1 = 0.1, 0.005


def _tiny_params():
    def thresholds(w):
        return jnp.stack([jnp.full(w.shape, _logit(S0)), jnp.full(w.shape, _logit(S1))])

    bank = {"params": {
        "Dense_0": {"kernel": jnp.asarray(W0)[None], "bias": jnp.zeros((1, 2))},
        "Dense_1": {"kernel": jnp.asarray(W1)[None], "bias": jnp.zeros((1, 1))},
    }}
    owned = {"agent": {"params": {"Dense_0": {"kernel": thresholds(W0)}, "Dense_1": {"kernel": thresholds(W1)}}}}
    return {"agent": bank, "sharing": owned}


def test_effective_weights_and_masks_by_hand():
    params = _tiny_params()
    t = block_params(params["sharing"]["agent"], "hidden_0")["kernel"]
    w_eff = np.asarray(kal.effective_weights(jnp.asarray(W0), t))
    # sign(w) * relu(|w| - s): agent 0 shrinks by 0.1 and drops both small weights; agent 1 shrinks by
    # 0.005 and drops only |-0.003| < 0.005
    np.testing.assert_allclose(w_eff[0], [[0.4, -0.1], [0.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(w_eff[1], [[0.495, -0.195], [0.005, 0.0]], atol=1e-6)
    masks = np.asarray(kal.binary_masks(jnp.asarray(W0), t))
    np.testing.assert_array_equal(masks, [[[1, 1], [0, 0]], [[1, 1], [1, 0]]])
    # per-agent params for apply_agents: masked kernels get the agent axis, biases stay shared
    per_agent, axes = kal.agent_params("agent", params["agent"], params["sharing"])
    np.testing.assert_allclose(block_params(per_agent, "hidden_0")["kernel"], w_eff, atol=1e-6)
    assert block_params(axes, "hidden_0") == {"kernel": 0, "bias": None}
    assert block_params(per_agent, "head")["bias"].shape == (1,)


def test_apply_with_derived_params_equals_loop_over_agents():
    net = MLP(H, A)
    bank = jax.jit(lambda key: init_bank(lambda k: net.init(k, jnp.zeros(D)), key, 1))(jax.random.PRNGKey(0))
    owned = kal.init_thresholds(jax.random.PRNGKey(1), {"agent": bank}, N, 5.0, 5.0)
    params = {"agent": bank, "sharing": owned}
    x = jax.random.normal(jax.random.PRNGKey(2), (7, N, D))
    scheme = make_scheme(make_config({"alg": "kaleidoscope"}), _spec(), H, 2)
    state = scheme.init(jax.random.PRNGKey(3))
    out = apply_agents(net.apply, bank, scheme.layout, state, x, derive=agent_derive(scheme, "agent", params))
    for i in range(N):
        p_i = jax.tree.map(lambda p: p[0], bank)
        for layer in (module_of(bank, block) for block in ("hidden_0", "hidden_1", "head")):
            w = p_i["params"][layer]["kernel"]
            s = jax.nn.sigmoid(owned["agent"]["params"][layer]["kernel"][i])
            p_i["params"][layer]["kernel"] = jnp.sign(w) * jnp.maximum(jnp.abs(w) - s, 0.0)
        np.testing.assert_allclose(out[:, i], net.apply(p_i, x[:, i]), rtol=1e-5, atol=1e-6)
    # derived once for a rollout (derive_for_acting), the acting forward pass is the same
    acting = derive_for_acting(scheme, params, ("agent",), state)
    once = apply_agents(net.apply, bank, scheme.layout, state, x, derive=agent_derive(scheme, "agent", acting))
    np.testing.assert_array_equal(once, out)


def test_diversity_loss_by_hand_and_its_sign():
    params = _tiny_params()
    # weighted masks m*|w| differ only at W0[1,0] (0.01, layer weight 1) and W1[1,0] (0.02, weight 2);
    # ordered pairs count both directions; / N(N-1) = 2 / P = 6 masked weights
    expected = -(1 * 2 * 0.01 + 2 * 2 * 0.02) / 2 / 6
    np.testing.assert_allclose(kal.diversity_loss(params, ("agent",)), expected, rtol=1e-5)

    # more different masks -> lower loss: identical thresholds give 0, then one, then two weights apart
    def with_agent1(s):
        p = jax.tree.map(lambda x: x, params)
        for layer in (module_of(p["agent"], block) for block in ("hidden_0", "head")):
            t = p["sharing"]["agent"]["params"][layer]["kernel"]
            p["sharing"]["agent"]["params"][layer]["kernel"] = t.at[1].set(_logit(s))
        return float(kal.diversity_loss(p, ("agent",)))

    same, apart, further = with_agent1(S0), with_agent1(0.015), with_agent1(S1)
    assert same == 0.0
    assert further < apart < same  # 0.015 keeps W1[1,0] only; 0.005 keeps W0[1,0] too


def test_pairwise_mask_distance_equals_the_pairwise_form_in_value_and_gradient():
    def pairwise_form(w, t):  # the reference's: every ordered pair of |w|-weighted binary masks
        m = kal.binary_masks(w, t) * jnp.abs(jax.lax.stop_gradient(w))
        return jnp.abs(m[:, None] - m[None, :]).sum()

    k_w, k_t = jax.random.split(jax.random.PRNGKey(0))
    w = 0.1 * jax.random.normal(k_w, (6, 5))
    t = jax.random.uniform(k_t, (4, 6, 5), minval=-5.0, maxval=-1.0)  # thresholds 0.007-0.27: mixed masks
    value, (g_w, g_t) = jax.value_and_grad(kal.pairwise_mask_distance, (0, 1))(w, t)
    expected, (_, expected_g_t) = jax.value_and_grad(pairwise_form, (0, 1))(w, t)
    assert float(expected) > 0.0 and np.abs(np.asarray(expected_g_t)).sum() > 0.0  # the masks do differ
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    np.testing.assert_allclose(g_t, expected_g_t, rtol=1e-6, atol=1e-9)
    assert np.all(np.asarray(g_w) == 0.0)  # |w| enters without gradient, as before


def test_straight_through_gradient_reaches_the_thresholds():
    params = _tiny_params()
    grads = jax.grad(lambda p: kal.diversity_loss(p, ("agent",)))(params)
    g = np.array(block_params(grads["sharing"]["agent"], "hidden_0")["kernel"])
    # only W0[1,0] differs between the agents. d loss / d m_0 = +2|w| c / (N(N-1)P) there, and the STE
    # passes d m / d t = -sigmoid'(t) = -s(1 - s): agent 0 (masked) is pushed to raise its threshold,
    # agent 1 (keeping it) to lower it, which makes the masks more different
    scale = 2 * 0.01 * 1 / (2 * 6)
    np.testing.assert_allclose(g[0, 1, 0], -scale * S0 * (1 - S0), rtol=1e-4)
    np.testing.assert_allclose(g[1, 1, 0], scale * S1 * (1 - S1), rtol=1e-4)
    g[:, 1, 0] = 0.0
    assert np.all(g == 0.0)  # equal masks: no diversity gradient
    assert np.all(np.asarray(block_params(grads["agent"], "hidden_0")["kernel"]) == 0.0)  # |w| has no gradient


def test_rescaling_over_a_running_window_by_hand():
    window = kal.init_window(3)
    steps = [(1.0, -0.5), (3.0, -1.5), (2.0, -4.0), (8.0, -0.5)]
    # |0.5 * mean(main) / mean(div)| over the last 3 steps, the current one included
    expected = [0.5 * 1 / 0.5, 0.5 * 2 / 1, 0.5 * 2 / 2, 0.5 * (13 / 3) / 2]
    for (main, div), scale in zip(steps, expected):
        got, window = kal.rescale(window, jnp.float32(main), jnp.float32(div), 0.5)
        np.testing.assert_allclose(got, scale, rtol=1e-6)
    got, _ = kal.rescale(kal.init_window(3), jnp.float32(1.0), jnp.float32(0.0), 0.5)
    assert float(got) == 0.5  # no diversity yet: the coefficient itself

    # through the scheme's loss hook: on the first step the term is -div_coef * main loss
    scheme = make_scheme(make_config({"alg": "kaleidoscope", "kal_div_coef": 0.5}), _spec(2), H, 2)
    term, window, metrics = scheme.aux_loss.loss(_tiny_params(), scheme.aux_loss.init(), jnp.float32(0.3))
    np.testing.assert_allclose(term, -0.5 * 0.3, rtol=1e-5)
    np.testing.assert_allclose(metrics["kal_div_scale"], 0.5 * 0.3 / (0.1 / 12), rtol=1e-5)
    assert int(window.count) == 1 and window.main.shape == (100,)


def test_reset_layer_touches_only_weights_every_agent_masks():
    w = jnp.array([[0.5, 0.004], [0.002, 0.3]])
    # agent 0 masks |w| < 0.01, agent 1 masks |w| < 0.003: only w[1, 0] = 0.002 is masked by both
    t = jnp.stack([jnp.full((2, 2), _logit(0.01)), jnp.full((2, 2), _logit(0.003))])
    new_w, new_t, flags = kal.reset_layer(jax.random.PRNGKey(0), w, t, 1.0, 5.0, 5.0)
    np.testing.assert_array_equal(flags, [[False, False], [True, False]])
    changed = np.asarray(new_w != w)
    np.testing.assert_array_equal(changed, flags)
    np.testing.assert_array_equal(np.asarray(new_t != t), np.broadcast_to(flags, (2, 2, 2)))
    assert np.all(np.asarray(new_t[:, 1, 0]) <= -5.0) and np.all(np.asarray(new_t[:, 1, 0]) >= -10.0)
    # ratio 0.5: a random half of the eligible weights
    big_w = jnp.full((100, 100), 0.001)
    _, _, half = kal.reset_layer(jax.random.PRNGKey(1), big_w, jnp.zeros((2, 100, 100)), 0.5, 5, 5)
    assert 0.45 < float(half.mean()) < 0.55


def test_scheme_update_resets_at_the_interval_only_weights_all_agents_mask():
    cfg = make_config({"env": "lbf", "alg": "kaleidoscope", "learner": "qmix", "steps": 1_000_000,
                       "kal_reset_interval": 10_000, "kal_reset_ratio": 1.0})
    parts = make_parts(cfg)
    state = jax.jit(parts.learner.init)(jax.random.PRNGKey(0))
    module = {block: module_of(state.params["agent"], block) for block in ("hidden_0", "head")}  # the masked Dense
    t = state.params["sharing"]["agent"]["params"][module["head"]]["kernel"]  # [N, H, A]
    t = t.at[:, :3].set(10.0).at[0, 3:5].set(10.0)  # rows 0-2 masked by every agent, rows 3-4 by agent 0 only
    params = jax.tree.map(lambda x: x, state.params)
    params["sharing"]["agent"]["params"][module["head"]]["kernel"] = t
    state = state._replace(params=params)

    def all_masked(p):
        out = {}
        for layer in module.values():
            w = p["agent"]["params"][layer]["kernel"][0]
            out[layer] = np.all(np.abs(w) <= jax.nn.sigmoid(p["sharing"]["agent"]["params"][layer]["kernel"]), 0)
        return out

    expected = all_masked(state.params)
    assert expected[module["head"]][:3].all() and not expected[module["head"]][3:5].any()
    sharing = parts.scheme.init(jax.random.PRNGKey(1))
    update = jax.jit(parts.scheme.update)
    spi = cfg.steps_per_iteration
    # an iteration that does not cross a multiple of the interval changes nothing
    _, same, metrics = update(sharing, state, None, jax.random.PRNGKey(2), jnp.int32(10_000 + spi), None)
    assert int(metrics["kal_reset"]) == 0
    jax.tree.map(np.testing.assert_array_equal, same.params, state.params)
    _, reset, metrics = update(sharing, state, None, jax.random.PRNGKey(2), jnp.int32(20_000 + 7), None)
    for layer in module.values():
        before, after = state.params["agent"]["params"][layer]["kernel"][0], reset.params["agent"]["params"][layer]
        np.testing.assert_array_equal(np.asarray(after["kernel"][0] != before), expected[layer])
        np.testing.assert_array_equal(after["bias"], state.params["agent"]["params"][layer]["bias"])
        t_before = state.params["sharing"]["agent"]["params"][layer]["kernel"]
        t_after = reset.params["sharing"]["agent"]["params"][layer]["kernel"]
        np.testing.assert_array_equal(np.asarray(t_after != t_before), np.broadcast_to(expected[layer], t_before.shape))
    assert int(metrics["kal_reset"]) == sum(int(e.sum()) for e in expected.values())
    jax.tree.map(np.testing.assert_array_equal, reset.target, state.target)  # the target follows at its sync
    # the reset weights are live again for every agent (fresh thresholds at most sigmoid(-5))
    assert not all_masked(reset.params)[module["head"]][:3].any()
    # and never within the last interval of training
    _, late, _ = update(sharing, state, None, jax.random.PRNGKey(2), jnp.int32(1_000_003), None)
    jax.tree.map(np.testing.assert_array_equal, late.params, state.params)


@pytest.mark.parametrize("recurrent", [True, False])
def test_at_initialisation_outputs_equal_fups_up_to_the_threshold_shrink(recurrent):
    """At init every weight is shrunk towards 0 by sigmoid(t_i) <= sigmoid(-5) = 0.0067 (set to 0 where
    |w| is smaller). The outputs are exactly FuPS's with those weights, and within 5% of FuPS's with the
    original weights (measured ~2% after 5 GRU steps with hidden 64)."""
    net = RecurrentNet(64, A) if recurrent else MLP(64, A)
    example = (jnp.zeros(64), jnp.zeros(D)) if recurrent else (jnp.zeros(D),)
    bank = jax.jit(lambda key: init_bank(lambda k: net.init(k, *example), key, 1))(jax.random.PRNGKey(1))
    scheme = make_scheme(make_config({"alg": "kaleidoscope"}), _spec(), 64, 2)
    params = {"agent": bank, "sharing": scheme.init_params(jax.random.PRNGKey(2), {"agent": bank})}
    for _, _, w, t, _ in kal.masked_layers(params, ("agent",)):
        assert float(jax.nn.sigmoid(t).max()) <= float(jax.nn.sigmoid(-5.0))
        shrink = np.abs(np.asarray(kal.effective_weights(w, t) - w))
        assert shrink.max() <= float(jax.nn.sigmoid(-5.0)) + 1e-7
    state = scheme.init(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(3), (256, N, D))
    derive = agent_derive(scheme, "agent", params)
    fups = SlotLayout(1, "shared", False)
    if recurrent:
        h_kal = h_fups = jnp.zeros((256, N, 64))
        for _ in range(5):
            h_kal, out_kal = apply_agents(net.apply, bank, scheme.layout, state, h_kal, x, derive=derive)
            h_fups, out_fups = apply_agents(net.apply, bank, fups, SharingState(state.slots, ()), h_fups, x)
    else:
        out_kal = apply_agents(net.apply, bank, scheme.layout, state, x, derive=derive)
        out_fups = apply_agents(net.apply, bank, fups, SharingState(state.slots, ()), x)
    diff = float(jnp.abs(out_kal - out_fups).max())
    assert 0.0 < diff <= 0.05 * float(jnp.abs(out_fups).max())


# Kaleidoscope under a value learner runs in `make test` through PQN (test_pqn); QMIX's replay program: test-all
@pytest.mark.parametrize("learner", [pytest.param("qmix", marks=pytest.mark.slow), "ppo"])
def test_trains_under_qmix_and_ppo_jits_once_and_vmaps_over_seeds(learner):
    section = "q" if learner == "qmix" else "ac"
    over = {"env": "lbf", "alg": "kaleidoscope", "learner": learner, "steps": 2048, f"{section}.num_envs": 4,
            f"{section}.rollout_len": 32, f"{section}.hidden": 32, "kal_reset_interval": 512}
    if learner == "qmix":
        over.update({"q.learning_starts": 0, "q.buffer_size": 64, "q.batch_size": 8})
    else:
        over.update({"ac.num_minibatches": 2})
    cfg = make_config(over)
    parts = make_parts(cfg)
    names = ("agent",) if learner == "qmix" else ("actor", "critic")
    # trainable parameters: FuPS's plus one threshold per masked weight per agent
    fups_count = count_params(make_parts(make_config({**over, "alg": "fups"})))
    shapes = jax.eval_shape(parts.learner.init, jax.random.PRNGKey(0)).params
    masked = sum(int(np.prod(shapes[n]["params"][p[-2]]["kernel"].shape)) for n in names
                 for p in kal.masked_paths(shapes[n]))
    assert count_params(parts) == fups_count + parts.env.spec.num_agents * masked

    traces = []
    train_one = make_train(cfg)

    def train(key):
        traces.append(1)
        return train_one(key)

    keys = seed_keys(0, 2)
    run = jax.jit(jax.vmap(train))
    runners, metrics = run(keys)
    runners, metrics = run(keys + 1)  # new seeds, same program
    assert len(traces) == 1
    start = jax.vmap(make_program(cfg, 1).init)(keys + 1).learner.params["sharing"]
    for before, after in zip(jax.tree.leaves(start), jax.tree.leaves(runners.learner.params["sharing"])):
        moved = np.abs(np.asarray(after - before))
        assert moved.max() > 1e-3, "thresholds did not move under training"
    thresholds = jax.tree.leaves(runners.learner.params["sharing"])[0]
    assert not np.array_equal(thresholds[0], thresholds[1])  # seeds differ
    iters = cfg.num_iterations
    assert metrics["kal_sharing_ratio"].shape == (2, iters, 2)
    assert metrics["kal_overlap"].shape == (2, iters, 2, 2)
    for name in ("kal_sharing_ratio_mean", "kal_mask_overlap", "kal_div_scale"):
        assert metrics[name].shape == (2, iters) and np.all(np.isfinite(metrics[name]))
    assert np.all((metrics["kal_mask_overlap"] > 0.5) & (metrics["kal_mask_overlap"] <= 1.0))
    assert np.all(np.asarray(metrics["kal_div_loss"]) <= 0.0)
