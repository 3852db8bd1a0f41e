"""Hyperparameter sweeps trained in one compiled program: ``sweep.lr=1e-4,5e-4 sweep.gamma=0.99,0.995``.

``TrainConfig.sweep`` holds the entries in canonical form (``ac.lr=0.0001,0.0005;ac.gamma=0.99,0.995``, field
paths resolved as ``key=value`` overrides resolve them); ``sweep_mode`` combines them as a grid (every
combination) or zipped (the i-th values together). A point is a plain run's config that differs from the run's
only in those fields (``point_config``). ``psjax.train`` builds the program with the swept fields as traced
scalars carried in each row's ``Runner.point``, so every point x seed trains side by side in one vmapped
program (its leading axis, sharded over devices as seeds are, ``psjax.shard``), and ``psjax.run`` writes each
point's rows to a run folder of its own inside the run's folder.

Only numeric fields of the learner's section (``ac.*`` or ``q.*``) and of ``sharing.*`` may be swept: the
environment's fields build it (shapes), the top-level ones are the host's (seeds, steps, evaluation). Among
those, a field that sets an array's shape or that building the program branches on cannot be a traced
number; ``psjax.train.check_sweep`` finds such fields by tracing and refuses them by name. Nothing here
imports JAX.
"""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple

import numpy as np

from psjax import schema
from psjax.fields import ConfigError
from psjax.schema import TrainConfig

SECTIONS = ("sharing",)  # besides the learner's own section (ac / q)


class Entry(NamedTuple):
    """One swept field and its values, in the order given."""

    path: str  # dotted field path, e.g. "ac.lr"
    values: tuple  # int or float values, coerced to the field's type


def parse(spec: str, learner: str) -> tuple[Entry, ...]:
    """The entries of a sweep spec ``FIELD=v1,v2;FIELD=...`` (``key=value`` keys: ``lr``, ``q.lr``, ``gamma``),
    each field resolved for ``learner`` and checked sweepable by its kind; ConfigError naming the bad entry."""
    entries: dict[str, tuple] = {}
    section = "q" if learner in schema.VALUE_LEARNERS else "ac"
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        key, sep, values = part.partition("=")
        items = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not items:
            raise ConfigError(f"sweep entry {part!r} is not FIELD=v1,v2,...; e.g. sweep.lr=1e-4,5e-4")
        path = schema.resolve_key(key.strip(), learner)
        if path.split(".")[0] not in (section, *SECTIONS):
            raise ConfigError(f"sweep.{path}: only the learner's fields ({section}.*, learner={learner}) and "
                              f"{', '.join(s + '.*' for s in SECTIONS)} can be swept inside one program (env fields "
                              "build the environment, the top-level ones are the run's); allowed: e.g. "
                              f"sweep.{section}.lr, sweep.{section}.gamma")
        if schema.field_type(path) not in (int, float):
            raise ConfigError(f"sweep.{path}: a {schema.field_type(path).__name__} field; allowed: numeric fields "
                              "(run separate runs to compare settings of the others, e.g. python -m psjax "
                              "compare-sweep)")
        if path in entries:
            raise ConfigError(f"sweep.{path} is given twice; allowed: one entry per field")
        entries[path] = tuple(schema.coerce(path, v) for v in items)
    return tuple(Entry(path, values) for path, values in entries.items())


def normalise(overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` with every ``sweep.FIELD`` key (command line / Python: a comma string or a list) folded into
    the ``sweep`` field's spec string, after any ``sweep`` given as a whole."""
    out = {k: v for k, v in overrides.items() if not str(k).startswith("sweep.")}
    parts = [str(out["sweep"])] if out.get("sweep") else []
    for key, value in overrides.items():
        if str(key).startswith("sweep."):
            values = value if isinstance(value, (list, tuple)) else str(value).split(",")
            parts.append(f"{str(key).removeprefix('sweep.')}={','.join(str(v) for v in values)}")
    if parts:
        out["sweep"] = ";".join(parts)
    return out


def canonical(entries: tuple[Entry, ...]) -> str:
    """The spec string of ``entries`` with resolved paths and coerced values (what config.yaml keeps)."""
    return ";".join(f"{e.path}={','.join(repr(v) for v in e.values)}" for e in entries)


def entries(cfg: TrainConfig) -> tuple[Entry, ...]:
    """The config's sweep entries (empty without a sweep)."""
    return parse(cfg.sweep, cfg.learner_name) if cfg.sweep else ()


def points(cfg: TrainConfig) -> list[dict[str, Any]]:
    """Every point of the sweep, ``{path: value}`` in grid (or zip) order; ``[{}]`` without a sweep."""
    found = entries(cfg)
    if not found:
        return [{}]
    if cfg.sweep_mode == "zip":
        lengths = {e.path: len(e.values) for e in found}
        if len(set(lengths.values())) > 1:
            raise ConfigError(f"sweep_mode=zip needs equally long entries; got {lengths}; allowed: equal lengths, "
                              "or sweep_mode=grid")
        combos = zip(*(e.values for e in found))
    else:
        combos = itertools.product(*(e.values for e in found))
    return [dict(zip((e.path for e in found), combo)) for combo in combos]


def columns(cfg: TrainConfig) -> dict[str, np.ndarray]:
    """``{path: [P]}``: every swept field's value at each point (float32 / int32), the rows' ``Runner.point``."""
    found = points(cfg)
    return {e.path: np.asarray([p[e.path] for p in found], np.int32 if isinstance(e.values[0], int) else np.float32)
            for e in entries(cfg)}


def point_config(cfg: TrainConfig, point: dict[str, Any]) -> TrainConfig:
    """The plain run's config of one point: the sweep's fields set to ``point``'s values (which may be traced
    scalars inside a program), no sweep left."""
    for path, value in point.items():
        cfg = schema.set_field(cfg, path, value)
    return schema.set_field(cfg, "sweep", "")


def label(point: dict[str, Any]) -> str:
    """``lr=0.0001 gamma=0.99``: the point's values under their short names (figures, tables)."""
    return " ".join(f"{path.split('.')[-1]}={value!r}" for path, value in point.items())


def folder_name(index: int, point: dict[str, Any]) -> str:
    """The point's run folder inside the sweep run's folder, e.g. ``point-0-lr=0.0001-gamma=0.99``."""
    return f"point-{index}-" + "-".join(f"{path.split('.')[-1]}={value!r}" for path, value in point.items())
