"""The one training loop: rollout -> learner update -> sharing update -> metrics.

``make_train(cfg)`` returns a pure ``train(key)`` (jit it, vmap it over seeds);
``make_program(cfg, chunk_iters)`` exposes the same loop in chunks for the host
runner (progress, evaluation, checkpoints). Every method and learner goes
through ``_iteration``; none of them is special-cased here.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp

from psjax.config import TrainConfig
from psjax.envs import agent_id_features, make_env, resolve_agent_id
from psjax.envs.base import Env, TimeStep
from psjax.evaluate import POLICY_NAMES, episode_means, first_episodes, policy_metrics
from psjax.learners import make_learner
from psjax.nets.agents import param_count
from psjax.sharing import bank_ops, mapd, methods
from psjax.sharing.methods import make_scheme
from psjax.types import Learner, Transition

MASKED_LAYERS = 2  # maskable hidden layers of every psjax agent network


class Runner(NamedTuple):
    """Everything the loop carries from one iteration to the next (one seed)."""

    env_state: Any  # [E, ...]
    ts: TimeStep  # [E, ...] what the agents see now
    hidden: Any  # [E, N, ...] recurrent agent state
    learner: Any  # learner state (params, optimiser, buffer)
    sharing: Any  # SharingState: slots and masks
    key: chex.Array  # raw uint32 PRNG key
    iteration: chex.Array  # int32
    env_steps: chex.Array  # int32, summed over envs
    mapd_buffer: Any = ()  # mapd.ObsBuffer of recent observations for the distance rounds; () = none


class Program(NamedTuple):
    init: Callable[[chex.PRNGKey], Runner]
    run_chunk: Callable[[Runner], tuple[Runner, dict]]
    # evaluate(runner, key) -> eval_<policy>_<stat> for each of cfg.eval_policies, the first also as eval_<stat>
    evaluate: Callable[[Runner, chex.PRNGKey], dict]
    param_count: int
    num_iterations: int
    steps_per_iteration: int


class Parts(NamedTuple):
    """The pieces the loop is assembled from (also handy in tests and benchmarks)."""

    env: Env
    learner: Learner
    scheme: Any
    num_envs: int
    rollout_len: int
    distance_interval: int = 0  # iterations between MAPD distance rounds; 0 = none
    sharing_cfg: Any = None  # SharingConfig, for the MAPD rounds
    id_codes: Any = None  # [N, K] agent indication appended to the observations (K = 0: none)
    buffer_rows: int = 0  # rows of the MAPD observation buffer; 0 = the rounds measure on their rollout


def make_parts(cfg: TrainConfig) -> Parts:
    env = make_env(cfg.env, cfg.alg)
    lc = cfg.learner_cfg
    scheme = make_scheme(cfg, env.spec, lc.hidden, MASKED_LAYERS)
    learner = make_learner(cfg, env.spec, scheme)
    interval = scheme.distance_interval if scheme.restructure is not None else cfg.sharing.mapd_interval
    if learner.policy_logits is None:
        interval = 0
    codes = agent_id_features(env.spec.num_agents, resolve_agent_id(cfg.env.agent_id, cfg.alg))
    rows = cfg.sharing.mapd_buffer_size if interval > 0 and cfg.learner_name in mapd.BUFFER_LEARNERS else 0
    return Parts(env, learner, scheme, lc.num_envs, lc.rollout_len, interval, cfg.sharing, codes, rows)


def _init(parts: Parts, key) -> Runner:
    key, k_env, k_learner, k_sharing = jax.random.split(key, 4)
    env_state, ts = jax.vmap(parts.env.reset)(jax.random.split(k_env, parts.num_envs))
    return Runner(
        env_state,
        ts,
        parts.learner.init_hidden(parts.num_envs),
        parts.learner.init(k_learner),
        parts.scheme.init(k_sharing),
        key,
        jnp.int32(0),
        jnp.int32(0),
        _init_buffer(parts),
    )


def _init_buffer(parts: Parts):
    if parts.buffer_rows <= 0:
        return ()
    spec = parts.env.spec
    return mapd.init_buffer(parts.buffer_rows, spec.num_agents, spec.obs_dim, spec.num_actions)


def _rollout(
    parts: Parts, learner_state, sharing, env_state, ts, hidden, key, step, num_steps: int, greedy: bool
):
    """Run ``num_steps`` steps in every env. Returns the final carry and per-step (Transition, TimeStep)."""
    env, learner = parts.env, parts.learner
    learner_state = learner_state._replace(
        params=methods.derive_for_acting(parts.scheme, learner_state.params, learner.bank_names, sharing)
    )

    def env_step(carry, k):
        env_state, ts, hidden = carry
        k_act, k_env = jax.random.split(k)
        actions, hidden, extras = learner.act(learner_state, sharing, hidden, ts, k_act, step, greedy)
        env_state, next_ts = jax.vmap(env.step)(jax.random.split(k_env, ts.obs.shape[0]), env_state, actions)
        # a finished episode's memory must not leak into the next one
        hidden = jax.tree.map(
            lambda h: jnp.where(next_ts.done.reshape(-1, *[1] * (h.ndim - 1)), jnp.zeros_like(h), h), hidden
        )
        transition = Transition(
            ts.obs,
            ts.state,
            ts.avail_actions,
            actions,
            next_ts.reward,
            next_ts.done,
            next_ts.terminated,
            extras,
            next_ts.final_obs,
            next_ts.final_state,
            next_ts.final_avail,
        )
        return (env_state, next_ts, hidden), (transition, next_ts)

    return jax.lax.scan(env_step, (env_state, ts, hidden), jax.random.split(key, num_steps))


def _iteration(parts: Parts, runner: Runner) -> tuple[Runner, dict]:
    key, k_roll, k_update, k_sharing = jax.random.split(runner.key, 4)
    (env_state, ts, hidden), (traj, step_ts) = _rollout(
        parts,
        runner.learner,
        runner.sharing,
        runner.env_state,
        runner.ts,
        runner.hidden,
        k_roll,
        runner.env_steps,
        parts.rollout_len,
        greedy=False,
    )
    env_steps = runner.env_steps + parts.num_envs * parts.rollout_len
    learner_state, metrics = parts.learner.update(
        runner.learner, runner.sharing, traj, ts, runner.hidden, k_update, env_steps
    )
    buffer = runner.mapd_buffer
    if parts.buffer_rows > 0:
        buffer = mapd.buffer_add(buffer, traj.obs, traj.avail, jax.random.fold_in(k_sharing, 2),
                                 parts.sharing_cfg.mapd_buffer_add)
    learner_state, sharing, distance_metrics = _distance_round(
        parts, learner_state, runner.sharing, traj, runner.hidden, runner.iteration, jax.random.fold_in(k_sharing, 1),
        buffer,
    )
    sharing, learner_state, sharing_metrics = parts.scheme.update(
        sharing, learner_state, traj, k_sharing, env_steps
    )
    episodes = episode_means(step_ts.done, step_ts)
    metrics = {
        **metrics,
        **sharing_metrics,
        **distance_metrics,
        "env_steps": env_steps,
        "return": episodes["return"],
        "won": episodes["won"],
        "episode_length": episodes["length"],
        "episodes": step_ts.done.sum(),
    }
    runner = Runner(env_state, ts, hidden, learner_state, sharing, key, runner.iteration + 1, env_steps, buffer)
    return runner, metrics


def _distance_round(parts: Parts, learner_state, sharing, traj: Transition, hidden0, iteration, key, buffer=()):
    """Every ``parts.distance_interval`` iterations: the MAPD distance matrix of the agents' current policies on
    the observation buffer (feed-forward actors, ``parts.buffer_rows > 0``) or else on the iteration's rollout,
    handed to the scheme's ``restructure`` where it has one (MADPS).

    Returns ``(learner_state, sharing, metrics)``; ``mapd_distance`` ``[N, N]`` is NaN between rounds. The round
    runs in a zero-or-one-trip loop (``bank_ops.run_if``), and everything it reads travels in the loop's carry
    so that XLA cannot hoist the policy evaluation out of it.
    """
    if parts.distance_interval <= 0:
        return learner_state, sharing, {}
    sc = parts.sharing_cfg
    n = parts.env.spec.num_agents
    due = (iteration + 1) % parts.distance_interval == 0
    # with agent indication (FuPS+id), agent i's policy is the shared network fed i's code
    relabel = mapd.id_relabel(parts.id_codes) if parts.id_codes is not None and parts.id_codes.shape[1] else None

    def round_fn(operand, k):
        learner_state, sharing, _, traj, hidden0, buffer = operand
        valid = None
        if parts.buffer_rows > 0:
            traj, valid = mapd.buffer_transition(buffer)
        logits = parts.learner.policy_logits(learner_state, sharing, traj, hidden0, relabel)
        d, losses = mapd.distance_round(k, logits, traj.obs, sc, valid)
        if parts.scheme.restructure is not None:
            sharing, learner_state = parts.scheme.restructure(sharing, learner_state, d, jax.random.fold_in(k, 1))
        return learner_state, sharing, (d, losses[-1]), operand[3], hidden0, buffer

    nan = (jnp.full((n, n), jnp.nan, jnp.float32), jnp.full((), jnp.nan, jnp.float32))
    rollout = () if parts.buffer_rows > 0 else traj  # only what the round reads travels in the carry
    learner_state, sharing, (d, vae_loss), _, _, _ = bank_ops.run_if(
        due, round_fn, (learner_state, sharing, nan, rollout, hidden0, buffer), key
    )
    metrics = {"mapd_distance": d, "mapd_distance_mean": mapd.off_diagonal_mean(d), "mapd_vae_loss": vae_loss}
    return learner_state, sharing, metrics


def _evaluate(parts: Parts, num_envs: int, runner: Runner, key, policy: str) -> dict:
    """One full episode in each of ``num_envs`` fresh envs under ``policy``: ``greedy`` (argmax actions) or
    ``sample`` (the training policy: actions drawn from pi, or epsilon-greedy at the runner's current epsilon).

    Returns ``{"return", "won", "length"}`` scalars, means over the ``num_envs`` first episodes. The key alone
    fixes the envs' initial states, so policies evaluated from one key face the same starts.
    """
    if policy not in POLICY_NAMES:
        raise ValueError(f"evaluation policy {policy!r}; allowed: {', '.join(POLICY_NAMES)}")
    k_reset, k_roll = jax.random.split(key)
    env_state, ts = jax.vmap(parts.env.reset)(jax.random.split(k_reset, num_envs))
    _, (_, step_ts) = _rollout(
        parts,
        runner.learner,
        runner.sharing,
        env_state,
        ts,
        parts.learner.init_hidden(num_envs),
        k_roll,
        runner.env_steps,
        parts.env.spec.max_steps,
        greedy=policy == "greedy",
    )
    return episode_means(first_episodes(step_ts), step_ts)


def count_params(parts: Parts) -> int:
    """Trainable parameters of one seed (agent banks, mixer, critics), from shapes only."""
    shapes = jax.eval_shape(parts.learner.init, jax.random.PRNGKey(0))
    return param_count(parts.learner.params(shapes))


def make_train(cfg: TrainConfig) -> Callable[[chex.PRNGKey], tuple[Runner, dict]]:
    """``train(key) -> (final Runner, metrics)``; metrics leaves are ``[num_iterations]``."""
    parts = make_parts(cfg)

    def train(key):
        runner = _init(parts, key)
        return jax.lax.scan(lambda r, _: _iteration(parts, r), runner, None, cfg.num_iterations)

    return train


def make_program(cfg: TrainConfig, chunk_iters: int) -> Program:
    """The loop in chunks of ``chunk_iters`` iterations, plus evaluation of each of ``cfg.eval_policies`` (all
    from the evaluation key: paired starts; the metric names of ``psjax.evaluate.policy_metrics``)."""
    parts = make_parts(cfg)

    def run_chunk(runner):
        return jax.lax.scan(lambda r, _: _iteration(parts, r), runner, None, chunk_iters)

    return Program(
        init=lambda key: _init(parts, key),
        run_chunk=run_chunk,
        evaluate=lambda runner, key: policy_metrics(
            {p: _evaluate(parts, cfg.eval_envs, runner, key, p) for p in cfg.eval_policies}),
        param_count=count_params(parts),
        num_iterations=cfg.num_iterations,
        steps_per_iteration=cfg.steps_per_iteration,
    )
