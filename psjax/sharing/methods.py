"""Sharing methods as data: each is a slot layout, an initial SharingState and an
update rule (identity for the static methods). See the table in docs/methods.md.
"""

from __future__ import annotations

import importlib
from typing import Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp

from psjax.config import METHODS, ConfigError, TrainConfig
from psjax.envs.base import EnvSpec
from psjax.sharing.bank import SharingState, SlotLayout


class Scheme(NamedTuple):
    """A sharing method. ``update`` runs once per training iteration inside the jitted loop."""

    layout: SlotLayout
    init: Callable[[chex.PRNGKey], SharingState]
    # update(sharing, learner_state, traj, key, step) -> (sharing, learner_state, metrics);
    # ``traj`` is the iteration's Transition [T, E, ...], ``step`` the env steps so far (after it).
    # Banks inside ``learner_state`` are edited through ``psjax.sharing.bank_ops``.
    update: Callable


def _static_update(sharing, learner_state, traj, key, step):
    del traj, key, step
    return sharing, learner_state, {}


# Methods with their own module: alg -> "module:builder", builder(cfg, spec, hidden, num_masked_layers).
# Imported lazily so that a method's dependencies load only when it is used.
DYNAMIC_BUILDERS: dict[str, str] = {}


def make_scheme(cfg: TrainConfig, spec: EnvSpec, hidden: int, num_masked_layers: int) -> Scheme:
    """Build the sharing scheme named by ``cfg.alg`` for the agents of ``spec``.

    ``hidden`` and ``num_masked_layers`` describe the maskable layers of the agent network.
    """
    alg = cfg.alg
    if alg in DYNAMIC_BUILDERS:
        module, builder = DYNAMIC_BUILDERS[alg].split(":")
        return getattr(importlib.import_module(module), builder)(cfg, spec, hidden, num_masked_layers)
    num_agents = spec.num_agents
    identity_slots = jnp.arange(num_agents, dtype=jnp.int32)
    zero_slots = jnp.zeros(num_agents, jnp.int32)
    if alg == "nops":
        return Scheme(
            SlotLayout(num_agents, "identity", False),
            lambda key: SharingState(identity_slots, ()),
            _static_update,
        )
    if alg in ("fups", "fups_id"):
        return Scheme(
            SlotLayout(1, "shared", False), lambda key: SharingState(zero_slots, ()), _static_update
        )
    if alg == "snp_ps":
        keep = cfg.sharing.snp_keep_prob

        def init(key):
            keys = jax.random.split(key, num_masked_layers)
            masks = tuple(
                jax.random.bernoulli(k, keep, (num_agents, hidden)).astype(jnp.float32) for k in keys
            )
            return SharingState(zero_slots, masks)

        return Scheme(SlotLayout(1, "shared", True), init, _static_update)
    raise ConfigError(f"unknown method alg={alg!r}; allowed: {', '.join(METHODS)}")
