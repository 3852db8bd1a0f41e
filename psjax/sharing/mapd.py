"""MAPD: multi-agent policy distance (seed 003; code: Harry67Hu/MADPS).

A conditional VAE (``psjax.nets.vae.PolicyVAE``) learns to encode an agent's action
distribution ``pi_i(.|o)`` together with the observation ``o`` into a diagonal Gaussian over a
latent ``z``. Every agent's policy is evaluated on the same pooled batch of observations; the
distance between agents i and j is the mean over the valid observations of a distance between
their latent Gaussians ``N(mu_i(o), sigma_i(o))`` and ``N(mu_j(o), sigma_j(o))`` (closed forms for
diagonal Gaussians per observation, Monte Carlo over the observations):

- ``wasserstein`` (default): 2-Wasserstein, ``sqrt(|mu_i - mu_j|^2 + |sigma_i - sigma_j|^2)``;
- ``hellinger``: ``sqrt(1 - BC)`` with the Bhattacharyya coefficient ``BC = exp(-BD)``;
- ``bhattacharyya``: ``BD = 1/8 dmu^T S^-1 dmu + 1/2 ln(det S / sqrt(det S_i det S_j))``, S = (S_i + S_j) / 2.

Wasserstein and Hellinger are metrics per observation, so their means are (pseudo-)metrics: zero
for identical policies, symmetric, non-negative, triangle inequality. Bhattacharyya is symmetric
and non-negative but not a metric (no triangle inequality). The reference code divides BD by the
latent size and derives its Hellinger from the averaged BD; psjax uses the textbook forms.

A round trains a fresh VAE from the round's key (no VAE state carried between rounds): a pure
function of the policies, the observations and the key. Observations of dead agents (all zeros)
get weight 0; shapes stay static.

What the VAE trains on (``mapd_vae_pairs``): ``own`` (default, the reference) = each agent's policy on its
own observations, ``(o_i, pi_i(o_i))``; ``pooled`` = every agent's policy on every pooled observation, the
pairs the round then encodes. On constructed linear policies both rank pairs alike (Spearman 0.99 with the
true total variation) at the same scale; on the typed env pooled gives 1.3-1.5x larger cross-type distances
and a 0-20% larger cross / same-type ratio (``benchmarks/madps_vae_pairs.py``). Both encode every agent's
policy on the same pooled batch. The reference reconstructs the masked action probabilities from the
unmasked ones; psjax feeds and reconstructs the masked ones (identical where every action is available).

Where the observations come from: feed-forward actors (A2C, PPO) can be evaluated on any stored
observation, so the distance wrapper (``with_distance``) keeps an ``ObsBuffer`` in the sharing state, a ring of the last
``mapd_buffer_size`` env steps (every agent's observation and available actions), filled every iteration
with up to ``mapd_buffer_add`` steps drawn from the rollout; a round evaluates every policy on it. One
A2C rollout (8 envs x 5 steps) alone gives 40 observations per agent (10 Adam steps on LBF); on fixed
policy pairs the distance came out the same with 512 observations (0.035 vs 0.037 for mildly different
policies, 0.5 for opposite ones), so the buffer buys a steadier estimate over more states, not a
different scale. Value learners (QMIX, VDN, IQL) unroll recurrent Q networks along the rollout, so
they keep measuring on the round's rollout.

Any scheme can take the rounds (``with_distance``, applied by ``psjax.train.make_parts``): every
``sharing.mapd_interval`` iterations as a metric, or at the interval of a scheme driven by it
(``Scheme.driven_by``, MADPS), whose ``act`` receives the distance matrix. Their state (buffer, iteration count)
lives in ``SharingState.distance``; the loop does not know about them.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp

from psjax.envs.base import EnvSpec
from psjax.nets.vae import PolicyVAE, fit_minibatch_epochs, vae_loss
from psjax.schema import SharingConfig
from psjax.sharing import bank_ops
from psjax.sharing.methods import Scheme, driver
from psjax.sharing.structure import type_distance_ratio
from psjax.types import Transition

DISTANCES = ("wasserstein", "hellinger", "bhattacharyya")


# --------------------------------------------------------------------------- closed forms


def wasserstein(mu1, logvar1, mu2, logvar2) -> chex.Array:
    """2-Wasserstein distance between diagonal Gaussians; ``[..., Z]`` each -> ``[...]``."""
    sd1, sd2 = jnp.exp(0.5 * logvar1), jnp.exp(0.5 * logvar2)
    return jnp.sqrt(((mu1 - mu2) ** 2).sum(-1) + ((sd1 - sd2) ** 2).sum(-1))


def bhattacharyya(mu1, logvar1, mu2, logvar2) -> chex.Array:
    """Bhattacharyya distance between diagonal Gaussians; ``[..., Z]`` each -> ``[...]`` (>= 0)."""
    var = 0.5 * (jnp.exp(logvar1) + jnp.exp(logvar2))
    term_mean = 0.125 * ((mu1 - mu2) ** 2 / var).sum(-1)
    # ln(var / sqrt(var1 var2)) = ln cosh((logvar1 - logvar2) / 2): exactly 0 for equal variances
    half = 0.5 * jnp.abs(logvar1 - logvar2)
    term_cov = 0.5 * (half + jnp.log1p(jnp.exp(-2.0 * half)) - jnp.log(2.0)).sum(-1)
    return jnp.maximum(term_mean + term_cov, 0.0)  # >= 0 exactly; clip float round-off


def hellinger(mu1, logvar1, mu2, logvar2) -> chex.Array:
    """Hellinger distance ``sqrt(1 - exp(-BD))`` between diagonal Gaussians, in [0, 1]."""
    bd = bhattacharyya(mu1, logvar1, mu2, logvar2)
    return jnp.sqrt(jnp.maximum(-jnp.expm1(-bd), 0.0))


_DISTANCE_FNS = {"wasserstein": wasserstein, "hellinger": hellinger, "bhattacharyya": bhattacharyya}


def pairwise_distance(mu: chex.Array, logvar: chex.Array, weight: chex.Array, kind: str = "wasserstein"):
    """The agents x agents distance matrix from every agent's latent Gaussians on shared observations.

    Args:
      mu, logvar: ``[N, P, Z]`` agent i's latent Gaussian on observation p.
      weight: ``[P]`` validity weight of each observation (0 = excluded).
      kind: one of ``DISTANCES``.
    Returns:
      ``D[N, N]``: weighted mean over observations of the per-observation distance; exactly 0 on
      the diagonal.
    """
    chex.assert_rank(mu, 3)
    chex.assert_equal_shape([mu, logvar])
    chex.assert_shape(weight, (mu.shape[1],))
    fn = _DISTANCE_FNS[kind]
    per_obs = fn(mu[:, None], logvar[:, None], mu[None, :], logvar[None, :])  # [N, N, P]
    d = (per_obs * weight).sum(-1) / jnp.maximum(weight.sum(), 1e-8)
    return jnp.where(jnp.eye(mu.shape[0], dtype=bool), 0.0, d)


# --------------------------------------------------------------------------- the conditional VAE


def valid_observations(obs: chex.Array) -> chex.Array:
    """``obs[..., D] -> bool[...]``: not all zeros (an all-zero observation is a dead agent's)."""
    return jnp.any(obs != 0, axis=-1)


def train_policy_vae(
    key: chex.PRNGKey, vae: PolicyVAE, probs: chex.Array, obs: chex.Array, weight: chex.Array, epochs: int,
    batch_size: int, lr: float, kl_coef: float,
) -> tuple[Any, chex.Array]:
    """Train a fresh VAE on (action probabilities, observation) pairs.

    Args:
      probs: ``[M, A]`` a policy's action probabilities on the observation of the same row.
      obs: ``[M, D]``; weight: ``[M]`` validity of each pair (0 = padding / dead agent).
    Returns:
      (params, mean loss per epoch ``[epochs]``).
    """
    chex.assert_equal_shape_prefix([probs, obs, weight], 1)
    total = probs.shape[0]
    batch = min(batch_size, total)
    k_init, k_train = jax.random.split(key)
    params = vae.init(k_init, k_init, probs[:1], obs[:1])

    def loss_fn(params, idx, k):
        x, o, w = probs[idx], obs[idx], weight[idx]
        recon, mu, logvar = vae.apply(params, k, x, o)
        return vae_loss(recon, x, mu, logvar, w, kl_coef)

    return fit_minibatch_epochs(loss_fn, params, lr, total, batch, epochs, k_train)


def policy_distance(
    key: chex.PRNGKey, logits: chex.Array, obs: chex.Array, weight: chex.Array, sc: SharingConfig,
    train: tuple[chex.Array, chex.Array, chex.Array] | None = None,
) -> tuple[chex.Array, chex.Array]:
    """One MAPD round on given observations: ``logits[N, P, A], obs[P, D], weight[P]`` ->
    ``(D[N, N], VAE loss per epoch [mapd_epochs])``.

    ``train``: the VAE's training pairs ``(logits[M, A], obs[M, D], weight[M])``, e.g. every agent's own
    (``own_pairs``, the reference's and the default); None = every agent's policy on every one of the P
    observations (``mapd_vae_pairs=pooled``).
    Unavailable actions must already be masked in the logits (a large negative value).
    """
    chex.assert_rank(logits, 3)
    chex.assert_shape(obs, (logits.shape[1], None))
    probs = jax.nn.softmax(logits.astype(jnp.float32), -1)
    if train is None:
        n, p = probs.shape[:2]
        train = (logits.reshape(n * p, -1), jnp.broadcast_to(obs, (n, *obs.shape)).reshape(n * p, -1),
                 jnp.broadcast_to(weight, (n, p)).reshape(-1))
    train_probs = jax.nn.softmax(train[0].astype(jnp.float32), -1)
    vae = PolicyVAE(logits.shape[-1], sc.mapd_latent, sc.mapd_hidden)
    params, losses = train_policy_vae(
        key, vae, train_probs, train[1], train[2], sc.mapd_epochs, sc.mapd_batch_size, sc.mapd_lr, sc.mapd_kl_coef
    )
    mu, logvar = vae.apply(params, probs, jnp.broadcast_to(obs, (*probs.shape[:2], obs.shape[-1])),
                           method=PolicyVAE.encode)
    return pairwise_distance(mu, logvar, weight, sc.mapd_distance), losses


def pool_observations(key: chex.PRNGKey, logits: chex.Array, obs: chex.Array, pool_size: int,
                      valid: chex.Array | None = None):
    """Pool a rollout's (or the buffer's) observations of every agent and draw up to ``pool_size`` of them.

    Args:
      logits: ``[N_pol, T, E, N_obs, A]`` every policy on every agent's observations.
      obs: ``[T, E, N_obs, D]``.
      valid: optional ``bool[T, E, N_obs]`` (e.g. the buffer rows written so far), and-ed with "not all zeros".
    Returns:
      ``(logits[N_pol, P, A], obs[P, D], weight[P])`` with ``P = min(pool_size, T * E * N_obs)``: valid
      observations first (uniformly without replacement among them), so invalid ones (dead agents' all-zero
      observations, unwritten buffer rows) are only drawn when there are fewer than P valid ones, with weight 0.
    """
    chex.assert_rank(logits, 5)
    chex.assert_rank(obs, 4)
    flat_obs = obs.reshape(-1, obs.shape[-1])
    flat_logits = logits.reshape(logits.shape[0], -1, logits.shape[-1])
    ok = valid_observations(flat_obs)
    if valid is not None:
        chex.assert_shape(valid, obs.shape[:-1])
        ok = ok & valid.reshape(-1)
    total = flat_obs.shape[0]
    size = min(pool_size, total)
    if size < total:  # random order within the valid ones, which all rank before the invalid ones
        _, idx = jax.lax.top_k(ok + jax.random.uniform(key, (total,), maxval=0.5), size)
    else:
        idx = jnp.arange(total)
    return flat_logits[:, idx], flat_obs[idx], ok[idx].astype(jnp.float32)


def own_pairs(key: chex.PRNGKey, logits: chex.Array, obs: chex.Array, size: int, valid: chex.Array | None = None):
    """Every agent's own (observation, policy) pairs, as the reference trains its VAE: policy i on agent i's
    observations, drawn up to ``size`` (valid ones first, as ``pool_observations``).

    Args:
      logits: ``[N, T, E, N, A]`` every policy on every agent's observations (policy i = agent i).
      obs: ``[T, E, N, D]``; valid: optional ``bool[T, E, N]``.
    Returns:
      ``(logits[M, A], obs[M, D], weight[M])`` with ``M = min(size, T * E * N)``.
    """
    chex.assert_rank(logits, 5)
    chex.assert_equal(logits.shape[0], logits.shape[3])
    own = jnp.moveaxis(jnp.diagonal(logits, axis1=0, axis2=3), -1, 2)  # [T, E, N, A]: logits[i, t, e, i]
    pooled_logits, pooled_obs, weight = pool_observations(key, own[None], obs, size, valid)
    return pooled_logits[0], pooled_obs, weight


def distance_round(key: chex.PRNGKey, logits: chex.Array, obs: chex.Array, sc: SharingConfig,
                   valid: chex.Array | None = None):
    """``logits[N_pol, T, E, N_obs, A], obs[T, E, N_obs, D] (, valid bool[T, E, N_obs]) ->
    (D[N_pol, N_pol], VAE losses [epochs])``: the VAE trains on the pairs ``sc.mapd_vae_pairs`` names (own:
    up to ``N_pol * mapd_pool_size`` of every agent's own; pooled: every policy on the pooled batch), the
    distances come from one pooled observation batch."""
    k_pool, k_vae, k_own = jax.random.split(key, 3)
    pooled_logits, pooled_obs, weight = pool_observations(k_pool, logits, obs, sc.mapd_pool_size, valid)
    train = None
    if sc.mapd_vae_pairs == "own":
        train = own_pairs(k_own, logits, obs, logits.shape[0] * sc.mapd_pool_size, valid)
    return policy_distance(k_vae, pooled_logits, pooled_obs, weight, sc, train)


# --------------------------------------------------------------------------- the observation buffer


class ObsBuffer(NamedTuple):
    """Ring buffer of recent env steps for the distance rounds (one seed; vmaps over seeds)."""

    obs: chex.Array  # [B, N, D] every agent's observation at a stored step (zeros until written)
    avail: chex.Array  # bool[B, N, A] its available actions
    pos: chex.Array  # int32[] the next row to write
    count: chex.Array  # int32[] rows written so far, at most B


def init_buffer(rows: int, num_agents: int, obs_dim: int, num_actions: int) -> ObsBuffer:
    return ObsBuffer(
        jnp.zeros((rows, num_agents, obs_dim), jnp.float32),
        jnp.zeros((rows, num_agents, num_actions), jnp.bool_),
        jnp.zeros((), jnp.int32),
        jnp.zeros((), jnp.int32),
    )


def buffer_add(buf: ObsBuffer, obs: chex.Array, avail: chex.Array, key: chex.PRNGKey, add: int) -> ObsBuffer:
    """Write ``min(add, T * E)`` steps of a rollout (``obs[T, E, N, D], avail[T, E, N, A]``), drawn uniformly
    without replacement (all of them, in order, when they fit), over the oldest rows."""
    rows = buf.obs.shape[0]
    flat_obs = obs.reshape(-1, *obs.shape[2:]).astype(buf.obs.dtype)
    flat_avail = avail.reshape(-1, *avail.shape[2:]).astype(jnp.bool_)
    total = flat_obs.shape[0]
    k = min(add, total, rows)
    idx = jnp.arange(k) if k == total else jax.random.permutation(key, total)[:k]
    dest = (buf.pos + jnp.arange(k)) % rows
    return ObsBuffer(
        buf.obs.at[dest].set(flat_obs[idx]),
        buf.avail.at[dest].set(flat_avail[idx]),
        (buf.pos + k) % rows,
        jnp.minimum(buf.count + k, rows),
    )


def observation_rollout(obs: chex.Array, avail: chex.Array) -> Transition:
    """Env steps ``obs[B, N, D], avail[B, N, A]`` as a rollout ``[T=B, E=1, ...]`` carrying only what a feed-forward
    actor's ``Learner.policy_logits`` reads (``obs`` and ``avail``)."""
    return Transition(obs[:, None], (), avail[:, None], (), (), (), (), {})


def buffer_transition(buf: ObsBuffer) -> tuple[Transition, chex.Array]:
    """The buffer as a rollout ``[T=B, E=1, ...]`` for ``Learner.policy_logits`` of a feed-forward actor (which
    reads only ``obs`` and ``avail``), and ``bool[B, 1, N]``: the rows written so far."""
    filled = jnp.arange(buf.obs.shape[0]) < buf.count
    traj = observation_rollout(buf.obs, buf.avail)
    return traj, jnp.broadcast_to(filled[:, None, None], buf.obs.shape[:1] + (1, buf.obs.shape[1]))


def id_relabel(codes) -> Callable[[chex.Array], chex.Array]:
    """``obs[..., N, D] -> obs`` with the last K features of column i set to agent i's code ``codes[i]``
    (``codes[N, K]``, the agent indication appended by ``psjax.envs.with_agent_id``)."""
    codes = jnp.asarray(codes, jnp.float32)
    k = codes.shape[1]

    def relabel(obs):
        chex.assert_axis_dimension(obs, -2, codes.shape[0])
        ids = jnp.broadcast_to(codes.astype(obs.dtype), (*obs.shape[:-1], k))
        return jnp.concatenate([obs[..., :-k], ids], -1)

    return relabel


def off_diagonal_mean(d: chex.Array) -> chex.Array:
    """Mean of the off-diagonal entries of ``d[N, N]`` (0 for one agent)."""
    n = d.shape[0]
    if n < 2:
        return jnp.zeros((), d.dtype)
    return (d * (1.0 - jnp.eye(n, dtype=d.dtype))).sum() / (n * (n - 1))


# --------------------------------------------------------------------------- the distance rounds as a scheme wrapper


class DistanceState(NamedTuple):
    """The distance rounds' state in ``SharingState.distance`` (one seed)."""

    buffer: Any  # ObsBuffer of recent observations (feed-forward actors), () = rounds measure on their rollout
    iteration: chex.Array  # int32, iterations so far: a round ends every interval-th


def measure(policy_logits: Callable, sc: SharingConfig, relabel: Callable | None, act: Callable | None,
            learner_state, sharing, traj: Transition, hidden0, key: chex.PRNGKey, buffer=()):
    """One MAPD round: every agent's policy (``Learner.policy_logits``) on the buffer (``buffer`` non-empty) or on
    the rollout ``traj``, the distance matrix D ``[N, N]``, handed to ``act`` where there is one.

    Returns ``(learner_state, sharing, (D, the VAE's last loss))``.
    """
    valid = None
    if isinstance(buffer, ObsBuffer):
        traj, valid = buffer_transition(buffer)
    logits = policy_logits(learner_state, sharing, traj, hidden0, relabel)
    d, losses = distance_round(key, logits, traj.obs, sc, valid)
    if act is not None:
        sharing, learner_state = act(sharing, learner_state, d, jax.random.fold_in(key, 1))
    return learner_state, sharing, (d, losses[-1])


def with_distance(scheme: Scheme, policy_logits: Callable, spec: EnvSpec, sc: SharingConfig, interval: int,
                  buffer_rows: int, id_codes=None) -> Scheme:
    """``scheme`` plus a MAPD round at the end of every ``interval``-th iteration, before the scheme's own update.

    ``buffer_rows > 0`` keeps that many recent env steps to measure on (feed-forward actors; filled with up to
    ``sc.mapd_buffer_add`` steps per iteration), else a round measures on its iteration's rollout.
    ``id_codes[N, K]``: the agent indication appended to observations (FuPS+id), so that agent i's policy is
    the shared network fed i's code. Adds ``mapd_distance`` ``[N, N]`` (NaN between rounds),
    ``mapd_distance_mean``, ``mapd_vae_loss`` and ``mapd_type_ratio`` (mean distance within the task's agent kinds
    over mean distance between kinds, ``psjax.sharing.structure``) to the scheme's metrics.
    """
    n = spec.num_agents
    relabel = id_relabel(id_codes) if id_codes is not None and id_codes.shape[1] else None
    drive = driver(scheme, "mapd")
    act = drive.act if drive is not None else None

    def init(key):
        buffer = init_buffer(buffer_rows, n, spec.obs_dim, spec.num_actions) if buffer_rows > 0 else ()
        return scheme.init(key)._replace(distance=DistanceState(buffer, jnp.int32(0)))

    def update(sharing, learner_state, traj, key, step, hidden0):
        state = sharing.distance
        buffer = state.buffer
        if buffer_rows > 0:
            buffer = buffer_add(buffer, traj.obs, traj.avail, jax.random.fold_in(key, 2), sc.mapd_buffer_add)
        due = (state.iteration + 1) % interval == 0

        # everything the round reads travels in the zero-or-one-trip loop's carry, so that XLA cannot hoist
        # the policy evaluation out of it
        def round_fn(operand, k):
            learner_state, sharing, _, rollout, hidden0, buffer = operand
            learner_state, sharing, out = measure(policy_logits, sc, relabel, act, learner_state,
                                                  sharing, rollout, hidden0, k, buffer)
            return learner_state, sharing, out, rollout, hidden0, buffer

        nan = (jnp.full((n, n), jnp.nan, jnp.float32), jnp.full((), jnp.nan, jnp.float32))
        rollout = () if buffer_rows > 0 else traj  # only what the round reads
        learner_state, sharing, (d, vae_loss), _, _, _ = bank_ops.run_if(
            due, round_fn, (learner_state, sharing, nan, rollout, hidden0, buffer), jax.random.fold_in(key, 1))
        sharing = sharing._replace(distance=DistanceState(buffer, state.iteration + 1))
        sharing, learner_state, metrics = scheme.update(sharing, learner_state, traj, key, step, hidden0)
        distance = {"mapd_distance": d, "mapd_distance_mean": off_diagonal_mean(d), "mapd_vae_loss": vae_loss,
                    "mapd_type_ratio": type_distance_ratio(d, spec.agent_types)}
        return sharing, learner_state, {**metrics, **distance}

    return scheme._replace(init=init, update=update)
