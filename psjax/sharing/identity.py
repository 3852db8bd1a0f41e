"""Identity-based sharing: SePS (Christianos et al. 2021) and AdaPS (seed 001).

Both start as FuPS (every agent on slot 0, no masks) while a uniform (reservoir) sample of
every agent's (o, a, r, o') transitions is kept. Once, at the first training iteration that
reaches ``sharing.identity_pretrain_steps`` env steps, the scheme's update

1. trains the identity VAE (``psjax.nets.vae``) on the stored transitions,
2. runs k-means (k-means++ seeding, restarts) on the N identity vectors, with K from the config
   (``sharing.identity_clusters``) or, by default, by ``sharing.identity_k_rule`` (``psjax.sharing.kmeans``); the
   vectors are the encoder means (SePS's code) or one sample z_i ~ N(mu_i, sigma_i^2) per agent (AdaPS's
   paper, section 4.1): ``sharing.identity_cluster_input``,
3. SePS: moves every agent to its cluster's slot, every slot a copy of the pretrained slot 0
   (parameters, target and Adam moments; critics follow the same slots);
   AdaPS: feeds every cluster centre through a fixed random mapping network, thresholds the
   sigmoid at lambda into binary hidden-unit masks, and gives each agent its cluster's masks
   on the one shared network (no parameters added). The masks act on the policy network only
   (the paper's f(.; phi * M_k)) and, with ``sharing.adaps_mask_critic`` (default), an A2C / PPO critic too.

Nothing changes after that. The one-off work runs inside ``run_if``, a while loop that runs
zero or one time: ``lax.cond`` under ``vmap`` over seeds (the host runner's case, where the
step counter is batched) becomes a select that would run the VAE training on every iteration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp

from psjax.envs import num_agents
from psjax.envs.base import EnvSpec
from psjax.fields import ConfigError
from psjax.fields import doc_field as _f
from psjax.nets.vae import IdentityVAE, fit_minibatch_epochs, vae_loss
from psjax.registry import Method
from psjax.schema import TrainConfig
from psjax.sharing import bank_ops
from psjax.sharing.bank import SharingState, SlotLayout
from psjax.sharing.kmeans import KMeansResult, kmeans, select_k
from psjax.sharing.methods import Scheme
from psjax.sharing.report import sharing_picture
from psjax.sharing.structure import type_ari
from psjax.types import Transition


@dataclass(frozen=True)
class IdentityOptions:
    """SePS's and AdaPS's identity VAE, k-means and pretraining (``sharing.identity_*``)."""

    identity_pretrain_steps: int = _f(
        50_000, "SePS/AdaPS: env steps per seed of pretraining with the shared network; the identity VAE, k-means and "
                "the switch to clusters run once, when it is reached", min=0)
    identity_clusters: str = _f(
        "auto", "SePS/AdaPS: number of clusters K, an integer 1..N; auto = the best identity_k_rule score over "
        "K = 2..N-1 (N-1 slots allocated; N <= 2 agents: K = N)")
    identity_k_rule: str = _f(
        "silhouette", "SePS/AdaPS: how identity_clusters=auto scores a K: silhouette (highest mean silhouette) or "
        "davies_bouldin (lowest score: the SePS code's rule, which splits off singletons; docs/methods.md)",
        choices=("silhouette", "davies_bouldin"))
    identity_reconstruct: str = _f(
        "next_obs_reward", "SePS/AdaPS: what the identity VAE's decoder predicts (the SePS code's `reconstruct`)",
        choices=("next_obs_reward", "next_obs", "reward"))
    identity_buffer_size: int = _f(4096, "SePS/AdaPS: (o, a, r, o') transitions kept per agent for the VAE, a "
                                   "uniform (reservoir) sample of all pretraining transitions", min=1)
    identity_latent: int = _f(10, "SePS/AdaPS: identity VAE latent size", min=1)
    identity_hidden: int = _f(64, "SePS/AdaPS: identity VAE hidden width", min=1)
    identity_epochs: int = _f(60, "SePS/AdaPS: VAE epochs over the stored transitions at the switch (N * "
                              "buffer / batch steps each; the SePS code trains ~8x longer on all its data)", min=1)
    identity_batch_size: int = _f(128, "SePS/AdaPS: VAE minibatch size", min=1)
    identity_lr: float = _f(3e-4, "SePS/AdaPS: VAE Adam learning rate", min=0.0)
    identity_kl_coef: float = _f(1e-4, "SePS/AdaPS: weight of the KL term of the VAE loss", min=0.0)
    identity_kmeans_restarts: int = _f(10, "SePS/AdaPS: k-means++ restarts (best inertia kept)", min=1)
    identity_cluster_input: str = _f(
        "auto", "SePS/AdaPS: what k-means clusters: mean = encoder means mu_i; sample = one draw per agent; auto = mean"
                " for SePS (its code), sample for AdaPS (its paper)", choices=("auto", "mean", "sample"))


@dataclass(frozen=True)
class AdaPSOptions(IdentityOptions):
    """AdaPS's options: the identity ones plus its masks (``sharing.adaps_*``)."""

    adaps_threshold: float = _f(0.2, "AdaPS: lambda; a unit is kept where sigmoid(mapping net(centre)) > lambda",
                                min=0.0, max=1.0)
    adaps_mapping_hidden: int = _f(64, "AdaPS: hidden width of the fixed random mapping network", min=1)
    adaps_mask_critic: bool = _f(True, "AdaPS with A2C / PPO: mask the critic's hidden units with the cluster masks "
                                 "too; False = the policy only (a shared critic then cannot tell the kinds apart: "
                                 "BPS return fell to -60; docs/methods.md)")
    adaps_mapping_scale: float = _f(
        3.0, "AdaPS: scale of the mapping network's output weights; its logits have std ~0.77 x scale on "
        "standardised centres (3.0: about 3/4 of the units kept at lambda 0.2; 1.0: almost all)", min=0.0)

MAX_PAIR_AGENTS = 8  # per-agent-pair overlap columns are logged up to this many agents


class IdentityBuffer(NamedTuple):
    """A uniform sample of up to B pretraining transitions, the same steps for every agent."""

    obs: chex.Array  # [N, B, D]
    action: chex.Array  # int32[N, B]
    reward: chex.Array  # [N, B]
    next_obs: chex.Array  # [N, B, D]
    seen: chex.Array  # int32[] valid transitions offered so far (per agent); min(seen, B) slots are filled


class IdentityState(NamedTuple):
    """``SharingState.extra`` of SePS and AdaPS."""

    buffer: IdentityBuffer
    switched: chex.Array  # bool[], the one-off switch has happened
    means: chex.Array  # [N, Z] encoder means at the switch (zeros before)
    points: chex.Array  # [N, Z] the identity vectors k-means clustered: ``means`` or one sample each (zeros before)
    centres: chex.Array  # [Kmax, Z] k-means centres at the switch; unused rows zero
    num_clusters: chex.Array  # int32[] K chosen (1 before the switch)
    labels: chex.Array  # int32[N] cluster of every agent (0 before the switch), numbered by first agent
    vae_loss: chex.Array  # [2] mean VAE loss of the first and last epoch (NaN before the switch)
    mapping: Any  # AdaPS: the fixed random mapping network's parameters; () for SePS


# --------------------------------------------------------------------------- transitions


def init_buffer(num_agents: int, size: int, obs_dim: int) -> IdentityBuffer:
    return IdentityBuffer(
        jnp.zeros((num_agents, size, obs_dim), jnp.float32),
        jnp.zeros((num_agents, size), jnp.int32),
        jnp.zeros((num_agents, size), jnp.float32),
        jnp.zeros((num_agents, size, obs_dim), jnp.float32),
        jnp.zeros((), jnp.int32),
    )


def store_transitions(
    buffer: IdentityBuffer, traj: Transition, key: chex.PRNGKey, active: chex.Array | bool = True
) -> IdentityBuffer:
    """Offer the rollout's (o, a, r, o') transitions to the reservoir (Algorithm R).

    ``active`` false offers nothing: every scatter index is dropped, so the buffer is left as it
    is without the full-buffer copy a branch (``run_if`` / ``lax.cond``) around this call costs on
    every iteration after the switch (measured: 8% of SePS-A2C's throughput on LBF).

    Step t's next observation is ``traj.obs[t + 1]``, so the rollout's last step (whose next
    observation the scheme does not see) and steps that end an episode (whose next observation
    already belongs to the next episode) are skipped. The n-th valid transition ever offered
    replaces slot ``j ~ U{0..n}`` when ``j < B``; within a rollout, later transitions win, exactly
    as if they were offered one by one, and with no duplicate scatter indices (deterministic).
    """
    chex.assert_rank(traj.obs, 4)  # [T, E, N, D]
    size = buffer.obs.shape[1]
    num_agents, obs_dim = traj.obs.shape[2:]

    def rows(x):  # [T-1, E, N, ...] -> [N, R, ...]
        x = x.reshape(-1, *x.shape[2:])
        return jnp.moveaxis(x, 1, 0)

    obs, next_obs = rows(traj.obs[:-1]), rows(traj.obs[1:])
    action, reward = rows(traj.action[:-1]), rows(traj.reward[:-1])
    valid = ~traj.done[:-1].reshape(-1) & active  # [R]
    num_rows = valid.shape[0]
    index = buffer.seen + jnp.cumsum(valid) - 1  # position of each valid row in the stream
    draw = jax.random.randint(key, (num_rows,), 0, jnp.maximum(index + 1, 1))
    slot = jnp.where(index < size, index, draw)
    slot = jnp.where(valid & (slot < size), slot, size)  # size = dropped
    row = jnp.arange(num_rows, dtype=jnp.int32)
    winner = jnp.full((size + 1,), -1, jnp.int32).at[slot].max(row)  # last row per slot
    slot = jnp.where(winner[slot] == row, slot, size)

    def put(buf, new):
        return buf.at[:, slot].set(new, mode="drop")

    return IdentityBuffer(
        put(buffer.obs, obs),
        put(buffer.action, action.astype(jnp.int32)),
        put(buffer.reward, reward.astype(jnp.float32)),
        put(buffer.next_obs, next_obs),
        buffer.seen + valid.sum().astype(jnp.int32),
    )


# --------------------------------------------------------------------------- the identity VAE


RECONSTRUCT = {  # the decoder's targets per ``sharing.identity_reconstruct``: (next observation, reward)
    "next_obs_reward": (True, True), "next_obs": (True, False), "reward": (False, True),
}


def reconstruction_size(obs_dim: int, reconstruct: str) -> int:
    """Width of the decoder's output for ``reconstruct``."""
    next_obs, reward = RECONSTRUCT[reconstruct]
    return obs_dim * next_obs + reward


def reconstruction_target(next_obs: chex.Array, reward: chex.Array, reconstruct: str) -> chex.Array:
    """``next_obs[B, D], reward[B] -> [B, reconstruction_size]``: what the decoder predicts."""
    use_obs, use_reward = RECONSTRUCT[reconstruct]
    return jnp.concatenate(([next_obs] if use_obs else []) + ([reward[:, None]] if use_reward else []), -1)


def train_identity_vae(
    key: chex.PRNGKey, vae: IdentityVAE, buffer: IdentityBuffer, epochs: int, batch_size: int, lr: float,
    kl_coef: float, reconstruct: str = "next_obs_reward",
) -> tuple[Any, chex.Array, chex.Array]:
    """Train a fresh VAE (its decoder sized for ``reconstruct``) on the filled part of the buffer.

    Returns (params, encoder means ``[N, Z]``, encoder log-variances ``[N, Z]``, mean loss per epoch
    ``[epochs]``).
    """
    num_agents, size = buffer.action.shape
    total = num_agents * size
    batch = min(batch_size, total)
    obs, next_obs = buffer.obs.reshape(total, -1), buffer.next_obs.reshape(total, -1)
    action, reward = buffer.action.reshape(total), buffer.reward.reshape(total)

    def minibatch(idx):
        # gathered per step rather than prepared once: work that depends on the buffer alone would be
        # hoisted out of run_if's loop by XLA and run on every training iteration
        return {
            "agent": (idx // size).astype(jnp.int32),
            "obs": obs[idx],
            "action": action[idx],
            "target": reconstruction_target(next_obs[idx], reward[idx], reconstruct),
            "weight": (idx % size < buffer.seen).astype(jnp.float32),  # unfilled slots are padding
        }

    k_init, k_train = jax.random.split(key)
    example = minibatch(jnp.zeros((1,), jnp.int32))
    params = vae.init(k_init, k_init, example["agent"], example["obs"], example["action"])
    def loss_fn(params, idx, k):
        mb = minibatch(idx)
        pred, mu, logvar = vae.apply(params, k, mb["agent"], mb["obs"], mb["action"])
        return vae_loss(pred, mb["target"], mu, logvar, mb["weight"], kl_coef)

    params, losses = fit_minibatch_epochs(loss_fn, params, lr, total, batch, epochs, k_train)
    mu, logvar = vae.apply(params, jnp.arange(num_agents), method=IdentityVAE.encode)
    return params, mu, logvar, losses


def identity_vectors(key: chex.PRNGKey, mu: chex.Array, logvar: chex.Array, source: str) -> chex.Array:
    """The vectors k-means clusters: ``mu[N, Z]`` itself (``mean``) or one reparameterised draw per agent,
    ``mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)`` (``sample``)."""
    if source == "mean":
        return mu
    if source != "sample":
        raise ValueError(f"unknown identity_cluster_input {source!r}; allowed: 'mean', 'sample'")
    return mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape)


# --------------------------------------------------------------------------- AdaPS mapping network


def init_mapping(key: chex.PRNGKey, latent: int, hidden: int, out: int, scale: float) -> dict:
    """A fixed random network ``z[Z] -> tanh(W1 z + b1) -> W2 h`` (never trained, as in RND).

    ``W1 ~ N(0, 1/Z)``, ``b1 ~ N(0, 1)`` (inputs are standardised centres, see ``standardise``; the
    hidden pre-activations have variance ~2 and ``E[h^2] ~ 0.6``), ``W2 ~ N(0, scale^2 / hidden)``: logits
    with std ~0.77 x scale. lambda = 0.2 keeps a unit when its logit exceeds -1.39, so the scale sets
    how many units are kept and how much the masks of two clusters differ.
    """
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "w1": jax.random.normal(k1, (latent, hidden)) / jnp.sqrt(latent),
        "b1": jax.random.normal(k2, (hidden,)),
        "w2": jax.random.normal(k3, (hidden, out)) * (scale / jnp.sqrt(hidden)),
    }


def mapping_probs(mapping: dict, z: chex.Array) -> chex.Array:
    """Activation probabilities ``z[..., Z] -> [..., out]`` of the mapping network."""
    return jax.nn.sigmoid(jnp.tanh(z @ mapping["w1"] + mapping["b1"]) @ mapping["w2"])


def standardise(centres: chex.Array, points: chex.Array) -> chex.Array:
    """Cluster centres in the units of the agents' spread around their mean:
    ``(c - mean_i x_i) / rms_i,d(x_i,d - mean_i x_i,d)`` for the clustered identity vectors ``points[N, Z]``
    (encoder means or samples). The VAE's latent scale is arbitrary (the KL weight is tiny); this makes
    the mapping network see distinct clusters as inputs of unit scale."""
    centre = points.mean(0)
    return (centres - centre) / (jnp.sqrt(((points - centre) ** 2).mean()) + 1e-8)


def cluster_masks(mapping: dict, centres: chex.Array, points: chex.Array, labels: chex.Array, threshold: float,
                  num_layers: int) -> tuple:
    """Binary masks per agent from its cluster centre: ``centres[K, Z], points[N, Z], labels[N]`` -> one
    ``float32[N, H]`` per maskable layer (exactly 0.0 or 1.0)."""
    keep = (mapping_probs(mapping, standardise(centres, points)) > threshold).astype(jnp.float32)  # [K, L * H]
    per_agent = keep[labels]
    return tuple(jnp.split(per_agent, num_layers, axis=-1))


# --------------------------------------------------------------------------- reports


def overlap_matrix(masks: tuple, slots: chex.Array, masked: bool) -> chex.Array:
    """Fraction of units two agents share, ``[N, N]``: |M_i and M_j| / |M_i or M_j| over every
    maskable layer for masked methods; for slot methods 1 when they use the same slot, else 0."""
    if not masked:
        return (slots[:, None] == slots[None, :]).astype(jnp.float32)
    m = jnp.concatenate(masks, -1)
    both = m @ m.T
    either = m.sum(-1)[:, None] + m.sum(-1)[None, :] - both
    return jnp.where(either > 0, both / jnp.maximum(either, 1.0), 1.0)


def _metrics(sharing: SharingState, masked: bool, agent_types: tuple[int, ...], max_clusters: int) -> dict:
    """What the method decided, logged every iteration (fixed shapes; see docs/methods.md); ``type_ari`` is the
    clusters' adjusted Rand index against the task's agent kinds (0 or 1 before the switch: one cluster)."""
    extra = sharing.extra
    labels = extra.labels
    overlap = overlap_matrix(sharing.masks, sharing.slots, masked)
    n = labels.shape[0]
    pairs = ~jnp.eye(n, dtype=bool)
    metrics = {
        "cluster": labels,
        "num_clusters": extra.num_clusters,
        "type_ari": type_ari(labels, agent_types, max_clusters),
        "identity_switched": extra.switched,
        "identity_vae_loss_first": extra.vae_loss[0],
        "identity_vae_loss_last": extra.vae_loss[1],
        "mask_overlap": jnp.where(n > 1, (overlap * pairs).sum() / max(n * (n - 1), 1), 1.0),
    }
    if n <= MAX_PAIR_AGENTS:
        metrics["mask_overlap_pairs"] = overlap
    if masked:
        metrics["mask_keep"] = jnp.concatenate(sharing.masks, -1).mean(-1)
    return metrics


# --------------------------------------------------------------------------- schemes


def given_clusters(cfg: TrainConfig) -> int | None:
    """K as the user gave it (``sharing.identity_clusters``), or None for ``auto`` (the Davies-Bouldin rule).
    Raises ConfigError for anything else."""
    k = str(cfg.sharing.identity_clusters).strip()
    if k == "auto":
        return None
    try:
        return int(k)
    except ValueError:
        raise ConfigError(
            f"sharing.identity_clusters={k!r} is not allowed; allowed: 'auto' or an integer 1..number of agents"
        ) from None


def check_identity_config(cfg: TrainConfig) -> None:
    """Config rules of SePS / AdaPS (their records' ``check``); raises ConfigError."""
    n = num_agents(cfg.env)
    k = given_clusters(cfg)
    if k is not None and not 1 <= k <= n:
        raise ConfigError(
            f"sharing.identity_clusters={k} is outside the allowed range 1..{n} (the number of agents of "
            f"env {cfg.env.name}); allowed: 'auto' or 1..{n}"
        )
    if cfg.learner_cfg.rollout_len < 2:
        section = "q" if cfg.is_value_based else "ac"
        raise ConfigError(
            f"{section}.rollout_len={cfg.learner_cfg.rollout_len}: alg={cfg.alg} needs at least 2 steps per rollout "
            "to pair observations with next observations"
        )


def _max_clusters(cfg: TrainConfig, num_agents: int) -> int:
    """Slots / centres allocated: K from the config, or the largest Davies-Bouldin candidate."""
    k = given_clusters(cfg)
    if k is None:
        return num_agents if num_agents <= 2 else num_agents - 1
    return k


def _cluster(cfg: TrainConfig, key: chex.PRNGKey, points: chex.Array, max_clusters: int) -> KMeansResult:
    sc = cfg.sharing
    n = points.shape[0]
    if given_clusters(cfg) is None and n > 2:
        result, _ = select_k(key, points, 2, n - 1, sc.identity_kmeans_restarts, rule=sc.identity_k_rule)
        return result
    return kmeans(key, points, max_clusters, max_clusters, sc.identity_kmeans_restarts)


def cluster_input(cfg: TrainConfig) -> str:
    """``mean`` or ``sample``: ``sharing.identity_cluster_input``, with ``auto`` resolved per method
    (SePS: the means, as its code; AdaPS: a sample, as its paper)."""
    source = cfg.sharing.identity_cluster_input
    if source == "auto":
        return "sample" if cfg.alg == "adaps" else "mean"
    return source


def _make_identity_scheme(
    cfg: TrainConfig, spec: EnvSpec, layout: SlotLayout, init_masks: Callable[[], tuple], mapping_init: Callable,
    apply_switch: Callable, bank_network: Callable | None = None,
) -> Scheme:
    """The pipeline both methods share; ``apply_switch(sharing, learner_state, kmeans result, clustered
    vectors, mapping params) -> (sharing, learner_state)`` is the method-specific step 3."""
    sc = cfg.sharing
    source = cluster_input(cfg)
    n = spec.num_agents
    max_clusters = _max_clusters(cfg, n)
    vae = IdentityVAE(n, spec.obs_dim, spec.num_actions, sc.identity_latent, sc.identity_hidden,
                      reconstruction_size(spec.obs_dim, sc.identity_reconstruct))

    def init(key):
        extra = IdentityState(
            init_buffer(n, sc.identity_buffer_size, spec.obs_dim),
            jnp.zeros((), jnp.bool_),
            jnp.zeros((n, sc.identity_latent), jnp.float32),
            jnp.zeros((n, sc.identity_latent), jnp.float32),
            jnp.zeros((max_clusters, sc.identity_latent), jnp.float32),
            jnp.ones((), jnp.int32),
            jnp.zeros(n, jnp.int32),
            jnp.full((2,), jnp.nan, jnp.float32),
            mapping_init(key),
        )
        return SharingState(jnp.zeros(n, jnp.int32), init_masks(), extra)

    def switch(operand, key, buffer):
        sharing, learner_state = operand
        extra = sharing.extra
        k_vae, k_kmeans = jax.random.split(key)
        _, means, logvar, losses = train_identity_vae(
            k_vae, vae, buffer, sc.identity_epochs, sc.identity_batch_size, sc.identity_lr, sc.identity_kl_coef,
            sc.identity_reconstruct,
        )
        points = identity_vectors(jax.random.fold_in(k_kmeans, 1), means, logvar, source)
        result = _cluster(cfg, k_kmeans, points, max_clusters)
        sharing, learner_state = apply_switch(sharing, learner_state, result, points, extra.mapping)
        extra = extra._replace(
            switched=jnp.ones((), jnp.bool_), means=means, points=points, centres=result.centres,
            num_clusters=result.num_clusters, labels=result.labels, vae_loss=jnp.stack([losses[0], losses[-1]]),
        )
        return sharing._replace(extra=extra), learner_state

    def update(sharing, learner_state, traj, key, step, hidden0):
        del hidden0
        k_store, k_switch = jax.random.split(key)
        buffer = store_transitions(sharing.extra.buffer, traj, k_store, active=~sharing.extra.switched)
        due = ~sharing.extra.switched & (step >= sc.identity_pretrain_steps)
        # the buffer is read, not carried: the loop's carry stays small
        sharing = sharing._replace(extra=sharing.extra._replace(buffer=()))
        sharing, learner_state = bank_ops.run_if(
            due, lambda x, k: switch(x, k, buffer), (sharing, learner_state), k_switch
        )
        sharing = sharing._replace(extra=sharing.extra._replace(buffer=buffer))
        return sharing, learner_state, _metrics(sharing, layout.masked, spec.agent_types, max_clusters)

    return Scheme(layout, init, update, bank_network=bank_network)


def make_seps(cfg: TrainConfig, spec: EnvSpec, hidden: int, num_masked_layers: int,
              bank_names: tuple[str, ...]) -> Scheme:
    """SePS: K slots (``indexed``), all agents on slot 0 until the switch, then on their cluster's
    slot; every slot (of every bank in ``bank_names``) starts as a copy of the pretrained slot 0."""
    del hidden, num_masked_layers
    banks = bank_names
    layout = SlotLayout(_max_clusters(cfg, spec.num_agents), "indexed", False)

    def apply_switch(sharing, learner_state, result, points, mapping):
        del points, mapping
        learner_state = bank_ops.map_banks(learner_state, banks, lambda path, x: bank_ops.copy_row(x, 0))
        return sharing._replace(slots=result.labels), learner_state

    return _make_identity_scheme(cfg, spec, layout, lambda: (), lambda key: (), apply_switch)


def make_adaps(cfg: TrainConfig, spec: EnvSpec, hidden: int, num_masked_layers: int,
               bank_names: tuple[str, ...]) -> Scheme:
    """AdaPS: one shared network (``shared``, masked); masks all ones until the switch, then each
    agent's cluster's binary masks from the fixed random mapping network. No parameters added.
    The critic bank (A2C / PPO) gets the same masks unless ``sharing.adaps_mask_critic`` is false."""
    del bank_names
    sc = cfg.sharing
    n = spec.num_agents
    layout = SlotLayout(1, "shared", True)

    def init_masks():
        return tuple(jnp.ones((n, hidden), jnp.float32) for _ in range(num_masked_layers))

    def mapping_init(key):
        return init_mapping(key, sc.identity_latent, sc.adaps_mapping_hidden, hidden * num_masked_layers,
                            sc.adaps_mapping_scale)

    def apply_switch(sharing, learner_state, result, points, mapping):
        masks = cluster_masks(mapping, result.centres, points, result.labels, sc.adaps_threshold, num_masked_layers)
        return sharing._replace(masks=masks), learner_state

    def policy_masks_only(name, net, layout):  # adaps_mask_critic=false: the critic sees no masks
        return net, layout._replace(masked=False) if name == "critic" else layout

    return _make_identity_scheme(cfg, spec, layout, init_masks, mapping_init, apply_switch,
                                 None if sc.adaps_mask_critic else policy_masks_only)


METHODS = (  # registered by psjax.catalog
    Method("seps", "identity VAE + k-means after pretraining: each cluster gets its own network (SePS)", make_seps,
           default_learner="a2c", check=check_identity_config, pictures=(sharing_picture,),
           options=IdentityOptions),
    Method("adaps", "identity VAE + k-means after pretraining: one network, per-cluster unit masks (AdaPS)",
           make_adaps, default_learner="a2c", check=check_identity_config, pictures=(sharing_picture,),
           options=AdaPSOptions),
)
