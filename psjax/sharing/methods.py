"""Sharing schemes as data: each is a slot layout, an initial SharingState and an update rule (identity for
the static methods), built by a method's registry record (``psjax.registry``). See the table in
docs/methods.md.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import chex
import jax

from psjax import registry
from psjax.envs.base import EnvSpec
from psjax.schema import TrainConfig
from psjax.sharing.bank import SharingState, SlotLayout


class Scheme(NamedTuple):
    """A sharing method. ``update`` runs once per training iteration inside the jitted loop."""

    layout: SlotLayout
    init: Callable[[chex.PRNGKey], SharingState]
    # update(sharing, learner_state, traj, key, step, hidden0) -> (sharing, learner_state, metrics);
    # ``traj`` is the iteration's Transition [T, E, ...], ``step`` the env steps so far (after it), ``hidden0``
    # the agents' recurrent state at the rollout's start.
    # Banks inside ``learner_state`` are edited through ``psjax.sharing.bank_ops``.
    update: Callable
    # Hooks for a sharing structure trained by the learner's gradient (Kaleidoscope). None = no such
    # structure: the learner's program is exactly what it is without them. The learners reach them only
    # through the helpers below, never by asking which method they run.
    # init_params(key, banks {name: bank [K, ...]}) -> pytree of the method's trainable parameters,
    # kept in the learner's params["sharing"] (so they get gradients, Adam and target copies).
    init_params: Callable | None = None
    # agent_params(name, bank [K, ...], params["sharing"] or None, SharingState) -> (params, in_axes): every agent's
    # parameters
    # of bank ``name``, leaves [N, ...] where in_axes is 0, shared leaves (no slot axis) where it is None.
    agent_params: Callable | None = None
    # aux_loss = AuxLoss(init, loss): a term added to the learner's loss at every gradient step (Kaleidoscope's
    # diversity loss).
    aux_loss: AuxLoss | None = None
    # driven_by = Drive(measure, interval, act): a measurement the loop takes for the method and hands to ``act``
    # (MADPS restructures on the MAPD distance, DiCo rescales on SND). None = those measurements are only
    # metrics (``sharing.mapd_interval``, ``sharing.snd_interval``).
    driven_by: Drive | None = None
    # bank_network(name, net, layout) -> (module, layout): what the A2C / PPO learner applies bank ``name``'s
    # per-agent parameters (``agent_params``') with, and under which slot layout, given its network ``net`` (which
    # still initialises the bank) and the scheme's ``layout``. The module has flax's ``apply(params, *args,
    # method=None)`` (for a recurrent ``net`` also ``pre`` / ``cell`` / ``post`` and ``state_size``). DiCo: a shared
    # policy plus a scaled deviation; AdaPS: the critic without the masks. None = ``(net, layout)``.
    bank_network: Callable | None = None
    # Extra ``psjax.nets.agents.MLP`` fields the scheme asks of the A2C / PPO policy network (MADPS: three
    # hidden layers with named front / back blocks; DiCo: its output gain); empty = the learner's default actor.
    actor_options: dict | None = None


class Drive(NamedTuple):
    """A measurement taken inside the training loop for a method that acts on it (``Scheme.driven_by``)."""

    measure: str  # "mapd": the policy distance D [N, N] (psjax.sharing.mapd); "snd": the team's SND, a scalar
    interval: int  # training iterations between measurements (after the learner's update, before the scheme's)
    act: Callable  # act(sharing, learner_state, value, key) -> (sharing, learner_state)


MEASURES = ("mapd", "snd")


def driver(scheme: Scheme, measure: str) -> Drive | None:
    """The scheme's ``Drive`` when it is driven by ``measure`` ("mapd" / "snd"), else None."""
    assert measure in MEASURES, measure
    drive = scheme.driven_by
    return drive if drive is not None and drive.measure == measure else None


class AuxLoss(NamedTuple):
    """An auxiliary loss term with its own state, carried in the learner state's ``aux`` field."""

    init: Callable[[], Any]  # () -> loss state
    # loss(params, loss_state, main_loss) -> (term, loss_state, metrics); main_loss arrives without gradient
    loss: Callable


def init_sharing_params(scheme: Scheme, key: chex.PRNGKey, params: dict, names: tuple[str, ...]) -> dict:
    """``params`` plus ``params["sharing"]`` when the scheme trains parameters of its own."""
    if scheme.init_params is None:
        return params
    return {**params, "sharing": scheme.init_params(key, {name: params[name] for name in names})}


def bank_network(scheme: Scheme, name: str, net: Any) -> tuple[Any, SlotLayout]:
    """``(module, layout)`` the learner applies bank ``name`` with: the scheme's ``bank_network``, else ``net`` under
    the scheme's layout."""
    return (net, scheme.layout) if scheme.bank_network is None else scheme.bank_network(name, net, scheme.layout)


# key of ``params`` under which ``derive_for_acting`` keeps every bank's per-agent parameters
DERIVED = "derived_for_acting"


def agent_derive(scheme: Scheme, name: str, params: dict, sharing: SharingState | None = None) -> Callable | None:
    """The ``derive`` argument of ``apply_agents`` for bank ``name`` of ``params`` (None for most methods)."""
    if scheme.agent_params is None:
        return None
    if DERIVED in params:
        return lambda bank: params[DERIVED][name]
    return lambda bank: scheme.agent_params(name, bank, params.get("sharing"), sharing)


def derive_for_acting(scheme: Scheme, params: dict, names: tuple[str, ...], sharing: SharingState) -> dict:
    """``params`` plus every bank's per-agent parameters, derived once for a whole rollout.

    Parameters and sharing state are constant during a rollout, but ``agent_params`` (Kaleidoscope's
    per-agent masked weights, MADPS's gathered front and back) would otherwise be recomputed at every
    step: XLA does not hoist work out of a loop when the result is larger than its inputs (N copies of
    a bank). For acting only: gradients must flow through ``agent_params``, so updates never see this.
    """
    if scheme.agent_params is None:
        return params
    derived = {name: scheme.agent_params(name, params[name], params.get("sharing"), sharing) for name in names}
    return {**params, DERIVED: derived}


def init_aux_state(scheme: Scheme) -> Any:
    """The learner state's initial ``aux``: the auxiliary loss's state, ``()`` without one."""
    return () if scheme.aux_loss is None else scheme.aux_loss.init()


def add_aux_loss(scheme: Scheme, params: dict, aux_state: Any, main_loss: chex.Array):
    """``(main_loss + the scheme's term, aux_state', metrics)``; ``(main_loss, aux_state, {})`` without one."""
    if scheme.aux_loss is None:
        return main_loss, aux_state, {}
    term, aux_state, metrics = scheme.aux_loss.loss(params, aux_state, jax.lax.stop_gradient(main_loss))
    return main_loss + term, aux_state, metrics


def static_update(sharing, learner_state, traj, key, step, hidden0):
    """The update of a method whose slots and masks never change."""
    del traj, key, step, hidden0
    return sharing, learner_state, {}


def make_scheme(cfg: TrainConfig, spec: EnvSpec, hidden: int, num_masked_layers: int,
                bank_names: tuple[str, ...] | None = None) -> Scheme:
    """The scheme of the method ``cfg.alg`` names (its registry record's ``build_scheme``) for the agents of
    ``spec``. ``hidden`` and ``num_masked_layers`` describe the maskable layers of the agent network;
    ``bank_names`` are the learner's banks (default: those of the learner's own agent network)."""
    names = cfg.learner_kind.banks if bank_names is None else tuple(bank_names)
    return registry.get(cfg.alg).build_scheme(cfg, spec, hidden, num_masked_layers, names)
