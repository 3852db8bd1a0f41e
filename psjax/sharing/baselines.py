"""The static baselines: no sharing (NoPS), full sharing (FuPS, FuPS+id) and selective neuron sharing
with random per-agent masks (SNP-PS). Their slots and masks are fixed at initialisation."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from psjax.envs.base import EnvSpec
from psjax.fields import doc_field as _f
from psjax.registry import Method
from psjax.schema import TrainConfig
from psjax.sharing.bank import SharingState, SlotLayout
from psjax.sharing.methods import Scheme, static_update


@dataclass(frozen=True)
class SNPOptions:
    """SNP-PS's options (``sharing.snp_*``)."""

    snp_keep_prob: float = _f(0.5, "SNP-PS: probability that a hidden unit is kept", min=0.0, max=1.0)


def make_nops(cfg: TrainConfig, spec: EnvSpec, hidden: int, num_masked_layers: int, bank_names) -> Scheme:
    """One network per agent: N slots, agent i on slot i."""
    del cfg, hidden, num_masked_layers, bank_names
    slots = jnp.arange(spec.num_agents, dtype=jnp.int32)
    return Scheme(SlotLayout(spec.num_agents, "identity", False), lambda key: SharingState(slots, ()), static_update)


def make_fups(cfg: TrainConfig, spec: EnvSpec, hidden: int, num_masked_layers: int, bank_names) -> Scheme:
    """One network for every agent (a plain batched apply, no gather)."""
    del cfg, hidden, num_masked_layers, bank_names
    slots = jnp.zeros(spec.num_agents, jnp.int32)
    return Scheme(SlotLayout(1, "shared", False), lambda key: SharingState(slots, ()), static_update)


def make_snp_ps(cfg: TrainConfig, spec: EnvSpec, hidden: int, num_masked_layers: int, bank_names) -> Scheme:
    """One network; each agent keeps each hidden unit with probability ``snp_keep_prob`` (fixed masks)."""
    del bank_names
    n, keep = spec.num_agents, cfg.sharing.snp_keep_prob
    slots = jnp.zeros(n, jnp.int32)

    def init(key):
        keys = jax.random.split(key, num_masked_layers)
        return SharingState(slots, tuple(jax.random.bernoulli(k, keep, (n, hidden)).astype(jnp.float32)
                                         for k in keys))

    return Scheme(SlotLayout(1, "shared", True), init, static_update)


METHODS = (  # registered by psjax.catalog
    Method("nops", "no sharing: one network per agent", make_nops),
    Method("fups", "full sharing: one network for all agents", make_fups),
    Method("fups_id", "full sharing with a one-hot agent id appended to the observations", make_fups,
           agent_id="onehot"),
    Method("snp_ps", "one network, fixed random per-agent unit masks (SNP-PS)", make_snp_ps,
           options=SNPOptions),
)
