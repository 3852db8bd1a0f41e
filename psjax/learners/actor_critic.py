"""A2C and PPO: MLP actor and critic over sharing banks, trained on each rollout.

A2C is PPO with one epoch, one minibatch and lambda = 1: on the first pass the
clipped ratio equals one, so the clipped surrogate's gradient is the plain
policy gradient ``A * grad log pi`` and the returns are n-step returns bootstrapped
from the value after the rollout. One loss serves both.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import distrax
import jax
import jax.numpy as jnp
import optax

from psjax.envs.base import EnvSpec, TimeStep
from psjax.nets.agents import MLP
from psjax.schema import TrainConfig
from psjax.sharing.bank import SharingState, apply_agents, init_bank
from psjax.sharing.methods import (
    Scheme,
    add_aux_loss,
    agent_derive,
    bank_layout,
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


BANKS = ("actor", "critic")  # the slot banks of params (schema.LEARNER_KINDS["a2c"/"ppo"].banks)


def make_learner(cfg: TrainConfig, spec: EnvSpec, scheme: Scheme) -> Learner:
    ac = cfg.ac
    n = spec.num_agents
    # what the scheme asks of the actor (MADPS: a deeper MLP with named front / back blocks)
    actor = MLP(ac.hidden, spec.num_actions, out_scale=0.01, obs_shape=spec.obs_shape,
                **(scheme.actor_options or {}))
    critic = MLP(ac.hidden, 1, out_scale=1.0, obs_shape=() if ac.central_critic else spec.obs_shape)
    layout = scheme.layout
    critic_layout = bank_layout(scheme, "critic")  # AdaPS masks the policy only
    critic_in_dim = spec.state_dim + n if ac.central_critic else spec.obs_dim
    minibatch = ac.num_envs * ac.rollout_len // ac.num_minibatches
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

    def policy(params, sharing, obs, avail):
        logits = apply_agents(
            actor.apply, params["actor"], layout, sharing, obs, derive=agent_derive(scheme, "actor", params, sharing)
        )
        return distrax.Categorical(logits=jnp.where(avail, logits, NEG_INF))

    def value(params, sharing, obs, state):
        derive = agent_derive(scheme, "critic", params, sharing)
        x = critic_input(obs, state)
        out = apply_agents(critic.apply, params["critic"], critic_layout, sharing, x, derive=derive)
        return out[..., 0]

    def policy_logits(state: ACState, sharing, traj: Transition, hidden0, relabel=None):
        """Every agent's policy on every agent's observations of ``traj``: ``[N_pol, T, E, N_obs, A]`` (MAPD);
        ``relabel(obs[..., N_pol, D])`` puts each policy's own agent indication into the observations."""
        del hidden0

        def on_agent(obs_j, avail_j):  # agent j's observations [T, E, D] given to every policy
            x = jnp.broadcast_to(obs_j[..., None, :], traj.obs.shape)
            x = x if relabel is None else relabel(x)
            a = jnp.broadcast_to(avail_j[..., None, :], traj.avail.shape)
            return policy(state.params, sharing, x, a).logits  # [T, E, N_pol, A]

        return jnp.swapaxes(jax.vmap(on_agent, in_axes=(2, 2))(traj.obs, traj.avail), 0, 3)

    def init(key):
        k_actor, k_critic = jax.random.split(key)
        params = {
            "actor": init_bank(
                lambda k: actor.init(k, jnp.zeros((spec.obs_dim,))), k_actor, layout.num_slots
            ),
            "critic": init_bank(
                lambda k: critic.init(k, jnp.zeros((critic_in_dim,))), k_critic, layout.num_slots
            ),
        }
        params = init_sharing_params(scheme, jax.random.fold_in(key, 1), params, ("actor", "critic"))
        return ACState(params, optimizer.init(params), jnp.int32(0), init_aux_state(scheme))

    def init_hidden(num_envs):
        # feed-forward: nothing to carry, but orbax cannot checkpoint zero-size arrays
        return jnp.zeros((num_envs, n, 1), jnp.float32)

    def act(state: ACState, sharing, hidden, ts: TimeStep, key, step, greedy: bool):
        pi = policy(state.params, sharing, ts.obs, ts.avail_actions)
        actions = jnp.argmax(pi.logits, -1) if greedy else pi.sample(seed=key)
        extras = {"logp": pi.log_prob(actions), "value": value(state.params, sharing, ts.obs, ts.state)}
        return actions.astype(jnp.int32), hidden, extras

    def loss_fn(params, sharing, mb, aux_state):
        pi = policy(params, sharing, mb["obs"], mb["avail"])
        logp = pi.log_prob(mb["action"])
        ratio = jnp.exp(logp - mb["logp"])
        adv = mb["adv"]
        if ac.normalize_adv:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        surrogate = jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - ac.clip_eps, 1 + ac.clip_eps) * adv)
        policy_loss = -surrogate.mean()
        # no 1/2: vf_coef weighs the plain squared error, as the SePS code's value_loss_coef (see ACConfig.vf_coef)
        value_loss = jnp.mean((value(params, sharing, mb["obs"], mb["state"]) - mb["ret"]) ** 2)
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

    def update(state: ACState, sharing: SharingState, traj: Transition, last: TimeStep, hidden0, key, step):
        del hidden0, step, last  # traj.next_obs ends with the observation after the rollout
        # V(o'_t) for every step: the next step's value within an episode, the last observation's after a
        # time limit (one batched critic pass; the rollout's own values were computed before each step)
        next_value = value(state.params, sharing, traj.next_obs, traj.next_state)  # [T, E, N]
        adv, ret = gae(
            traj.reward, traj.extras["value"], next_value, traj.terminated[..., None], traj.done[..., None],
            ac.gamma, ac.gae_lambda,
        )
        samples = {
            "obs": traj.obs,
            "state": traj.state,
            "avail": traj.avail,
            "action": traj.action,
            "logp": traj.extras["logp"],
            "adv": adv,
            "ret": ret,
        }
        samples = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), samples)  # [T*E, ...]

        def epoch(state, k):
            # one minibatch is the whole rollout: its order cannot matter, so skip the shuffle
            shuffled = (
                samples
                if ac.num_minibatches == 1
                else jax.tree.map(lambda x: x[jax.random.permutation(k, x.shape[0])], samples)
            )
            batches = jax.tree.map(lambda x: x.reshape(ac.num_minibatches, minibatch, *x.shape[1:]), shuffled)

            def minibatch_step(state, mb):
                (_, (aux, aux_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                    state.params, sharing, mb, state.aux
                )
                updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
                params = optax.apply_updates(state.params, updates)
                aux = {"grad_norm": optax.tree.norm(grads), **aux}
                return ACState(params, opt_state, state.updates + 1, aux_state), aux

            return jax.lax.scan(minibatch_step, state, batches)

        state, metrics = jax.lax.scan(epoch, state, jax.random.split(key, ac.epochs))
        return state, jax.tree.map(jnp.mean, metrics)

    return Learner(
        init=init,
        init_hidden=init_hidden,
        act=act,
        update=update,
        params=lambda s: s.params,
        bank_names=BANKS,
        policy_logits=policy_logits,
    )
