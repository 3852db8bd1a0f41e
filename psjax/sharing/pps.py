"""Periodic parameter sharing (PPS, seed 002; code: ColaZhang22/PPS-QMIX).

Every agent has its own Q network (a bank with one slot per agent, like NoPS). Every
``sharing.pps_interval`` gradient updates the bank rows are aggregated and the result is
written back to every agent:

- ``pps_a``: uniform average of all layers;
- ``pps_rs``: average weighted by each agent's reward R_i in the reward buffer
  (``reward_weights``): by default the agent's returns summed over the last ``pps_window``
  completed episodes (``pps_window_unit=episodes``, the paper's 96), else over the last
  ``pps_window`` rollout steps (``steps``, each step's reward averaged over the envs);
- ``pps_pp``: only the shared side of a layer boundary is averaged, by default with the RS
  weights (``pps_pp_weights``); the other side stays per agent (``shared_layers``).

The episode buffer is kept inside the compiled program: every env carries its running
per-agent return (``PPSExtra.running``), and the returns of the episodes a rollout completes
enter a ring of the last W, in the order they ended (step, then env).

The scheme's ``update`` runs once per training iteration, after the learner's
``q.updates_per_rollout`` gradient steps, so an aggregation happens at the end of the
iteration in which ``learner_state.updates`` crossed a multiple of the interval (at most
``updates_per_rollout - 1`` updates late, and once even if several multiples were crossed).
The aggregation runs inside ``bank_ops.run_if``: one compiled program, vmappable over seeds,
and no aggregation work in the iterations between rounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp

from psjax.envs.base import EnvSpec
from psjax.fields import doc_field as _f
from psjax.nets.agents import NORM_SUFFIX, recurrent_blocks
from psjax.registry import Method
from psjax.schema import TrainConfig
from psjax.sharing.bank import SharingState, SlotLayout
from psjax.sharing.bank_ops import map_bank_tree, map_banks, run_if, weighted_mean_rows
from psjax.sharing.methods import Scheme


@dataclass(frozen=True)
class PPSOptions:
    """A-PPS, RS-PPS and PP-PPS's options (``sharing.pps_*``)."""

    pps_interval: int = _f(300, "PPS: gradient updates between aggregations (checked after each iteration's updates)",
                           min=1)
    pps_window: int = _f(96, "PPS: reward buffer length W, in pps_window_unit (paper: 96, 'the same length as the "
                         "batch size' of 96 episodes)", min=1)
    pps_window_unit: str = _f(
        "episodes", "PPS: unit of the reward buffer: episodes = the last W completed episodes of all envs (the paper); "
                    "steps = the last W rollout steps, averaged over envs", choices=("episodes", "steps"))
    pps_rs_weights: str = _f(
        "ratio", "RS-PPS weights from the buffered rewards R_i: ratio = R_i / sum R_j after a shift to >= 0 (the "
                 "paper); softmax = softmax(R_i / pps_rs_temperature) (released code)",
        choices=("ratio", "softmax"))
    pps_rs_temperature: float = _f(1.0, "RS-PPS: softmax temperature (pps_rs_weights=softmax)", min=1e-6)
    pps_pp_boundary: int = _f(2, "PP-PPS: agent-network layers (Dense, GRU, Dense) before the personal/shared "
                              "boundary", min=1, max=2)
    pps_pp_personal: str = _f(
        "front", "PP-PPS: side of the boundary kept per agent; front = feature layers personal, later layers shared "
        "(paper); back = the released code's direction", choices=("front", "back"))
    pps_pp_weights: str = _f("reward", "PP-PPS: weights of the shared part; reward = the RS-PPS weights (paper, "
                             "sections 4.3 and 5); uniform = the released code's plain average",
                             choices=("uniform", "reward"))
    pps_target: str = _f(
        "keep", "PPS: target network at aggregation; keep (released code), aggregate (its rows averaged the same "
        "way) or copy (set to the aggregated online rows)", choices=("keep", "aggregate", "copy"))
    pps_moments: bool = _f(False, "PPS: average the Adam moments of aggregated rows too (False: each agent keeps its "
                           "own, as the released code's per-agent optimisers)")

# The layers of ``psjax.nets.agents.RecurrentNet`` from input to output (its blocks, ``psjax.nets.agents.blocks``).
LAYERS = ("hidden_0", "gru", "head")
VARIANTS = ("pps_a", "pps_rs", "pps_pp")


class PPSExtra(NamedTuple):
    """PPS state carried in ``SharingState.extra``."""

    last_updates: chex.Array  # int32, learner gradient steps at the previous sharing update
    # float32[W, N] the reward buffer. Unit episodes: per-agent returns of the last W completed episodes
    # (a ring, episode k in row k mod W; rows of episodes not yet seen are 0). Unit steps: per-agent
    # reward of the last W rollout steps, each the mean over envs, oldest first.
    rewards: chex.Array
    running: chex.Array  # float32[E, N] unit episodes: each env's per-agent reward so far in its episode
    episodes: chex.Array  # int32, unit episodes: completed episodes written to the buffer so far


def layer_of(path: tuple[str, ...]) -> str:
    """The ``LAYERS`` entry a bank leaf belongs to, e.g. ("params", "GRUCell_0", "hn", "bias") -> "gru"; a
    LayerNorm (``q.layer_norm``) belongs to its layer, the image torso to the first (feature) layer."""
    module_blocks = recurrent_blocks()
    for name in path:
        block = module_blocks.get(name, "").removesuffix(NORM_SUFFIX)
        if block in LAYERS:
            return block
        if block == "conv":
            return LAYERS[0]
    raise ValueError(f"parameter {'/'.join(path)} is in none of the agent network's layers {LAYERS}")


def shared_layers(variant: str, boundary: int, personal: str) -> frozenset[str]:
    """Layers that PPS aggregates: all of them, or for ``pps_pp`` one side of ``boundary``.

    ``boundary`` counts layers from the input; ``personal`` names the side that stays per agent
    ("front": ``LAYERS[:boundary]``, "back": ``LAYERS[boundary:]``).
    """
    if variant != "pps_pp":
        return frozenset(LAYERS)
    if not 0 < boundary < len(LAYERS):
        raise ValueError(f"pps_pp_boundary={boundary} must split {LAYERS} into two non-empty parts")
    front, back = LAYERS[:boundary], LAYERS[boundary:]
    return frozenset(back if personal == "front" else front)


def reward_weights(returns: chex.Array, mode: str, temperature: float = 1.0) -> chex.Array:
    """Aggregation weights from per-agent accumulated rewards: ``returns[N] -> weights[N]`` (sum 1).

    ``ratio``: ``R_i / sum_j R_j`` (the paper's formula) after shifting by ``min(0, min_j R_j)``,
    so negative rewards never give negative weights (the lowest agent then gets 0); uniform when
    all shifted rewards are 0 (no reward yet, or equal negative rewards). ``softmax``: softmax of
    ``R_i / temperature`` (the released code's choice). Equal rewards (a team reward) give uniform
    weights in both modes: RS-PPS is then A-PPS.
    """
    chex.assert_rank(returns, 1)
    uniform = jnp.full_like(returns, 1.0 / returns.shape[0])
    if mode == "softmax":
        return jax.nn.softmax(returns / temperature)
    if mode != "ratio":
        raise ValueError(f"unknown reward weighting {mode!r}; allowed: 'ratio', 'softmax'")
    shifted = returns - jnp.minimum(returns.min(), 0.0)
    total = shifted.sum()
    return jnp.where(total > 0.0, shifted / jnp.where(total > 0.0, total, 1.0), uniform)


def push_rewards(buffer: chex.Array, reward: chex.Array) -> chex.Array:
    """Append a rollout's rewards to the reward buffer, keeping the last W steps.

    ``buffer[W, N]``, ``reward[T, E, N]`` (per agent, per env) -> ``[W, N]``; each new row is the
    step's per-agent reward averaged over the parallel envs.
    """
    chex.assert_rank(buffer, 2)
    chex.assert_rank(reward, 3)
    window = buffer.shape[0]
    return jnp.concatenate([buffer, reward.mean(axis=1).astype(buffer.dtype)], axis=0)[-window:]


def episode_returns(
    reward: chex.Array, done: chex.Array, running: chex.Array
) -> tuple[chex.Array, chex.Array]:
    """Per-agent returns of the episodes a rollout completes.

    Args:
      reward: float32[T, E, N] per-agent rewards; done: bool[T, E], an episode ended on this step
        (its reward belongs to the ending episode); running: float32[E, N] each env's reward so far
        in the episode under way when the rollout started.
    Returns:
      (returns[T, E, N]: where ``done[t, e]``, the return of the episode env e ended at step t, else
      the partial return of env e's episode up to t; running'[E, N] for the next rollout).
    """
    chex.assert_rank(reward, 3)
    chex.assert_rank(done, 2)
    t = reward.shape[0]
    total = running[None] + jnp.cumsum(reward, axis=0)  # [T, E, N], as if no episode ended
    ends = jnp.where(done, jnp.arange(t)[:, None], -1)
    last_end = jax.lax.cummax(ends, axis=0)  # last step <= t that ended an episode, -1 if none
    before = jnp.concatenate([jnp.full_like(last_end[:1], -1), last_end[:-1]])  # ... strictly before t
    base = jnp.take_along_axis(total, jnp.maximum(before, 0)[..., None], axis=0)
    returns = total - jnp.where(before[..., None] >= 0, base, 0.0)
    return returns, jnp.where(done[-1][:, None], 0.0, returns[-1])


def push_episodes(
    buffer: chex.Array, episodes: chex.Array, returns: chex.Array, done: chex.Array
) -> tuple[chex.Array, chex.Array]:
    """Write the returns of the episodes that ended (``done[T, E]``) into the ring ``buffer[W, N]``.

    Episodes count in the order they ended: by step, then by env within a step; the k-th episode
    ever completed goes to row k mod W. When a rollout ends more than W episodes only its last W
    are written. ``returns[T, E, N]`` as from ``episode_returns``. Returns (buffer, episodes').
    """
    chex.assert_rank(buffer, 2)
    window = buffer.shape[0]
    flat_done = done.reshape(-1)
    rank = jnp.cumsum(flat_done) - 1  # [T * E] order of each ended episode within the rollout
    ended = flat_done.sum().astype(jnp.int32)
    keep = flat_done & (rank >= ended - window)  # at most W, on distinct rows
    row = jnp.where(keep, (episodes + rank) % window, window)  # window = dropped
    flat = returns.reshape(-1, returns.shape[-1]).astype(buffer.dtype)
    return buffer.at[row].set(flat, mode="drop"), episodes + ended


def interval_crossed(last_updates: chex.Array, updates: chex.Array, interval: int) -> chex.Array:
    """Whether the update count passed a multiple of ``interval`` since ``last_updates``: bool[]."""
    return updates // interval > last_updates // interval


def dispersion(banks: dict, bank_names: tuple[str, ...], keep: Callable[[tuple[str, ...]], bool]) -> chex.Array:
    """L2 distance of each row's selected parameters to the bank mean: ``banks[name][K, ...] -> [K]``.

    Leaves whose path fails ``keep`` are left out (e.g. PP-PPS's personal layers).
    """

    def row_sq(path, x):
        sq = jnp.square(x - x.mean(axis=0, keepdims=True)).reshape(x.shape[0], -1).sum(axis=1)
        return sq if keep(path) else jnp.zeros_like(sq)

    per_leaf = map_bank_tree({n: banks[n] for n in bank_names}, bank_names, row_sq)
    return jnp.sqrt(sum(jax.tree.leaves(per_leaf)))


def aggregate(
    state,
    bank_names: tuple[str, ...],
    weights: chex.Array,
    due: chex.Array,
    keep: Callable[[tuple[str, ...]], bool],
    target: str = "keep",
    moments: bool = False,
):
    """Where ``due``, replace the selected rows of every bank by their ``weights``-mean.

    Args:
      state: learner state with ``params``, ``target``, ``opt_state`` (banks ``[K, ...]``).
      weights: float32[K], summing to 1.
      due: bool[]; where False the state is returned unchanged.
      keep: path -> whether the leaf is aggregated (the rest stays per agent).
      target: "keep" (target untouched), "aggregate" (the target's rows averaged with the same
        weights) or "copy" (the target's selected rows set to the aggregated online rows).
      moments: whether the optimiser's moments of the selected rows are averaged too.
    """

    def fn(path, x):
        return jnp.where(due, weighted_mean_rows(x, weights), x) if keep(path) else x

    new = map_banks(state, bank_names, fn, target=target == "aggregate", moments=moments)
    if target == "copy" and isinstance(new.target, dict):  # a learner without target network (PQN): nothing to copy
        sel = map_bank_tree(new.params, bank_names, lambda path, x: keep(path))
        copied = {
            name: jax.tree.map(lambda s, o, t: jnp.where(due, o, t) if s else t, sel[name], new.params[name], sub)
            if name in bank_names else sub
            for name, sub in new.target.items()
        }
        new = new._replace(target=copied)
    return new


def make_pps(cfg: TrainConfig, spec: EnvSpec, hidden: int, num_masked_layers: int,
             bank_names: tuple[str, ...]) -> Scheme:
    """The PPS scheme named by ``cfg.alg`` (``pps_a``, ``pps_rs`` or ``pps_pp``) over the learner's banks."""
    del hidden, num_masked_layers
    alg, sc = cfg.alg, cfg.sharing
    if alg not in VARIANTS:
        raise ValueError(f"make_pps builds {VARIANTS}, not alg={alg!r}")
    n = spec.num_agents
    names = bank_names
    layers = shared_layers(alg, sc.pps_pp_boundary, sc.pps_pp_personal)

    def keep(path):
        return layer_of(path) in layers

    reward_weighted = alg == "pps_rs" or (alg == "pps_pp" and sc.pps_pp_weights == "reward")
    by_episode = sc.pps_window_unit == "episodes"
    num_envs = cfg.learner_cfg.num_envs

    def init(key):
        del key
        extra = PPSExtra(jnp.int32(0), jnp.zeros((sc.pps_window, n), jnp.float32),
                         jnp.zeros((num_envs, n), jnp.float32), jnp.int32(0))
        return SharingState(jnp.arange(n, dtype=jnp.int32), (), extra)

    def update(sharing, learner_state, traj, key, step, hidden0):
        del step, hidden0
        extra = sharing.extra
        chex.assert_shape(traj.reward, (None, num_envs, n))
        if by_episode:
            ended, running = episode_returns(traj.reward, traj.done, extra.running)
            rewards, episodes = push_episodes(extra.rewards, extra.episodes, ended, traj.done)
        else:
            rewards, running, episodes = push_rewards(extra.rewards, traj.reward), extra.running, extra.episodes
        returns = rewards.sum(axis=0)
        if reward_weighted:
            weights = reward_weights(returns, sc.pps_rs_weights, sc.pps_rs_temperature)
        else:
            weights = jnp.full((n,), 1.0 / n, jnp.float32)
        updates = learner_state.updates
        due = interval_crossed(extra.last_updates, updates, sc.pps_interval)
        before = dispersion(learner_state.params, names, keep)
        # Only the parameter trees travel through run_if (not the replay buffer), and the
        # aggregation runs only in the iterations where some seed is due.
        trees = learner_state._replace(buffer=None)
        trees = run_if(
            due, lambda t, k: aggregate(t, names, weights, due, keep, sc.pps_target, sc.pps_moments), trees, key
        )
        learner_state = learner_state._replace(params=trees.params, target=trees.target, opt_state=trees.opt_state)
        after = dispersion(learner_state.params, names, keep)
        metrics = {
            "pps_aggregated": due.astype(jnp.float32),
            "pps_dispersion": after.mean(),
            "pps_dispersion_pre": before.mean(),
            "pps_dispersion_agent": after,
            "pps_weight": weights,
            "pps_reward": returns,
        }
        if by_episode:
            metrics["pps_episodes"] = jnp.minimum(episodes, sc.pps_window)  # episodes in the buffer
        if alg == "pps_pp":
            metrics["pps_dispersion_personal"] = dispersion(learner_state.params, names, lambda p: not keep(p)).mean()
        return sharing._replace(extra=PPSExtra(updates, rewards, running, episodes)), learner_state, metrics

    return Scheme(SlotLayout(n, "identity", False), init, update)


# per-agent recurrent Q networks, averaged: the value learners' banks (the actor-critic ones are other networks)
_NEEDS = ("value_based", "recurrent")
# the paper's QMIX settings (its Table 1; psjax/configs/pps_smax.yaml), applied where not set (Method.defaults): soft
# target updates after every gradient step. Its window (96 episodes) and aggregation rules are SharingConfig's defaults
_PAPER = {"qmix": {"q.target_tau": 0.05}}
METHODS = (  # registered by psjax.catalog
    Method("pps_a", "per-agent networks, all layers averaged uniformly every pps_interval updates (A-PPS)", make_pps,
           needs=_NEEDS, defaults=_PAPER, options=PPSOptions),
    Method("pps_rs", "per-agent networks averaged with reward-share weights (RS-PPS)", make_pps, needs=_NEEDS,
           defaults=_PAPER, options=PPSOptions),
    Method("pps_pp", "per-agent networks, only the shared side of a layer boundary averaged (PP-PPS)", make_pps,
           needs=_NEEDS, defaults=_PAPER, options=PPSOptions),
)
