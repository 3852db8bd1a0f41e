"""BDPS (seed 000): bi-level dynamic parameter sharing, an agent model under the QMIX / VDN learner.

Every agent's utility is ``Q_i = Q_U[role_i](tau_i) + Q_V[group_i](tau_i, h_U,i)`` with a bank of k role
networks and a bank of m group networks (RecurrentNet each). All k + m networks run for every agent and
the agent's role / group picks its outputs: batched matmuls instead of per-agent parameter gathers, and
exactly zero gradient for the networks nobody was assigned to. Each network keeps its own GRU state per
agent, so a switch continues from the network's own view of the episode. That is (k + m) x FuPS's agent
compute in the rollout and in every gradient step (measured on CPU, LBF 8x8 k = m = 2: unroll + gradient
about 6x FuPS's; BDPS's throughput about 0.2x FuPS+id's). ``bdps_shared_torso`` (a deviation, off by
default: the seed keeps the networks of different roles / groups apart) shares one Dense -> GRU torso
between all role and group networks and keeps per-role / per-group output heads (the group heads read
``[torso state, h_U]``): about FuPS's agent compute.

Roles and groups change inside episodes, per env and per agent, so they live in the rollout's recurrent
state (``hidden``), which the loop zeroes where an episode ends (roles, groups, counters and the
advantage history reset with the episode):

* step counter ``t``; every T_U steps (t % T_U == 0, so also at the first step) the GRU-VAE encodes the
  agent's last T_U advantages into h_U and a k-dim Gaussian; the role is the argmax of a sample, at
  evaluation too (seed section 3.1.1). The advantage is ``bdps_advantage``: ``taken`` = the seed's
  ``max_a Q_i - Q_i(a_t)``, exactly 0 on every greedy step (so at evaluation every window is all zeros and
  roles differ only through the sample's noise), or ``mean`` = ``max_a Q_i - mean Q_i`` over the available
  actions;
* every T_V = e * T_U steps the group selector (one-hot role -> MLP -> GAT over the living agents ->
  GRU) gives per-agent group values; groups are chosen epsilon-greedily with the action epsilon.

Training (one optimiser, summed losses, inside the learner's jitted update): the learner's TD loss on
Q_tot with the roles / groups / h_U stored per step in the replay items; ``bdps_vae_coef`` x the GRU-VAE
loss (MSE reconstruction of the stored T_U-step advantage windows + lambda KL); ``bdps_selector_coef``
x the selector's QMIX-style TD loss on its T_V-step returns (its own mixer). The selector only runs at the
stored choice steps, packed into a static number of slots per sequence (twice a long episode's choices,
+2); choices beyond the last slot (only with many episodes shorter than T_V) get no loss, counted by the
``sel_dropped`` metric.

Variants (the seed's ablation): ``bdps_role`` = individual level only (``Q_i = Q_U[role_i]``, no
group selector); ``bdps_team`` = team level only (``Q_i = Q_V[group_i]``): the role selector still runs,
because the group selector's inputs are the roles and the group networks read h_U.

Stored sequences: the step after a rollout (read only by targets) reuses the last step's roles, groups and
h_U (exact unless a choice falls on it); the selector's GRU, like the agents' GRUs, starts a stored
sequence from zeros unless ``q.stored_state``; a selector choice whose T_V window runs past the end of a
stored sequence gets no loss (its next choice was not stored). A step that ends an episode by time limit
bootstraps from the episode's last observation (``unroll``'s ``q_final``), read with that step's role, group
and h_U by the networks' states the step left behind (one batched pass after the sequence's scan).

With ``q.last_action`` every role / group network (or the shared torso) also reads the one-hot of the
agent's previous action (the seed's ``Q_U(tau, a_{t-1})``), kept in the rollout state as ``last_action``.

A living agent is one with more than one available action (SMAX leaves dead units only no-op);
in environments without deaths every agent is always alive.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any

import chex
import jax
import jax.numpy as jnp

from psjax.agent_model import AgentModel, with_last_action
from psjax.bootstrap import at_steps
from psjax.envs import make_env, num_agents
from psjax.envs.base import EnvSpec, team_reward
from psjax.fields import ConfigError
from psjax.fields import doc_field as _f
from psjax.nets.agents import RecurrentNet
from psjax.nets.bdps import AdvantageVAE, GroupSelector, QHead, Torso
from psjax.nets.mixers import QMixer, VDNMixer
from psjax.registry import Method
from psjax.schema import TrainConfig
from psjax.sharing.bank import SharingState, SlotLayout, init_bank
from psjax.sharing.methods import Scheme, static_update
from psjax.sharing.structure import type_ari


@dataclass(frozen=True)
class BDPSOptions:
    """BDPS's options (``sharing.bdps_*``)."""

    bdps_roles: int = _f(3, "BDPS: k, role networks; n >= k >= m >= 2", min=2)
    bdps_groups: int = _f(2, "BDPS: m, group networks (unused by bdps_role)", min=2)
    bdps_role_period: int = _f(5, "BDPS: T_U, episode steps between role choices; shorter than an episode "
                               "(paper: 5, 7, 8, 10 or 14)", min=1)
    bdps_group_factor: int = _f(2, "BDPS: e, groups are chosen every T_V = e * T_U steps (paper: 1 or 2)", min=1)
    bdps_shared_torso: bool = _f(False, "BDPS: one Dense -> GRU torso shared by the role and group networks, with "
                                        "per-role / per-group heads; a deviation from the paper's k + m networks, "
                                        "~FuPS's compute")
    bdps_kl_coef: float = _f(0.01, "BDPS: lambda, weight of the KL term of the GRU-VAE loss", min=0.0)
    bdps_vae_hidden: int = _f(32, "BDPS: GRU-VAE width; h_U (an extra input of the group networks) has this size",
                              min=1)
    bdps_embed: int = _f(64, "BDPS: group selector's role-embedding MLP width", min=1)
    bdps_gat_out: int = _f(128, "BDPS: GAT output width, split over its k heads (paper: 128)", min=1)
    bdps_selector_hidden: int = _f(64, "BDPS: group selector GRU state (paper: 64)", min=1)
    bdps_vae_coef: float = _f(1.0, "BDPS: weight of the GRU-VAE loss in the summed loss (one optimiser)", min=0.0)
    bdps_selector_coef: float = _f(1.0, "BDPS: weight of the group selector's TD loss in the summed loss", min=0.0)
    bdps_advantage: str = _f("taken", "BDPS: the advantage the role selector reads: taken = max_a Q - Q(a_t) (the "
                             "paper; exactly 0 on greedy steps), mean = max_a Q - mean Q over the available actions "
                             "(non-zero under greedy acting)", choices=("taken", "mean"))

MODES = {"bdps": "both", "bdps_role": "role", "bdps_team": "team"}
RECURRENT = ("role_h", "group_h", "torso_h")  # the agent networks' GRU states in the rollout state


def bank_names(alg: str) -> tuple[str, ...]:
    """The slot banks of ``params`` for a BDPS method: role networks and / or group networks."""
    mode = MODES[alg]
    return {"both": ("role", "group"), "role": ("role",), "team": ("group",)}[mode]


def make_scheme(cfg: TrainConfig, spec: EnvSpec, hidden: int, num_masked_layers: int,
                bank_names: tuple[str, ...]) -> Scheme:
    """BDPS's sharing lives in the agent model (roles / groups in the rollout state); the scheme is static."""
    del cfg, hidden, num_masked_layers, bank_names
    zero = jnp.zeros(spec.num_agents, jnp.int32)
    return Scheme(SlotLayout(1, "shared", False), lambda key: SharingState(zero, ()), static_update)


def episode_limit(cfg: TrainConfig) -> int:
    """The env's episode step limit (``env.time_limit`` or the env's default)."""
    if cfg.env.time_limit > 0:
        return cfg.env.time_limit
    return make_env(cfg.env).spec.max_steps


def fit_bdps_task(cfg: TrainConfig, given: frozenset[str]) -> dict[str, int]:
    """The structural defaults that fit ``cfg``'s task, for the fields not in ``given`` (``Method.fit_task``): for
    N agents and episodes of L steps, k = min(3, N) roles, m = min(2, k) groups, T_U = min(5, L - 1) and
    T_V = e T_U < L with e = min(2, (L - 1) // T_U) (the user's k and T_U where given); under QMIX the paper's
    epsilon schedule for the task (appendix G: 200k env steps on LBF, 70k on SMAC and elsewhere), ended by
    ``EPS_SHARE_OF_RUN`` of a shorter run (BDPS's 102,400-step default on LBF: 71,680). Where no value fits
    (N < 2, L < 2) none is given: ``check_bdps_config`` refuses the task."""
    n, limit = num_agents(cfg.env), episode_limit(cfg)
    fitted = {}

    def fit(field: str, value: int) -> int:  # the user's value where given, else ``value``
        path = f"sharing.{field}"
        if path in given:
            return getattr(cfg.sharing, field)
        fitted[path] = value
        return value

    if n >= 2:
        fit("bdps_groups", min(2, fit("bdps_roles", min(3, n))))
    if limit >= 2:
        t_u = fit("bdps_role_period", min(5, limit - 1))
        fit("bdps_group_factor", max(1, min(2, (limit - 1) // t_u)))
    if cfg.learner_name in PAPER_SETTINGS and "q.eps_decay_steps" not in given:  # the paper's appendix G schedules
        paper = 200_000 if cfg.env.name == "lbf" else 70_000  # LBF; SMAC (hard maps), others
        # a run shorter than the schedule would end still exploring (LBF at BDPS's default budget: epsilon 0.5)
        fitted["q.eps_decay_steps"] = min(paper, int(EPS_SHARE_OF_RUN * cfg.steps))
    return fitted


EPS_SHARE_OF_RUN = 0.7  # the fitted epsilon schedule ends by 70% of the run at the latest


def check_bdps_config(cfg: TrainConfig) -> None:
    """n >= k >= m >= 2, T_U and T_V shorter than an episode; else ConfigError (the learner, one with a team
    value to mix, is the records' ``needs``)."""
    sc = cfg.sharing
    mode = MODES[cfg.alg]
    n = num_agents(cfg.env)
    k, m = sc.bdps_roles, sc.bdps_groups
    if n < 2:
        raise ConfigError(f"alg={cfg.alg} needs at least 2 agents (n >= k >= m >= 2); the env has {n}; allowed: a "
                          f"task with 2 or more agents, or a method for any team, e.g. alg=fups_id")
    if not 2 <= k <= n:
        raise ConfigError(f"sharing.bdps_roles={k} is not allowed with {n} agents; allowed: 2..{n} (n >= k >= m >= 2)")
    if mode != "role" and not 2 <= m <= k:
        raise ConfigError(
            f"sharing.bdps_groups={m} is not allowed with bdps_roles={k}; allowed: 2..{k} (n >= k >= m >= 2)"
        )
    if sc.bdps_shared_torso and cfg.q.layer_norm:
        raise ConfigError("q.layer_norm=true with sharing.bdps_shared_torso=true: the shared torso has no "
                          "normalisation layer; allowed: q.layer_norm=false, or bdps_shared_torso=false")
    limit = episode_limit(cfg)
    t_u = sc.bdps_role_period
    t_v = t_u * sc.bdps_group_factor
    if limit < 2:
        raise ConfigError(f"alg={cfg.alg}'s selectors choose every T_U steps within an episode (1 <= T_U < its "
                          f"length), and this env's episodes last {limit} step; allowed: an env whose episodes last "
                          f"2 or more steps, or a method without periods, e.g. alg=fups_id")
    if t_u >= limit:
        raise ConfigError(f"sharing.bdps_role_period={t_u} must be shorter than the episode limit {limit}; "
                          f"allowed: 1..{limit - 1}")
    if mode != "role" and t_v >= limit:
        raise ConfigError(
            f"T_V = bdps_role_period x bdps_group_factor = {t_u} x {sc.bdps_group_factor} = {t_v} must be shorter "
            f"than the episode limit {limit}; allowed: bdps_group_factor 1..{(limit - 1) // t_u}"
        )


def entropy(logits: chex.Array) -> chex.Array:
    """Entropy of softmax(logits) over the last axis."""
    logp = jax.nn.log_softmax(logits, -1)
    return -(jnp.exp(logp) * logp).sum(-1)


def living(avail: chex.Array) -> chex.Array:
    """``avail[..., N, A] -> alive[..., N]``: more than one available action."""
    return avail.sum(-1) > 1


def advantage(q: chex.Array, avail: chex.Array, action: chex.Array, kind: str) -> chex.Array:
    """The role selector's per-step advantage, ``>= 0``: ``q[..., A], avail bool[..., A], action int[...] -> [...]``.

    ``taken`` (the seed, section 3.1.1): ``max_a Q - Q(a_t)``, exactly 0 whenever the greedy action is taken.
    ``mean``: ``max_a Q - mean Q`` over the available actions, 0 only where they all have one value.
    """
    best = jnp.max(jnp.where(avail, q, -jnp.inf), -1)
    reference = {
        "taken": lambda: jnp.take_along_axis(q, action[..., None], -1)[..., 0],
        "mean": lambda: jnp.where(avail, q, 0.0).sum(-1) / jnp.maximum(avail.sum(-1), 1),
    }[kind]()
    return best - reference


def draw_roles(key: chex.PRNGKey, mu: chex.Array, logvar: chex.Array) -> chex.Array:
    """``u = argmax z, z = mu + sigma * eps, eps ~ N(0, I)`` (seed section 3.1.1): ``mu[..., k] -> int[...]``.

    Drawn whether the actions are greedy or not: the VAE's mean alone gives every agent of the same advantage
    window (all zeros under greedy acting with ``taken``) the same role.
    """
    z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape)
    return jnp.argmax(z, -1).astype(jnp.int32)


def distinct_per_episode(value: chex.Array, start: chex.Array, done: chex.Array, num_values: int):
    """Distinct values (roles, groups) taken by any agent at any step of each episode that starts and ends
    inside a trajectory.

    ``value int[T, E, N]``, ``start bool[T, E]`` (the episode's first step), ``done bool[T, E]`` (its last) ->
    ``(count float[T, E], whole bool[T, E])``: the count at the step that ends an episode, ``whole`` where
    that episode also started inside the trajectory (counts elsewhere are meaningless).
    """
    used_t = jax.nn.one_hot(value, num_values, dtype=bool).any(-2)  # [T, E, K]

    def step(carry, inputs):
        used, inside = carry
        u, s, d = inputs
        used = jnp.where(s[:, None], u, used | u)
        inside = inside | s
        return (used, inside & ~d), (used.sum(-1).astype(jnp.float32), d & inside)

    init = (jnp.zeros_like(used_t[0]), jnp.zeros_like(start[0]))
    return jax.lax.scan(step, init, (used_t, start, done))[1]


def selector_targets(reward_t, done_t, choice_tp1, v_tp1, gamma, known_tp1=None, terminated_t=None):
    """Targets of the group selector's TD task along a stored sequence (time axis 0).

    A choice made at step t earns the rewards of its steps t, t+1, ... up to the step before the next
    choice (or the episode's last step), plus ``gamma`` x the next choice's mixed group value unless the
    episode ended first. ``y_t`` is that target for the segment that starts at t (read it where a choice
    was made); ``valid_t`` is False where the segment runs past the end of the sequence (the next choice's
    inputs are not stored): such choices get no loss.

    Shapes ``[T, ...]``: ``reward_t``, ``done_t`` (bool), ``choice_tp1`` (bool, a choice is made at step
    t+1; False on the last step) and ``v_tp1`` (max over groups of the mixed group value at step t+1);
    ``known_tp1`` (bool, default all True): whether that next choice's value was computed; a segment that
    ends at a choice whose value is not known is not valid either. ``terminated_t`` (bool, default
    ``done_t``): the episode ended in a terminal state. A segment cut by a time limit is not valid: its
    value goes on past the limit, and the selector's value there (the next choice, had the episode gone on)
    is not stored, so it gets no loss rather than a target that treats the limit as terminal.
    """
    chex.assert_equal_shape([reward_t, done_t, choice_tp1, v_tp1])
    known_tp1 = jnp.ones_like(choice_tp1) if known_tp1 is None else known_tp1
    terminated_t = done_t if terminated_t is None else terminated_t

    def step(carry, inputs):
        acc_next, valid_next = carry  # the segment value from step t+1 on, and whether it is complete
        r, d, term, c, v, known = inputs
        acc = r + jnp.where(d, 0.0, jnp.where(c, gamma * v, acc_next))
        valid = jnp.where(d, term, jnp.where(c, known, valid_next))
        return (acc, valid), (acc, valid)

    init = (jnp.zeros_like(reward_t[0]), jnp.zeros_like(done_t[0]))
    inputs = (reward_t, done_t, terminated_t, choice_tp1, v_tp1, known_tp1)
    _, (y, valid) = jax.lax.scan(step, init, inputs, reverse=True)
    return y, valid


def pick(q_all: chex.Array, idx: chex.Array) -> chex.Array:
    """``q_all[..., N, K, A], idx int[..., N] -> [..., N, A]``: each agent's own network (a one-hot sum, not
    a gather: its gradient is a product, not a scatter, and exactly zero for the networks not picked)."""
    return (q_all * jax.nn.one_hot(idx, q_all.shape[-2], dtype=q_all.dtype)[..., None]).sum(-2)


def choice_slots(seq: dict, resets: chex.Array, slots: int):
    """The stored choice steps packed into ``slots`` static slots per sequence (the selector only runs
    there): ``idx[P, B]`` (step of each slot; unused slots repeat step T), ``reset[P, B]`` (an episode
    started since the previous slot), ``rank[T+1, B]`` (slot of each step's latest choice) and
    ``computed[T+1, B]`` (a choice step that got a slot; choices past the last slot get no loss)."""
    due = seq["group_due"]
    t_len = due.shape[0]
    idx = jax.vmap(lambda d: jnp.nonzero(d, size=slots, fill_value=t_len - 1)[0], 1, 1)(due)
    started = jnp.take_along_axis(jnp.cumsum(resets, 0), idx, 0)
    reset = started > jnp.concatenate([jnp.zeros_like(started[:1]), started[:-1]], 0)
    rank = jnp.cumsum(due, 0) - 1
    return idx, reset, rank, due & (rank < slots)

def at_slots(x: chex.Array, idx: chex.Array) -> chex.Array:
    """``x[T+1, B, ...] -> [P, B, ...]``: the values at the choice slots' steps."""
    return jnp.take_along_axis(x, idx.reshape(*idx.shape, *[1] * (x.ndim - 2)), 0)

def from_slots(x: chex.Array, rank: chex.Array, slots: int) -> chex.Array:
    """``x[P, B, ...] -> [T+1, B, ...]``: each step gets its latest choice slot's value."""
    return jnp.take_along_axis(x, jnp.clip(rank, 0, slots - 1).reshape(*rank.shape, *[1] * (x.ndim - 2)), 0)


def change_rate(x: chex.Array, done: chex.Array) -> chex.Array:
    """Fraction of agent-steps whose value changed from the previous step of the same episode."""
    same = ~done[:-1, :, None]
    changed = (x[1:] != x[:-1]) & same
    return changed.sum() / jnp.maximum(same.sum() * x.shape[-1], 1)


def make_agent_model(cfg: TrainConfig, spec: EnvSpec) -> AgentModel:
    """BDPS's agent model for the QMIX / VDN learner (roles and groups are the model's own, not the scheme's)."""
    sc, qc = cfg.sharing, cfg.q
    mode = MODES[cfg.alg]
    use_roles, use_groups = mode != "team", mode != "role"
    n, num_actions = spec.num_agents, spec.num_actions
    k, m, t_u = sc.bdps_roles, sc.bdps_groups, sc.bdps_role_period
    t_v = t_u * sc.bdps_group_factor
    # choice slots per stored sequence (T + 1 steps) for the selector's loss: twice the choices of one long
    # episode, room for about one extra choice (episode start) per T_V steps; the metric sel_dropped says
    # how many choices found no slot
    slots = min(qc.rollout_len + 1, 2 * (-(-(qc.rollout_len + 1) // t_v)) + 2)
    hid, hid_u, hid_s = qc.hidden, sc.bdps_vae_hidden, sc.bdps_selector_hidden
    shared = sc.bdps_shared_torso
    # with q.last_action every network also reads the one-hot of the agent's previous action (the seed's
    # Q_U(tau, a_{t-1})), kept at acting time in the rollout state (zeros at an episode's start)
    in_dim = spec.obs_dim + (num_actions if qc.last_action else 0)
    net = RecurrentNet(hid, num_actions, obs_shape=spec.obs_shape, layer_norm=qc.layer_norm)
    torso, head = Torso(hid, spec.obs_shape), QHead(num_actions)
    vae = AdvantageVAE(t_u, k, hid_u)
    selector = GroupSelector(k, m, sc.bdps_embed, sc.bdps_gat_out, hid_s)
    sel_mixer = QMixer(n, qc.mixer_embed, qc.hypernet_hidden, qc.mixer_init_scale) if cfg.value_mixer == "qmix" \
        else VDNMixer()
    names = bank_names(cfg.alg)

    def init(key):
        k_vae, k_role, k_group, k_sel, k_mix = jax.random.split(key, 5)
        params = {"vae": vae.init(k_vae, k_vae, jnp.zeros((t_u,)))}
        if shared:  # one torso, a bank of output heads per level (the group heads also read h_U)
            params["torso"] = torso.init(jax.random.fold_in(k_vae, 1), jnp.zeros((hid,)), jnp.zeros((in_dim,)))
            role_net = lambda kk: head.init(kk, jnp.zeros((hid,)))  # noqa: E731
            group_net = lambda kk: head.init(kk, jnp.zeros((hid + hid_u,)))  # noqa: E731
        else:
            role_net = lambda kk: net.init(kk, jnp.zeros((hid,)), jnp.zeros((in_dim,)))  # noqa: E731
            group_net = lambda kk: net.init(kk, jnp.zeros((hid,)), jnp.zeros((in_dim + hid_u,)))  # noqa: E731
        if use_roles:
            params["role"] = init_bank(role_net, k_role, k)
        if use_groups:
            params["group"] = init_bank(group_net, k_group, m)
            params["selector"] = selector.init(
                k_sel, jnp.zeros((n, hid_s)), jnp.zeros((n,), jnp.int32), jnp.ones((n,), bool)
            )
            params["sel_mixer"] = sel_mixer.init(k_mix, jnp.zeros((n,)), jnp.zeros((spec.state_dim,)))
        return params

    def init_hidden(num_envs):
        e = num_envs
        h = {
            "t": jnp.zeros((e,), jnp.int32),  # steps into the episode
            "adv": jnp.zeros((e, n, t_u)),  # advantages of the last T_U steps, slot = step % T_U
            "role": jnp.zeros((e, n), jnp.int32),
            "h_u": jnp.zeros((e, n, hid_u)),  # the VAE's GRU state at the last role choice
        }
        if shared:
            h["torso_h"] = jnp.zeros((e, n, hid))  # the shared torso's GRU state
        elif use_roles:
            h["role_h"] = jnp.zeros((e, n, k, hid))  # GRU state of every role network for every agent
        if use_groups and not shared:
            h["group_h"] = jnp.zeros((e, n, m, hid))
        if use_groups:
            h["group"] = jnp.zeros((e, n), jnp.int32)
            h["sel_h"] = jnp.zeros((e, n, hid_s))  # the selector's GRU state
        if qc.last_action:
            h["last_action"] = jnp.zeros((e, n, num_actions))  # one-hot a_{t-1}; zeros = none
        return h

    def bank_q(bank, h, x):
        """Every network of ``bank`` [K, ...] for every agent: ``h[..., N, K, H], x[..., N, F] ->
        (h'[..., N, K, H], q[..., N, K, A])``."""
        h2, q = jax.vmap(lambda p, hh: net.apply(p, hh, x))(bank, jnp.moveaxis(h, -2, 0))
        return jnp.moveaxis(h2, 0, -2), jnp.moveaxis(q, 0, -2)

    def recur(params, h, obs, h_u):
        """The recurrent part of one step: ``(h', feats)``. Paper structure: feats are every network's utilities
        ``q_all [..., N, K, A]`` per level; shared torso: the torso's state ``[..., N, H]``."""
        h = dict(h)
        if shared:
            h["torso_h"] = torso.apply(params["torso"], h["torso_h"], obs)
            return h, h["torso_h"]
        feats = {}
        if use_roles:
            h["role_h"], feats["role"] = bank_q(params["role"], h["role_h"], obs)
        if use_groups:
            h["group_h"], feats["group"] = bank_q(params["group"], h["group_h"], jnp.concatenate([obs, h_u], -1))
        return h, feats

    def readout(params, feats, role, group, h_u):
        """Per-agent utilities from ``recur``'s feats (no recurrence: a whole sequence at once):
        ``(q[..., N, A], q_u, q_v)``, the two levels' parts zeros where absent."""
        if shared:  # every head of the bank on the shared features: one matmul per level
            heads = jax.vmap(head.apply, in_axes=(0, None), out_axes=-2)
            q_all = {}
            if use_roles:
                q_all["role"] = heads(params["role"], feats)
            if use_groups:
                q_all["group"] = heads(params["group"], jnp.concatenate([feats, h_u], -1))
        else:
            q_all = feats
        q_u = pick(q_all["role"], role) if use_roles else 0.0
        q_v = pick(q_all["group"], group) if use_groups else 0.0
        q = q_u + q_v
        zero = jnp.zeros_like(q)
        return q, q_u + zero, q_v + zero

    def utilities(params, h, obs, role, group, h_u):
        """``(h', q[..., N, A], q_u, q_v)``: the summed utilities and the two levels' parts (zeros if absent)."""
        h, feats = recur(params, h, obs, h_u)
        return (h, *readout(params, feats, role, group, h_u))

    def act(params, sharing, hidden, ts, key, choose, epsilon, greedy):
        del sharing, greedy  # greedy acting: epsilon is 0; roles are drawn all the same (seed section 3.1.1)
        k_role, k_explore, k_group, k_act = jax.random.split(key, 4)
        t = hidden["t"]
        # roles: every T_U steps from the advantages of the last T_U steps (a ring buffer, slot = step % T_U)
        mu, logvar, h_u_new = vae.apply(params["vae"], hidden["adv"], method=vae.encode)
        role_due = (t % t_u == 0)[:, None]
        role = jnp.where(role_due, draw_roles(k_role, mu, logvar), hidden["role"])
        h_u = jnp.where(role_due[..., None], h_u_new, hidden["h_u"])
        new = {**hidden, "role": role, "h_u": h_u}
        window = (t > 0) & (t % t_u == 0)  # a choice that reads T_U advantages of this episode
        extras = {"role": role, "h_u": h_u, "t": t, "window": window,
                  "window_nonzero": window[:, None] & jnp.any(hidden["adv"] != 0.0, -1)}
        if use_groups:  # groups: every T_V steps, from the roles just chosen
            group_due = t % t_v == 0
            sel_h, values = selector.apply(params["selector"], hidden["sel_h"], role, living(ts.avail_actions))
            explore = jax.random.uniform(k_explore, role.shape) < epsilon
            chosen = jnp.where(explore, jax.random.randint(k_group, role.shape, 0, m), jnp.argmax(values, -1))
            new["group"] = jnp.where(group_due[:, None], chosen.astype(jnp.int32), hidden["group"])
            new["sel_h"] = jnp.where(group_due[:, None, None], sel_h, hidden["sel_h"])
            extras.update(group=new["group"], group_due=group_due)
        obs = jnp.concatenate([ts.obs, hidden["last_action"]], -1) if qc.last_action else ts.obs
        nets, q, q_u, q_v = utilities(params, new, obs, role, new.get("group"), h_u)
        new.update({name: nets[name] for name in RECURRENT if name in nets})
        actions = choose(k_act, q)
        if qc.last_action:
            new["last_action"] = jax.nn.one_hot(actions, num_actions)
        adv = advantage(q, ts.avail_actions, actions, sc.bdps_advantage)
        slot = jax.nn.one_hot(t % t_u, t_u, dtype=bool)[:, None, :]
        new["adv"] = jnp.where(slot, adv[..., None], hidden["adv"])
        new["t"] = t + 1
        extras["adv"] = adv
        if mode == "both":
            extras["entropy_diff"] = entropy(q_v) - entropy(q_u)  # seed section 4.3: H(Q_V) - H(Q_U)
        return actions, new, extras

    def stored(num_steps):
        items = {"role": jnp.zeros((num_steps + 1, n), jnp.int32), "h_u": jnp.zeros((num_steps + 1, n, hid_u)),
                 "adv": jnp.zeros((num_steps + 1, n))}
        if use_groups:
            items.update(group=jnp.zeros((num_steps + 1, n), jnp.int32),
                         group_due=jnp.zeros((num_steps + 1,), bool))
        return items

    def unroll(params, sharing, hidden0, seq, resets):
        """``(q [T+1, B, N, A], q_final [K, B, N, A])`` (``AgentModel``): ``q_final[k]`` reads ``final_obs[k]``
        from the networks' states after the slot's step t (not reset), with step t's role, group and h_U, and
        a_t as the last action."""
        del sharing
        h0 = {name: hidden0[name] for name in RECURRENT if name in hidden0}
        obs, final_obs = seq["obs"], seq["final_obs"]
        if qc.last_action:
            obs, final_obs = with_last_action(seq, hidden0["last_action"], resets, num_actions)

        def step(h, inputs):  # only the recurrent part in the loop; the heads / picks run on the whole sequence
            o, h_u, reset = inputs
            h = jax.tree.map(lambda x: jnp.where(reset.reshape(-1, *[1] * (x.ndim - 1)), 0.0, x), h)
            h, feats = recur(params, h, o, h_u)
            h = {name: h[name] for name in h0}
            return h, (h, feats)

        _, (h, feats) = jax.lax.scan(step, h0, (obs, seq["h_u"], resets))
        group = seq.get("group")
        q = readout(params, feats, seq["role"], group, seq["h_u"])[0]
        # the pre-reset next observations at the time-limit slots, from the states those steps left behind
        at_slot = lambda x: at_steps(x[:-1], seq["final_step"])  # noqa: E731
        _, q_final, _, _ = utilities(params, jax.tree.map(at_slot, h), final_obs, at_slot(seq["role"]),
                                     None if group is None else at_slot(group), at_slot(seq["h_u"]))
        return q, q_final

    def vae_loss(params, seq, key):
        """MSE reconstruction of the stored advantages in T_U-step windows + lambda KL; windows that cross
        an episode end get no weight."""
        adv, done = seq["adv"][:-1], seq["done"]  # [T, B, N], [T, B]
        c = adv.shape[0] // t_u
        windows = jnp.moveaxis(adv[: c * t_u].reshape(c, t_u, *adv.shape[1:]), 1, -1)  # [C, B, N, T_U]
        within = ~jnp.any(done[: c * t_u].reshape(c, t_u, -1)[:, :-1], axis=1)  # [C, B]
        recon, mu, logvar, _ = vae.apply(params["vae"], key, windows)
        mse = ((recon - windows) ** 2).mean(-1)
        kl = -0.5 * (1.0 + logvar - mu**2 - jnp.exp(logvar)).sum(-1)
        weight = jnp.broadcast_to(within[..., None], mse.shape).astype(jnp.float32)
        denom = jnp.maximum(weight.sum(), 1.0)
        mse, kl = (weight * mse).sum() / denom, (weight * kl).sum() / denom
        return mse + sc.bdps_kl_coef * kl, {"vae_mse": mse, "vae_kl": kl}

    def selector_values(sel_params, hidden0, seq, slot_info):
        """Group values ``[P, B, N, m]`` at the choice slots, the selector's GRU advanced at choice steps only."""
        idx, reset, _, _ = slot_info

        # the GAT has no recurrence: all slots at once; only the GRU in the loop, the head after it
        x = selector.apply(sel_params, at_slots(seq["role"], idx), at_slots(living(seq["avail"]), idx),
                           method=selector.features)

        def step(h, inputs):
            x_s, reset_s = inputs
            h = selector.apply(sel_params, jnp.where(reset_s[:, None, None], 0.0, h), x_s, method=selector.recur)
            return h, h

        _, h = jax.lax.scan(step, hidden0["sel_h"], (x, reset))
        return selector.apply(sel_params, h, method=selector.values)

    def selector_loss(params, target, seq, hidden0, resets):
        slot_info = choice_slots(seq, resets, slots)
        idx, _, rank, computed = slot_info
        values = selector_values(params["selector"], hidden0, seq, slot_info)  # [P, B, N, m]
        values_target = selector_values(target["selector"], hidden0, seq, slot_info)
        # mixed at the slots only, then spread over the steps (read where a choice is made: step t's own
        # choice for the prediction, step t+1's for the target)
        state = at_slots(seq["state"], idx)
        chosen = jnp.take_along_axis(values, at_slots(seq["group"], idx)[..., None], -1)[..., 0]  # [P, B, N]
        pred = from_slots(sel_mixer.apply(params["sel_mixer"], chosen, state), rank, slots)[:-1]  # [T, B]
        v_next = from_slots(sel_mixer.apply(target["sel_mixer"], values_target.max(-1), state), rank, slots)[1:]
        due = seq["group_due"]
        choice_next = jnp.concatenate([due[1:-1], jnp.zeros_like(due[:1])], 0)  # step T's choice: not stored
        reward = team_reward(spec, seq["reward"])
        known_next = jnp.concatenate([computed[1:-1], jnp.zeros_like(computed[:1])], 0)
        y, valid = selector_targets(reward, seq["done"], choice_next, v_next, qc.gamma, known_next, seq["terminated"])
        weight = (computed[:-1] & valid).astype(jnp.float32)
        td = pred - jax.lax.stop_gradient(y)
        loss = (weight * td**2).sum() / jnp.maximum(weight.sum(), 1.0)
        dropped = (due[:-1] & ~computed[:-1]).sum() / jnp.maximum(due[:-1].sum(), 1)
        return loss, {"sel_loss": loss, "sel_q": (weight * pred).sum() / jnp.maximum(weight.sum(), 1.0),
                      "sel_dropped": dropped}

    def extra_loss(params, target, seq, hidden0, resets, key):
        loss, metrics = vae_loss(params, seq, key)
        total = sc.bdps_vae_coef * loss
        if use_groups:
            sel, sel_metrics = selector_loss(params, target, seq, hidden0, resets)
            total, metrics = total + sc.bdps_selector_coef * sel, {**metrics, **sel_metrics}
        return total, metrics

    def rollout_metrics(traj):
        ex = traj.extras
        def distinct(name, count):  # mean over the episodes inside the rollout; NaN when none ended there
            per_episode, whole = distinct_per_episode(ex[name], ex["t"] == 0, traj.done, count)
            episodes = whole.sum()
            return jnp.where(episodes > 0, (per_episode * whole).sum() / jnp.maximum(episodes, 1), jnp.nan)

        metrics = {
            "bdps_role": ex["role"][-1, 0], "bdps_role_change": change_rate(ex["role"], traj.done),
            "bdps_roles_distinct": distinct("role", k),  # distinct roles per episode
            # role choices whose T_U-step advantage window holds a non-zero advantage
            "bdps_adv_nonzero": ex["window_nonzero"].sum() / jnp.maximum(ex["window"].sum() * n, 1),
            # the agents' roles at every step against the task's kinds (adjusted Rand index), mean over steps
            "type_ari": type_ari(ex["role"], spec.agent_types, k).mean(),
        }
        if use_groups:
            metrics.update(bdps_group=ex["group"][-1, 0], bdps_group_change=change_rate(ex["group"], traj.done),
                           bdps_groups_distinct=distinct("group", m),
                           type_ari_group=type_ari(ex["group"], spec.agent_types, m).mean())
        if mode == "both":
            metrics["bdps_entropy_diff"] = ex["entropy_diff"].mean()
        return metrics

    return AgentModel(init, init_hidden, act, stored, unroll, extra_loss, rollout_metrics, names)


def greedy_rollout(program: Any, runner: Any, key: chex.PRNGKey, num_envs: int = 1):
    """``max_steps`` steps of ``runner`` (one seed's Runner) acting greedily (roles still drawn) in ``num_envs``
    fresh envs (``psjax.train.Program.episode``): the Transition ``[T, E, ...]`` (every env's first episode
    lies inside it)."""
    roll = jax.jit(lambda r, k: program.episode(r, k, num_envs, True)[0])
    return roll(runner, key)


def greedy_episode(program: Any, runner: Any, key: chex.PRNGKey) -> dict:
    """Roles and groups of every agent over one greedy episode of ``runner`` (one seed's Runner).

    Returns numpy arrays ``role [L, N]`` (and ``group [L, N]``), L = the episode's length.
    """
    import numpy as np

    traj = jax.device_get(greedy_rollout(program, runner, key))
    done = np.asarray(traj.done[:, 0])
    length = int(np.argmax(done)) + 1 if done.any() else len(done)
    return {name: np.asarray(traj.extras[name][:length, 0]) for name in ("role", "group") if name in traj.extras}


def greedy_metrics(cfg: TrainConfig, program: Any, runner: Any, key: chex.PRNGKey, num_envs: int = 32) -> dict:
    """The model's rollout metrics (``bdps_roles_distinct``, ``bdps_adv_nonzero``, change rates) over greedy
    episodes of ``runner`` (one seed's Runner, ``program``'s) in ``num_envs`` fresh envs: numpy arrays."""
    import numpy as np

    model = make_agent_model(cfg, program.spec)
    metrics = jax.jit(model.rollout_metrics)(greedy_rollout(program, runner, key, num_envs))
    return {name: np.asarray(value) for name, value in metrics.items()}


def plot_roles(run_dir: str | pathlib.Path, cfg: TrainConfig, runner: Any, program: Any,
               seed_index: int = 0) -> pathlib.Path | None:
    """``roles.png``: role (and group) of every agent at every step of one greedy episode of the first seed
    (greedy actions; roles drawn as in training). None without a program that plays episodes."""
    if getattr(program, "episode", None) is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    one = jax.tree.map(lambda x: x[seed_index], runner)
    data = greedy_episode(program, one, jax.random.PRNGKey(cfg.seed))
    spec_agents = data["role"].shape[1]
    fig, axes = plt.subplots(len(data), 1, figsize=(8, 1.0 + 0.4 * spec_agents * len(data)), squeeze=False)
    for ax, (name, values) in zip(axes[:, 0], data.items()):
        count = cfg.sharing.bdps_roles if name == "role" else cfg.sharing.bdps_groups
        ax.imshow(values.T, aspect="auto", interpolation="nearest", cmap="tab10", vmin=0, vmax=9)
        ax.set_ylabel("agent")
        ax.set_yticks(range(values.shape[1]))
        ax.set_title(f"{name} (0..{count - 1}) per agent, one greedy-action episode", fontsize=9)
    axes[-1, 0].set_xlabel("episode step")
    fig.tight_layout()
    path = pathlib.Path(run_dir) / "roles.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# The settings the paper runs BDPS with (QMIX), as psjax/configs/bdps_smax.yaml holds them and docs/changelog.md's BDPS
# figures use: applied by make_config to the fields a preset or an override does not set (Method.defaults). The
# periods and sizes (k, m, T_U, e) and the epsilon schedule (the paper's differs by task: 70k env steps on SMAC, 200k
# on LBF) are fit_bdps_task's; the selectors' widths are the SharingConfig defaults.
PAPER_SETTINGS = {"qmix": {
    "q.td_lambda": 0.6,  # TD(lambda) targets along stored sequences
    "q.updates_per_rollout": 8,  # gradient steps per 16 x 128 env steps (bdps_smax's; its reference runs too)
    "q.last_action": True,  # the role networks' Q_U(tau, a_{t-1}): agents read their previous action
}}
# BDPS costs about 5x FuPS+id per env step ((k + m) networks per agent in every gradient step): its default budget is
# half the schema's, so `make train ENV=smax ALG=bdps` finishes in about 6 minutes on an idle 2-core CPU (measured
# 2026-12-07: 6 min 17 s, final greedy win rate 0.41 on SMAX 3m; docs/results.md). The paper trains 2M-5M steps;
# compare / reproduce give every method one budget.
DEFAULTS = {"qmix": {**PAPER_SETTINGS["qmix"], "steps": 102_400}}  # 50 iterations of 16 x 128 env steps

METHODS = tuple(  # registered by psjax.catalog
    Method(name, doc, make_scheme, needs=("team_value",), check=check_bdps_config, agent_model=make_agent_model,
           pictures=(plot_roles,), fit_task=fit_bdps_task, defaults=DEFAULTS,
           options=BDPSOptions)
    for name, doc in (
        ("bdps", "bi-level dynamic sharing: k role and m group networks, chosen by a GRU-VAE and a GAT group "
                 "selector (BDPS)"),
        ("bdps_role", "BDPS's individual level only: role networks chosen by the GRU-VAE"),
        ("bdps_team", "BDPS's team level only: group networks chosen by the group selector"),
    )
)
