"""Learners: QMIX / VDN / IQL (``qmix``) and A2C / PPO (``actor_critic``)."""

from psjax.envs.base import EnvSpec
from psjax.schema import TrainConfig
from psjax.sharing.methods import Scheme
from psjax.types import Learner


def make_learner(cfg: TrainConfig, spec: EnvSpec, scheme: Scheme, agent_model=None) -> Learner:
    """The learner ``cfg.learner_name`` names; ``agent_model`` (a method's ``agent_model.AgentModel``, e.g. BDPS's)
    replaces a value learner's default agent network."""
    if cfg.is_value_based:
        from psjax.learners import qmix

        return qmix.make_learner(cfg, spec, scheme, agent_model)
    if agent_model is not None:
        raise ValueError(f"learner={cfg.learner_name!r} takes no agent model (alg={cfg.alg!r} gave one)")
    from psjax.learners import actor_critic

    return actor_critic.make_learner(cfg, spec, scheme)
