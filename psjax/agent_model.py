"""The agent-model contract: where a value learner's per-agent utilities come from (``AgentModel``), and its
default, one recurrent network bank laid out by the sharing scheme (``recurrent_agent_model``). Below both
``psjax.sharing`` and ``psjax.learners``: the Q learners (``psjax.learners.qmix``) train any model, and a method
with its own agents (BDPS, ``psjax.sharing.bdps``) builds one without importing a learner.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from psjax.bootstrap import at_steps
from psjax.envs.base import EnvSpec
from psjax.nets.agents import RecurrentNet
from psjax.schema import TrainConfig
from psjax.sharing.bank import apply_agents, init_bank, unroll_agents
from psjax.sharing.methods import Scheme, agent_derive


def with_last_action(seq, last0, resets, num_actions):
    """The unroll's inputs with the last action appended (pymarl's ``obs_last_action``).

    ``seq`` holds "obs" [T+1, B, N, D], "action" [T, B, N] and at the time-limit slots "final_step" [K, B] and
    "final_obs" [K, B, N, D]; ``last0 [B, N, A]`` is the one-hot of the action before the sequence (zeros =
    none); ``resets [T+1, B]`` marks episode starts. Returns ``(obs [T+1, B, N, D + A], final_obs [K, B, N,
    D + A])``: step t reads one-hot a_{t-1} (zeros where an episode starts), the final observation of step t
    reads a_t.
    """
    taken = jax.nn.one_hot(seq["action"], num_actions, dtype=last0.dtype)
    prev = jnp.where(resets[:, :, None, None], 0.0, jnp.concatenate([last0[None], taken], axis=0))
    final_obs = jnp.concatenate([seq["final_obs"], at_steps(taken, seq["final_step"])], -1)
    return jnp.concatenate([seq["obs"], prev], -1), final_obs


class AgentModel(NamedTuple):
    """Where the learner's per-agent utilities come from; the learner's loss, buffer and mixer never change.

    The default (``recurrent_agent_model``) is one RecurrentNet bank laid out by the sharing scheme;
    BDPS (``psjax.sharing.bdps``) is another model under the same learner.

    init(key) -> params dict (the learner adds "mixer" and the scheme's "sharing")
    init_hidden(num_envs) -> recurrent pytree, leaves [E, ...] (zeroed by the loop where an episode ends)
    act(params, sharing, hidden, ts, key, choose, epsilon, greedy) -> (actions [E, N], hidden, extras)
      ``choose(key, q[E, N, A]) -> actions`` is the learner's (epsilon-)greedy rule; ``epsilon`` the current
      exploration rate (0 when greedy); ``extras`` per-step data, the keys of ``stored`` go to the replay.
    stored(T) -> {name: zeros [T + 1, ...]} per-step extras kept in replay items (the step after the
      rollout repeats the last step's value); ``{}`` for the default model.
    unroll(params, sharing, hidden0, seq, resets) -> (q [T+1, B, N, A], q_final [K, B, N, A]) along stored
      sequences; ``seq`` is time-major with "obs" [T+1, B, N, D], "action" [T, B, N], "done" / "terminated"
      [T, B], the stored extras [T+1, B, ...] and the K time-limit slots "final_step" [K, B] (truncated steps,
      padded with T) and "final_obs" [K, B, N, D]; resets [T+1, B]. ``q_final[k, b]`` are the utilities of
      ``final_obs[k, b]`` (what step t = final_step[k, b] led to before the reset) from the recurrent state
      after obs t, not reset, with step t's extras and a_t as the last action: the bootstrap after a time
      limit. Padded slots may hold anything finite (``sequence_targets`` reads nothing there).
    extra_loss: None or (params, target, seq, hidden0, resets, key) -> (loss, metrics), added to the TD
      loss (``seq`` also holds action, reward, done, avail, state).
    rollout_metrics: None or (traj: Transition [T, E, ...]) -> metrics of the iteration's rollout.
    bank_names: keys of params that are slot banks.
    """

    init: Callable
    init_hidden: Callable
    act: Callable
    stored: Callable
    unroll: Callable
    extra_loss: Callable | None
    rollout_metrics: Callable | None
    bank_names: tuple[str, ...]


def recurrent_agent_model(cfg: TrainConfig, spec: EnvSpec, scheme: Scheme) -> AgentModel:
    """The default model: a RecurrentNet bank, every agent's slot and masks given by ``scheme``.

    With ``q.last_action`` the network also reads the one-hot of the agent's previous action (zeros at an
    episode's start), kept at acting time in the hidden pytree as ``{"h": [E, N, H], "last_action":
    [E, N, A]}`` (the loop zeroes both where an episode ends)."""
    qc = cfg.q
    n, num_actions = spec.num_agents, spec.num_actions
    net = RecurrentNet(qc.hidden, spec.num_actions, obs_shape=spec.obs_shape, layer_norm=qc.layer_norm)
    layout = scheme.layout
    in_dim = spec.obs_dim + (num_actions if qc.last_action else 0)

    def init(key):
        dummy_obs = jnp.zeros((in_dim,))
        return {"agent": init_bank(lambda k: net.init(k, jnp.zeros((qc.hidden,)), dummy_obs), key, layout.num_slots)}

    def init_hidden(num_envs):
        h = jnp.zeros((num_envs, n, qc.hidden), jnp.float32)
        return {"h": h, "last_action": jnp.zeros((num_envs, n, num_actions), jnp.float32)} if qc.last_action else h

    def q_values(params, sharing, hidden, obs):
        """``hidden[..., N, H], obs[..., N, D'] -> (hidden', q[..., N, A])`` with ``params`` online or target."""
        derive = agent_derive(scheme, "agent", params, sharing)
        return apply_agents(net.apply, params["agent"], layout, sharing, hidden, obs, derive=derive)

    def act(params, sharing, hidden, ts, key, choose, epsilon, greedy):
        del epsilon, greedy
        if not qc.last_action:
            hidden, q = q_values(params, sharing, hidden, ts.obs)
            return choose(key, q), hidden, {}
        h, q = q_values(params, sharing, hidden["h"], jnp.concatenate([ts.obs, hidden["last_action"]], -1))
        actions = choose(key, q)
        return actions, {"h": h, "last_action": jax.nn.one_hot(actions, num_actions)}, {}

    def unroll(params, sharing, hidden0, seq, resets):
        obs, final_obs = seq["obs"], seq["final_obs"]
        h0 = hidden0
        if qc.last_action:
            h0 = hidden0["h"]
            obs, final_obs = with_last_action(seq, hidden0["last_action"], resets, num_actions)

        # only the GRU is scanned; the dense layers run on every step at once
        h, q = unroll_agents(net, params["agent"], layout, sharing, h0, obs, resets,
                             derive=agent_derive(scheme, "agent", params, sharing))
        # the pre-reset next observations at the time-limit slots, from the state each such step left behind
        # (no gradient: these utilities pick and value the bootstrap action)
        frozen = jax.lax.stop_gradient((params, at_steps(h[:-1], seq["final_step"]), final_obs))
        return q, q_values(frozen[0], sharing, *frozen[1:])[1]

    return AgentModel(init, init_hidden, act, lambda T: {}, unroll, None, None, ("agent",))
