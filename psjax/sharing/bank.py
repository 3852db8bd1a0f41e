"""Parameter banks: a network's parameters with a leading slot axis K.

Every agent has a slot index and optionally one hidden-unit mask per maskable
layer. Applying a network for all agents gathers each agent's slot and vmaps over
agents; when K = 1 (full sharing) the gather and the vmap disappear and the
network is applied once to the batch's agents as rows, ``[..., N, D] -> [M * N, D]``
(XLA's CPU backend multiplies plain matrices faster than ones with an agent axis apart).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np


class SlotLayout(NamedTuple):
    """Static part of a sharing scheme (hashable: it shapes the compiled program)."""

    num_slots: int  # K, rows of the bank
    mode: str  # "shared" (K=1), "identity" (K=N, agent i -> slot i, fixed), "indexed" (gather by slots)
    masked: bool  # whether agents carry hidden-unit masks


class SharingState(NamedTuple):
    """Dynamic part of a sharing scheme: what methods change during training."""

    slots: chex.Array  # int32[N] slot of each agent
    masks: tuple  # one float32[N, H] per maskable layer (empty when not masked)
    extra: Any = ()  # method-specific state (VAE parameters, counters, reward buffers, ...)
    distance: Any = ()  # the MAPD distance rounds' state (``psjax.sharing.mapd.with_distance``); () = none


def init_bank(init_fn: Callable[[chex.PRNGKey], Any], key: chex.PRNGKey, num_slots: int) -> Any:
    """Initialise ``num_slots`` independent copies: every leaf gets a leading [K] axis."""
    return jax.vmap(init_fn)(jax.random.split(key, num_slots))


class AgentParams(NamedTuple):
    """Every agent's parameters of one bank, ready to apply (``agent_params``)."""

    params: Any  # one set for all agents (``per_agent`` False) or leaves [N, ...] where ``axes`` says 0
    axes: Any  # vmap in_axes of ``params`` over agents (``per_agent`` only)
    masks: tuple | None  # [N, H] per maskable layer, or None
    per_agent: bool  # False: K = 1's one set, applied to the whole [..., N, D] batch at once, as rows


def agent_params(bank: Any, layout: SlotLayout, sharing: SharingState, derive: Callable | None = None) -> AgentParams:
    """The parameters each agent applies: the slot gather (or K = 1's single set, or ``derive``'s), done once
    so that an unroll reuses it at every step. Arguments as ``apply_agents``."""
    masks = sharing.masks if layout.masked else None
    if derive is None and layout.mode == "shared":
        return AgentParams(jax.tree.map(lambda p: p[0], bank), None, masks, False)
    if derive is not None:
        params, param_axes = derive(bank)
        return AgentParams(params, param_axes, masks, True)
    params = bank if layout.mode == "identity" else jax.tree.map(lambda p: p[sharing.slots], bank)
    return AgentParams(params, 0, masks, True)


def rows_masks(masks: tuple | None, copies: int) -> tuple | None:
    """``[N, H]`` masks for activations whose agents are rows of ``copies`` blocks (``[copies * N, H]``, row
    ``c * N + i`` is agent i), or None."""
    return None if masks is None else tuple(jnp.tile(m, (copies, 1)) for m in masks)


def apply_gathered(apply_fn: Callable, agents: AgentParams, *xs: Any):
    """``apply_fn(params, *xs, masks)`` for every agent with ``agents`` (``agent_params``): ``xs [..., N, F]`` ->
    outputs ``[..., N, F']``."""
    if not agents.per_agent:
        # one parameter set: every agent of every env is a row ([M * N, F]; masks tiled), no gather, no vmap
        lead = jax.tree.leaves(xs)[0].shape[:-1]  # [..., N]
        rows = int(np.prod(lead))
        masks = rows_masks(agents.masks, rows // lead[-1])
        out = apply_fn(agents.params, *jax.tree.map(lambda x: x.reshape(rows, *x.shape[len(lead):]), xs), masks)
        return jax.tree.map(lambda o: o.reshape(*lead, *o.shape[1:]), out)
    xs = jax.tree.map(lambda x: jnp.moveaxis(x, -2, 0), xs)
    out = jax.vmap(apply_fn, in_axes=(agents.axes,) + (0,) * (len(xs) + 1))(agents.params, *xs, agents.masks)
    return jax.tree.map(lambda o: jnp.moveaxis(o, 0, -2), out)


def apply_agents(
    apply_fn: Callable, bank: Any, layout: SlotLayout, sharing: SharingState, *xs: Any, derive: Callable | None = None
):
    """Apply ``apply_fn(params, *xs, masks)`` for every agent with its slot and masks.

    Args:
      apply_fn: network apply for one parameter set; inputs ``[..., D]``, masks ``[H]``-broadcastable.
      bank: parameters with leading slot axis [K].
      xs: pytrees of arrays ``[..., N, F]`` (agent axis second to last).
      derive: only for methods whose sharing structure is trained (``Scheme.agent_params``, bound to
        the learner's params by ``methods.agent_derive``): ``bank -> (params, in_axes)``, every agent's
        parameters derived from the bank; leaves are ``[N, ...]`` where ``in_axes`` says 0 and shared
        (no slot axis) where it says None. None leaves the program exactly as without it.
    Returns:
      the network outputs, each ``[..., N, F']``.
    """
    return apply_gathered(apply_fn, agent_params(bank, layout, sharing, derive), *xs)


def unroll_agents(net: Any, bank: Any, layout: SlotLayout, sharing: SharingState, h0: chex.Array, x: chex.Array,
                  resets: chex.Array, derive: Callable | None = None) -> tuple[chex.Array, chex.Array]:
    """A ``RecurrentNet`` bank unrolled for every agent along a sequence, the state zeroed where ``resets``.

    The layers before and after the GRU run on all T steps in one batched pass each; only the GRU step is
    scanned, and the agents' parameters are gathered once. The same numbers as stepping ``net`` T times, at a
    fraction of the cost: T small matmuls per layer become one large one (forward and backward).

    Args:
      net: a ``psjax.nets.agents.RecurrentNet`` (its ``pre``, ``cell`` and ``post``).
      h0: ``[B, N, H]`` states before the first step; x: ``[T, B, N, D]``; resets: bool ``[T, B]``, the
        steps that start from a zero state; bank, layout, sharing, derive: as ``apply_agents``.
    Returns:
      ``(h [T, B, N, H], out [T, B, N, O])``: the state each step left behind (before any reset) and the
      network's output at each step.
    """
    chex.assert_rank(h0, 3)
    chex.assert_equal_shape_prefix([x, resets], 2)
    agents = agent_params(bank, layout, sharing, derive)
    if not agents.per_agent:
        # one parameter set: the agents are rows like the batch's; a [B * N, F] matrix per step multiplies
        # faster on CPU than a [B, N, F] one (1.12x on recurrent IPPO), above all in the backward pass
        t_len, b_len, n_len = x.shape[:3]
        masks = rows_masks(agents.masks, b_len)
        features = net.apply(agents.params, x.reshape(t_len, b_len * n_len, *x.shape[3:]), masks, method="pre")

        def step(h, inputs):
            f, reset = inputs
            h = net.apply(agents.params, jnp.where(reset[:, None], 0.0, h), f, masks, method="cell")
            return h, h

        _, h = jax.lax.scan(step, h0.reshape(b_len * n_len, -1), (features, jnp.repeat(resets, n_len, axis=1)))
        out = net.apply(agents.params, h, masks, method="post")
        return h.reshape(t_len, b_len, n_len, -1), out.reshape(t_len, b_len, n_len, -1)

    # per-agent parameters: agent-major [N, T, B, ...] for the whole unroll, moved back once at the end
    in_axes = (agents.axes, 0, 0)
    masks = agents.masks
    features = jax.vmap(lambda p, xs, m: net.apply(p, xs, m, method="pre"), in_axes)(
        agents.params, jnp.moveaxis(x, 2, 0), masks)  # [N, T, B, F]
    cell = jax.vmap(lambda p, hh, ff, m: net.apply(p, hh, ff, m, method="cell"), (agents.axes, 0, 0, 0))

    def step(h, inputs):  # h [N, B, H]
        f, reset = inputs
        h = cell(agents.params, jnp.where(reset[None, :, None], 0.0, h), f, masks)
        return h, h

    _, h = jax.lax.scan(step, jnp.moveaxis(h0, 1, 0), (jnp.moveaxis(features, 0, 1), resets))  # h [T, N, B, H]
    out = jax.vmap(lambda p, hh, m: net.apply(p, hh, m, method="post"), in_axes)(
        agents.params, jnp.moveaxis(h, 1, 0), masks)  # [N, T, B, O]
    return jnp.moveaxis(h, 1, 2), jnp.moveaxis(out, 0, 2)
