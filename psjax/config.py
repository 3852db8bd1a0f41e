"""Run configuration: ``make_config`` builds a TrainConfig from a preset and ``key=value`` overrides and
validates it against the schema (``psjax.schema``: fields, ranges, learners), the environment (maps,
scenarios) and the method registry (``psjax.registry``: the method exists, its learner has what it needs,
its own cross-field rules). The dataclasses themselves live in ``psjax.schema`` and are re-exported here.
"""

from __future__ import annotations

import pathlib
from typing import Any

import yaml

from psjax import (
    catalog,  # noqa: F401  (registers the built-in methods)
    registry,
    schema,
    sweep,
)
from psjax.envs import check_env_config
from psjax.fields import ConfigError
from psjax.schema import (  # noqa: F401  (the public config names, re-exported)
    ALIASES,
    CONFIG_DIR,
    ENVS,
    LEARNER_KINDS,
    LEARNER_PRESETS,
    LEARNERS,
    VALUE_LEARNERS,
    ACConfig,
    EnvConfig,
    LearnerKind,
    QConfig,
    SharingConfig,
    TrainConfig,
    field_docs,
    field_info,
    load_preset,
    to_dict,
)


def make_config(overrides: dict[str, Any] | None = None, preset: str | None = None) -> TrainConfig:
    """Build and validate a TrainConfig from a preset and ``key -> value`` overrides.

    Precedence (last wins): dataclass defaults, learner preset, the method's own settings (``Method.defaults``: its
    paper's settings under this learner; then ``Method.fit_task``: the structure that fits the task), YAML preset,
    overrides: the method's values go only to the fields neither the preset nor the overrides set, and
    ``method_defaults`` records which they went to. An empty ``learner`` becomes the method's default.
    """
    merged = dict(load_preset(preset)) if preset else {}
    merged.update(overrides or {})
    merged = sweep.normalise(merged)  # sweep.FIELD=v1,v2 keys into the sweep field
    method = registry.get(str(merged.get("alg", merged.get("method", TrainConfig.alg))))
    cfg = schema.build(merged, str(merged.get("learner", "")) or method.default_learner)
    given = {schema.resolve_key(k, cfg.learner_name) for k in merged}
    cfg, applied = method_settings(cfg, method, given)
    if "method_defaults" not in given:  # a resumed run's config.yaml gives every field, its record included
        cfg = schema.set_field(cfg, "method_defaults", " ".join(applied))
    if cfg.sweep:  # resolved paths, coerced values: the form config.yaml keeps
        cfg = schema.set_field(cfg, "sweep", sweep.canonical(sweep.entries(cfg)))
    validate(cfg)
    return cfg


def method_settings(cfg: TrainConfig, method: registry.Method, given: set[str]) -> tuple[TrainConfig, list[str]]:
    """``(cfg, applied)``: ``cfg`` with the method's own values for the fields whose dotted paths are not in ``given``
    (those the user set, in a preset or an override): first its paper's settings under ``cfg``'s learner
    (``method.defaults``), then the structure that fits the task (``method.fit_task``, which reads the former);
    ``applied`` names the fields set, in that order."""
    applied = {}
    values = dict(method.defaults.get(cfg.learner_name, {}))
    for path, value in values.items():
        if path not in given:
            cfg = schema.set_field(cfg, path, schema.coerce(path, value))
            applied[path] = None
    fitted = method.fit_task(cfg, frozenset(given)) if method.fit_task is not None else {}
    for path, value in fitted.items():
        if path not in given:
            cfg = schema.set_field(cfg, path, schema.coerce(path, value))
            applied[path] = None
    return cfg, list(applied)


def method_defaults_line(cfg: TrainConfig) -> str:
    """``cfg.method_defaults`` with their values, ``"alg=bdps set q.td_lambda=0.6 ..."`` (the run's first line), or
    empty when the method set none."""
    if not cfg.method_defaults:
        return ""
    flat = schema.flatten(to_dict(cfg))
    settings = " ".join(f"{path}={flat[path]}" for path in cfg.method_defaults.split() if path in flat)
    return f"alg={cfg.alg} set {settings} (its recommended settings and the task's fit; any key=value overrides them)"


def validate(cfg: TrainConfig) -> None:
    """Check ranges, choices and cross-field rules; raise ConfigError naming the bad value."""
    schema.check_fields(cfg)
    method = registry.get(cfg.alg)
    registry.check_learner(method, cfg.learner_name, cfg.learner_kind, schema.kind_options(cfg))
    check_env_config(cfg.env)
    if method.check is not None:
        method.check(cfg)
    if cfg.sweep:
        _validate_sweep(cfg)
    _check_rows(cfg)


def _validate_sweep(cfg: TrainConfig) -> None:
    """Every point of ``cfg``'s sweep is a valid run (``devices`` aside: it divides the sweep's rows)."""
    for point in sweep.points(cfg):
        try:
            validate(schema.set_field(sweep.point_config(cfg, point), "devices", 0))
        except ConfigError as e:
            raise ConfigError(f"sweep point {sweep.label(point)}: {e}") from None


def _check_rows(cfg: TrainConfig) -> None:
    """``parallel=seeds``: ``devices`` divides the program's rows (sweep points x seeds), so every device trains
    as many (``psjax.shard.seed_device_count`` checks the devices that exist, when the run starts)."""
    num_points = len(sweep.points(cfg)) if cfg.sweep else 1
    rows = num_points * cfg.seeds
    if not cfg.devices or rows % cfg.devices == 0 or cfg.parallel != "seeds":
        return
    what = f"the sweep's {num_points} points x {cfg.seeds} seeds = {rows} rows" if cfg.sweep else f"seeds={rows}"
    raise ConfigError(f"devices={cfg.devices} does not divide {what}: every device trains the same number of "
                      f"runs; allowed: a divisor of {rows}, or 0 (as many as divide it)")


def method_env_matrix() -> dict[tuple[str, str], str]:
    """Every registered method x every environment at their defaults (``make_config({"alg": m, "env": e})``):
    ``(alg, env) -> "runs: LEARNER"`` or ``"refuses: MESSAGE"``, where the message names a setting that works
    after ``allowed:``. ``python -m psjax methods matrix`` prints it; docs/methods.md keeps it."""
    cells = {}
    for alg in registry.names():
        for env in ENVS:
            try:
                cells[alg, env] = f"runs: {make_config({'alg': alg, 'env': env}).learner_name}"
            except ConfigError as e:
                cells[alg, env] = f"refuses: {e}"
    return cells


def from_dict(d: dict[str, Any]) -> TrainConfig:
    """Inverse of ``to_dict`` (used when resuming a run folder)."""
    return make_config(schema.flatten(d))


def load_run_config(run_dir: str | pathlib.Path) -> TrainConfig:
    """The validated config of a run folder (its ``config.yaml``), or a ConfigError naming the problem."""
    path = pathlib.Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"resume={str(run_dir)!r} is not a run folder: {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a config mapping")
    env = data.get("env")
    if isinstance(env, dict) and "team_return" not in env:  # written before the field: keep what it reported
        legacy = schema.team_return_of(env)
        env["team_return"] = "auto" if legacy == schema.PAPER_TEAM_RETURN.get(env.get("name")) else legacy
    return from_dict(data)
