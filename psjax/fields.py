"""The leaf of psjax's import graph: the configuration error and the field helper every config dataclass uses.

A field carries its documentation in ``metadata["doc"]`` (shown by ``python -m psjax fields``) and, where it
has them, its allowed range or choices, which ``check_rules`` enforces before anything is compiled.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, Mapping


class ConfigError(ValueError):
    """A bad configuration value, raised before any compilation."""


class UnknownFieldError(ConfigError):
    """A key no config section has (yet: a method's options join the sharing section when it is registered)."""


def doc_field(default, doc: str, **rules):
    """A dataclass field with a doc string and validation rules (``min``, ``max``, ``choices``)."""
    return field(default=default, metadata={"doc": doc, **rules})


def check_rules(path: str, value: Any, rules: Mapping[str, Any]) -> None:
    """Raise a ConfigError naming ``path=value`` and what is allowed when ``value`` breaks ``rules``."""
    if "choices" in rules and value not in rules["choices"]:
        allowed = ", ".join(repr(c) for c in rules["choices"])
        raise ConfigError(f"{path}={value!r} is not allowed; allowed: {allowed}")
    if "min" in rules and value < rules["min"]:
        raise ConfigError(f"{path}={value!r} is below the minimum {rules['min']}")
    if "max" in rules and value > rules["max"]:
        raise ConfigError(f"{path}={value!r} is above the maximum {rules['max']}")
