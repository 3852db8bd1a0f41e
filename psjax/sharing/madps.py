"""MADPS: dynamic parameter sharing by policy distance (seed 003, Algorithm 1; code: Harry67Hu/MADPS).

The actor is the reference's: a front block ``obs -> 64 -> 64`` (the reference's shallow net, modules
``front_0``, ``front_1``, plus ``front_torso`` with image observations) and a back block ``64 -> 64 -> A``
(its deep net, ``back_0``, ``back_out``): MADPS asks the A2C / PPO learner for this three-hidden-layer ``MLP``
with named blocks (``actor_options``) and selects the blocks by those names. Every agent has a front slot
(``SharingState.extra.front``) and a back slot (``SharingState.slots``); the banks keep N rows, so any agent
can get a row of its own. At the start every front is shared (slot 0) and every back is the agent's own
(slot i). Critics follow the back slots.

Every ``schedule(cfg)[0]`` iterations (``sharing.madps_interval``; about 20k env steps by default)
the training loop runs a MAPD round (``psjax.sharing.mapd``) and hands the distance matrix D to
``restructure`` below, which visits the agent pairs i < j in index order (thresholds: fusion eps1,
division eps2 >= 2 eps1, back fusion eps0):

- same front slot, ``d_ij > eps2``: division; j gets its own front row (row j), a copy of the shared
  row (both front layers: parameters and Adam moments);
- same front slot, ``d_ij < eps0``: back fusion; j points at ``back[i]`` when ``D[back[i], j] < eps0``,
  else at i's back row from before the round;
- different front slots, ``d_ij < eps1``: front fusion; j points at ``front[i]`` (i's current network,
  ``Net^N(i)`` if i fused this round) when ``D[front[i], j] < eps1``, else at i's front row from before the
  round (``Net^O(i)``): the seed's second contradiction (i's new network may be too far from j although
  i itself is close). The reference code points j at row i there, which is i's own network only when
  i had one: after earlier fusions row i holds stale parameters (or the untrained initial row of an
  agent that never divided), so psjax takes i's network before the round instead. Distances
  ``D[k, j]`` of a slot k are those of agent k, as in the reference (slot k is agent k's row).

Each visiting agent i makes at most one change per round (the reference's ``break``); a re-pointing
that would leave the index unchanged is not a change. The first contradiction (``d_0 < eps1`` but
``2 d_0 > eps2``) cannot occur because the config requires ``eps2 >= 2 eps1`` (triangle inequality).
Fusion only re-points an index: nothing is averaged.

Defaults (``psjax/schema.py``; evidence in ``benchmarks/madps_init.py``): the reference's actor initialisation
(``madps_init=reference``: every layer orthogonal gain 0.5 plus N(0, 0.2) noise) and its thresholds
(eps0 / eps1 / eps2 = 0.25 / 0.5 / 1.0). The MAPD scale is the reference's: agents that learned different
behaviour (the typed env's two types) measure 0.8-1.9 and agents of one type fall below 0.1 within 10-20k A2C
steps under either initialisation, and these thresholds find the types. The initialisation sets the scale of
the first rounds only (0.15-0.6 under the reference's, 0.007-0.04 under psjax's near-uniform one), so rounds
before ``madps_start`` only measure; ``madps_rounds`` counts them too, ``madps_changes`` is 0 there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from psjax.envs.base import EnvSpec
from psjax.fields import ConfigError
from psjax.fields import doc_field as _f
from psjax.registry import Method
from psjax.schema import TrainConfig
from psjax.sharing.bank import SharingState, SlotLayout
from psjax.sharing.bank_ops import map_banks
from psjax.sharing.methods import Drive, Scheme
from psjax.sharing.report import sharing_picture_of
from psjax.sharing.structure import joint_labels, type_ari


@dataclass(frozen=True)
class MADPSOptions:
    """MADPS's options (``sharing.madps_*``); the distance itself is SharingConfig's ``mapd_*``."""

    madps_interval: int = _f(0, "MADPS: training iterations between distance rounds; 0 = the count nearest 20k env "
                                "steps (500 with A2C's 8 x 5, 10 with PPO's 16 x 128)", min=0)
    madps_start: int = _f(-1, "MADPS: training iterations before the first restructuring (earlier rounds only measure);"
                              " -1 = twice madps_interval (docs/config.md)", min=-1)
    madps_fuse_threshold: float = _f(0.5, "MADPS: eps1; agents on different front slots closer than this (Wasserstein) "
                                          "fuse their fronts; the reference code's 0.5 (docs/config.md)",
                                     min=0.0)
    madps_divide_threshold: float = _f(0.0, "MADPS: eps2; agents sharing a front farther apart than this divide; 0 = "
                                       "2 * eps1 (must be >= 2 * eps1, the seed's first contradiction)", min=0.0)
    madps_back_threshold: float = _f(0.0, "MADPS: eps0; agents sharing a front closer than this fuse their backs "
                                     "(for good: identical networks stay at distance 0); 0 = eps1 / 2", min=0.0)
    madps_init: str = _f("reference", "MADPS: actor initialisation: reference = orthogonal gain 0.5 plus N(0, 0.2) "
                                      "noise (the reference code's default); psjax = psjax's other actors "
                                      "(docs/config.md)",
                         choices=("psjax", "reference"))


class MADPSExtra(NamedTuple):
    """``SharingState.extra`` of MADPS (the back slots are ``SharingState.slots``)."""

    front: chex.Array  # int32[N] front slot of every agent
    rounds: chex.Array  # int32[] restructuring rounds so far
    changes: chex.Array  # int32[] changes made by the last round


class Restructured(NamedTuple):
    front: chex.Array  # int32[N]
    back: chex.Array  # int32[N]
    copy_from: chex.Array  # int32[N] row j of the front block becomes the pre-round row copy_from[j]; -1 = kept
    changed: chex.Array  # bool[N] agent i (as the visiting agent) made its change this round


def thresholds(cfg: TrainConfig) -> tuple[float, float, float]:
    """``(eps0, eps1, eps2)`` from the config: back fusion, fusion, division."""
    sc = cfg.sharing
    eps1 = sc.madps_fuse_threshold
    eps2 = sc.madps_divide_threshold or 2.0 * eps1
    eps0 = sc.madps_back_threshold or 0.5 * eps1
    return eps0, eps1, eps2


def check_madps_config(cfg: TrainConfig) -> None:
    """Config rules of MADPS (its record's ``check``; the learner, an actor to split, is its ``needs``); raises
    ConfigError."""
    eps0, eps1, eps2 = thresholds(cfg)
    if eps2 < 2.0 * eps1:
        raise ConfigError(
            f"sharing.madps_divide_threshold={eps2} is below 2 * madps_fuse_threshold = {2.0 * eps1}: two agents "
            "each within eps1 of a third could then be asked to fuse and to divide at once; allowed: >= 2 * eps1 "
            "(or 0 for exactly 2 * eps1)"
        )
    if eps0 > eps1:
        raise ConfigError(f"sharing.madps_back_threshold={eps0} is above madps_fuse_threshold={eps1}; allowed: <= eps1")


def restructure(d: chex.Array, front: chex.Array, back: chex.Array, eps0: float, eps1: float,
                eps2: float) -> Restructured:
    """One round of fusion / division (Algorithm 1 of the seed, as the reference code runs it).

    Args:
      d: ``[N, N]`` policy distances (row / column k also stands for slot k: slot k is agent k's row).
      front, back: ``int32[N]`` slot indices before the round.
      eps0, eps1, eps2: back-fusion, fusion and division thresholds.
    Returns:
      the new indices and the front rows to copy (divisions), see ``Restructured``.
    """
    n = d.shape[0]
    chex.assert_shape(d, (n, n))
    chex.assert_shape([front, back], (n,))
    front0, back0 = front.astype(jnp.int32), back.astype(jnp.int32)  # i's networks before the round (Net^O(i))

    def visit(i, carry):
        def pair(j, carry):
            front, back, copy_from, done = carry
            active = (j > i) & ~done
            same = front[i] == front[j]
            dij = d[i, j]
            divide = active & same & (dij > eps2) & (front[j] != j)
            back_to = jnp.where(d[back[i], j] < eps0, back[i], back0[i])
            fuse_back = active & same & (dij < eps0) & (back[j] != back_to)
            front_to = jnp.where(d[front[i], j] < eps1, front[i], front0[i])
            fuse_front = active & ~same & (dij < eps1) & (front[j] != front_to)
            # the shared row as it stands now: if it was itself filled by a copy this round, copy its source
            source = jnp.where(copy_from[front[j]] >= 0, copy_from[front[j]], front[j])
            copy_from = copy_from.at[j].set(jnp.where(divide, source, copy_from[j]))
            front = front.at[j].set(jnp.where(divide, j, jnp.where(fuse_front, front_to, front[j])))
            back = back.at[j].set(jnp.where(fuse_back, back_to, back[j]))
            return front, back, copy_from, done | divide | fuse_back | fuse_front

        front, back, copy_from, changed = carry
        front, back, copy_from, done = jax.lax.fori_loop(
            0, n, pair, (front, back, copy_from, jnp.zeros((), jnp.bool_))
        )
        return front, back, copy_from, changed.at[i].set(done)

    init = (front.astype(jnp.int32), back.astype(jnp.int32), jnp.full((n,), -1, jnp.int32), jnp.zeros(n, bool))
    front, back, copy_from, changed = jax.lax.fori_loop(0, n, visit, init)
    return Restructured(front, back, copy_from, changed)


# The MADPS actor's modules (``psjax.nets.agents.MLP`` names): the conv torso (image observations only), the
# front block obs -> 64 -> 64 and the back block 64 -> 64 -> A, as in the reference's shallow / deep nets.
DEFAULT_INTERVAL_STEPS = 20_000  # env steps between distance rounds when madps_interval = 0
FRONT = ("front_torso", "front_0", "front_1")
BACK = ("back_0", "back_out")


def actor_options(cfg: TrainConfig) -> dict:
    """Extra ``MLP`` fields MADPS asks of the A2C / PPO actor (``Scheme.actor_options``): three hidden layers
    with named blocks and its initialisation (``sharing.madps_init``)."""
    return {"depth": len(FRONT) - 1 + len(BACK) - 1, "names": FRONT + BACK, "init_style": cfg.sharing.madps_init}


def front_layers(bank: Any) -> frozenset[str]:
    """The modules of the actor's front block present in ``bank`` (selected by their names, ``FRONT``)."""
    names = frozenset(k for k in bank["params"] if k in FRONT)
    if not set(FRONT[1:]) <= names or not set(BACK) <= set(bank["params"]):
        raise ValueError(f"MADPS needs an actor with modules {FRONT + BACK} (madps.actor_options), got "
                         f"{sorted(bank['params'])}")
    return names


def _layer(path: tuple[str, ...]) -> str:
    """The module of a bank leaf: ``("params", module, ..., leaf)`` -> module."""
    return path[1] if len(path) > 1 and path[0] == "params" else ""


def copy_front_rows(learner_state: Any, copy_from: chex.Array, front: frozenset[str]) -> Any:
    """Row j of the actor's front layers := pre-round row ``copy_from[j]`` where it is >= 0, in the
    parameters and the Adam moments (A2C / PPO have no target network)."""
    rows = jnp.where(copy_from >= 0, copy_from, jnp.arange(copy_from.shape[0]))

    def fn(path, x):
        return x[rows] if _layer(path) in front else x

    return map_banks(learner_state, ("actor",), fn, target=False, moments=True)


def distinct(slots: chex.Array) -> chex.Array:
    """Number of distinct values in ``int32[N]`` (values in 0..N-1)."""
    n = slots.shape[0]
    return (slots[None, :] == jnp.arange(n)[:, None]).any(-1).sum().astype(jnp.int32)


def schedule(cfg: TrainConfig) -> tuple[int, int]:
    """MADPS's (interval, start) in training iterations, the automatic defaults resolved."""
    sc = cfg.sharing
    interval = sc.madps_interval or max(1, round(DEFAULT_INTERVAL_STEPS / cfg.steps_per_iteration))
    start = sc.madps_start if sc.madps_start >= 0 else 2 * interval
    return interval, start


def make_madps(cfg: TrainConfig, spec: EnvSpec, hidden: int, num_masked_layers: int,
               bank_names: tuple[str, ...]) -> Scheme:
    """The MADPS scheme: N rows per bank (``indexed``), per-agent front / back slots."""
    del hidden, num_masked_layers, bank_names
    check_madps_config(cfg)
    n = spec.num_agents
    eps0, eps1, eps2 = thresholds(cfg)
    interval, start = schedule(cfg)

    def init(key):
        del key
        extra = MADPSExtra(jnp.zeros(n, jnp.int32), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))
        return SharingState(jnp.arange(n, dtype=jnp.int32), (), extra)

    def agent_params(name, bank, owned, sharing):
        del owned
        back = sharing.slots
        if name != "actor":  # critics follow the back slots
            return jax.tree.map(lambda x: x[back], bank), 0
        front, fl = sharing.extra.front, front_layers(bank)
        params = jax.tree_util.tree_map_with_path(
            lambda p, x: x[front] if _layer(tuple(getattr(k, "key", "") for k in p)) in fl else x[back], bank
        )
        return params, 0

    def apply_distance(sharing, learner_state, d, key):
        del key
        extra = sharing.extra
        rounds = extra.rounds + 1
        # rounds before madps_start only measure: the policies all start near-uniform and near-identical
        act = rounds * interval >= start
        out = restructure(d, extra.front, sharing.slots, eps0, eps1, eps2)
        copy_from = jnp.where(act, out.copy_from, -1)
        learner_state = copy_front_rows(learner_state, copy_from, front_layers(learner_state.params["actor"]))
        front, back = jnp.where(act, out.front, extra.front), jnp.where(act, out.back, sharing.slots)
        extra = MADPSExtra(front, rounds, jnp.where(act, out.changed.sum(), 0).astype(jnp.int32))
        return sharing._replace(slots=back, extra=extra), learner_state

    def update(sharing, learner_state, traj, key, step, hidden0):
        del traj, key, step, hidden0
        extra = sharing.extra
        metrics = {
            "madps_front_slots": distinct(extra.front),
            "madps_back_slots": distinct(sharing.slots),
            "madps_front": extra.front,
            "madps_back": sharing.slots,
            "madps_rounds": extra.rounds,
            "madps_changes": extra.changes,
            # the agents' partitions against the task's kinds: by front, by back, and by policy (front and back)
            "type_ari_front": type_ari(extra.front, spec.agent_types, n),
            "type_ari_back": type_ari(sharing.slots, spec.agent_types, n),
            "type_ari": type_ari(joint_labels(extra.front, sharing.slots, n), spec.agent_types, n * n),
        }
        return sharing, learner_state, metrics

    return Scheme(
        SlotLayout(n, "indexed", False), init, update, agent_params=agent_params,
        driven_by=Drive("mapd", interval, apply_distance), actor_options=actor_options(cfg),
    )


def front_back_tables(rows: list[dict]) -> dict | None:
    """sharing.png's table (``report.sharing_tables``): every seed's final front and back slots (from its last
    logged row) as the table's rows (None without them);
    ``mean_overlap`` = fraction of agent pairs on the same front slot."""
    n = sum(1 for k in rows[0] if k.startswith("madps_front["))
    if not n:
        return None
    front = np.array([[r[f"madps_front[{i}]"] for i in range(n)] for r in rows], dtype=int)
    back = np.array([[r[f"madps_back[{i}]"] for i in range(n)] for r in rows], dtype=int)
    same = (front[:, :, None] == front[:, None, :]).sum((1, 2)) - n
    return {
        "seeds": [r["seed"] for r in rows],
        "cluster": np.stack([front, back], 1).reshape(-1, n),
        "row_labels": [f"seed {r['seed']} {part}" for r in rows for part in ("front", "back")],
        "title": "final front / back slot per agent",
        "overlap": None,
        "mean_overlap": same / max(n * (n - 1), 1),
        "env_steps": [r["env_steps"] for r in rows],
    }


METHODS = (  # registered by psjax.catalog
    Method("madps", "actor split into front / back blocks with per-agent slots, fused and divided by the MAPD "
           "policy distance (MADPS)", make_madps, default_learner="a2c", needs=("policy",), check=check_madps_config,
           pictures=(sharing_picture_of(front_back_tables),), options=MADPSOptions),
)
