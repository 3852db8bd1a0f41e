"""A2C and PPO: actor and critic over sharing banks, trained on each rollout.

A2C is PPO with one epoch, one minibatch and lambda = 1: on the first pass the
clipped ratio equals one, so the clipped surrogate's gradient is the plain
policy gradient ``A * grad log pi`` and the returns are n-step returns bootstrapped
from the value after the rollout. One loss serves both.

The actor and critic are MLPs, or with ``ac.recurrent`` Dense -> GRU -> Dense networks (IPPO / MAPPO-rnn)
whose states are carried through the rollout, zeroed where an episode ends and unrolled again from the
rollout's first state in the update. Feed-forward minibatches are random sets of steps; recurrent ones are
whole env trajectories (the rollout split along the env axis, as JaxMARL's IPPO-rnn), so backpropagation
through time sees every step of the rollout. With ``ac.shared_torso`` the two share one Dense -> GRU torso
(JaxMARL's ActorCriticRNN): the actor bank holds the torso and the policy head, the critic bank a value head
that reads the torso's output, so the value loss trains the torso too and each agent runs one GRU, not two.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import chex
import distrax
import jax
import jax.numpy as jnp
import optax

from psjax.bootstrap import apply_rows, at_steps, truncation_slots, truncation_steps, with_steps
from psjax.envs.base import EnvSpec, TimeStep
from psjax.learners.batches import minibatches
from psjax.nets.agents import MLP, RecurrentNet
from psjax.schema import TrainConfig
from psjax.sharing.bank import SharingState, agent_params, apply_agents, apply_gathered, init_bank, unroll_agents
from psjax.sharing.methods import (
    Scheme,
    add_aux_loss,
    agent_derive,
    bank_network,
    init_aux_state,
    init_sharing_params,
)
from psjax.types import Learner, Transition

NEG_INF = -1e9


class ACState(NamedTuple):
    params: dict  # {"actor": bank [K, ...], "critic": bank [K, ...]}
    opt_state: Any
    updates: chex.Array  # int32, gradient steps taken
    aux: Any = ()  # state of the scheme's auxiliary loss (Kaleidoscope's loss window); () for most methods


def gae(reward_t, value_t, next_value_t, terminated_t, done_t, gamma, lam):
    """Generalised advantage estimates along time (axis 0), bootstrapping through time limits.

    ``delta_t = r_t + gamma * (1 - terminated_t) * V(o'_t) - V(o_t)`` and
    ``A_t = delta_t + gamma * lam * (1 - done_t) * A_{t+1}``: an episode's end (``done_t``) stops the
    advantage from reading the next episode, but only a terminal state (``terminated_t``) drops the
    bootstrap; after a truncation ``V(o'_t)`` is the value of the episode's last observation.

    Args:
      reward_t, value_t: [T, ...] rewards and V(o_t); next_value_t: [T, ...] V(o'_t) of the observation
        each step led to, before any automatic reset; terminated_t, done_t: [T, ...] bool.
    Returns:
      (advantages [T, ...], returns [T, ...]); with lam = 1 the returns are the n-step returns
      ``sum_k gamma^k r_{t+k} + gamma^(n) V(o')`` up to the rollout's or the episode's end.
    """
    chex.assert_equal_shape([reward_t, value_t, next_value_t])
    bootstrap = 1.0 - jnp.broadcast_to(terminated_t, reward_t.shape).astype(jnp.float32)
    carry_on = 1.0 - jnp.broadcast_to(done_t, reward_t.shape).astype(jnp.float32)
    delta = reward_t + gamma * bootstrap * next_value_t - value_t

    def step(adv_next, inputs):
        d, c = inputs
        adv = d + gamma * lam * c * adv_next
        return adv, adv

    _, adv = jax.lax.scan(step, jnp.zeros_like(delta[0]), (delta, carry_on), reverse=True)
    return adv, adv + value_t


def next_step_values(value_of: Any, inputs: Any, value_t: chex.Array, truncated_t: chex.Array,
                     max_steps: int) -> chex.Array:
    """``V(o'_t) [T, E, N]`` for GAE, with the network run only where the rollout stored no such value.

    Inside an episode ``o'_t`` is the next step's observation, whose value acting stored (``value_t[t + 1]``:
    the same network on the same state). ``value_of`` runs on the stored next observation at the rollout's last
    step and at time limits (``truncated_t``; at most ``bootstrap.truncation_slots`` per env under the env's
    ``max_steps``), in one batched call. At a terminal step GAE drops the bootstrap, so the value there is
    ``value_t[t + 1]`` and read by nothing.

    Args:
      value_of: ``inputs`` leaves ``[M, ...]`` -> ``[M, N]``; inputs: pytree, leaves ``[T, E, ...]``, each step's
        next observation and the state it continues from; value_t: ``[T, E, N]``; truncated_t: bool ``[T, E]``.
    """
    chex.assert_shape(value_t, (*truncated_t.shape, None))
    t_len = truncated_t.shape[0]
    # the last step's o' opens the next rollout: one more slot per env, always used
    step = jnp.concatenate([truncation_steps(truncated_t[:-1], truncation_slots(t_len - 1, max_steps)),
                            jnp.full((1, truncated_t.shape[1]), t_len - 1, jnp.int32)], 0)
    shifted = jnp.concatenate([value_t[1:], jnp.zeros_like(value_t[:1])], 0)
    return with_steps(shifted, step, apply_rows(value_of, at_steps(inputs, step)))


BANKS = ("actor", "critic")  # the slot banks of params (schema.LEARNER_KINDS["a2c"/"ppo"].banks)


def episode_starts(done_t: chex.Array) -> chex.Array:
    """``resets[t] = done[t - 1]``, ``resets[0] = False``: where a step's recurrent state starts from zero.
    The loop already zeroed the state the rollout starts from. ``done_t: [T, E] -> [T, E]``."""
    return jnp.concatenate([jnp.zeros_like(done_t[:1]), done_t[:-1]], axis=0)


def previous_actions(action: chex.Array, last0: chex.Array, resets: chex.Array, num_actions: int) -> chex.Array:
    """The one-hot previous action each step's actor reads (``ac.last_action``): ``a_{t-1}``, ``last0 [B, N, A]``
    before the first step, zeros where an episode starts. ``action [T, B, N]``, ``resets [T, B]`` ->
    ``[T, B, N, A]``."""
    taken = jax.nn.one_hot(action, num_actions, dtype=last0.dtype)
    prev = jnp.concatenate([last0[None], taken[:-1]], axis=0)
    return jnp.where(resets[:, :, None, None], 0.0, prev)


def surrogate_loss(logp: chex.Array, old_logp: chex.Array, adv: chex.Array, clip_eps: float,
                   normalize_adv: bool) -> tuple[chex.Array, chex.Array]:
    """PPO's clipped surrogate (A2C: one epoch, ratio 1): ``(-mean min(r A, clip(r) A), r)`` with ``r`` the
    probability ratio of the taken actions; ``normalize_adv`` standardises ``A`` over the minibatch first."""
    ratio = jnp.exp(logp - old_logp)
    if normalize_adv:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    surrogate = jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
    return -surrogate.mean(), ratio


def squared_value_loss(values: chex.Array, ret: chex.Array, old_value: chex.Array | None,
                       clip_eps: float) -> chex.Array:
    """Mean squared error of the values against the returns; with ``old_value`` (``ac.clip_value``) the larger of it
    and the error of the value clipped to within ``clip_eps`` of the rollout's."""
    # no 1/2: vf_coef weighs the plain squared error, as the SePS code's value_loss_coef (see ACConfig.vf_coef)
    value_error = (values - ret) ** 2
    if old_value is not None:  # pessimistic: a value may not gain from moving further than clip_eps in one rollout
        clipped = old_value + jnp.clip(values - old_value, -clip_eps, clip_eps)
        value_error = jnp.maximum(value_error, (clipped - ret) ** 2)
    return jnp.mean(value_error)


def minibatch_epochs(gradient_step, state, samples: dict, hidden0, key: chex.PRNGKey, epochs: int,
                     num_minibatches: int):
    """``epochs`` passes over ``samples``, each in ``num_minibatches`` shuffled minibatches, one
    ``gradient_step(state, (minibatch, start states)) -> (state, metrics)`` each: steps ``[T*E, ...]`` split on
    their only axis (``hidden0`` None), or trajectories ``[T, E, ...]`` split on the env axis with their start
    states ``hidden0 [E, ...]``. Returns the state and the metrics' means."""
    def epoch(state, k):
        if hidden0 is not None:  # whole trajectories: split the envs, keep time
            batches = minibatches(samples, k, 1, num_minibatches), minibatches(hidden0, k, 0, num_minibatches)
        else:
            batches = minibatches(samples, k, 0, num_minibatches), jnp.zeros(num_minibatches)
        return jax.lax.scan(gradient_step, state, batches)

    state, metrics = jax.lax.scan(epoch, state, jax.random.split(key, epochs))
    return state, jax.tree.map(jnp.mean, metrics)


def make_learner(cfg: TrainConfig, spec: EnvSpec, scheme: Scheme) -> Learner:
    ac = cfg.ac
    n = spec.num_agents
    # what the scheme asks of the actor (MADPS: a deeper network with named front / back blocks)
    net = RecurrentNet if ac.recurrent else MLP
    shared = ac.shared_torso  # validated: recurrent, local-observation critic
    # shared torso: Dense -> GRU -> (Dense -> policy) in the actor bank (MADPS's three layers fit it as they are)
    actor_options = {"depth": 3, **(scheme.actor_options or {})} if shared else (scheme.actor_options or {})
    actor = net(ac.hidden, spec.num_actions, obs_shape=spec.obs_shape, **{"out_scale": 0.01, **actor_options})
    if shared:  # the value head: Dense -> ReLU -> Dense on the torso's output
        critic = MLP(ac.hidden, 1, out_scale=1.0, depth=1)
    else:
        critic = net(ac.hidden, 1, out_scale=1.0, obs_shape=() if ac.central_critic else spec.obs_shape)
    # what the banks' per-agent parameters are applied with, under which layout (the networks themselves and the
    # scheme's layout for most methods; DiCo's actor adds a deviation, AdaPS may leave the critic unmasked)
    actor_module, layout = bank_network(scheme, "actor", actor)
    critic_module, critic_layout = bank_network(scheme, "critic", critic)
    if shared:  # the head reads torso features the agent's masks already shaped
        critic_layout = critic_layout._replace(masked=False)
    actor_in_dim = spec.obs_dim + (spec.num_actions if ac.last_action else 0)
    critic_in_dim = ac.hidden if shared else spec.state_dim + n if ac.central_critic else spec.obs_dim
    total_updates = cfg.num_iterations * ac.epochs * ac.num_minibatches
    lr = optax.linear_schedule(ac.lr, 0.0, total_updates) if ac.lr_decay else ac.lr
    optimizer = optax.chain(optax.clip_by_global_norm(ac.max_grad_norm), optax.adam(lr, eps=ac.adam_eps))

    def critic_input(obs, state):
        """``obs[..., N, D], state[..., S] -> [..., N, C]``: local obs, or state + one-hot id (MAPPO)."""
        if not ac.central_critic:
            return obs
        ids = jnp.broadcast_to(jnp.eye(n), (*obs.shape[:-2], n, n))
        return jnp.concatenate(
            [jnp.broadcast_to(state[..., None, :], (*obs.shape[:-1], state.shape[-1])), ids], -1
        )

    modules = {"actor": actor_module, "critic": critic_module}
    actor_state_size = modules["actor"].state_size if ac.recurrent else 0

    def bank_of(name):
        """The applied network and slot layout of bank ``name`` ("actor" / "critic")."""
        return modules[name], layout if name == "actor" else critic_layout

    def net_step(name, params, sharing, h, x):
        """Bank ``name`` ("actor" / "critic") for every agent: ``h[..., N, H], x[..., N, F] -> (h', out[..., N,
        F'])``; feed-forward networks pass ``h`` through."""
        module, bank_lay = bank_of(name)
        derive = agent_derive(scheme, name, params, sharing)
        if not ac.recurrent or (shared and name == "critic"):
            return h, apply_agents(module.apply, params[name], bank_lay, sharing, x, derive=derive)
        return apply_agents(module.apply, params[name], bank_lay, sharing, h, x, derive=derive)

    def unroll(name, params, sharing, h0, x, resets):
        """Bank ``name`` along ``x [T, B, N, F]`` from ``h0 [B, N, H]``, from zero after each ``resets [T, B]``:
        ``(out [T, B, N, F'], the states each step left behind [T, B, N, H], before any reset)``. Feed-forward:
        every step on its own in one batched pass (``h0`` returned as the states)."""
        if not ac.recurrent:
            return net_step(name, params, sharing, h0, x)[::-1]
        module, bank_lay = bank_of(name)
        h_after, out = unroll_agents(module, params[name], bank_lay, sharing, h0, x, resets,
                                     derive=agent_derive(scheme, name, params, sharing))
        return out, h_after

    def states(hidden, name):
        return hidden[name] if ac.recurrent else hidden

    def actor_input(obs, prev_action):
        """``obs[..., N, D]`` with ``ac.last_action`` the previous action's one-hot ``[..., N, A]`` appended."""
        return jnp.concatenate([obs, prev_action], -1) if ac.last_action else obs

    def dist(logits, avail):
        return distrax.Categorical(logits=jnp.where(avail, logits, NEG_INF))

    def policy_logits(state: ACState, sharing, traj: Transition, hidden0, relabel=None):
        """Every agent's policy on every agent's observations of ``traj``: ``[N_pol, T, E, N_obs, A]`` (MAPD),
        unavailable actions at NEG_INF; recurrent policies unroll from the observation owner's ``hidden0``
        with its episode resets (feed-forward ones read only ``traj.obs`` and ``traj.avail``).
        ``relabel(obs[..., N_pol, D])`` puts each policy's own agent indication into the observations."""
        resets = episode_starts(traj.done) if ac.recurrent else None
        prev = previous_actions(traj.action, hidden0["last_action"], resets, spec.num_actions) if ac.last_action else ()

        def owner(x, j):  # agent j's column [..., N, F] given to every policy
            return jnp.broadcast_to(x[..., j, None, :], x.shape)

        def on_agent(j):  # agent j's observations [T, E, D] (and previous actions) given to every policy
            x = owner(traj.obs, j)
            x = actor_input(x if relabel is None else relabel(x), owner(prev, j) if ac.last_action else ())
            h0 = jax.tree.map(lambda h: owner(h, j), states(hidden0, "actor"))
            logits, _ = unroll("actor", state.params, sharing, h0, x, resets)
            return dist(logits, owner(traj.avail, j)).logits

        return jnp.swapaxes(jax.vmap(on_agent)(jnp.arange(n)), 0, 3)

    def init(key):
        k_actor, k_critic = jax.random.split(key)
        h0 = (jnp.zeros((ac.hidden,)),) if ac.recurrent else ()
        params = {
            "actor": init_bank(lambda k: actor.init(k, *h0, jnp.zeros((actor_in_dim,))), k_actor, layout.num_slots),
            "critic": init_bank(lambda k: critic.init(k, *(() if shared else h0), jnp.zeros((critic_in_dim,))),
                                k_critic, layout.num_slots),
        }
        params = init_sharing_params(scheme, jax.random.fold_in(key, 1), params, BANKS)
        return ACState(params, optimizer.init(params), jnp.int32(0), init_aux_state(scheme))

    def init_hidden(num_envs):
        if ac.recurrent:
            h = jnp.zeros((num_envs, n, ac.hidden), jnp.float32)
            h_actor = jnp.zeros((num_envs, n, actor_state_size), jnp.float32)
            hidden = {"actor": h_actor} if shared else {"actor": h_actor, "critic": h}
            if ac.last_action:  # the one-hot of each agent's previous action (zeroed with the states)
                hidden["last_action"] = jnp.zeros((num_envs, n, spec.num_actions), jnp.float32)
            return hidden
        # feed-forward: nothing to carry, but orbax cannot checkpoint zero-size arrays
        return jnp.zeros((num_envs, n, 1), jnp.float32)

    def act(state: ACState, sharing, hidden, ts: TimeStep, key, step, greedy: bool):
        del step
        h_actor, logits = net_step("actor", state.params, sharing, states(hidden, "actor"),
                                   actor_input(ts.obs, hidden["last_action"] if ac.last_action else ()))
        if shared:
            h_critic, value = net_step("critic", state.params, sharing, (), h_actor)
        else:
            h_critic, value = net_step("critic", state.params, sharing, states(hidden, "critic"),
                                       critic_input(ts.obs, ts.state))
        pi = dist(logits, ts.avail_actions)
        actions = jnp.argmax(pi.logits, -1) if greedy else pi.sample(seed=key)
        extras = {"logp": pi.log_prob(actions), "value": value[..., 0]}
        if ac.recurrent:
            hidden = {"actor": h_actor} if shared else {"actor": h_actor, "critic": h_critic}
            if ac.last_action:
                hidden["last_action"] = jax.nn.one_hot(actions, spec.num_actions)
            # the state V(o'_t) continues from (before the loop's reset): kept so the update need not unroll again
            extras["value_state"] = h_actor if shared else h_critic
        return actions.astype(jnp.int32), hidden, extras

    def loss_fn(params, sharing, mb, hidden0, aux_state):
        """The clipped surrogate, value and entropy terms over a minibatch: steps ``[B, ...]`` (feed-forward) or
        trajectories ``[T, B, ...]`` unrolled from ``hidden0`` (recurrent)."""
        resets = mb.get("resets")
        logits, torso = unroll("actor", params, sharing, states(hidden0, "actor"),
                               actor_input(mb["obs"], mb.get("prev_action", ())), resets)
        if shared:
            values = net_step("critic", params, sharing, (), torso)[1][..., 0]
        else:
            values = unroll("critic", params, sharing, states(hidden0, "critic"), critic_input(mb["obs"], mb["state"]),
                            resets)[0][..., 0]
        pi = dist(logits, mb["avail"])
        policy_loss, ratio = surrogate_loss(pi.log_prob(mb["action"]), mb["logp"], mb["adv"], ac.clip_eps,
                                            ac.normalize_adv)
        value_loss = squared_value_loss(values, mb["ret"], mb.get("old_value"), ac.clip_eps)
        entropy = pi.entropy().mean()
        loss = policy_loss + ac.vf_coef * value_loss - ac.ent_coef * entropy
        total, aux_state, aux_metrics = add_aux_loss(scheme, params, aux_state, loss)
        metrics = {
            "loss": loss,
            "policy_loss": policy_loss,
            "value_loss": value_loss,
            "entropy": entropy,
            "clip_frac": jnp.mean(jnp.abs(ratio - 1) > ac.clip_eps),
            **aux_metrics,
        }
        return total, (metrics, aux_state)

    def gradient_step(sharing, state: ACState, batch):
        """One optimiser step on a minibatch ``(samples, the trajectories' start states)``."""
        mb, h0 = batch
        (_, (aux, aux_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, sharing, mb, h0,
                                                                                 state.aux)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        aux = {"grad_norm": optax.tree.norm(grads), **aux}
        return ACState(params, opt_state, state.updates + 1, aux_state), aux

    def targets(state: ACState, sharing: SharingState, traj: Transition, hidden0) -> dict:
        """The rollout as training samples: observations, actions, log-probabilities and GAE advantages and
        returns, ``[T, E, ...]`` (recurrent: with the episode resets) or steps flattened to ``[T*E, ...]``."""
        resets = episode_starts(traj.done)
        prev_action = (previous_actions(traj.action, hidden0["last_action"], resets, spec.num_actions)
                       if ac.last_action else ())
        # V(o'_t): each step's next observation (before any automatic reset; after a time limit the episode's
        # last) from the state that step left behind (recurrent: as acting stored it)
        h_after = traj.extras["value_state"] if ac.recurrent else ()
        if shared:  # one torso step on o'_t (a_t its last action; no policy head), then the value head
            torso_params = agent_params(state.params["actor"], layout, sharing,
                                        agent_derive(scheme, "actor", state.params, sharing))
            next_x = actor_input(traj.next_obs, jax.nn.one_hot(traj.action, spec.num_actions) if ac.last_action else ())

            def value_of_next(inputs):
                torso = apply_gathered(lambda p, h, x, m: actor.apply(p, h, x, m, method="state"), torso_params,
                                       *inputs)
                return net_step("critic", state.params, sharing, (), torso)[1][..., 0]
        else:
            next_x = critic_input(traj.next_obs, traj.next_state)

            def value_of_next(inputs):
                return net_step("critic", state.params, sharing, *inputs)[1][..., 0]
        next_value = next_step_values(value_of_next, (h_after, next_x), traj.extras["value"],
                                      traj.done & ~traj.terminated, spec.max_steps)  # [T, E, N]
        adv, ret = gae(
            traj.reward, traj.extras["value"], next_value, traj.terminated[..., None], traj.done[..., None],
            ac.gamma, ac.gae_lambda,
        )
        samples = {"obs": traj.obs, "state": traj.state, "avail": traj.avail, "action": traj.action,
                   "logp": traj.extras["logp"], "adv": adv, "ret": ret}
        if ac.clip_value:
            samples["old_value"] = traj.extras["value"]
        if ac.last_action:
            samples["prev_action"] = prev_action
        if ac.recurrent:
            samples["resets"] = resets
            return samples
        # independent steps: minibatches of steps drawn from the whole rollout
        return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), samples)  # [T*E, ...]

    def update(state: ACState, sharing: SharingState, traj: Transition, last: TimeStep, hidden0, key, step):
        del step, last  # traj.next_obs ends with the observation after the rollout
        samples = targets(state, sharing, traj, hidden0)
        return minibatch_epochs(partial(gradient_step, sharing), state, samples, hidden0 if ac.recurrent else None,
                                key, ac.epochs, ac.num_minibatches)

    return Learner(
        init=init,
        init_hidden=init_hidden,
        act=act,
        update=update,
        params=lambda s: s.params,
        bank_names=BANKS,
        policy_logits=policy_logits,
    )
