"""QMIX, VDN and IQL: recurrent utility networks over a sharing bank, trained from a
sequence replay buffer with double-Q targets. The three differ only in the mixer
(QMIX hypernetwork, VDN sum, none) and so in whether the TD target is per team or per agent.

PQN (Gallici et al. 2024) is the same learner without replay and without target network: every rollout is
learned from in ``q.epochs`` passes of ``q.num_minibatches`` minibatches of whole env trajectories, then dropped,
with lambda-returns taken on the network being trained (stop-gradient) and ``q.pqn_mixer`` as its value head.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax
from jax.extend.core import jaxpr_as_fun

from psjax.agent_model import AgentModel, recurrent_agent_model
from psjax.bootstrap import at_steps, truncation_slots, truncation_steps, with_steps
from psjax.envs.base import EnvSpec, TimeStep, team_reward
from psjax.learners import replay
from psjax.learners.batches import minibatches
from psjax.nets.mixers import QMixer, VDNMixer
from psjax.schema import QConfig, TrainConfig, burn_in_steps
from psjax.sharing.bank import SharingState
from psjax.sharing.methods import Scheme, add_aux_loss, init_aux_state, init_sharing_params
from psjax.types import Learner, Transition

NEG_INF = -1e9


class QState(NamedTuple):
    params: dict  # {"agent": bank [K, ...], "mixer": mixer params}
    target: dict  # same structure: hard copies every target_update_interval updates, or Polyak (target_tau)
    opt_state: Any
    buffer: replay.Replay
    updates: chex.Array  # int32, gradient steps taken
    aux: Any = ()  # state of the scheme's auxiliary loss (Kaleidoscope's loss window); () for most methods


def masked_argmax(q: chex.Array, avail: chex.Array) -> chex.Array:
    """Greedy action among the available ones: ``q[..., A], avail[..., A] -> [...]``."""
    return jnp.argmax(jnp.where(avail, q, NEG_INF), axis=-1)


def epsilon_greedy(key, q, avail, epsilon):
    """Random available action with probability epsilon, else the greedy one. ``[..., A] -> [...]``."""
    k_explore, k_random = jax.random.split(key)
    random_actions = jax.random.categorical(k_random, jnp.where(avail, 0.0, NEG_INF))
    explore = jax.random.uniform(k_explore, random_actions.shape) < epsilon
    return jnp.where(explore, random_actions, masked_argmax(q, avail))


def td_targets(reward_t, terminated_t, done_t, q_next_t, gamma, lam=0.0):
    """TD(lambda) targets along time (axis 0); ``lam = 0`` gives one-step targets.

    ``G_t = r_t + gamma * (1 - terminated_t) * ((1 - lam_t) * q_next_t + lam_t * G_{t+1})`` with
    ``lam_t = lam * (1 - done_t)`` and ``G`` past the last step replaced by ``q_next``. ``q_next_t`` is
    the value of the observation step t led to (after a time limit: the episode's last observation),
    so a truncation bootstraps from it while a terminal state (``terminated_t``) cuts the bootstrap;
    either end of an episode (``done_t``) stops the lambda-return from reading the next episode.
    Shapes: ``[T, ...]`` for reward_t and q_next_t; terminated_t / done_t broadcastable to them.
    """
    bootstrap = 1.0 - jnp.broadcast_to(terminated_t, reward_t.shape).astype(jnp.float32)
    if lam == 0.0:
        return reward_t + gamma * bootstrap * q_next_t
    lam_t = lam * (1.0 - jnp.broadcast_to(done_t, reward_t.shape).astype(jnp.float32))

    def step(g_next, inputs):
        r, b, lt, q_next = inputs
        g = r + gamma * b * ((1.0 - lt) * q_next + lt * g_next)
        return g, g

    _, g = jax.lax.scan(step, q_next_t[-1], (reward_t, bootstrap, lam_t, q_next_t), reverse=True)
    return g


def loss_steps(shape: tuple[int, ...], burn_in: int) -> chex.Array:
    """float32 ``shape`` (time-major ``[T, ...]``): 1 where a step's TD error counts, 0 on the first ``burn_in``
    steps (R2D2's burn-in: they only warm the recurrent state up)."""
    return jnp.broadcast_to((jnp.arange(shape[0]) >= burn_in).reshape((-1,) + (1,) * (len(shape) - 1)),
                            shape).astype(jnp.float32)


def masked_mean(x: chex.Array, weights: chex.Array) -> chex.Array:
    """The mean of ``x`` over the entries where ``weights`` is 1."""
    return jnp.sum(x * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def sequence_targets(
    q, q_target, seq, gamma, double_q, mix_online=None, mix_target=None, reduce_reward=None, lam=0.0
):
    """Predictions and double-Q TD(lambda) targets along a stored sequence.

    Args:
      q, q_target: pairs ``(q [T+1, B, N, A], q_final [K, B, N, A])`` of online / target utilities for every
        stored observation and for the pre-reset next observations at the ``K`` time-limit slots
        (``AgentModel.unroll``).
      seq: time-major dict with action [T, B, N], reward [T, B, N], done / terminated [T, B],
        avail [T+1, B, N, A], state [T+1, B, S], and at the slots: final_step [K, B] (the truncated steps,
        padded with T), final_avail [K, B, N, A], final_state [K, B, S]. Step t bootstraps from observation
        t+1, or from its final observation where a time limit ended the episode; only terminated_t cuts the
        bootstrap (a time limit is not a terminal state; after a termination observation t+1 is read by
        nothing).
      mix_online, mix_target: ``(q[T, B, N], state[T, B, S]) -> [T, B]`` mixers; None for IQL.
      reduce_reward: per-agent -> team reward (with a mixer).
    Returns:
      (prediction, target): [T, B] with a mixer, [T, B, N] without.
    """
    (q, q_final), (q_target, q_target_final) = q, q_target
    done, step = seq["done"], seq["final_step"]
    q_taken = jnp.take_along_axis(q[:-1], seq["action"][..., None], axis=-1)[..., 0]
    avail_next = with_steps(seq["avail"][1:], step, seq["final_avail"])
    q_target_next = with_steps(q_target[1:], step, q_target_final)
    chooser = with_steps(q[1:], step, q_final) if double_q else q_target_next
    next_choice = masked_argmax(chooser, avail_next)
    q_next = jnp.take_along_axis(q_target_next, next_choice[..., None], axis=-1)[..., 0]
    if mix_online is None:
        return q_taken, td_targets(seq["reward"], seq["terminated"][..., None], done[..., None], q_next, gamma, lam)
    pred = mix_online(q_taken, seq["state"][:-1])
    q_next_tot = mix_target(q_next, with_steps(seq["state"][1:], step, seq["final_state"]))
    return pred, td_targets(reduce_reward(seq["reward"]), seq["terminated"], done, q_next_tot, gamma, lam)


def next_target(params, target, num_updates: chex.Array, qc: QConfig):
    """The target network after gradient step ``num_updates``: Polyak-averaged towards ``params`` every step
    (``q.target_tau`` > 0), else a hard copy every ``q.target_update_interval`` steps."""
    if qc.target_tau > 0:  # soft: no jump in the targets (hard copies shake the policy, docs/changelog.md)
        return optax.incremental_update(params, target, qc.target_tau)
    sync = num_updates % qc.target_update_interval == 0
    return jax.tree.map(lambda p, t: jnp.where(sync, p, t), params, target)


def compact_finals(traj: Transition, slots: int) -> dict:
    """Each env's pre-reset next observation, state and availability at its truncated steps: "final_step"
    ``[E, slots]`` (padded with T) and "final_obs" / "final_state" / "final_avail" ``[E, slots, ...]``."""
    step = truncation_steps(traj.done & ~traj.terminated, slots)  # [slots, E]
    finals = at_steps({"final_obs": traj.next_obs, "final_state": traj.next_state,
                       "final_avail": traj.next_avail}, step)
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), {"final_step": step, **finals})


def rollout_items(traj: Transition, last: TimeStep, hidden0, slots: int, keep_state: bool,
                  stored: tuple[str, ...]) -> dict:
    """The rollout ``[T, E, ...]`` as replay items, one per env: leaves ``[E, T(+1), ...]`` (``hidden0``: ``[E, ...]``,
    zeros unless ``keep_state``), with ``slots`` time-limit slots and the agent model's ``stored`` extras."""
    def with_next(x_t, x_last):  # [T, E, ...] + [E, ...] -> [E, T+1, ...]
        return jnp.swapaxes(jnp.concatenate([x_t, x_last[None]], axis=0), 0, 1)

    return {
        "obs": with_next(traj.obs, last.obs),
        "state": with_next(traj.state, last.state),
        "avail": with_next(traj.avail, last.avail_actions),
        "action": jnp.swapaxes(traj.action, 0, 1),
        "reward": jnp.swapaxes(traj.reward, 0, 1),
        "done": jnp.swapaxes(traj.done, 0, 1),
        "terminated": jnp.swapaxes(traj.terminated, 0, 1),
        **compact_finals(traj, slots),
        "hidden0": hidden0 if keep_state else jax.tree.map(jnp.zeros_like, hidden0),
        **{k: with_next(traj.extras[k], traj.extras[k][-1]) for k in stored},
    }


def make_learner(cfg: TrainConfig, spec: EnvSpec, scheme: Scheme, model: AgentModel | None = None) -> Learner:
    """QMIX / VDN / IQL, or PQN (``learner=pqn``: on-policy, see the module doc), over ``model`` (default: the
    scheme's RecurrentNet bank)."""
    qc = cfg.q
    n, num_actions = spec.num_agents, spec.num_actions
    model = model or recurrent_agent_model(cfg, spec, scheme)
    on_policy = not cfg.learner_kind.replay  # PQN: each rollout learned from in epochs of minibatches, then dropped
    mixer = {"qmix": QMixer(n, qc.mixer_embed, qc.hypernet_hidden, qc.mixer_init_scale),
             "vdn": VDNMixer()}.get(cfg.value_mixer)
    steps_per_rollout = qc.epochs * qc.num_minibatches if on_policy else qc.updates_per_rollout
    total_updates = cfg.num_iterations * steps_per_rollout
    lr = optax.linear_schedule(qc.lr, 0.0, total_updates) if qc.lr_decay else qc.lr
    adam = {"adam": optax.adam, "radam": optax.radam}[qc.optimizer]
    optimizer = optax.chain(optax.clip_by_global_norm(qc.max_grad_norm), adam(lr))
    epsilon_at = optax.linear_schedule(qc.eps_start, qc.eps_end, qc.eps_decay_steps)
    # the same network picks and values the bootstrap action under PQN: double-Q would change nothing
    double_q = qc.double_q and not on_policy
    # an item keeps the pre-reset next observation only where a time limit ended an episode: elsewhere it is
    # the next stored step's (or a terminal one, read by nothing); about half the buffer otherwise
    slots = truncation_slots(qc.rollout_len, spec.max_steps)

    def init(key):
        k_agent, k_mixer = jax.random.split(key)
        params = model.init(k_agent)
        if mixer is not None:
            params["mixer"] = mixer.init(k_mixer, jnp.zeros((n,)), jnp.zeros((spec.state_dim,)))
        params = init_sharing_params(scheme, jax.random.fold_in(key, 1), params, model.bank_names)
        T = qc.rollout_len
        item = {
            "obs": jnp.zeros((T + 1, n, spec.obs_dim)),
            "state": jnp.zeros((T + 1, spec.state_dim)),
            "avail": jnp.zeros((T + 1, n, num_actions), bool),
            "action": jnp.zeros((T, n), jnp.int32),
            "reward": jnp.zeros((T, n)),
            "done": jnp.zeros((T,), bool),
            "terminated": jnp.zeros((T,), bool),
            "final_step": jnp.zeros((slots,), jnp.int32),
            "final_obs": jnp.zeros((slots, n, spec.obs_dim)),
            "final_state": jnp.zeros((slots, spec.state_dim)),
            "final_avail": jnp.zeros((slots, n, num_actions), bool),
            "hidden0": jax.tree.map(lambda h: h[0], model.init_hidden(1)),
            **model.stored(T),
        }
        if on_policy:  # no replay buffer, no target copy
            return QState(params, (), optimizer.init(params), (), jnp.int32(0), init_aux_state(scheme))
        return QState(
            params, params, optimizer.init(params), replay.init(item, qc.buffer_size), jnp.int32(0),
            init_aux_state(scheme),
        )

    def act(state: QState, sharing, hidden, ts: TimeStep, key, step, greedy: bool):
        epsilon = 0.0 if greedy else epsilon_at(step)

        def choose(k, q):
            if greedy:
                return masked_argmax(q, ts.avail_actions).astype(jnp.int32)
            return epsilon_greedy(k, q, ts.avail_actions, epsilon).astype(jnp.int32)

        return model.act(state.params, sharing, hidden, ts, key, choose, epsilon, greedy)

    def loss_fn(params, target, sharing, batch, aux_state, key):
        # time-major: [T(+1), B, ...]
        b = {k: jnp.swapaxes(v, 0, 1) for k, v in batch.items() if k != "hidden0"}
        done = b["done"]  # [T, B]
        resets = jnp.concatenate(
            [jnp.zeros_like(done[:1]), done], axis=0
        )  # obs t+1 starts fresh after done_t
        q = model.unroll(params, sharing, batch["hidden0"], b, resets)
        if on_policy:  # PQN: targets from the network being trained, from the same unroll
            target = jax.lax.stop_gradient(params)
            q_target = jax.lax.stop_gradient(q)
        else:
            q_target = model.unroll(target, sharing, batch["hidden0"], b, resets)
        if mixer is None:  # IQL: each agent its own reward and target
            pred, y = sequence_targets(q, q_target, b, qc.gamma, double_q, lam=qc.td_lambda)
        else:
            mixers = partial(mixer.apply, params["mixer"]), partial(mixer.apply, target["mixer"])
            pred, y = sequence_targets(
                q, q_target, b, qc.gamma, double_q, *mixers, partial(team_reward, spec), lam=qc.td_lambda
            )
        td = pred - jax.lax.stop_gradient(y)
        counted = loss_steps(td.shape, 0 if on_policy else burn_in_steps(qc))
        loss = masked_mean(td**2, counted)
        total, aux_state, aux_metrics = add_aux_loss(scheme, params, aux_state, loss)
        if model.extra_loss is not None:
            extra, extra_metrics = model.extra_loss(params, target, b, batch["hidden0"], resets, key)
            total, aux_metrics = total + extra, {**aux_metrics, **extra_metrics}
        metrics = {"loss": loss, "q_taken": masked_mean(pred, counted), "td_abs": masked_mean(jnp.abs(td), counted)}
        return total, ({**metrics, **aux_metrics}, aux_state)

    def gradient_step(state: QState, sharing, batch, key):
        """One step on ``batch`` (replay items, leaves [B, ...])."""
        (_, (aux, aux_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.target, sharing, batch, state.aux, key
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        num_updates = state.updates + 1
        target = () if on_policy else next_target(params, state.target, num_updates, qc)
        metrics = {"grad_norm": optax.tree.norm(grads), **aux}
        state = state._replace(params=params, target=target, opt_state=opt_state, updates=num_updates, aux=aux_state)
        return state, metrics

    def learn_on_policy(state: QState, sharing, items, key):
        """PQN: ``q.epochs`` passes over the rollout, each in ``q.num_minibatches`` splits of a shuffled env axis."""
        def epoch(state, k):
            k_perm, k_steps = jax.random.split(k)
            return jax.lax.scan(lambda s, xs: gradient_step(s, sharing, *xs), state,
                                (minibatches(items, k_perm, 0, qc.num_minibatches),
                                 jax.random.split(k_steps, qc.num_minibatches)))

        state, metrics = jax.lax.scan(epoch, state, jax.random.split(key, qc.epochs))
        return state, jax.tree.map(jnp.mean, metrics)

    def learn_from_replay(state: QState, sharing, items, key, step):
        """QMIX / VDN / IQL: store the rollout, then ``q.updates_per_rollout`` steps on sampled batches (none
        before ``q.learning_starts`` env steps)."""
        state = state._replace(buffer=replay.add(state.buffer, items))

        def learn(state):
            def body(s, k):
                batch = replay.sample(s.buffer, k, qc.batch_size)
                return gradient_step(s, sharing, batch, jax.random.fold_in(k, 1))

            state, metrics = jax.lax.scan(body, state, jax.random.split(key, qc.updates_per_rollout))
            return state, jax.tree.map(jnp.mean, metrics)

        # traced once: ``skip`` needs the metrics ``learn`` reports (whichever the loss terms are), and a second
        # trace of the whole gradient step (``jax.eval_shape``) cost as much lowering time as the first
        traced, out_shapes = jax.make_jaxpr(learn, return_shape=True)(state)

        def learn_traced(state):
            return jax.tree.unflatten(jax.tree.structure(out_shapes), jaxpr_as_fun(traced)(*jax.tree.leaves(state)))

        def skip(state):  # NaN for every metric
            return state, jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype), out_shapes[1])

        return jax.lax.cond(step >= qc.learning_starts, learn_traced, skip, state)

    def update(state: QState, sharing: SharingState, traj: Transition, last: TimeStep, hidden0, key, step):
        # PQN learns from the rollout it just collected: its recorded start state is the right one
        items = rollout_items(traj, last, hidden0, slots, qc.stored_state or on_policy, tuple(model.stored(1)))
        if on_policy:
            state, metrics = learn_on_policy(state, sharing, items, key)
        else:
            state, metrics = learn_from_replay(state, sharing, items, key, step)
        metrics["epsilon"] = epsilon_at(step)
        if model.rollout_metrics is not None:
            metrics.update(model.rollout_metrics(traj))
        return state, metrics

    def policy_logits(state: QState, sharing, traj: Transition, hidden0, relabel=None):
        """Every agent's Q-values (MAPD reads softmax(Q) as the policy) on every agent's observations of ``traj``,
        unrolled from the observation owner's ``hidden0`` with resets after ``done``: ``[N_pol, T, E, N_obs, A]``,
        unavailable actions at NEG_INF. ``relabel(obs[..., N_pol, D])`` gives each policy its own agent indication."""
        resets = jnp.concatenate([jnp.zeros_like(traj.done[:1]), traj.done[:-1]], axis=0)  # [T, E]
        extras = {k: traj.extras[k] for k in model.stored(1)}

        def owner(x, j, axis):  # agent j's column given to every agent (leaves without an agent axis unchanged)
            if x.ndim <= axis or x.shape[axis] != n:
                return x
            return jnp.broadcast_to(jnp.take(x, j[None], axis=axis), x.shape)

        def on_agent(j):
            seq = jax.tree.map(lambda x: owner(x, j, 2), {"obs": traj.obs, **extras})
            seq["obs"] = seq["obs"] if relabel is None else relabel(seq["obs"])
            # the unroll's contract: one action fewer than observations; no time-limit slots (only q is read)
            seq["action"] = owner(traj.action[:-1], j, 2)
            seq["done"], seq["terminated"] = traj.done[:-1], traj.terminated[:-1]
            seq["final_step"] = jnp.zeros((0, traj.done.shape[1]), jnp.int32)
            seq["final_obs"] = jnp.zeros((0, *seq["obs"].shape[1:]), seq["obs"].dtype)
            q, _ = model.unroll(state.params, sharing, jax.tree.map(lambda h: owner(h, j, 1), hidden0), seq, resets)
            return jnp.where(owner(traj.avail, j, 2), q, NEG_INF)  # [T, E, N_pol, A]

        return jnp.swapaxes(jax.vmap(on_agent)(jnp.arange(n)), 0, 3)

    return Learner(
        init=init,
        init_hidden=model.init_hidden,
        act=act,
        update=update,
        params=lambda s: s.params,
        bank_names=model.bank_names,
        policy_logits=policy_logits,
    )
