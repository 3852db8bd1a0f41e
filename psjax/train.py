"""The one training loop: rollout -> learner update -> sharing update -> metrics.

``make_train(cfg)`` returns a pure ``train(key)`` (jit it, vmap it over seeds);
``make_program(cfg, chunk_iters)`` exposes the same loop in chunks for the host
runner (progress, evaluation, checkpoints). Every method and learner goes
through ``train_iteration``; none of them is special-cased here.

A hyperparameter sweep (``cfg.sweep``, ``psjax.sweep``) is the same loop built for each row from the row's
point, the swept fields as traced scalars (``Runner.point``): points train side by side under one vmap.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp

from psjax import (
    catalog,  # noqa: F401  (registers the built-in methods)
    registry,
    sweep,
)
from psjax.envs import agent_id_features, make_env, resolve_agent_id
from psjax.envs.base import Env, EnvSpec, TimeStep
from psjax.evaluate import POLICY_NAMES, EpisodeEnd, episode_end, episode_means, first_episodes, policy_metrics
from psjax.fields import ConfigError
from psjax.learners import make_learner
from psjax.nets.agents import param_count
from psjax.schema import TrainConfig
from psjax.sharing import mapd, methods, snd
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
    point: Any = ()  # a sweep's row: {field path: float32[] / int32[]} the swept values (psjax.sweep); () without


class Program(NamedTuple):
    # init(key, point=()) -> Runner: a sweep's row takes its point {path: scalar} (sweep.columns' row)
    init: Callable[..., Runner]
    run_chunk: Callable[[Runner], tuple[Runner, dict]]
    # evaluate(runner, key) -> eval_<policy>_<stat> for each of cfg.eval_policies, the first also as eval_<stat>;
    # nonfinite_params: the evaluated parameters' non-finite elements (its figures are then not a result)
    evaluate: Callable[[Runner, chex.PRNGKey], dict]
    param_count: int
    num_iterations: int
    steps_per_iteration: int
    spec: EnvSpec | None = None  # the environment's static description
    # episode(runner, key, num_envs, greedy) -> (Transition [T, E, ...], EpisodeEnd [T, E]): max_steps steps
    # of one seed's runner in num_envs fresh envs (every env's first episode lies inside them); num_envs and
    # greedy are Python values (jit it with them fixed). For pictures and inspection (BDPS's roles.png).
    episode: Callable | None = None
    # run_counted(runner, count) -> (runner, metrics[chunk_iters]): the first ``count`` (an int32 scalar, the same
    # for every seed, at most chunk_iters) iterations of run_chunk, metric rows from ``count`` on zero. One compiled
    # program for every count, so a run's shorter remainder chunk is not compiled again (psjax.run).
    run_counted: Callable[[Runner, jax.Array], tuple[Runner, dict]] | None = None


class Parts(NamedTuple):
    """The pieces the loop is assembled from (also handy in tests and benchmarks)."""

    env: Env
    learner: Learner
    scheme: Any
    num_envs: int
    rollout_len: int


def make_parts(cfg: TrainConfig, env: Env | None = None) -> Parts:
    """The environment, agent model, scheme and learner of ``cfg``'s method (its registry record); ``env``
    already built for it, or None (a sweep's rows build the rest inside a trace, the environment outside)."""
    method = registry.get(cfg.alg)
    env = env or make_env(cfg.env, method.agent_id)
    lc = cfg.learner_cfg
    model = method.agent_model(cfg, env.spec) if method.agent_model is not None else None
    bank_names = model.bank_names if model is not None else cfg.learner_kind.banks
    scheme = methods.make_scheme(cfg, env.spec, lc.hidden, MASKED_LAYERS, bank_names)
    learner = make_learner(cfg, env.spec, scheme, model)
    codes = agent_id_features(env.spec.num_agents, resolve_agent_id(cfg.env.agent_id, method.agent_id))
    recurrent = cfg.learner_kind.recurrent
    # the team's SND for a method driven by it (DiCo: after every update), or the metric any method can log
    by_snd = methods.driver(scheme, "snd")
    snd_interval = by_snd.interval if by_snd is not None else cfg.sharing.snd_interval
    if snd_interval > 0 and learner.policy_logits is not None:
        scheme = snd.with_snd(scheme, learner.policy_logits, env.spec, snd_interval, cfg.sharing.snd_rows, recurrent,
                              lc.num_envs * lc.rollout_len, codes)
    # the MAPD distance rounds: MADPS's own interval, or the metric any method can log
    by_distance = methods.driver(scheme, "mapd")
    interval = by_distance.interval if by_distance is not None else cfg.sharing.mapd_interval
    if interval > 0 and learner.policy_logits is not None:
        rows = 0 if recurrent else cfg.sharing.mapd_buffer_size  # feed-forward: a buffer
        scheme = mapd.with_distance(scheme, learner.policy_logits, env.spec, cfg.sharing, interval, rows, codes)
    return Parts(env, learner, scheme, lc.num_envs, lc.rollout_len)


def init_runner(parts: Parts, key) -> Runner:
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
    )


def rollout_steps(
    parts: Parts, learner_state, sharing, env_state, ts, hidden, key, step, num_steps: int, greedy: bool
):
    """Run ``num_steps`` steps in every env. Returns the final carry and per-step (Transition, EpisodeEnd)."""
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
        return (env_state, next_ts, hidden), (transition, episode_end(next_ts))

    return jax.lax.scan(env_step, (env_state, ts, hidden), jax.random.split(key, num_steps))


def watched(name: str) -> bool:
    """Whether the divergence check reads the learner metric ``name``: its losses (``loss``, ``policy_loss``,
    ``kal_div_loss``, ...), the gradient norm and the outputs the learners report (``q_taken``, ``td_abs``, the
    policy ``entropy``). Each is a value whenever the learner's update ran, so NaN there is never "no value"."""
    return name.endswith("loss") or name in ("grad_norm", "q_taken", "td_abs", "entropy")


def nonfinite_count(params) -> jax.Array:
    """int32[]: the non-finite (NaN or +-inf) floating-point elements of a parameter pytree."""
    leaves = [p for p in jax.tree.leaves(params) if jnp.issubdtype(p.dtype, jnp.inexact)]
    return sum((jnp.sum(~jnp.isfinite(p), dtype=jnp.int32) for p in leaves), jnp.int32(0))


def params_changed(before, after) -> jax.Array:
    """bool[]: the learner's update changed its parameters (it ran; a skipped update, e.g. before
    ``q.learning_starts``, leaves them bit for bit). Non-finite parameters always count as changed (NaN != NaN)."""
    return jnp.any(jnp.stack([jnp.any(a != b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after))]))


def nonfinite_metrics(learner_metrics: dict, updated: jax.Array, params) -> dict:
    """One iteration's divergence check, the same for every learner and method: ``nonfinite`` (int32) counts the
    non-finite quantities among the ``watched`` learner metrics (only when the update ran: a skipped update reports
    NaN for "no value") and the parameters after the iteration (one quantity); ``nonfinite_params`` (int32) counts
    the parameters' non-finite elements. A handful of reductions per iteration."""
    bad_metrics = [~jnp.all(jnp.isfinite(v)) for k, v in learner_metrics.items()
                   if watched(k) and jnp.issubdtype(jnp.asarray(v).dtype, jnp.inexact)]
    bad_params = nonfinite_count(params)
    count = sum((b.astype(jnp.int32) for b in bad_metrics), jnp.int32(0)) * updated.astype(jnp.int32)
    return {"nonfinite": count + (bad_params > 0).astype(jnp.int32), "nonfinite_params": bad_params}


def train_iteration(parts: Parts, runner: Runner) -> tuple[Runner, dict]:
    key, k_roll, k_update, k_sharing = jax.random.split(runner.key, 4)
    (env_state, ts, hidden), (traj, step_ts) = rollout_steps(
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
    updated = params_changed(parts.learner.params(runner.learner), parts.learner.params(learner_state))
    sharing, learner_state, sharing_metrics = parts.scheme.update(
        runner.sharing, learner_state, traj, k_sharing, env_steps, runner.hidden
    )
    episodes = episode_means(step_ts.done, step_ts)
    metrics = {
        **metrics,
        **sharing_metrics,
        **nonfinite_metrics(metrics, updated, parts.learner.params(learner_state)),
        "env_steps": env_steps,
        "return": episodes["return"],
        "won": episodes["won"],
        "episode_length": episodes["length"],
        "episodes": step_ts.done.sum(),
    }
    runner = Runner(env_state, ts, hidden, learner_state, sharing, key, runner.iteration + 1, env_steps, runner.point)
    return runner, metrics


def episode(parts: Parts, runner: Runner, key, num_envs: int, greedy: bool) -> tuple[Transition, EpisodeEnd]:
    """``max_steps`` steps of ``runner`` in ``num_envs`` fresh envs (the key alone fixes their initial states):
    the per-step ``(Transition, EpisodeEnd)``, ``[T, E, ...]``; every env's first episode lies inside them."""
    k_reset, k_roll = jax.random.split(key)
    env_state, ts = jax.vmap(parts.env.reset)(jax.random.split(k_reset, num_envs))
    _, (traj, step_ts) = rollout_steps(
        parts,
        runner.learner,
        runner.sharing,
        env_state,
        ts,
        parts.learner.init_hidden(num_envs),
        k_roll,
        runner.env_steps,
        parts.env.spec.max_steps,
        greedy=greedy,
    )
    return traj, step_ts


def _evaluate(parts: Parts, num_envs: int, runner: Runner, key, policy: str) -> dict:
    """One full episode in each of ``num_envs`` fresh envs under ``policy``: ``greedy`` (argmax actions) or
    ``sample`` (the training policy: actions drawn from pi, or epsilon-greedy at the runner's current epsilon).

    Returns ``{"return", "won", "length"}`` scalars, means over the ``num_envs`` first episodes. The key alone
    fixes the envs' initial states, so policies evaluated from one key face the same starts.
    """
    if policy not in POLICY_NAMES:
        raise ValueError(f"evaluation policy {policy!r}; allowed: {', '.join(POLICY_NAMES)}")
    _, step_ts = episode(parts, runner, key, num_envs, greedy=policy == "greedy")
    return episode_means(first_episodes(step_ts), step_ts)


def count_params(parts: Parts) -> int:
    """Trainable parameters of one seed (agent banks, mixer, critics), from shapes only."""
    shapes = jax.eval_shape(parts.learner.init, jax.random.PRNGKey(0))
    return param_count(parts.learner.params(shapes))


def _parts_for_points(cfg: TrainConfig) -> Callable[[Any], Parts]:
    """``point -> Parts``: ``cfg``'s own parts for ``()``, else built for the point (its values may be traced)."""
    parts = make_parts(cfg)
    if not cfg.sweep:
        return lambda point: parts
    return lambda point: parts if not point else make_parts(sweep.point_config(cfg, point), parts.env)


def _loop(parts_at: Callable[[Any], Parts], key, point, num_iterations: int):
    runner = init_runner(parts_at(point), key)._replace(point=point)
    return jax.lax.scan(lambda r, _: train_iteration(parts_at(r.point), r), runner, None, num_iterations)


def make_train(cfg: TrainConfig) -> Callable[[chex.PRNGKey], tuple[Runner, dict]]:
    """``train(key) -> (final Runner, metrics)``; metrics leaves are ``[num_iterations]``. With a sweep
    (``cfg.sweep``) every point trains from the same key under one vmap: leaves ``[points, ...]``, points in
    ``psjax.sweep.points(cfg)``'s order."""
    check_sweep(cfg)
    parts_at = _parts_for_points(cfg)
    if not cfg.sweep:
        return lambda key: _loop(parts_at, key, (), cfg.num_iterations)
    columns = {path: jnp.asarray(v) for path, v in sweep.columns(cfg).items()}
    return lambda key: jax.vmap(lambda point: _loop(parts_at, key, point, cfg.num_iterations))(columns)


def make_program(cfg: TrainConfig, chunk_iters: int) -> Program:
    """The loop in chunks of ``chunk_iters`` iterations, plus evaluation of each of ``cfg.eval_policies`` (all
    from the evaluation key: paired starts; the metric names of ``psjax.evaluate.policy_metrics``). A sweep's
    program builds each row's parts from its runner's point."""
    parts_at = _parts_for_points(cfg)
    parts = parts_at(())

    def run_chunk(runner):
        return jax.lax.scan(lambda r, _: train_iteration(parts_at(r.point), r), runner, None, chunk_iters)

    def run_counted(runner, count):
        # what scan lowers to (a while loop writing each iteration's row), with the trip count read at run time
        rows = jax.eval_shape(lambda r: train_iteration(parts_at(r.point), r)[1], runner)
        table = jax.tree.map(lambda s: jnp.zeros((chunk_iters, *s.shape), s.dtype), rows)

        def body(i, carry):
            runner, table = carry
            runner, metrics = train_iteration(parts_at(runner.point), runner)
            return runner, jax.tree.map(lambda t, m: jax.lax.dynamic_update_index_in_dim(t, m, i, 0), table, metrics)

        return jax.lax.fori_loop(0, jnp.minimum(count, chunk_iters), body, (runner, table))

    def evaluate(runner, key):
        metrics = policy_metrics({p: _evaluate(parts_at(runner.point), cfg.eval_envs, runner, key, p)
                                  for p in cfg.eval_policies})
        # acting on non-finite parameters (argmax of NaN is action 0) gives figures that are not a result
        return {**metrics, "nonfinite_params": nonfinite_count(parts_at(runner.point).learner.params(runner.learner))}

    return Program(
        init=lambda key, point=(): init_runner(parts_at(point), key)._replace(point=point),
        run_chunk=run_chunk,
        evaluate=evaluate,
        param_count=count_params(parts),
        num_iterations=cfg.num_iterations,
        steps_per_iteration=cfg.steps_per_iteration,
        spec=parts.env.spec,
        episode=lambda runner, key, num_envs, greedy: episode(parts_at(runner.point), runner, key, num_envs, greedy),
        run_counted=run_counted,
    )


def data_parallel_specs(runner: Runner, axis: str) -> Any:
    """A ``PartitionSpec`` per leaf of a rows-leading runner for data parallelism: the environments' state, the
    agents' memory and the replay buffer's items split along ``axis`` (their second axis, after the rows),
    everything else (parameters, optimiser, sharing state, keys) replicated."""
    from jax.sharding import PartitionSpec

    from psjax.learners.replay import Replay

    split, whole = PartitionSpec(None, axis), PartitionSpec()

    def learner_spec(node):
        if isinstance(node, Replay):  # items along the capacity axis; the write position and size replicated
            return Replay(jax.tree.map(lambda _: split, node.data), whole, whole)
        return jax.tree.map(lambda _: whole, node)

    per_env = jax.tree.map(lambda _: split, (runner.env_state, runner.ts, runner.hidden))
    learner = jax.tree.map(learner_spec, runner.learner, is_leaf=lambda x: isinstance(x, Replay))
    rest = jax.tree.map(lambda _: whole, (runner.sharing, runner.key, runner.iteration, runner.env_steps, runner.point))
    return Runner(*per_env, learner, *rest)


# what tracing raises where building the program needs a Python value
_TRACE_ERRORS = (jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError,
                 jax.errors.TracerIntegerConversionError, jax.errors.TracerArrayConversionError)


def check_sweep(cfg: TrainConfig) -> None:
    """Refuse swept fields that the program cannot take as traced numbers, each traced alone through
    initialisation, one iteration and an evaluation (shapes only: nothing is compiled or allocated); a
    ConfigError names the field. No-op without a sweep."""
    if not cfg.sweep:
        return
    program = make_program(cfg, 1)
    columns = sweep.columns(cfg)
    for entry in sweep.entries(cfg):
        point = {entry.path: columns[entry.path][0]}  # this field traced, the others at the run's own values

        def probe(key, point):
            runner, _ = program.run_chunk(program.init(key, point))
            return program.evaluate(runner, key)

        try:
            jax.eval_shape(probe, jax.random.PRNGKey(0), point)
        except (*_TRACE_ERRORS, TypeError) as e:  # TypeError: a traced value where a primitive needs a static one
            reason = str(e).strip().splitlines()[0]
            raise ConfigError(
                f"sweep.{entry.path}: building the program needs {entry.path} as a Python value (it sets an array's "
                f"shape, or the program's construction branches on it: {reason}), so its values cannot train side "
                f"by side in one program; allowed: fields read as numbers (e.g. lr, gamma, coefficients, epsilons), "
                f"or one run per value (python -m psjax compare-sweep)") from None
