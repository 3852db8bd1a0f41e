"""Learners: QMIX / VDN / IQL (``qmix``) and A2C / PPO (``actor_critic``)."""

from psjax.config import TrainConfig
from psjax.envs.base import EnvSpec
from psjax.sharing.methods import Scheme
from psjax.types import Learner


def bank_names(cfg: TrainConfig) -> tuple[str, ...]:
    """Keys of the learner's ``params`` that are slot banks (known before the learner is built)."""
    return ("agent",) if cfg.is_value_based else ("actor", "critic")


def make_learner(cfg: TrainConfig, spec: EnvSpec, scheme: Scheme) -> Learner:
    """The learner named by ``cfg.learner_name``."""
    if cfg.is_value_based:
        from psjax.learners import qmix

        return qmix.make_learner(cfg, spec, scheme)
    from psjax.learners import actor_critic

    return actor_critic.make_learner(cfg, spec, scheme)
