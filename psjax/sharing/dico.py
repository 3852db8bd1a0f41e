"""DiCo, Diversity Control (Bettini et al., "Controlling Behavioral Diversity in Multi-Agent RL", 2024; code:
proroklab/ControllingBehavioralDiversity): a shared policy plus per-agent deviation networks, the deviations
rescaled so that the team's System Neural Diversity (SND) equals a chosen target.

Agent i acts on the logits

    l_i(o) = l_shared(o) + s * dev_i(o),      s = dico_snd / SND_dev,

where ``SND_dev`` is the SND of the deviations alone (``psjax.sharing.snd``: the Aitchison distance between
action distributions, the discrete form psjax uses for the paper's Wasserstein distance between Gaussian actions).
The shared logits cancel between two agents on one observation and the distance scales with the logits, so the
final policies' SND is exactly ``s * SND_dev = dico_snd`` on the observations it was measured on.

As psjax builds it (the reference's choices where they apply):
- The actor bank holds the deviation networks, one slot per agent (NoPS's layout), the critic bank one critic
  per agent (the reference's ``share_param_critic: False``); the shared policy network lives in
  ``params["sharing"]["policy"]`` (a fresh draw of psjax's initialisation of the actor). Both get gradients
  through the final logits; ``s`` is a constant within an update (a stop-gradient), so PPO's ratio starts from
  exactly the policy that acted.
- ``SND_dev`` is measured once per iteration after the learner's update (``snd.with_snd``: every agent's actor
  on every agent's observations at ``sharing.snd_rows`` steps of the rollout) and soft-updated with
  ``dico_tau``; the reference measures it in every training forward pass (``tau`` 0.01, gradient through the
  new term). The first rollout acts with ``s = 1``, as the reference's first iteration does.
- ``dico_snd = 0`` keeps ``s = 0`` (the shared policy alone), ``-1`` keeps ``s = 1`` (unconstrained).
- No agent id in the observations: the shared policy must be the same function for every agent, or its
  logits would not cancel (``env.agent_id`` other than none / auto is refused).
- Feed-forward or recurrent actors (``DeviationActor``): a recurrent agent carries the deviation's and the
  shared policy's GRU states side by side. Not with ``ac.shared_torso`` (its critic head would read both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp

from psjax.envs.base import EnvSpec
from psjax.fields import ConfigError
from psjax.fields import doc_field as _f
from psjax.nets.init import redraw_like
from psjax.registry import Method
from psjax.schema import TrainConfig
from psjax.sharing.bank import SharingState, SlotLayout
from psjax.sharing.methods import Drive, Scheme
from psjax.sharing.report import plot_snd


@dataclass(frozen=True)
class DiCoOptions:
    """DiCo's options (``sharing.dico_*``)."""

    dico_snd: float = _f(1.0, "DiCo: the team's target System Neural Diversity (Aitchison distance between action "
                              "distributions); 0 = the shared policy alone, -1 = unconstrained deviations", min=-1.0)
    dico_tau: float = _f(1.0, "DiCo: soft-update weight of the deviations' SND estimate, measured once per iteration "
                         "after the update (1 = the latest measurement; the reference's 0.01 updates at every "
                         "forward pass)", min=0.0, max=1.0)
    dico_init_gain: float = _f(1.0, "DiCo: orthogonal gain of the output layer of the shared policy and deviations; 1.0"
                                    " keeps the first rescale near s = 1, as the reference; 0.01 = psjax before issue "
                                    "39", min=0.0)

POLICY = "policy"  # key of params["sharing"] holding the shared policy network
DEVIATION, SHARED, SCALE = "deviation", "shared", "scale"  # the parts of one agent's actor parameters
MIN_SND = 1e-8  # below this the deviations are one function: no scale reaches a positive target


class DicoState(NamedTuple):
    """DiCo's part of the sharing state (``SharingState.extra``; one seed)."""

    scale: chex.Array  # float32[] s, the factor on every agent's deviation logits
    estimate: chex.Array  # float32[] the deviations' SND estimate (NaN before the first measurement)


class DeviationActor(NamedTuple):
    """The actor network DiCo applies for one agent: ``net`` twice on one input, the shared policy and the agent's
    deviation, with parameters ``{"deviation": ..., "shared": ..., "scale": float32[]}`` (the scheme's
    ``agent_params``) and logits ``shared(x) + scale * deviation(x)``. A recurrent ``net`` (``RecurrentNet``)
    carries both networks' states side by side, ``h[..., 2H] = [h_deviation, h_shared]``; its ``pre`` / ``cell``
    features stack the same way, so ``bank.unroll_agents`` scans both GRUs in one step. Masks reach the deviation
    only (the shared policy is one function for every agent)."""

    net: Any  # psjax.nets.agents.MLP or RecurrentNet
    recurrent: bool

    @property
    def state_size(self) -> int:
        return 2 * self.net.state_size

    def apply(self, params: dict, *args, method: str | None = None):
        if method is None:
            method = "step" if self.recurrent else "forward"
        return getattr(self, "_" + method)(params, *args)

    def _net(self, params, key, *args, masks=None, method=None):
        kwargs = {} if method is None else {"method": method}
        return self.net.apply(params[key], *args, masks if key == DEVIATION else None, **kwargs)

    def _logits(self, params, deviation, shared):
        return shared + params[SCALE] * deviation

    def _forward(self, params, x, masks=None):
        """Feed-forward: ``x[..., D] -> logits[..., A]``."""
        return self._logits(params, self._net(params, DEVIATION, x, masks=masks), self._net(params, SHARED, x))

    def _step(self, params, h, x, masks=None):
        """One recurrent step: ``h[..., 2H], x[..., D] -> (h'[..., 2H], logits[..., A])``."""
        h = self._cell(params, h, self._pre(params, x, masks), masks)
        return h, self._post(params, h, masks)

    def _pre(self, params, x, masks=None):
        """``x[..., D] -> [..., 2F]``: both networks' layers before the GRU."""
        return jnp.concatenate([self._net(params, DEVIATION, x, masks=masks, method="pre"),
                                self._net(params, SHARED, x, method="pre")], -1)

    def _cell(self, params, h, f, masks=None):
        """``h[..., 2H], f[..., 2F] -> h'[..., 2H]``: both GRU steps."""
        (h_dev, h_shared), (f_dev, f_shared) = jnp.split(h, 2, -1), jnp.split(f, 2, -1)
        return jnp.concatenate([self._net(params, DEVIATION, h_dev, f_dev, masks=masks, method="cell"),
                                self._net(params, SHARED, h_shared, f_shared, method="cell")], -1)

    def _post(self, params, h, masks=None):
        """``h[..., 2H] -> logits[..., A]``."""
        h_dev, h_shared = jnp.split(h, 2, -1)
        return self._logits(params, self._net(params, DEVIATION, h_dev, masks=masks, method="post"),
                            self._net(params, SHARED, h_shared, method="post"))


def initial_scale(target: float) -> float:
    """``s`` for the first rollout: 0 for target 0, else 1 (the reference's first iteration)."""
    return 0.0 if target == 0 else 1.0


def rescale(state: DicoState, snd: chex.Array, target: float, tau: float) -> DicoState:
    """The state after a measurement ``snd`` of the final policies' SND (made with ``state.scale``): the
    deviations' SND ``snd / scale`` soft-updated into the estimate, and ``s = target / estimate``.

    Target 0 keeps ``s = 0`` and -1 keeps ``s = 1``; a non-finite measurement or an estimate of ~0 (deviations
    that are all one function) keeps the previous ``s``."""
    if target == 0:
        return state
    deviation = snd / state.scale
    ok = jnp.isfinite(deviation)
    first = jnp.isnan(state.estimate)
    estimate = jnp.where(first, deviation, (1.0 - tau) * state.estimate + tau * deviation)
    estimate = jnp.where(ok, estimate, state.estimate)
    if target < 0:
        return DicoState(state.scale, estimate)
    scale = jnp.where(ok & (estimate > MIN_SND), target / jnp.maximum(estimate, MIN_SND), state.scale)
    return DicoState(scale.astype(jnp.float32), estimate.astype(jnp.float32))


def check_dico_config(cfg: TrainConfig) -> None:
    """DiCo's config rules (its record's ``check``; an actor-critic learner is its ``needs``)."""
    sc = cfg.sharing
    if -1.0 < sc.dico_snd < 0.0:
        raise ConfigError(f"sharing.dico_snd={sc.dico_snd} is not a target; allowed: >= 0 (the team's SND), "
                          "or -1 (unconstrained deviations)")
    if sc.dico_tau <= 0.0:
        raise ConfigError(f"sharing.dico_tau={sc.dico_tau} would never update the SND estimate; allowed: (0, 1]")
    if cfg.ac.shared_torso:
        raise ConfigError("alg=dico with ac.shared_torso=true: the critic would read the shared policy's and the "
                          "deviation's states together; allowed: false")
    if cfg.env.agent_id not in ("auto", "none"):
        raise ConfigError(f"alg=dico with env.agent_id={cfg.env.agent_id!r}: the shared policy must be one "
                          "function for every agent (its logits cancel in the SND); allowed: auto, none")


def make_dico(cfg: TrainConfig, spec: EnvSpec, hidden: int, num_masked_layers: int,
              bank_names: tuple[str, ...]) -> Scheme:
    """Per-agent deviation networks in the actor bank and per-agent critics (K = N), the shared policy in
    ``params["sharing"]``, and the scale in ``SharingState.extra``."""
    del hidden, num_masked_layers, bank_names
    n = spec.num_agents
    target, tau = float(cfg.sharing.dico_snd), float(cfg.sharing.dico_tau)
    slots = jnp.arange(n, dtype=jnp.int32)

    def init(key):
        del key
        state = DicoState(jnp.float32(initial_scale(target)), jnp.float32(jnp.nan))
        return SharingState(slots, (), state)

    def init_params(key, banks):
        return {POLICY: redraw_like(key, jax.tree.map(lambda leaf: leaf[0], banks["actor"]))}

    def agent_params(name, bank, owned, sharing):
        if name != "actor":
            return bank, 0
        scale = jax.lax.stop_gradient(sharing.extra.scale)
        return {DEVIATION: bank, SHARED: owned[POLICY], SCALE: scale}, {DEVIATION: 0, SHARED: None, SCALE: None}

    def bank_network(name, net, layout):
        return (DeviationActor(net, cfg.ac.recurrent) if name == "actor" else net), layout

    def on_snd(sharing, learner_state, snd, key):
        del key
        return sharing._replace(extra=rescale(sharing.extra, snd, target, tau)), learner_state

    def update(sharing, learner_state, traj, key, step, hidden0):
        del traj, key, step, hidden0
        state = sharing.extra
        return sharing, learner_state, {"dico_scale": state.scale, "dico_deviation_snd": state.estimate,
                                        "dico_snd_target": jnp.float32(target)}

    return Scheme(SlotLayout(n, "identity", False), init, update, init_params=init_params,
                  agent_params=agent_params, bank_network=bank_network, driven_by=Drive("snd", 1, on_snd),
                  actor_options={"out_scale": cfg.sharing.dico_init_gain})


def snd_picture(run_dir, cfg, runner, program):
    """snd.png with DiCo's target drawn in (replacing the run's plain one; ``Method.pictures``)."""
    del runner, program
    target = cfg.sharing.dico_snd
    return plot_snd(run_dir, target if target >= 0 else None, "DiCo target")


METHODS = (  # registered by psjax.catalog
    Method("dico", "a shared policy plus per-agent deviations rescaled so that the team's System Neural "
           "Diversity equals sharing.dico_snd (DiCo)", make_dico, default_learner="ppo", needs=("policy",),
           check=check_dico_config, pictures=(snd_picture,),
           options=DiCoOptions),
)
