"""Parameter banks: a network's parameters with a leading slot axis K.

Every agent has a slot index and optionally one hidden-unit mask per maskable
layer. Applying a network for all agents gathers each agent's slot and vmaps over
agents; when K = 1 (full sharing) the gather and the vmap disappear and the
network is applied once to the whole ``[..., N, D]`` batch.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp


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
    masks = sharing.masks if layout.masked else None
    if derive is None and layout.mode == "shared":
        # [N, H] masks broadcast against [..., N, H] activations: no gather, no vmap.
        return apply_fn(jax.tree.map(lambda p: p[0], bank), *xs, masks)
    if derive is not None:
        params, param_axes = derive(bank)
    else:
        params = bank if layout.mode == "identity" else jax.tree.map(lambda p: p[sharing.slots], bank)
        param_axes = 0
    xs = jax.tree.map(lambda x: jnp.moveaxis(x, -2, 0), xs)
    out = jax.vmap(apply_fn, in_axes=(param_axes,) + (0,) * (len(xs) + 1))(params, *xs, masks)
    return jax.tree.map(lambda o: jnp.moveaxis(o, 0, -2), out)
