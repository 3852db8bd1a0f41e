"""Environments behind one interface (see ``base.py``) and the factory that builds them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from psjax.envs.base import AutoResetState, Env, EnvSpec, TimeStep, make_env_from_raw, team_reward
from psjax.envs.lbf import parse_lbf_scenario
from psjax.envs.matrix import GAMES
from psjax.envs.wrappers import AGENT_ID_KINDS, Padding, agent_id_features, pad_raw, with_agent_id

if TYPE_CHECKING:
    from psjax.config import EnvConfig

# psjax.config is imported inside the functions: config.make_config calls check_env_config,
# so either module may be imported first without a circular-import failure.

__all__ = [
    "AutoResetState", "Env", "EnvSpec", "TimeStep", "make_env_from_raw", "team_reward",
    "Padding", "pad_raw", "agent_id_features", "with_agent_id", "parse_lbf_scenario",
    "resolve_agent_id", "check_env_config", "make_env", "num_agents",
]


def resolve_agent_id(agent_id: str, alg: str) -> str:
    """``auto`` -> ``onehot`` for FuPS+id, ``none`` otherwise; explicit kinds pass through."""
    from psjax import config as psconfig

    if agent_id == "auto":
        return "onehot" if alg == "fups_id" else "none"
    if agent_id not in AGENT_ID_KINDS:
        allowed = ", ".join(map(repr, ("auto",) + AGENT_ID_KINDS))
        raise psconfig.ConfigError(f"env.agent_id={agent_id!r} is not allowed; allowed: {allowed}")
    return agent_id


def check_env_config(env_cfg: EnvConfig) -> None:
    """Validate the environment fields without building or compiling anything.

    Raises ConfigError naming the bad value and the allowed ones. (SMAX map names need
    jaxmarl's registry, so checking them imports jaxmarl: seconds, no compilation.)
    """
    from psjax import config as psconfig

    name = env_cfg.name
    if name not in psconfig.ENVS:
        allowed = ", ".join(map(repr, psconfig.ENVS))
        raise psconfig.ConfigError(f"env.name={name!r} is not allowed; allowed: {allowed}")
    resolve_agent_id(env_cfg.agent_id, "")
    if env_cfg.time_limit < 0:
        raise psconfig.ConfigError(f"env.time_limit={env_cfg.time_limit} is below the minimum 0")
    if name == "smax":
        from psjax.envs.smax import smax_map_names

        maps = smax_map_names()
        if env_cfg.map not in maps:
            raise psconfig.ConfigError(
                f"env.map={env_cfg.map!r} is not a SMAX map jaxmarl knows; allowed: {', '.join(maps)}"
            )
    elif name == "mpe_spread":
        if env_cfg.num_agents < 1 or env_cfg.num_landmarks < 1:
            raise psconfig.ConfigError(
                f"env.num_agents={env_cfg.num_agents}, env.num_landmarks={env_cfg.num_landmarks}: "
                "MPE spread needs at least 1 of each"
            )
    elif name == "lbf":
        parse_lbf_scenario(env_cfg.scenario, env_cfg.fov)
    elif name == "typed":
        if env_cfg.num_agents < 2:
            raise psconfig.ConfigError(f"env.num_agents={env_cfg.num_agents}: the typed env needs at least 2")
    elif name == "matrix":
        if env_cfg.matrix_game not in GAMES:
            allowed = ", ".join(map(repr, GAMES))
            raise psconfig.ConfigError(
                f"env.matrix_game={env_cfg.matrix_game!r} is not allowed; allowed: {allowed}"
            )


def num_agents(env_cfg: EnvConfig) -> int:
    """Number of agents of the configured environment, without building it (SMAX reads jaxmarl's map)."""
    check_env_config(env_cfg)
    if env_cfg.name == "smax":
        from psjax.envs._jaxmarl import jaxmarl_module

        return int(jaxmarl_module("environments.smax").map_name_to_scenario(env_cfg.map).num_allies)
    if env_cfg.name in ("mpe_spread", "typed"):
        return env_cfg.num_agents
    if env_cfg.name == "lbf":
        return parse_lbf_scenario(env_cfg.scenario, env_cfg.fov).num_agents
    return 2  # speaker_listener, matrix


def make_env(env_cfg: EnvConfig, alg: str) -> Env:
    """Build the environment ``env_cfg.name`` with the agent indication the method needs.

    ``spec.name`` equals ``env_cfg.name``; map / scenario / game live in the config.

    The result is a fresh ``Env`` (its functions are new closures: build it once and reuse it,
    or jit caches will not be shared).
    """
    check_env_config(env_cfg)
    name = env_cfg.name
    if name == "smax":
        from psjax.envs.smax import make_smax

        env = make_smax(env_cfg.map, env_cfg.time_limit)
    elif name == "mpe_spread":
        from psjax.envs.mpe import make_mpe_spread

        env = make_mpe_spread(env_cfg.num_agents, env_cfg.num_landmarks, env_cfg.time_limit)
    elif name == "speaker_listener":
        from psjax.envs.mpe import make_speaker_listener

        env = make_speaker_listener(env_cfg.time_limit)
    elif name == "lbf":
        from psjax.envs.lbf import make_lbf

        env = make_lbf(env_cfg.scenario, env_cfg.fov, env_cfg.time_limit)
    elif name == "typed":
        from psjax.envs.typed import make_typed

        env = make_typed(env_cfg.num_agents, env_cfg.time_limit)
    else:
        from psjax.envs.matrix import make_matrix

        env = make_matrix(env_cfg.matrix_game)
    return with_agent_id(env, resolve_agent_id(env_cfg.agent_id, alg))
