"""BDPS: roles / groups in range and fixed between their periods, the GAT's attention, the selector's
TD target by hand, gradients only to the networks agents are assigned to, roles drawn at evaluation, both
advantage definitions by hand, the time-limit bootstrap and last-action input against a hand unroll, one
compile and seed vmap, config validation."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psjax.config import ConfigError, make_config
from psjax.envs.base import team_reward
from psjax.learners.qmix import masked_argmax
from psjax.nets.agents import RecurrentNet
from psjax.nets.bdps import GroupSelector, QHead, Torso
from psjax.nets.mixers import QMixer
from psjax.sharing.bdps import advantage, distinct_per_episode, make_agent_model, selector_targets
from psjax.train import init_runner, make_parts, make_train, rollout_steps

T_U, E_FACTOR = 2, 2
T_V = T_U * E_FACTOR


def tiny(alg="bdps", **extra):
    """The two-type cue game with 3 agents and 10-step episodes; k = 3 roles, m = 2 groups."""
    overrides = {
        "env": "typed", "num_agents": 3, "alg": alg, "bdps_roles": 3, "bdps_groups": 2,
        "bdps_role_period": T_U, "bdps_group_factor": E_FACTOR, "num_envs": 4, "rollout_len": 16,
        "hidden": 16, "bdps_vae_hidden": 8, "bdps_embed": 16, "bdps_gat_out": 12, "bdps_selector_hidden": 8,
        "batch_size": 4, "buffer_size": 8, "learning_starts": 0, "updates_per_rollout": 1, "steps": 4 * 16 * 2,
        "mixer_embed": 8, "hypernet_hidden": 16,
    }
    return make_config({**overrides, **extra})


@pytest.fixture(scope="module")
def built():
    """The tiny config's parts and a freshly initialised runner (one compiled init)."""
    cfg = tiny()
    parts = make_parts(cfg)
    return cfg, parts, jax.jit(lambda key: init_runner(parts, key))(jax.random.PRNGKey(3))


@pytest.fixture(scope="module")
def trained():
    """Two iterations of a vmapped two-seed BDPS training, compiled once, called with two pairs of keys."""
    cfg = tiny(eps_decay_steps=1)  # epsilon 0.05 from the start: groups mostly greedy, still explored
    train = make_train(cfg)
    traces = []

    def counted(key):
        traces.append(1)
        return train(key)

    fn = jax.jit(jax.vmap(counted))
    first = fn(jax.random.split(jax.random.PRNGKey(0), 2))
    second = fn(jax.random.split(jax.random.PRNGKey(1), 2))
    return cfg, first, second, len(traces)


@pytest.fixture(scope="module")
def last_action_params(built):
    """The tiny config with ``q.last_action``: its agent model and freshly initialised params."""
    _, parts, _ = built
    cfg = tiny(last_action=True)
    model = make_agent_model(cfg, parts.env.spec)
    return cfg, model, jax.jit(model.init)(jax.random.PRNGKey(5))


def episode_steps(done):
    """``done[T, E] -> c[T, E]``: steps into the episode at each step (the rollout starts fresh episodes)."""
    c = np.zeros(done.shape, int)
    for t in range(1, done.shape[0]):
        c[t] = np.where(done[t - 1], 0, c[t - 1] + 1)
    return c


def test_roles_and_groups_in_range_and_constant_between_periods(built):
    cfg, parts, runner = built
    env_state, ts = jax.vmap(parts.env.reset)(jax.random.split(jax.random.PRNGKey(3), 4))
    steps = 30  # three 10-step episodes per env, from fresh episodes

    @jax.jit
    def roll(runner, env_state, ts):
        return rollout_steps(parts, runner.learner, runner.sharing, env_state, ts, parts.learner.init_hidden(4),
                        runner.key, runner.env_steps, steps, greedy=False)

    (_, _, hidden), (traj, _) = roll(runner, env_state, ts)
    assert hidden["t"].dtype == jnp.int32 and hidden["role"].dtype == jnp.int32  # the loop's reset keeps dtypes
    role, group = np.asarray(traj.extras["role"]), np.asarray(traj.extras["group"])
    done = np.asarray(traj.done)
    assert role.shape == group.shape == (steps, 4, 3)
    assert role.min() >= 0 and role.max() < 3 and group.min() >= 0 and group.max() < 2
    c = episode_steps(done)
    np.testing.assert_array_equal(np.asarray(traj.extras["group_due"]), c % T_V == 0)
    prev_same_episode = (c[1:] > 0)[..., None]
    role_kept = (c[1:] % T_U != 0)[..., None] & prev_same_episode
    group_kept = (c[1:] % T_V != 0)[..., None] & prev_same_episode
    assert np.all(role[1:][np.broadcast_to(role_kept, role[1:].shape)] ==
                  role[:-1][np.broadcast_to(role_kept, role[1:].shape)])
    assert np.all(group[1:][np.broadcast_to(group_kept, group[1:].shape)] ==
                  group[:-1][np.broadcast_to(group_kept, group[1:].shape)])
    # they do change at their periods (sampled roles; untrained selector values differ between agents)
    assert np.any(role[1:] != role[:-1]) and np.any(group[1:] != group[:-1])
    # h_U stays with the role: it changes only where a role is chosen
    h_u = np.asarray(traj.extras["h_u"])
    assert np.all(h_u[1:][role_kept[..., 0]] == h_u[:-1][role_kept[..., 0]])
    assert np.all(np.asarray(traj.extras["adv"]) >= 0.0)


def test_gat_attention_sums_to_one_and_ignores_dead_agents():
    sel = GroupSelector(num_roles=3, num_groups=2, embed=16, gat_out=12, hidden=8)
    roles = jnp.array([[0, 1, 2, 1], [2, 2, 0, 1]])
    alive = jnp.array([[True, False, True, True], [True, True, True, False]])
    h = jnp.zeros((2, 4, 8))
    params = sel.init(jax.random.PRNGKey(0), h, roles, alive)
    alpha = sel.apply(params, roles, alive, method=sel.attention)  # [B, heads, N, N]
    assert alpha.shape == (2, 3, 4, 4)
    np.testing.assert_allclose(alpha.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(alpha[0, :, :, 1], 0.0)
    np.testing.assert_array_equal(alpha[1, :, :, 3], 0.0)
    assert np.all(alpha[0, :, :, [0, 2, 3]] > 0.0)
    # a dead agent's role does not reach the living agents' group values
    _, values = sel.apply(params, h, roles, alive)
    _, values2 = sel.apply(params, h, roles.at[0, 1].set(0).at[1, 3].set(0), alive)
    np.testing.assert_allclose(values2[0, [0, 2, 3]], values[0, [0, 2, 3]], rtol=1e-6)
    np.testing.assert_allclose(values2[1, :3], values[1, :3], rtol=1e-6)
    assert not np.allclose(values2[0, 1], values[0, 1])  # its own values still follow its own role
    # the GAT output is ELU of the attention-weighted sum of the projected roles, head by head
    wx = np.asarray(sel.apply(params, roles, method=sel.project))  # [B, N, heads, F]
    feats = np.asarray(sel.apply(params, roles, alive, method=sel.features)).reshape(wx.shape)
    a = np.asarray(alpha)
    for b, i, head in np.ndindex(2, 4, 3):
        mixed = sum(a[b, head, i, j] * wx[b, j, head] for j in range(4))
        np.testing.assert_allclose(feats[b, i, head], np.where(mixed > 0, mixed, np.expm1(mixed)), rtol=1e-5,
                                   atol=1e-6)


def test_selector_td_target_by_hand():
    """Choices at steps 0, 2, 3, 5; the episode ends at step 2; gamma = 0.5."""
    reward = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    done = jnp.array([False, False, True, False, False, False])
    due = np.array([True, False, True, True, False, True])
    choice_next = jnp.array(np.append(due[1:], False))
    v_next = jnp.array([10.0, 20.0, 30.0, 40.0, 50.0, 60.0])  # mixed max group value at step t+1
    y, valid = selector_targets(reward, done, choice_next, v_next, 0.5)
    # step 0: r0 + r1 + 0.5 * V(step 2) = 1 + 2 + 10; step 2: the episode ends there, 3;
    # step 3: r3 + r4 + 0.5 * V(step 5) = 4 + 5 + 25; step 5: runs past the stored sequence -> no target
    np.testing.assert_allclose(np.asarray(y)[due][:3], [13.0, 3.0, 34.0])
    np.testing.assert_array_equal(np.asarray(valid)[due], [True, True, True, False])


def test_selector_td_target_unknown_next_choice():
    """A segment that ends at a choice whose value was not computed gets no target; one ending in done still does."""
    reward, v_next = jnp.arange(1.0, 7.0), jnp.zeros(6)
    done = jnp.array([False, False, True, False, False, False])
    choice_next = jnp.array([False, True, False, False, True, False])
    known = jnp.array([True, False, True, True, True, True])  # the choice at step 2 has no value
    _, valid = selector_targets(reward, done, choice_next, v_next, 0.5, known)
    np.testing.assert_array_equal(np.asarray(valid), [False, False, True, True, True, False])


def test_selector_td_target_truncated_segment_gets_no_target():
    """A segment cut by a time limit has no target (its value runs past the limit); one that terminates
    keeps its reward sum. Choices at steps 0 and 3; episodes end at step 1 (time limit) and step 4
    (terminal); gamma = 0.5."""
    reward = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    done = jnp.array([False, True, False, False, True, False])
    terminated = jnp.array([False, False, False, False, True, False])
    choice_next = jnp.array([False, False, True, False, False, False])
    y, valid = selector_targets(reward, done, choice_next, jnp.zeros(6), 0.5, terminated_t=terminated)
    np.testing.assert_array_equal(np.asarray(valid)[[0, 3]], [False, True])
    assert float(y[3]) == 4.0 + 5.0
    # the same steps read as terminal (the old rule) would give step 0 the target 1 + 2 = 3
    _, valid_as_terminal = selector_targets(reward, done, choice_next, jnp.zeros(6), 0.5)
    assert bool(valid_as_terminal[0])


def selector_sequence(cfg, spec, episode_starts, t_len=16, batch=3, key=0):
    """A stored-sequence dict with episodes starting where ``episode_starts[b]`` says (step counters from
    ``start[b]`` at t = 0), random roles / groups / rewards / states and some dead agents."""
    n, t_v = spec.num_agents, cfg.sharing.bdps_role_period * cfg.sharing.bdps_group_factor
    counter = np.zeros((t_len + 1, batch), int)
    for b, (first, starts) in enumerate(episode_starts):
        counter[0, b] = first
        for t in range(1, t_len + 1):
            counter[t, b] = 0 if t in starts else counter[t - 1, b] + 1
    ks = jax.random.split(jax.random.PRNGKey(key), 6)
    avail = jax.random.bernoulli(ks[0], 0.8, (t_len + 1, batch, n, spec.num_actions)).at[..., 0].set(True)
    avail = avail.at[5:, 0, 1, 1:].set(False)  # agent 1 of sequence 0 dies at step 5
    seq = {
        "role": jax.random.randint(ks[1], (t_len + 1, batch, n), 0, cfg.sharing.bdps_roles),
        "group": jax.random.randint(ks[2], (t_len + 1, batch, n), 0, cfg.sharing.bdps_groups),
        "group_due": jnp.asarray(counter % t_v == 0),
        "done": jnp.asarray(counter[1:] == 0),
        "terminated": jnp.asarray(counter[1:] == 0) & (jnp.arange(batch) != 1),  # sequence 1's episodes time out
        "reward": jax.random.normal(ks[3], (t_len, batch, n)),
        "state": jax.random.normal(ks[4], (t_len + 1, batch, spec.state_dim)),
        "avail": avail,
        "adv": jnp.abs(jax.random.normal(ks[5], (t_len + 1, batch, n))),
    }
    resets = jnp.concatenate([jnp.zeros((1, batch), bool), seq["done"]], 0)
    return seq, resets


def reference_selector_loss(cfg, spec, params, target, seq, h0, resets):
    """The selector's TD loss computed at every stored step (GAT + GRU each step, GRU state kept between
    choices): what the learner's choice-slot computation must equal."""
    sc, qc = cfg.sharing, cfg.q
    sel = GroupSelector(sc.bdps_roles, sc.bdps_groups, sc.bdps_embed, sc.bdps_gat_out, sc.bdps_selector_hidden)
    mixer = QMixer(spec.num_agents, qc.mixer_embed, qc.hypernet_hidden, qc.mixer_init_scale)

    def values(p):
        def step(h, inputs):
            role, live, due, reset = inputs
            h = jnp.where(reset[:, None, None], 0.0, h)
            h_new, v = sel.apply(p, h, role, live)
            return jnp.where(due[:, None, None], h_new, h), v

        alive = seq["avail"].sum(-1) > 1
        return jax.lax.scan(step, h0, (seq["role"], alive, seq["group_due"], resets))[1]

    v, v_target = values(params["selector"]), values(target["selector"])
    chosen = jnp.take_along_axis(v[:-1], seq["group"][:-1, ..., None], -1)[..., 0]
    pred = mixer.apply(params["sel_mixer"], chosen, seq["state"][:-1])
    v_next = mixer.apply(target["sel_mixer"], v_target[1:].max(-1), seq["state"][1:])
    due = seq["group_due"]
    choice_next = jnp.concatenate([due[1:-1], jnp.zeros_like(due[:1])], 0)
    y, valid = selector_targets(team_reward(spec, seq["reward"]), seq["done"], choice_next, v_next, qc.gamma,
                                terminated_t=seq["terminated"])
    weight = (due[:-1] & valid).astype(jnp.float32)
    return (weight * (pred - y) ** 2).sum() / jnp.maximum(weight.sum(), 1.0)


def test_selector_loss_at_choice_slots_equals_every_step_computation(built):
    cfg, parts, runner = built
    spec = parts.env.spec
    model = make_agent_model(cfg, spec)
    params = runner.learner.params
    target = jax.tree.map(lambda x: 0.9 * x + 0.01, params)
    # sequence 0: an episode ends at step 9; 1: starts mid-episode (first choice at t = 1); 2: short episodes
    seq, resets = selector_sequence(cfg, spec, [(0, {10}), (3, set()), (2, {5, 7, 13})])
    h0 = jax.random.normal(jax.random.PRNGKey(7), (3, spec.num_agents, cfg.sharing.bdps_selector_hidden))
    hidden0 = {**jax.tree.map(lambda h: h[:3], model.init_hidden(3)), "sel_h": h0}
    loss_fn = jax.jit(lambda p, t, s, r: model.extra_loss(p, t, s, hidden0, r, jax.random.PRNGKey(0))[1])
    metrics = loss_fn(params, target, seq, resets)
    expected = reference_selector_loss(cfg, spec, params, target, seq, h0, resets)
    assert float(metrics["sel_dropped"]) == 0.0
    np.testing.assert_allclose(metrics["sel_loss"], expected, rtol=1e-5)
    # episodes of one step: 17 choices in 17 steps, more than the 12 slots (2 * ceil(17 / T_V) + 2)
    seq, resets = selector_sequence(cfg, spec, [(0, set(range(1, 17)))] * 3)
    metrics = loss_fn(params, target, seq, resets)
    assert float(metrics["sel_dropped"]) == pytest.approx(4 / 16)  # choices at steps 12..15 of 0..15
    assert np.isfinite(float(metrics["sel_loss"])) and float(metrics["sel_loss"]) > 0.0


@pytest.mark.parametrize("shared", [False, True])
def test_role_and_group_networks_get_gradients_only_from_their_agents(built, shared):
    cfg, parts, runner = built
    if shared:
        cfg = tiny(bdps_shared_torso=True)
    model = make_agent_model(cfg, parts.env.spec)
    params = model.init(jax.random.PRNGKey(4)) if shared else runner.learner.params
    T, B, N = 5, 2, 3
    obs = jax.random.normal(jax.random.PRNGKey(1), (T + 1, B, N, parts.env.spec.obs_dim))
    seq = {
        "obs": obs,
        "role": jnp.broadcast_to(jnp.array([0, 1, 0]), (T + 1, B, N)),  # nobody has role 2
        "group": jnp.zeros((T + 1, B, N), jnp.int32),  # nobody is in group 1
        "h_u": jax.random.normal(jax.random.PRNGKey(2), (T + 1, B, N, cfg.sharing.bdps_vae_hidden)),
        "final_step": jnp.array([[1, 2], [3, T]]),  # time-limit slots (T: padding)
        "final_obs": obs[jnp.array([2, 4])],
        "action": jnp.zeros((T, B, N), jnp.int32),
    }
    hidden0 = jax.tree.map(lambda h: h[:B], model.init_hidden(B))
    resets = jnp.zeros((T + 1, B), bool).at[3, 1].set(True)

    def utilities(p, agents):
        q, q_final = model.unroll(p, None, hidden0, seq, resets)
        return q[:, :, agents].sum() + q_final[:, :, agents].sum()

    @jax.jit
    def grads(agents):
        return jax.grad(utilities)(params, agents)

    def row_norms(tree):
        return np.array([sum(float(jnp.abs(x[i]).sum()) for x in jax.tree.leaves(tree))
                         for i in range(jax.tree.leaves(tree)[0].shape[0])])

    g = grads(jnp.array([0, 1, 2]))
    role_rows, group_rows = row_norms(g["role"]), row_norms(g["group"])
    assert role_rows[0] > 0 and role_rows[1] > 0 and role_rows[2] == 0.0
    assert group_rows[0] > 0 and group_rows[1] == 0.0
    g0 = grads(jnp.array([0, 2, 0]))  # agents with role 0 only: role network 1 gets nothing
    assert row_norms(g0["role"])[1] == 0.0 and row_norms(g0["role"])[0] > 0
    # the selectors get no gradient from the TD loss's utilities
    assert all(float(jnp.abs(x).sum()) == 0.0 for x in jax.tree.leaves(g["vae"]))
    if shared:  # the torso learns from every agent
        assert all(float(jnp.abs(x).sum()) > 0.0 for x in jax.tree.leaves(g["torso"]))


def test_advantage_definitions_by_hand():
    q = jnp.array([[1.0, 3.0, 2.0, 5.0], [4.0, 4.0, 0.0, 1.0]])
    avail = jnp.array([[True, True, True, False], [True, True, False, True]])  # 5.0 and 0.0 unavailable
    taken = advantage(q, avail, jnp.array([0, 1]), "taken")
    np.testing.assert_allclose(taken, [3.0 - 1.0, 4.0 - 4.0])  # max over available - Q(a_t)
    mean = advantage(q, avail, jnp.array([0, 1]), "mean")
    np.testing.assert_allclose(mean, [3.0 - (1.0 + 3.0 + 2.0) / 3, 4.0 - (4.0 + 4.0 + 1.0) / 3], rtol=1e-6)
    greedy = jnp.array([1, 0])  # the greedy actions: the seed's advantage is exactly 0, the mean one is not
    np.testing.assert_array_equal(advantage(q, avail, greedy, "taken"), [0.0, 0.0])
    np.testing.assert_allclose(advantage(q, avail, greedy, "mean"), [1.0, 1.0], rtol=1e-6)


def wide_latents(params):
    """The role VAE with mu = 0 for every input and sigma = e (logvar = 2): the agents' latents z = sigma * eps
    differ only through eps."""
    vae = dict(params["vae"]["params"])
    vae["enc_mu"] = jax.tree.map(jnp.zeros_like, vae["enc_mu"])
    vae["enc_logvar"] = {"kernel": jnp.zeros_like(vae["enc_logvar"]["kernel"]),
                         "bias": jnp.full_like(vae["enc_logvar"]["bias"], 2.0)}
    return {**params, "vae": {"params": vae}}


def greedy_choose(ts):
    return lambda key, q: masked_argmax(q, ts.avail_actions).astype(jnp.int32)


def test_evaluation_draws_roles_from_the_latent_sample(built):
    """Greedy acting (evaluation) draws u = argmax(mu + sigma * eps) as in training (seed 3.1.1): with one mean
    for every agent and wide latents, the agents get different roles (the mean alone gives all of them role 0)."""
    cfg, parts, runner = built
    model = make_agent_model(cfg, parts.env.spec)
    params = wide_latents(runner.learner.params)
    _, ts = jax.vmap(parts.env.reset)(jax.random.split(jax.random.PRNGKey(3), 4))
    key = jax.random.PRNGKey(11)
    act = jax.jit(lambda greedy: model.act(params, None, model.init_hidden(4), ts, key, greedy_choose(ts), 0.0,
                                           greedy)[1]["role"], static_argnums=0)
    roles = np.asarray(act(True))
    eps = jax.random.normal(jax.random.split(key, 4)[0], (4, 3, cfg.sharing.bdps_roles))  # act's role key
    np.testing.assert_array_equal(roles, np.argmax(eps, -1))
    assert len(np.unique(roles)) > 1
    np.testing.assert_array_equal(roles, act(False))  # the draw does not depend on greedy acting


def test_greedy_acting_advantage_windows(built):
    """Under greedy acting the seed's advantage is exactly 0 at every step; ``bdps_advantage=mean`` is not."""
    cfg, parts, runner = built
    _, ts = jax.vmap(parts.env.reset)(jax.random.split(jax.random.PRNGKey(3), 4))
    for kind, nonzero in (("taken", False), ("mean", True)):
        model = make_agent_model(tiny(bdps_advantage=kind), parts.env.spec)
        _, hidden, extras = model.act(runner.learner.params, None, model.init_hidden(4), ts, jax.random.PRNGKey(0),
                                      greedy_choose(ts), 0.0, True)
        assert np.all(np.asarray(extras["adv"]) > 0.0) if nonzero else np.all(np.asarray(extras["adv"]) == 0.0)
        np.testing.assert_array_equal(np.asarray(hidden["adv"])[..., 0], extras["adv"])  # ring slot of step 0


def test_distinct_per_episode_by_hand():
    """One env, 2 agents: an episode ending at step 1 that started before the trajectory (not counted), one over
    steps 2-4 (roles {0, 2}: 2), one over steps 5-6 (roles {1}: 1), one still running at step 7."""
    role = jnp.array([[1, 1], [0, 1], [0, 2], [0, 0], [2, 2], [1, 1], [1, 1], [0, 2]])[:, None]  # [T, E, N]
    start = jnp.array([False, False, True, False, False, True, False, True])[:, None]
    done = jnp.array([False, True, False, False, True, False, True, False])[:, None]
    count, whole = distinct_per_episode(role, start, done, 3)
    np.testing.assert_array_equal(np.asarray(whole)[:, 0], [0, 0, 0, 0, 1, 0, 1, 0])
    assert float(count[4, 0]) == 2.0 and float(count[6, 0]) == 1.0


def hand_unroll(cfg, spec, params, hidden0, seq, resets):
    """The model's ``(q, q_final)`` step by step and network by network, resets applied by hand: q[t] from the
    states after obs t; q_final[t] from the same states (before step t+1's reset) on final_obs[t], with step t's
    role / group / h_U and a_t as the last action."""
    sc, qc, A = cfg.sharing, cfg.q, spec.num_actions
    k, m, shared = sc.bdps_roles, sc.bdps_groups, sc.bdps_shared_torso
    net, torso, head = RecurrentNet(qc.hidden, A), Torso(qc.hidden), QHead(A)

    def row(bank, j):
        return jax.tree.map(lambda x: x[j], bank)

    def pick(q_all, idx):  # [B, N, K, A], [B, N] -> [B, N, A]
        return jnp.take_along_axis(q_all, idx[..., None, None], -2)[..., 0, :]

    def networks(h, x, h_u):
        """(h', q_u_all [B, N, k, A], q_v_all [B, N, m, A])."""
        if shared:
            h = torso.apply(params["torso"], h, x)
            feats = [h, jnp.concatenate([h, h_u], -1)]
            return (h, jnp.stack([head.apply(row(params["role"], j), feats[0]) for j in range(k)], -2),
                    jnp.stack([head.apply(row(params["group"], j), feats[1]) for j in range(m)], -2))
        role_h, group_h = h
        role_out = [net.apply(row(params["role"], j), role_h[..., j, :], x) for j in range(k)]
        group_out = [net.apply(row(params["group"], j), group_h[..., j, :], jnp.concatenate([x, h_u], -1))
                     for j in range(m)]
        return ((jnp.stack([o[0] for o in role_out], -2), jnp.stack([o[0] for o in group_out], -2)),
                jnp.stack([o[1] for o in role_out], -2), jnp.stack([o[1] for o in group_out], -2))

    def with_last(x, last):
        return jnp.concatenate([x, last], -1) if qc.last_action else x

    h = hidden0["torso_h"] if shared else (hidden0["role_h"], hidden0["group_h"])
    q, q_final = [], []
    for t in range(seq["obs"].shape[0]):
        r = resets[t][:, None, None]  # [B, 1, 1]
        h = jax.tree.map(lambda x, r=r: jnp.where(r if x.ndim == 3 else r[..., None], 0.0, x), h)
        last = None
        if qc.last_action:  # a_{t-1}: before the sequence hidden0's, zeros where an episode starts
            last = jnp.where(r, 0.0, hidden0["last_action"] if t == 0 else jax.nn.one_hot(seq["action"][t - 1], A))
        h, q_u, q_v = networks(h, with_last(seq["obs"][t], last), seq["h_u"][t])
        q.append(pick(q_u, seq["role"][t]) + pick(q_v, seq["group"][t]))
        if t < seq["final_obs"].shape[0]:
            x = with_last(seq["final_obs"][t], jax.nn.one_hot(seq["action"][t], A))
            _, f_u, f_v = networks(h, x, seq["h_u"][t])
            q_final.append(pick(f_u, seq["role"][t]) + pick(f_v, seq["group"][t]))
    return jnp.stack(q), jnp.stack(q_final)


@pytest.mark.parametrize("last_action, shared", [
    (True, False), (False, False), pytest.param(True, True, marks=pytest.mark.slow)])
def test_unroll_time_limit_bootstrap_equals_hand_unroll(built, last_action_params, last_action, shared):
    """A stored sequence in which env 0's episode ends by time limit at step 2 (final_obs[2] is its last
    observation, obs[3] the next episode's first): q and q_final equal a step-by-step unroll by hand."""
    _, parts, runner = built
    spec = parts.env.spec
    if shared:
        cfg = tiny(last_action=last_action, bdps_shared_torso=True)
        model = make_agent_model(cfg, spec)
        params = jax.jit(model.init)(jax.random.PRNGKey(5))
    elif last_action:
        cfg, model, params = last_action_params
    else:
        cfg, params = tiny(), runner.learner.params
        model = make_agent_model(cfg, spec)
    T, B, N, A = 6, 2, 3, spec.num_actions
    ks = jax.random.split(jax.random.PRNGKey(6), 8)
    obs = jax.random.normal(ks[0], (T + 1, B, N, spec.obs_dim))
    final_obs = obs[1:].at[2, 0].set(jax.random.normal(ks[1], (N, spec.obs_dim)))
    seq = {
        # every step a slot (slot k = step k), so q_final is checked at every step against the hand unroll
        "obs": obs, "final_obs": final_obs, "final_step": jnp.broadcast_to(jnp.arange(T)[:, None], (T, B)),
        "action": jax.random.randint(ks[2], (T, B, N), 0, A),
        "role": jax.random.randint(ks[3], (T + 1, B, N), 0, cfg.sharing.bdps_roles),
        "group": jax.random.randint(ks[4], (T + 1, B, N), 0, cfg.sharing.bdps_groups),
        "h_u": jax.random.normal(ks[5], (T + 1, B, N, cfg.sharing.bdps_vae_hidden)),
    }
    resets = jnp.zeros((T + 1, B), bool).at[3, 0].set(True)  # done at step 2 in env 0
    hidden0 = model.init_hidden(B)
    for i, name in enumerate(("role_h", "group_h", "torso_h")):  # stored GRU states (q.stored_state)
        if name in hidden0:
            hidden0[name] = jax.random.normal(jax.random.fold_in(ks[6], i), hidden0[name].shape)
    if last_action:  # env 1 starts after action 1, env 0 with none
        hidden0["last_action"] = jnp.zeros((B, N, A)).at[1, :, 1].set(1.0)
    q, q_final = jax.jit(model.unroll)(params, None, hidden0, seq, resets)
    assert q.shape == (T + 1, B, N, A) and q_final.shape == (T, B, N, A)
    ref_q, ref_final = jax.jit(partial(hand_unroll, cfg, spec))(params, hidden0, seq, resets)
    np.testing.assert_allclose(q, ref_q, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(q_final, ref_final, rtol=1e-5, atol=1e-5)
    # the bootstrap of the truncated step is not the next episode's first utilities
    assert not np.allclose(q_final[2, 0], q[3, 0], atol=1e-3)


def test_last_action_acting_agrees_with_unroll(built, last_action_params):
    """With q.last_action, a greedy rollout's actions are the argmax of the stored sequence's unrolled utilities
    (act and unroll read the same last actions, zeros after an episode's end); act keeps a_t one-hot."""
    _, _, runner = built
    cfg, model, params = last_action_params
    parts = make_parts(cfg)
    state = runner.learner._replace(params={**runner.learner.params, **params})
    env_state, ts = jax.vmap(parts.env.reset)(jax.random.split(jax.random.PRNGKey(4), 2))
    steps = 25  # 10-step episodes: two episode ends inside

    @jax.jit
    def roll(state, env_state, ts):
        return rollout_steps(parts, state, runner.sharing, env_state, ts, parts.learner.init_hidden(2),
                        jax.random.PRNGKey(9), runner.env_steps, steps, greedy=True)

    (_, _, hidden), (traj, _) = roll(state, env_state, ts)
    assert hidden["last_action"].shape == (2, 3, parts.env.spec.num_actions)
    done = np.asarray(traj.done)
    assert done[:-1].any()
    seq = {"obs": traj.obs, "final_obs": traj.next_obs[:0], "final_step": jnp.zeros((0, 2), jnp.int32),
           "action": traj.action[:-1], **{name: traj.extras[name] for name in ("role", "group", "h_u")}}
    resets = jnp.concatenate([jnp.zeros((1, 2), bool), traj.done[:-1]], 0)
    q, _ = jax.jit(model.unroll)(state.params, None, parts.learner.init_hidden(2), seq, resets)
    np.testing.assert_array_equal(masked_argmax(q, traj.avail), traj.action)


def test_trains_compiled_once_and_vmapped_over_seeds(trained):
    cfg, (runner, metrics), (runner2, metrics2), traces = trained
    assert traces == 1
    for m in (metrics, metrics2):
        for name in ("loss", "vae_mse", "sel_loss", "bdps_role_change", "bdps_group_change", "bdps_entropy_diff",
                     "bdps_roles_distinct", "bdps_groups_distinct", "bdps_adv_nonzero"):
            assert m[name].shape == (2, cfg.num_iterations) and np.all(np.isfinite(m[name])), name
        assert m["bdps_role"].shape == (2, cfg.num_iterations, 3)
    role_bank = runner.learner.params["role"]
    leaf = jax.tree.leaves(role_bank)[0]
    assert leaf.shape[:2] == (2, 3)  # seeds x role networks
    assert not np.allclose(leaf[0], leaf[1])  # seeds differ
    assert not np.allclose(leaf[0], jax.tree.leaves(runner2.learner.params["role"])[0][0])  # keys differ


@pytest.mark.slow
def test_vmapped_seeds_equal_single_runs():
    cfg = tiny(steps=4 * 16 * 2)
    train = make_train(cfg)
    keys = jax.random.split(jax.random.PRNGKey(5), 2)
    _, batched = jax.jit(jax.vmap(train))(keys)
    _, single = jax.jit(train)(keys[1])
    for name in ("loss", "vae_mse", "sel_loss"):
        np.testing.assert_allclose(batched[name][1], single[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("alg", ["bdps_role", "bdps_team"])
def test_ablations_build_only_their_level(alg):
    cfg = tiny(alg)
    parts = make_parts(cfg)
    params = jax.eval_shape(parts.learner.init, jax.random.PRNGKey(0)).params
    if alg == "bdps_role":
        assert "role" in params and "group" not in params and "selector" not in params
    else:
        assert "group" in params and "selector" in params and "role" not in params
    assert parts.learner.bank_names == (("role",) if alg == "bdps_role" else ("group",))


@pytest.mark.slow  # tracing the whole program: ~10-40 s on 2 busy cores
def test_vdn_learner_traces_the_whole_program():
    """VDN mixes the utilities and the selector's group values by sums (shapes checked by tracing, no compile)."""
    cfg = tiny(learner="vdn")
    _, metrics = jax.eval_shape(make_train(cfg), jax.random.PRNGKey(0))
    assert metrics["sel_loss"].shape == (cfg.num_iterations,) and metrics["bdps_role"].shape == (cfg.num_iterations, 3)


@pytest.mark.parametrize("overrides, match", [
    ({"bdps_roles": 4}, r"bdps_roles=4 .* 3 agents; allowed: 2..3"),
    ({"bdps_groups": 3, "bdps_roles": 2}, r"bdps_groups=3 .*allowed: 2..2"),
    ({"bdps_role_period": 10}, r"bdps_role_period=10 must be shorter than the episode limit 10"),
    ({"bdps_group_factor": 5}, r"T_V = .* = 10 must be shorter than the episode limit 10; allowed: "
                               r"bdps_group_factor 1..4"),
    ({"learner": "iql"}, r"learner='iql' is not allowed; allowed: qmix, vdn"),
    ({"learner": "ppo"}, r"learner='ppo' is not allowed"),
    ({"bdps_roles": 1}, r"bdps_roles=1 is below the minimum 2"),
    ({"bdps_advantage": "max"}, r"sharing.bdps_advantage='max' is not allowed; allowed: 'taken', 'mean'"),
])
def test_config_validation(overrides, match):
    base = {"env": "typed", "num_agents": 3, "alg": "bdps", "bdps_role_period": 2, "bdps_group_factor": 2}
    with pytest.raises(ConfigError, match=match):
        make_config({**base, **overrides})


def test_two_agent_envs_need_two_roles_and_two_groups():
    with pytest.raises(ConfigError, match=r"bdps_roles=3 is not allowed with 2 agents; allowed: 2..2"):
        make_config({"env": "lbf", "scenario": "8x8-2p-2f-coop", "alg": "bdps", "bdps_roles": 3})  # the user's k
    cfg = make_config({"env": "lbf", "scenario": "8x8-2p-2f-coop", "alg": "bdps", "bdps_roles": 2})
    assert cfg.learner_name == "qmix"
    # bdps_role ignores m; the group period need not fit in the episode
    make_config({"env": "typed", "num_agents": 3, "alg": "bdps_role", "bdps_role_period": 2, "bdps_group_factor": 9})
