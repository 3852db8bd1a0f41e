"""Learners: QMIX / VDN / IQL (``qmix``) and A2C / PPO (``actor_critic``)."""

from psjax.config import BDPS_METHODS, TrainConfig
from psjax.envs.base import EnvSpec
from psjax.sharing.methods import Scheme
from psjax.types import Learner


def bank_names(cfg: TrainConfig) -> tuple[str, ...]:
    """Keys of the learner's ``params`` that are slot banks (known before the learner is built)."""
    if cfg.alg in BDPS_METHODS:
        from psjax.learners.bdps import bank_names as bdps_banks

        return bdps_banks(cfg.alg)
    return ("agent",) if cfg.is_value_based else ("actor", "critic")


def make_learner(cfg: TrainConfig, spec: EnvSpec, scheme: Scheme) -> Learner:
    """The learner named by ``cfg.learner_name``."""
    if cfg.is_value_based:
        from psjax.learners import qmix

        if cfg.alg in BDPS_METHODS:  # BDPS is another agent model under the same QMIX / VDN learner
            from psjax.learners import bdps

            return qmix.make_learner(cfg, spec, scheme, bdps.make_agent_model(cfg, spec, scheme))
        return qmix.make_learner(cfg, spec, scheme)
    from psjax.learners import actor_critic

    return actor_critic.make_learner(cfg, spec, scheme)
