"""Shared containers. Axis convention: [T, E, N, ...] = time, envs, agents."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import chex


class Transition(NamedTuple):
    """One rollout step for every env, stacked by the loop to ``[T, E, ...]``."""

    obs: chex.Array  # [E, N, D] observation the action was taken from
    state: chex.Array  # [E, S] global state at that observation
    avail: chex.Array  # [E, N, A] bool available actions at that observation
    action: chex.Array  # [E, N] int32
    reward: chex.Array  # [E, N] reward for the action
    done: chex.Array  # [E] bool, the episode ended on this step (terminated or truncated): memory resets here
    terminated: chex.Array  # [E] bool, ended in a terminal state: the only place a bootstrap is cut
    extras: dict  # learner-specific per-step data, e.g. {"logp": [E, N], "value": [E, N]}
    # What the action led to, before any automatic reset (``TimeStep.final_*``): on a step that ended the
    # episode by its time limit, the observation to bootstrap from; otherwise the next step's own observation.
    next_obs: chex.Array = ()  # [E, N, D]
    next_state: chex.Array = ()  # [E, S]
    next_avail: chex.Array = ()  # [E, N, A] bool


class Learner(NamedTuple):
    """A learner as pure functions over an explicit state pytree.

    init(key) -> state
    init_hidden(num_envs) -> hidden pytree [E, N, ...]
    act(state, sharing, hidden, ts, key, step, greedy) -> (actions[E, N], hidden, extras)
      ``ts`` is the batched TimeStep [E, ...]; ``greedy`` is a Python bool (evaluation).
    update(state, sharing, traj, last_ts, hidden0, key, step) -> (state, metrics)
      ``traj`` is a Transition [T, E, ...], ``last_ts`` the TimeStep after its last step and
      ``hidden0`` the recurrent state at its first step; ``step`` counts env steps so far.
    params(state) -> the trainable parameters (for counting and inspection)
    bank_names: keys of ``state.params`` that are slot banks (leading axis K); the rest
      (e.g. the QMIX mixer) is shared by construction. Learner states are NamedTuples with
      ``params`` and ``opt_state`` and, for value learners, ``target``.
    """

    init: Callable[[chex.PRNGKey], Any]
    init_hidden: Callable[[int], Any]
    act: Callable
    update: Callable
    params: Callable[[Any], Any]
    bank_names: tuple[str, ...]
    # policy_logits(state, sharing, traj, hidden0, relabel=None) -> [N_pol, T, E, N_obs, A]: every agent's policy
    # on every agent's observations of the rollout ``traj`` (unavailable actions at a large negative value), for
    # the MAPD policy distance; value learners give their Q-values (softmax(Q) is read as the policy).
    # ``relabel(obs[..., N_pol, D])`` replaces the agent indication of the observations by each policy's own.
    policy_logits: Callable | None = None
