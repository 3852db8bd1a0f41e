"""Environments behind one interface (see ``base.py``) and the factory that builds them."""

from __future__ import annotations

from psjax.envs.base import AutoResetState, Env, EnvSpec, TimeStep, make_env_from_raw, reported_return, team_reward
from psjax.envs.lbf import check_lbf_options, parse_lbf_scenario
from psjax.envs.matrix import GAMES
from psjax.envs.wrappers import (
    AGENT_ID_KINDS,
    IMAGE_INDICATION_KINDS,
    Padding,
    agent_id_features,
    pad_raw,
    with_agent_id,
    with_image_indication,
    with_team_return,
)
from psjax.fields import ConfigError
from psjax.schema import ENVS, PAPER_TEAM_RETURN, EnvConfig

__all__ = [
    "AutoResetState", "Env", "EnvSpec", "TimeStep", "make_env_from_raw", "team_reward", "reported_return",
    "Padding", "pad_raw", "agent_id_features", "with_agent_id", "parse_lbf_scenario",
    "resolve_agent_id", "check_env_config", "make_env", "num_agents", "with_image_indication",
    "coloured_agents",
]


def coloured_agents(env_cfg: EnvConfig) -> tuple:
    """BPS: agents per colour; C-RWARE: its ``Layout``. Resolved from ``variant`` (a named setting),
    else ``agents_per_colour``, else ``num_agents`` split evenly over ``num_colours`` (BPS) / the
    tiny layout's robots (C-RWARE, the SePS task; ``agents_per_colour`` replaces a variant's robots there).
    Raises ConfigError naming the bad value and the allowed ones."""
    from psjax.envs.bps import VARIANTS as BPS_VARIANTS
    from psjax.envs.bps import even_split
    from psjax.envs.crware import VARIANTS as CRW_VARIANTS
    from psjax.envs.crware import request_queue_size, shelf_homes

    variants = BPS_VARIANTS if env_cfg.name == "bps" else CRW_VARIANTS
    if env_cfg.variant and env_cfg.variant not in variants:
        allowed = ", ".join(map(repr, ("",) + tuple(variants)))
        raise ConfigError(
            f"env.variant={env_cfg.variant!r} is not a {env_cfg.name} variant; allowed: {allowed}"
        )
    split = None
    if env_cfg.agents_per_colour:
        try:
            split = tuple(int(k) for k in env_cfg.agents_per_colour.split(","))
        except ValueError:
            split = ()
        if not split or min(split) < 1:
            raise ConfigError(
                f"env.agents_per_colour={env_cfg.agents_per_colour!r} is not allowed; allowed: comma-separated "
                "positive integers, one per colour (e.g. 5,5,5)"
            )
    if env_cfg.name == "bps":
        if env_cfg.variant:
            return BPS_VARIANTS[env_cfg.variant]
        if split is not None:
            return split
        if env_cfg.num_agents < env_cfg.num_colours:
            raise ConfigError(
                f"env.num_agents={env_cfg.num_agents} is below env.num_colours={env_cfg.num_colours}: BPS needs "
                "at least one agent per colour"
            )
        return even_split(env_cfg.num_agents, env_cfg.num_colours)
    layout = CRW_VARIANTS[env_cfg.variant or "tiny"]
    if split is not None:
        layout = layout._replace(agents_per_colour=split)
    shelves, queue = len(shelf_homes(layout)), request_queue_size(layout, env_cfg.crware_difficulty)
    if not 1 <= queue < shelves:
        raise ConfigError(
            f"env.agents_per_colour={env_cfg.agents_per_colour!r}, env.crware_difficulty="
            f"{env_cfg.crware_difficulty!r}: {queue} requests of the {env_cfg.variant or 'tiny'} layout's {shelves} "
            f"shelves; allowed: 1 .. {shelves - 1} requests (int(robots x 2 / 1 / 0.5) for easy / normal / hard)"
        )
    return layout


def resolve_agent_id(agent_id: str, auto: str = "none") -> str:
    """``auto`` -> ``auto`` (the method's indication: its registry record's ``agent_id``, e.g. FuPS+id's
    ``onehot``); explicit kinds pass through."""
    if agent_id == "auto":
        return auto
    if agent_id not in AGENT_ID_KINDS:
        allowed = ", ".join(map(repr, ("auto",) + AGENT_ID_KINDS))
        raise ConfigError(f"env.agent_id={agent_id!r} is not allowed; allowed: {allowed}")
    return agent_id


def check_env_config(env_cfg: EnvConfig) -> None:
    """Validate the environment fields without building or compiling anything.

    Raises ConfigError naming the bad value and the allowed ones. (SMAX map names need
    jaxmarl's registry, so checking them imports jaxmarl: seconds, no compilation.)
    """
    name = env_cfg.name
    if name not in ENVS:
        allowed = ", ".join(map(repr, ENVS))
        raise ConfigError(f"env.name={name!r} is not allowed; allowed: {allowed}")
    resolve_agent_id(env_cfg.agent_id)
    if env_cfg.time_limit < 0:
        raise ConfigError(f"env.time_limit={env_cfg.time_limit} is below the minimum 0")
    if name == "smax":
        from psjax.envs.smax import smax_map_names

        maps = smax_map_names()
        if env_cfg.map not in maps:
            raise ConfigError(
                f"env.map={env_cfg.map!r} is not a SMAX map jaxmarl knows; allowed: {', '.join(maps)}"
            )
    elif name == "mpe_spread":
        if env_cfg.num_agents < 1 or env_cfg.num_landmarks < 1:
            raise ConfigError(
                f"env.num_agents={env_cfg.num_agents}, env.num_landmarks={env_cfg.num_landmarks}: "
                "MPE spread needs at least 1 of each"
            )
    elif name == "lbf":
        parse_lbf_scenario(env_cfg.scenario, env_cfg.fov)
        check_lbf_options(env_cfg.lbf_rules, env_cfg.lbf_fixed_levels, env_cfg.lbf_seps_levels,
                          env_cfg.lbf_grid_obs, env_cfg.lbf_grid_hide_levels)
    elif name in ("bps", "crware"):
        coloured_agents(env_cfg)
    elif name == "typed":
        if env_cfg.num_agents < 2:
            raise ConfigError(f"env.num_agents={env_cfg.num_agents}: the typed env needs at least 2")
    elif name == "matrix":
        if env_cfg.matrix_game not in GAMES:
            allowed = ", ".join(map(repr, GAMES))
            raise ConfigError(
                f"env.matrix_game={env_cfg.matrix_game!r} is not allowed; allowed: {allowed}"
            )
    if env_cfg.image_indication not in IMAGE_INDICATION_KINDS:
        allowed = ", ".join(map(repr, IMAGE_INDICATION_KINDS))
        raise ConfigError(
            f"env.image_indication={env_cfg.image_indication!r} is not allowed; allowed: {allowed}"
        )
    if env_cfg.image_indication not in ("none", "identity") and not (name == "lbf" and env_cfg.lbf_grid_obs):
        raise ConfigError(
            f"env.image_indication={env_cfg.image_indication!r} needs image observations; allowed with "
            f"env.name={name!r}: 'none', 'identity' (use env.name='lbf' with env.lbf_grid_obs=true)"
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
    if env_cfg.name == "bps":
        return sum(coloured_agents(env_cfg))
    if env_cfg.name == "crware":
        return sum(coloured_agents(env_cfg).agents_per_colour)
    return 2  # speaker_listener, matrix


def make_env(env_cfg: EnvConfig, agent_id: str = "none") -> Env:
    """Build the environment ``env_cfg.name`` with its agent indication: ``env_cfg.agent_id``, where that is
    ``auto`` the ``agent_id`` given (the method's: ``psjax.registry.Method.agent_id``).

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

        env = make_lbf(
            env_cfg.scenario, env_cfg.fov, env_cfg.time_limit, grid_obs=env_cfg.lbf_grid_obs,
            persistent_levels=env_cfg.lbf_fixed_levels, levels_seed=env_cfg.lbf_levels_seed,
            rules=env_cfg.lbf_rules, seps=env_cfg.lbf_seps_levels, grid_hide_levels=env_cfg.lbf_grid_hide_levels,
        )
    elif name == "bps":
        from psjax.envs.bps import make_bps

        env = make_bps(coloured_agents(env_cfg), env_cfg.time_limit, env_cfg.bps_shuffle_obs)
    elif name == "crware":
        from psjax.envs.crware import make_crware

        env = make_crware(coloured_agents(env_cfg), env_cfg.time_limit, env_cfg.crware_difficulty,
                          env_cfg.crware_shuffle_obs)
    elif name == "typed":
        from psjax.envs.typed import make_typed

        env = make_typed(env_cfg.num_agents, env_cfg.time_limit)
    else:
        from psjax.envs.matrix import make_matrix

        env = make_matrix(env_cfg.matrix_game)
    env = with_image_indication(env, env_cfg.image_indication)
    env = with_team_return(env, PAPER_TEAM_RETURN[name] if env_cfg.team_return == "auto" else env_cfg.team_return)
    return with_agent_id(env, resolve_agent_id(env_cfg.agent_id, agent_id))
