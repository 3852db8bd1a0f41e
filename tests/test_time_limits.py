"""A time limit is not a terminal state: the environment contract hands the learners the observation an
episode ended on (``TimeStep.final_*``, before the automatic reset), for every environment and wrapper,
and the loop stores it where the learners read it (``Transition.next_*``).

The check needs no knowledge of any environment: the same env with a time limit one step longer, fed the
same keys and actions, shows at step L the observation the truncated episode ended on.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psjax import registry
from psjax.bootstrap import at_steps, truncation_slots, truncation_steps, with_steps
from psjax.config import EnvConfig, make_config
from psjax.envs import make_env
from psjax.train import init_runner, make_parts, rollout_steps

L = 4  # the time limit under test
CASES = {  # name -> (env config, method: the method picks the agent-indication wrapper)
    "matrix_two_step": (EnvConfig(name="matrix", matrix_game="two_step"), "fups"),
    "mpe_spread": (EnvConfig(name="mpe_spread"), "fups"),
    "speaker_listener": (EnvConfig(name="speaker_listener"), "fups_id"),
    "lbf": (EnvConfig(name="lbf", scenario="8x8-2p-2f-coop"), "fups_id"),
    "lbf_grid_indication": (EnvConfig(name="lbf", scenario="6x6-3p-1f", fov=1, lbf_grid_obs=True,
                                      image_indication="geometric"), "fups"),
    "smax": (EnvConfig(name="smax", map="3m"), "fups_id"),
    "typed": (EnvConfig(name="typed", num_agents=4), "fups"),
    "bps": (EnvConfig(name="bps", agents_per_colour="2,1"), "fups_id"),
    "crware": (EnvConfig(name="crware", variant="mini"), "fups"),
}


def _run(env, key, steps):
    """``steps`` steps of 4 envs under random available actions drawn from ``key`` (the same actions for the
    same availabilities). Returns the stacked TimeSteps ``[steps, 4, ...]``."""
    k_reset, k_roll = jax.random.split(key)
    state, ts = jax.vmap(env.reset)(jax.random.split(k_reset, 4))

    def step(carry, k):
        state, ts = carry
        k_act, k_env = jax.random.split(k)
        actions = jax.random.categorical(k_act, jnp.where(ts.avail_actions, 0.0, -1e9)).astype(jnp.int32)
        state, ts = jax.vmap(env.step)(jax.random.split(k_env, 4), state, actions)
        return (state, ts), ts

    return jax.lax.scan(step, (state, ts), jax.random.split(k_roll, steps))[1]


@pytest.mark.parametrize("name", tuple(CASES))
def test_time_limit_hands_over_the_final_observation(name):
    env_cfg, alg = CASES[name]
    indication = registry.get(alg).agent_id
    short = make_env(dataclasses.replace(env_cfg, time_limit=L), indication)
    longer = make_env(dataclasses.replace(env_cfg, time_limit=L + 1), indication)
    key = jax.random.PRNGKey(3)
    ts_short_all = jax.jit(lambda k: _run(short, k, 3 * L))(key)
    ts_short = jax.tree.map(lambda x: x[:L], ts_short_all)
    ts_long = jax.tree.map(lambda x: x[:L], jax.jit(lambda k: _run(longer, k, 3 * L))(key))
    # a time limit is the only truncation: two of one env lie L steps apart (replay items rely on it,
    # ``bootstrap.truncation_slots``)
    cut = np.asarray(ts_short_all.truncated)
    np.testing.assert_array_equal(np.asarray(ts_short_all.episode_length)[cut], L)
    done = np.asarray(ts_short.terminated | ts_short.truncated)
    # every step that did not end an episode: the final observation is the step's own observation
    for final, now in ((ts_short.final_obs, ts_short.obs), (ts_short.final_state, ts_short.state),
                       (ts_short.final_avail, ts_short.avail_actions)):
        keep = ~done.reshape(done.shape + (1,) * (final.ndim - 2))
        np.testing.assert_array_equal(np.where(keep, final, 0), np.where(keep, now, 0))
    # before step L both runs are the same episodes
    np.testing.assert_array_equal(ts_short.obs[: L - 1], ts_long.obs[: L - 1])
    truncated = np.asarray(ts_short.truncated[L - 1])
    if name != "matrix_two_step":  # its episodes terminate after two steps
        assert truncated.any(), "no episode reached the time limit: the test would check nothing"
    assert not np.asarray(ts_short.truncated[: L - 1]).any() or name == "matrix_two_step"
    # at the limit the short env truncates; its final observation is what the longer env still shows
    for final, cont in ((ts_short.final_obs, ts_long.obs), (ts_short.final_state, ts_long.state),
                        (ts_short.final_avail, ts_long.avail_actions)):
        np.testing.assert_allclose(np.asarray(final[L - 1])[truncated], np.asarray(cont[L - 1])[truncated],
                                   rtol=1e-6, atol=1e-6)
    # ... while its obs already belongs to a fresh episode
    if name not in ("matrix_two_step", "typed"):  # typed's observation is a cue that may repeat
        assert not np.allclose(np.asarray(ts_short.obs[L - 1])[truncated], np.asarray(ts_long.obs[L - 1])[truncated])


def test_rollout_stores_the_observation_each_step_led_to_time_limit():
    """``Transition.next_obs[t]`` is ``obs[t + 1]`` inside an episode and the truncated episode's last
    observation where the time limit ended it (not the next episode's first)."""
    cfg = make_config({"env": "mpe_spread", "alg": "fups", "learner": "ppo", "time_limit": 5,
                       "ac.num_envs": 2, "ac.rollout_len": 12, "steps": 24})
    parts = make_parts(cfg)
    runner = init_runner(parts, jax.random.PRNGKey(0))
    _, (traj, ends) = rollout_steps(parts, runner.learner, runner.sharing, runner.env_state, runner.ts,
                               runner.hidden, jax.random.PRNGKey(1), 0, 12, greedy=False)
    done = np.asarray(traj.done)
    assert done[4].all() and done[9].all() and not np.asarray(traj.terminated).any()
    inside = ~done[:-1]
    np.testing.assert_array_equal(np.asarray(traj.next_obs[:-1])[inside], np.asarray(traj.obs[1:])[inside])
    np.testing.assert_array_equal(np.asarray(ends.done), done)  # the episode statistics end where the episodes do
    np.testing.assert_array_equal(np.asarray(ends.episode_length)[done], 5)
    # MPE's landmark-relative positions change every step: the final observation is not the reset one
    assert not np.allclose(np.asarray(traj.next_obs[4]), np.asarray(traj.obs[5]))


@pytest.mark.parametrize("last_action", [False, True])
def test_recurrent_unroll_final_utilities_after_time_limit(last_action):
    """``q_final[t]`` reads the truncated episode's last observation from the GRU state the episode left
    (no reset), while ``q[t + 1]`` starts the next episode from zeros; with ``last_action`` the input is the
    one-hot of the previous action, zeros at an episode's start, a_t for the final observation."""
    from psjax.agent_model import recurrent_agent_model
    from psjax.nets.agents import RecurrentNet
    from psjax.sharing.methods import make_scheme
    from psjax.train import MASKED_LAYERS

    cfg = make_config({"env": "mpe_spread", "alg": "fups", "learner": "qmix", "q.hidden": 8,
                       "q.last_action": last_action})
    spec = make_env(cfg.env, registry.get(cfg.alg).agent_id).spec
    n, d, a = spec.num_agents, spec.obs_dim, spec.num_actions
    model = recurrent_agent_model(cfg, spec, make_scheme(cfg, spec, 8, MASKED_LAYERS))
    params = model.init(jax.random.PRNGKey(0))
    t_len, b = 3, 1
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    obs = jax.random.normal(keys[0], (t_len + 1, b, n, d))
    final_obs = jax.random.normal(keys[1], (2, b, n, d))  # two slots: step 1's and a padded one (step T)
    action = jax.random.randint(keys[2], (t_len, b, n), 0, a)
    done = jnp.array([[False], [True], [False]])  # step 1 ends its episode by the time limit
    resets = jnp.concatenate([jnp.zeros((1, b), bool), done])
    hidden0 = jax.tree.map(lambda h: h[0], model.init_hidden(1))
    q, q_final = model.unroll(params, None, jax.tree.map(lambda h: h[None], hidden0),
                              {"obs": obs, "final_obs": final_obs, "final_step": jnp.array([[1], [t_len]]),
                               "action": action, "done": done, "terminated": jnp.zeros_like(done)}, resets)
    assert q.shape == (t_len + 1, b, n, a) and q_final.shape == (2, b, n, a)
    assert np.isfinite(np.asarray(q_final[1])).all()  # the padded slot: finite, read by nothing

    net = RecurrentNet(8, a)
    p0 = jax.tree.map(lambda x: x[0], params["agent"])
    one_hot = lambda x: jax.nn.one_hot(x, a)  # noqa: E731
    inp = (lambda o, prev: jnp.concatenate([o, prev], -1)) if last_action else (lambda o, prev: o)  # noqa: E731
    zero_h, no_action = jnp.zeros((n, 8)), jnp.zeros((n, a))
    h0, q0 = net.apply(p0, zero_h, inp(obs[0, 0], no_action))
    h1, q1 = net.apply(p0, h0, inp(obs[1, 0], one_hot(action[0, 0])))
    _, qf1 = net.apply(p0, h1, inp(final_obs[0, 0], one_hot(action[1, 0])))  # the ended episode goes on
    _, q2 = net.apply(p0, zero_h, inp(obs[2, 0], no_action))  # the next episode starts from scratch
    for got, want in ((q[0, 0], q0), (q[1, 0], q1), (q_final[0, 0], qf1), (q[2, 0], q2)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_truncation_slots_bound_time_limits_per_window():
    # ceil(T / limit): truncations of one env are a limit apart; no limit: every step
    assert [truncation_slots(t, m) for t, m in ((128, 100), (16, 8), (16, 25), (100, 100), (101, 100),
                                                 (5, 1), (10, 0))] == [2, 2, 1, 1, 2, 5, 10]


def test_replay_items_keep_final_observations_at_time_limits_only():
    """``truncation_steps`` lists each env's truncated steps (padded with T), ``at_steps`` keeps the values
    there and ``with_steps`` puts them back over the next stored step's values, by hand on 6 steps x 2 envs."""
    truncated = jnp.array([[False, True, False, False, True, False], [False] * 6]).T  # [T, E]
    values = jnp.arange(6 * 2 * 2, dtype=jnp.float32).reshape(6, 2, 2)  # [T, E, D]
    step = truncation_steps(truncated, truncation_slots(6, 3))
    np.testing.assert_array_equal(step, [[1, 6], [4, 6]])  # [slots, E]
    kept = at_steps({"x": values}, step)["x"]
    np.testing.assert_array_equal(kept[:, 0], values[jnp.array([1, 4]), 0])
    np.testing.assert_array_equal(kept[:, 1], values[jnp.array([5, 5]), 1])  # padding reads step T - 1
    back = with_steps({"x": -jnp.ones((6, 2, 2))}, step, {"x": kept})["x"]
    want = np.full((6, 2, 2), -1.0)
    want[[1, 4], 0] = np.asarray(values[[1, 4], 0])
    np.testing.assert_array_equal(back, want)


def test_qmix_replay_item_time_limit_finals_round_trip():
    """The Q learner's buffer holds final observations only at time limits ([E, slots, ...], about half the
    buffer otherwise), and the sequences it learns from read them back where the time limit ended an episode:
    SMAX 3m with an 8-step limit, 16-step items (2 slots)."""
    cfg = make_config({"env": "smax", "map": "3m", "alg": "fups_id", "learner": "qmix", "time_limit": 8,
                       "q.num_envs": 4, "q.rollout_len": 16, "q.learning_starts": 0, "q.buffer_size": 8,
                       "q.batch_size": 4, "steps": 64})
    parts = make_parts(cfg)
    runner = init_runner(parts, jax.random.PRNGKey(0))
    _, (traj, _) = rollout_steps(parts, runner.learner, runner.sharing, runner.env_state, runner.ts,
                            runner.hidden, jax.random.PRNGKey(1), 0, 16, greedy=False)
    state, _ = jax.jit(parts.learner.update)(runner.learner, runner.sharing, traj, runner.ts, runner.hidden,
                                             jax.random.PRNGKey(2), 64)
    data = jax.tree.map(lambda x: x[:4], state.buffer.data)  # the 4 items just stored, one per env
    assert data["final_obs"].shape == (4, 2, 3, parts.env.spec.obs_dim) and data["final_step"].shape == (4, 2)
    truncated = np.asarray(traj.done & ~traj.terminated).T  # [E, T]
    assert truncated.any(), "no episode reached the time limit: the test would check nothing"
    for e in range(4):
        steps = np.flatnonzero(truncated[e])
        np.testing.assert_array_equal(np.asarray(data["final_step"][e])[: len(steps)], steps)
        np.testing.assert_array_equal(np.asarray(data["final_step"][e])[len(steps):], 16)
        np.testing.assert_array_equal(np.asarray(data["final_obs"][e])[: len(steps)],
                                      np.asarray(traj.next_obs[:, e])[steps])
        np.testing.assert_array_equal(np.asarray(data["final_state"][e])[: len(steps)],
                                      np.asarray(traj.next_state[:, e])[steps])
