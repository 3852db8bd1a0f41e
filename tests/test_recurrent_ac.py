"""The recurrent actor-critic (``ac.recurrent``): states carried and reset, the loss over stored trajectories
against a hand unroll (through a time limit), masked GRU units, every sharing method, vmapped seeds."""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psjax.config import make_config
from psjax.learners.actor_critic import episode_starts, minibatches
from psjax.nets.agents import MLP, RecurrentNet, block_params
from psjax.plan import seed_keys
from psjax.train import init_runner, make_parts, make_train, rollout_steps

H = 8
SPREAD = {"env": "mpe_spread", "learner": "ppo", "ac.recurrent": True, "ac.hidden": H, "ac.num_envs": 2,
          "ac.rollout_len": 30, "ac.epochs": 1, "ac.num_minibatches": 1, "ac.normalize_adv": False,
          "ac.gae_lambda": 0.9}  # spread ends by its 25-step time limit only: step 24 is a truncation


def _rollout_of(cfg, key=0):
    parts = make_parts(cfg)
    runner = init_runner(parts, jax.random.PRNGKey(key))
    (_, last, _), (traj, _) = jax.jit(
        lambda r: rollout_steps(parts, r.learner, r.sharing, r.env_state, r.ts, r.hidden, jax.random.PRNGKey(7),
                           r.env_steps, cfg.ac.rollout_len, greedy=False))(runner)
    return parts, runner, traj, last


def _hand_unroll(cfg, params, traj):
    """Slot 0's actor and critic stepped by hand, env by env, zeroing both states (and, with
    ``ac.last_action``, the actor's previous action) after every ``done``: logits [T, E, N, A], values
    [T, E, N] and V(o'_t) from the state each step left behind. With ``ac.shared_torso`` the critic is a
    value head on the actor's GRU state, and V(o'_t) one more actor step (on o'_t, a_t as its last action)."""
    spec_a = traj.avail.shape[-1]
    shared = cfg.ac.shared_torso
    actor = RecurrentNet(H, spec_a, out_scale=0.01, depth=3 if shared else 2)
    critic = MLP(H, 1, depth=1) if shared else RecurrentNet(H, 1)
    pa, pc = (jax.tree.map(lambda x: x[0], params[k]) for k in ("actor", "critic"))
    if shared:  # the value head has no state of its own: (h_actor, obs) -> (h_actor, V) reads h_actor
        head = critic.apply

        def critic_apply(p, h, o):
            del o
            return h, head(p, h)

        critic = type("ValueHead", (), {"apply": staticmethod(critic_apply)})
    t_len, e_len, n = traj.action.shape
    logits, values, next_values = [], [], []
    for e in range(e_len):
        h_a = h_c = jnp.zeros((n, H))
        prev = jnp.zeros((n, spec_a))
        le, ve, ne = [], [], []
        for t in range(t_len):
            if t > 0 and bool(traj.done[t - 1, e]):
                h_a = h_c = jnp.zeros((n, H))
                prev = jnp.zeros((n, spec_a))
            x = jnp.concatenate([traj.obs[t, e], prev], -1) if cfg.ac.last_action else traj.obs[t, e]
            h_a, lg = actor.apply(pa, h_a, x)
            prev = jax.nn.one_hot(traj.action[t, e], spec_a)
            h_c, v = critic.apply(pc, h_a if shared else h_c, traj.obs[t, e])
            le.append(lg)
            ve.append(v[:, 0])
            if shared:
                x_next = jnp.concatenate([traj.next_obs[t, e], prev], -1) if cfg.ac.last_action else traj.next_obs[t, e]
                ne.append(critic.apply(pc, actor.apply(pa, h_a, x_next)[0], None)[1][:, 0])
            else:
                ne.append(critic.apply(pc, h_c, traj.next_obs[t, e])[1][:, 0])
        logits.append(jnp.stack(le)), values.append(jnp.stack(ve)), next_values.append(jnp.stack(ne))
    return (jnp.stack(logits, 1), jnp.stack(values, 1), jnp.stack(next_values, 1))


@pytest.mark.parametrize("last_action,shared_torso", [(False, False), (True, False), (True, True)])
def test_recurrent_loss_equals_hand_unroll_through_time_limit(last_action, shared_torso):
    """Acting and the update's unroll both equal a step-by-step unroll; the first epoch's loss is the
    hand-computed PPO loss with GAE bootstrapping through the time limit from the ended episode's state."""
    cfg = make_config({**SPREAD, "alg": "fups", "ac.last_action": last_action, "ac.shared_torso": shared_torso})
    parts, runner, traj, last = _rollout_of(cfg)
    done, terminated = np.asarray(traj.done), np.asarray(traj.terminated)
    assert done[24].all() and not terminated.any()  # a truncation inside the rollout
    logits, values, next_values = _hand_unroll(cfg, runner.learner.params, traj)
    pi = distrax.Categorical(logits=jnp.where(traj.avail, logits, -1e9))
    np.testing.assert_allclose(traj.extras["logp"], pi.log_prob(traj.action), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(traj.extras["value"], values, rtol=1e-5, atol=1e-5)

    # GAE by hand: the truncated step bootstraps from V(final obs | the episode's state), lambda stops at done
    gamma, lam = cfg.ac.gamma, cfg.ac.gae_lambda
    r, v, nv = np.asarray(traj.reward), np.asarray(values), np.asarray(next_values)
    adv = np.zeros_like(r)
    running = np.zeros_like(r[0])
    for t in reversed(range(r.shape[0])):
        delta = r[t] + gamma * nv[t] * (1 - terminated[t, :, None]) - v[t]
        running = delta + gamma * lam * (1 - done[t, :, None]) * running
        adv[t] = running
    ret = adv + v
    ac = cfg.ac
    want = {"policy_loss": -adv.mean(), "value_loss": np.mean((v - ret) ** 2),
            "entropy": float(pi.entropy().mean())}
    want["loss"] = want["policy_loss"] + ac.vf_coef * want["value_loss"] - ac.ent_coef * want["entropy"]
    _, metrics = jax.jit(parts.learner.update)(runner.learner, runner.sharing, traj, last, runner.hidden,
                                               jax.random.PRNGKey(3), jnp.int32(60))
    for name, value in want.items():
        np.testing.assert_allclose(metrics[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
    assert float(metrics["clip_frac"]) == 0.0  # first pass: the unroll reproduces the acting log-probabilities


def test_recurrent_state_resets_at_episode_end_and_carries_within():
    """The loop's recurrent state: at the first step of the second episode the policy is the fresh-state
    policy on that observation; one step earlier (mid-episode) it is not."""
    cfg = make_config({**SPREAD, "alg": "fups"})
    parts, runner, traj, _ = _rollout_of(cfg)
    actor = RecurrentNet(H, traj.avail.shape[-1], out_scale=0.01)
    pa = jax.tree.map(lambda x: x[0], runner.learner.params["actor"])
    fresh = lambda t: actor.apply(pa, jnp.zeros((traj.obs.shape[2], H)), traj.obs[t, 0])[1]  # noqa: E731
    logp = lambda lg, t: distrax.Categorical(logits=lg).log_prob(traj.action[t, 0])  # noqa: E731
    np.testing.assert_allclose(traj.extras["logp"][25, 0], logp(fresh(25), 25), rtol=1e-5, atol=1e-6)
    assert not np.allclose(traj.extras["logp"][24, 0], logp(fresh(24), 24), rtol=1e-4, atol=1e-6)
    assert not np.allclose(traj.extras["logp"][3, 0], logp(fresh(3), 3), rtol=1e-4, atol=1e-6)


def test_episode_starts_and_trajectory_minibatches():
    done = jnp.array([[False, True], [True, False], [False, False]])
    np.testing.assert_array_equal(episode_starts(done), [[False, False], [False, True], [True, False]])
    x = jnp.arange(2 * 4).reshape(2, 4)  # [T=2, E=4]
    h = jnp.arange(4) * 10  # [E]
    bx, bh = minibatches(x, jax.random.PRNGKey(0), 1, 2), minibatches(h, jax.random.PRNGKey(0), 0, 2)
    assert bx.shape == (2, 2, 2) and bh.shape == (2, 2)
    # whole trajectories: every minibatch keeps time, and its hidden states belong to its envs
    for m in range(2):
        envs = np.asarray(bx[m][0])
        np.testing.assert_array_equal(np.asarray(bx[m][1]), envs + 4)
        np.testing.assert_array_equal(np.asarray(bh[m]), envs * 10)
    assert sorted(np.asarray(bx[:, 0]).ravel().tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize("shared_torso", [False, True])
def test_masked_recurrent_units_get_no_update(shared_torso):
    """SNP-PS with units 0 and 1 of both actor layers masked for every agent: a PPO update leaves the GRU
    weights into and out of those units and the layers reading them exactly unchanged (with a shared torso
    the value loss reaches the GRU too, and its value head reads the masked units)."""
    cfg = make_config({**SPREAD, "alg": "snp_ps", "ac.epochs": 2, "ac.num_minibatches": 2,
                       "ac.shared_torso": shared_torso})
    parts, runner, traj, last = _rollout_of(cfg)
    mask = jnp.ones_like(runner.sharing.masks[0]).at[:, :2].set(0.0)
    sharing = runner.sharing._replace(masks=(mask, mask))
    state, _ = jax.jit(parts.learner.update)(runner.learner, sharing, traj, last, runner.hidden,
                                             jax.random.PRNGKey(3), jnp.int32(60))
    before, after = runner.learner.params["actor"]["params"], state.params["actor"]["params"]
    for gate in ("ir", "iz", "in", "hr", "hz", "hn"):
        b, a = (np.asarray(block_params(p, "gru")[gate]["kernel"]) for p in (before, after))
        np.testing.assert_array_equal(a[..., :2], b[..., :2])  # into the masked GRU units
        np.testing.assert_array_equal(a[..., :2, :], b[..., :2, :])  # from the masked inputs / states
        assert not np.array_equal(a[..., 2:, 2:], b[..., 2:, 2:])
    # the layer reading the GRU: the output layer, or with a shared torso the policy head's hidden layer
    reader = "hidden_1" if shared_torso else "head"
    out_before, out_after = block_params(before, reader)["kernel"], block_params(after, reader)["kernel"]
    np.testing.assert_array_equal(out_after[..., :2, :], out_before[..., :2, :])
    assert not np.array_equal(out_after[..., 2:, :], out_before[..., 2:, :])
    if shared_torso:  # the value head's hidden layer reads the torso's GRU
        head0, head = (block_params(p["critic"], "hidden_0")["kernel"] for p in (runner.learner.params, state.params))
        np.testing.assert_array_equal(head[..., :2, :], head0[..., :2, :])
        assert not np.array_equal(head[..., 2:, :], head0[..., 2:, :])


# fups, fups_id, nops and adaps add nothing to the paths the others cover (one slot, id features, the identity
# layout seps's switch ends in; snp_ps's masks + seps's switch): slow-marked to keep `make test` short; `make
# test-all` runs them. The shared torso changes the networks, not the methods' mechanisms: with it MADPS's
# restructuring (front / back blocks around the shared GRU) runs in `make test`.
SLOW = {False: ("fups", "fups_id", "nops", "adaps"),
        True: ("fups", "fups_id", "nops", "snp_ps", "seps", "adaps", "kaleidoscope")}
CASES = [pytest.param(alg, shared, marks=[pytest.mark.slow] if alg in SLOW[shared] else [],
                      id=f"{alg}-{'shared' if shared else 'separate'}")
         for shared in (False, True)
         for alg in ("fups", "fups_id", "nops", "snp_ps", "seps", "adaps", "kaleidoscope", "madps")]


@pytest.mark.parametrize("alg,shared_torso", CASES)
def test_every_sharing_method_trains_with_the_recurrent_actor_critic(alg, shared_torso):
    """A few PPO iterations on the typed env (SePS / AdaPS switch to their clusters, MADPS runs a distance
    round and restructures): finite losses and every actor bank row an agent uses has moved."""
    cfg = make_config({"env": "typed", "num_agents": 4, "alg": alg, "learner": "ppo", "ac.recurrent": True,
                       "ac.shared_torso": shared_torso,
                       "ac.hidden": 16, "ac.num_envs": 4, "ac.rollout_len": 16, "ac.num_minibatches": 2,
                       "ac.epochs": 2, "steps": 640, "identity_pretrain_steps": 256, "identity_epochs": 2,
                       "madps_interval": 4, "madps_start": 4, "eval_every": 0,
                       "ac.last_action": alg == "madps"})  # MAPD rounds reading previous actions
    assert cfg.learner_kind.recurrent
    runner0 = init_runner(make_parts(cfg), jax.random.PRNGKey(0))
    runner, metrics = jax.jit(make_train(cfg))(jax.random.PRNGKey(0))
    assert np.all(np.isfinite(np.asarray(metrics["loss"])))
    block = "front_1" if alg == "madps" else "gru"  # MADPS: the GRU is the front block's second layer
    gru0, gru = (block_params(r.learner.params["actor"], block) for r in (runner0, runner))
    assert not np.allclose(np.asarray(gru["hn"]["kernel"]), np.asarray(gru0["hn"]["kernel"]))
    if alg == "madps":
        assert int(metrics["madps_rounds"][-1]) >= 1


@pytest.mark.slow  # the vmapped-seed path is the feed-forward one's (test_train) with hidden states in the carry
def test_recurrent_vmapped_seeds_equal_single_runs(vmapped_check):
    cfg = make_config({**SPREAD, "alg": "fups_id", "steps": 120, "ac.num_envs": 4, "ac.num_minibatches": 2})
    for single, batched in vmapped_check(make_train(cfg), seed_keys(3, 2), rtol=1e-5, atol=1e-6):
        np.testing.assert_allclose(single["loss"], batched["loss"], rtol=1e-4, atol=1e-6)


def test_recurrent_minibatches_must_split_the_envs():
    from psjax.fields import ConfigError

    with pytest.raises(ConfigError, match="num_minibatches=3 must divide ac.num_envs=4"):
        make_config({**SPREAD, "alg": "fups", "ac.num_envs": 4, "ac.rollout_len": 3, "ac.num_minibatches": 3})
    with pytest.raises(ConfigError, match="ac.last_action=true needs ac.recurrent=true"):
        make_config({**SPREAD, "alg": "fups", "ac.recurrent": False, "ac.last_action": True})
    with pytest.raises(ConfigError, match="ac.shared_torso=true needs ac.recurrent=true"):
        make_config({**SPREAD, "alg": "fups", "ac.recurrent": False, "ac.shared_torso": True})
    with pytest.raises(ConfigError, match="ac.shared_torso=true with ac.central_critic=true"):
        make_config({**SPREAD, "alg": "fups", "ac.shared_torso": True, "ac.central_critic": True})


@pytest.mark.parametrize("truncated", [
    [[False, True], [True, False], [True, False], [False, False]],  # three truncations (a 1-step time limit)
    [[False, False], [False, False], [False, False], [True, False]],  # none before the last step: padded slots
])
def test_next_step_values_reads_stored_values_within_episodes(truncated):
    """V(o'_t): the next step's stored value inside an episode (and at terminal steps, whose bootstrap GAE drops);
    value_of (here 100 + the step's input) only at truncations and the rollout's last step."""
    from psjax.learners.actor_critic import next_step_values

    t_len, e_len = 4, 2
    value = jnp.arange(t_len * e_len, dtype=jnp.float32).reshape(t_len, e_len, 1)  # [T, E, N=1]
    truncated = jnp.array(truncated)
    inputs = jnp.arange(t_len * e_len, dtype=jnp.float32).reshape(t_len, e_len, 1) * 10  # [T, E, N]
    got = np.asarray(next_step_values(lambda x: 100 + x, inputs, value, truncated, max_steps=1))[..., 0]
    want = np.concatenate([np.asarray(value[1:, :, 0]), [[160, 170]]], 0)  # stored values; the last step's o'
    for t, e in zip(*np.nonzero(np.asarray(truncated[:-1]))):
        want[t, e] = 100 + inputs[t, e, 0]
    np.testing.assert_array_equal(got, want)
    one = next_step_values(lambda x: 100 + x, inputs[:1], value[:1], truncated[:1], 1)  # T = 1: the last step only
    np.testing.assert_array_equal(np.asarray(one)[..., 0], [[100, 110]])
