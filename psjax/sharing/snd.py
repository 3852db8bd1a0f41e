"""System Neural Diversity (SND; Bettini et al., 2023-24) of discrete-action policies: a metric any method can
log (``sharing.snd_interval``) and what DiCo controls (``psjax.sharing.dico``).

The papers measure continuous actions by the Wasserstein distance between Gaussian action distributions. psjax's
actions are discrete; the distance between two agents' policies on one observation is the Aitchison distance
between their action distributions over the available actions,

    d(p, q) = || clr(log p) - clr(log q) ||_2,    clr(x) = x - (mean of x over the available actions),

the Euclidean distance between centred logits. It is a metric on distributions with full support, it reads
behaviour only (a constant added to an agent's logits changes nothing), and it scales exactly with the logits:
``d(s l_i, s l_j) = s d(l_i, l_j)``, which lets DiCo's rescaling hit its target. Value learners' Q-values are read
as logits (softmax(Q) the policy, as MAPD reads them), so their SND is in units of Q.

SND = mean over agent pairs of the mean over observations of ``d(pi_i(o), pi_j(o))``, every agent's policy
evaluated on the same observations: every agent's observation at ``sharing.snd_rows`` env steps drawn from the
iteration's rollout (feed-forward actors), or the whole rollout (recurrent networks, unrolled along it). Dead
agents' all-zero observations weigh 0. With an agent indication in the observations, each policy reads its own
(as MAPD's rounds do).
"""

from __future__ import annotations

from typing import Callable

import chex
import jax
import jax.numpy as jnp

from psjax.envs.base import EnvSpec
from psjax.sharing import bank_ops
from psjax.sharing.mapd import id_relabel, observation_rollout, off_diagonal_mean, valid_observations
from psjax.sharing.methods import Scheme, driver
from psjax.sharing.structure import type_distance_ratio
from psjax.types import Transition

UNAVAILABLE = -1e8  # logits at or below this are unavailable actions (the learners write -1e9 there)


def centred_logits(logits: chex.Array, available: chex.Array) -> chex.Array:
    """``[..., A] -> [..., A]``: the logits minus their mean over the ``available`` actions; 0 elsewhere."""
    count = jnp.maximum(available.sum(-1, keepdims=True), 1)
    mean = jnp.where(available, logits, 0.0).sum(-1, keepdims=True) / count
    return jnp.where(available, logits - mean, 0.0)


def aitchison(logits_i: chex.Array, logits_j: chex.Array) -> chex.Array:
    """Aitchison distance between the action distributions of two logit vectors ``[..., A]`` -> ``[...]`` over
    the actions available to both (the learners mask the same actions for every policy on one observation)."""
    both = (logits_i > UNAVAILABLE) & (logits_j > UNAVAILABLE)
    diff = centred_logits(logits_i, both) - centred_logits(logits_j, both)
    return jnp.sqrt((diff**2).sum(-1))


def pairwise_snd(logits: chex.Array, weight: chex.Array) -> chex.Array:
    """``logits[N, P, A]`` (agent i's policy on observation p), ``weight[P]`` -> ``D[N, N]``: the weighted mean over
    observations of the Aitchison distance; exactly 0 on the diagonal."""
    chex.assert_rank(logits, 3)
    chex.assert_shape(weight, (logits.shape[1],))
    per_obs = aitchison(logits[:, None], logits[None, :])  # [N, N, P]
    d = (per_obs * weight).sum(-1) / jnp.maximum(weight.sum(), 1e-8)
    return jnp.where(jnp.eye(logits.shape[0], dtype=bool), 0.0, d)


def system_neural_diversity(logits: chex.Array, weight: chex.Array) -> chex.Array:
    """The team's SND: the mean over agent pairs of ``pairwise_snd``; 0 for one agent."""
    return off_diagonal_mean(pairwise_snd(logits, weight))


def sample_steps(key: chex.PRNGKey, traj: Transition, rows: int) -> Transition:
    """Up to ``rows`` env steps of a rollout ``[T, E, ...]`` (uniformly, without replacement; all when they fit) as a
    rollout ``[R, 1, ...]`` carrying every agent's observation and available actions: all that a feed-forward
    actor's ``Learner.policy_logits`` reads."""
    obs = traj.obs.reshape(-1, *traj.obs.shape[2:])
    avail = traj.avail.reshape(-1, *traj.avail.shape[2:])
    total = obs.shape[0]
    if rows < total:
        idx = jax.random.choice(key, total, (rows,), replace=False)
        obs, avail = obs[idx], avail[idx]
    return observation_rollout(obs, avail)


def measure_pairwise_snd(policy_logits: Callable, learner_state, sharing, traj: Transition, hidden0,
                         relabel: Callable | None = None) -> chex.Array:
    """``D[N, N]`` on ``traj``: every policy (``Learner.policy_logits``) on every agent's observations."""
    logits = policy_logits(learner_state, sharing, traj, hidden0, relabel)  # [N_pol, T, E, N_obs, A]
    weight = valid_observations(traj.obs).reshape(-1).astype(jnp.float32)
    return pairwise_snd(logits.reshape(logits.shape[0], -1, logits.shape[-1]), weight)


def measure_snd(policy_logits: Callable, learner_state, sharing, traj: Transition, hidden0,
                relabel: Callable | None = None) -> chex.Array:
    """The team's SND on ``traj``: the mean over agent pairs of ``measure_pairwise_snd``."""
    return off_diagonal_mean(measure_pairwise_snd(policy_logits, learner_state, sharing, traj, hidden0, relabel))


def with_snd(scheme: Scheme, policy_logits: Callable, spec: EnvSpec, interval: int, rows: int, recurrent: bool,
             steps_per_iteration: int, id_codes=None) -> Scheme:
    """``scheme`` plus the team's SND after the learner's update of every ``interval``-th iteration, handed to
    the ``act`` of a scheme driven by SND (DiCo, ``Scheme.driven_by``), before the scheme's own update; logged as
    ``snd`` (NaN between measurements), with ``snd_type_ratio``: mean distance within the task's agent kinds over
    mean distance between kinds (``psjax.sharing.structure``). ``rows``: env steps drawn from a feed-forward
    actor's rollout; ``recurrent``: measure on the whole rollout instead. ``id_codes[N, K]``: the agent indication
    appended to the observations."""
    relabel = id_relabel(id_codes) if id_codes is not None and id_codes.shape[1] else None
    drive = driver(scheme, "snd")

    def update(sharing, learner_state, traj, key, step, hidden0):
        # the round's inputs travel in the zero-or-one-trip loop's carry, so XLA cannot hoist the evaluation out
        def round_fn(operand, k):
            learner_state, sharing, _, traj, hidden0 = operand
            batch = traj if recurrent else sample_steps(k, traj, rows)
            d = measure_pairwise_snd(policy_logits, learner_state, sharing, batch, hidden0, relabel)
            snd = off_diagonal_mean(d)
            if drive is not None:
                sharing, learner_state = drive.act(sharing, learner_state, snd, k)
            return learner_state, sharing, (snd, type_distance_ratio(d, spec.agent_types)), traj, hidden0

        due = (step // steps_per_iteration) % interval == 0
        nan = jnp.full((), jnp.nan, jnp.float32)
        operand = (learner_state, sharing, (nan, nan), traj, hidden0)
        k = jax.random.fold_in(key, 3)
        if interval == 1:
            learner_state, sharing, (snd, ratio), _, _ = round_fn(operand, k)
        else:
            learner_state, sharing, (snd, ratio), _, _ = bank_ops.run_if(due, round_fn, operand, k)
        sharing, learner_state, metrics = scheme.update(sharing, learner_state, traj, key, step, hidden0)
        return sharing, learner_state, {**metrics, "snd": snd, "snd_type_ratio": ratio}

    return scheme._replace(update=update)
