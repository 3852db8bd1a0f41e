"""psjax: parameter sharing for cooperative multi-agent RL, end to end in JAX.

The public names load on first use, so ``import psjax`` is cheap (no JAX import) and the CLI
can reject a bad config before anything heavy is imported or compiled.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "make_train": "psjax.train",
    "make_program": "psjax.train",
    "make_config": "psjax.config",
    "TrainConfig": "psjax.config",
    "run": "psjax.run",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'psjax' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
