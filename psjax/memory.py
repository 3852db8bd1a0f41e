"""The device memory a run needs, from shapes alone, checked before anything is allocated or compiled.

``estimate(cfg)`` traces (never runs or compiles) the loop's init and one rollout with ``jax.eval_shape`` and
sums the bytes of what stays resident, per seed, then for the seeds one device holds (``seeds / devices``;
with ``parallel=envs`` every device holds every seed and a ``1 / data_devices`` share of each run's
environments, rollout and replay buffer, ``DATA_SPLIT_TERMS``):

* ``parameters``: every learner parameter (agent banks, critics, mixer; QMIX's target copy counts here too);
* ``optimiser``: the optimiser's state (Adam: two moments per parameter);
* ``replay buffer``: QMIX / VDN / IQL's stored episodes (a vmapped per-seed buffer is the classic
  out-of-memory of JAX MARL code);
* ``environment states``: every env's state and current observation, the recurrent states;
* ``sharing state``: slots, masks and a method's own state (VAEs, buffers, reward windows);
* ``rollout``: one rollout's stored transitions (``rollout_len x num_envs`` steps).

What it leaves out are XLA's temporaries (activations kept for the backward pass, minibatch copies), which
depend on fusion decisions made at compile time: the estimate is a floor, so a run it refuses cannot fit,
while a run it admits may still need more (docs/scaling.md compares it with measured peaks).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from psjax.fields import ConfigError

GIB = 1024**3
DATA_SPLIT_TERMS = ("replay buffer", "environment states", "rollout")  # split along env / item axes (parallel=envs)


class MemoryEstimate(NamedTuple):
    """Bytes per device by term (``terms``, largest first), their sum, and the seeds one device holds."""

    terms: dict[str, int]
    total: int
    seeds_per_device: int

    def largest(self) -> tuple[str, int]:
        return next(iter(self.terms.items()))

    def to_dict(self) -> dict:
        return {"bytes_per_device": self.total, "seeds_per_device": self.seeds_per_device,
                "terms_bytes": dict(self.terms)}


def _bytes(tree: Any) -> int:
    import jax

    return int(sum(np.prod(x.shape, dtype=np.int64) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def _learner_terms(state: Any) -> dict[str, int]:
    """A learner state's bytes split into parameters / optimiser / replay buffer (``QState``, ``ACState``, or
    a method's own learner state with the same field names); fields it does not name count as parameters."""
    fields = state._asdict() if hasattr(state, "_asdict") else {"params": state}
    terms = {"parameters": 0, "optimiser": 0, "replay buffer": 0}
    for name, value in fields.items():
        term = {"opt_state": "optimiser", "buffer": "replay buffer"}.get(name, "parameters")
        terms[term] += _bytes(value)
    return terms


def estimate(cfg: Any, devices: int = 1, rows: int | None = None, data_devices: int = 1) -> MemoryEstimate:
    """Bytes per device of ``cfg``'s resident state with ``rows`` (default ``cfg.seeds``; a sweep's points x
    seeds) split over ``devices`` (shapes only); ``data_devices`` (``parallel=envs``, with ``devices`` 1): the
    devices each run's ``DATA_SPLIT_TERMS`` are split over, the rest replicated on every one."""
    import jax

    from psjax import train

    parts = train.make_parts(cfg)
    runner = jax.eval_shape(lambda k: train._init(parts, k), jax.random.PRNGKey(0))
    traj = jax.eval_shape(
        lambda r: train._rollout(parts, r.learner, r.sharing, r.env_state, r.ts, r.hidden, r.key, r.env_steps,
                                 parts.rollout_len, greedy=False)[1],
        runner)
    per_seed = {
        **_learner_terms(runner.learner),
        "environment states": _bytes((runner.env_state, runner.ts, runner.hidden)),
        "sharing state": _bytes(runner.sharing),
        "rollout": _bytes(traj),
    }
    seeds_per_device = -(-(rows or cfg.seeds) // max(devices, 1))
    share = {k: -(-v // data_devices) if k in DATA_SPLIT_TERMS else v for k, v in per_seed.items()}
    terms = {k: v * seeds_per_device for k, v in share.items() if v}
    terms = dict(sorted(terms.items(), key=lambda kv: -kv[1]))
    return MemoryEstimate(terms, sum(terms.values()), seeds_per_device)


def device_memory() -> int | None:
    """Bytes the first local device may use: the accelerator's limit, or on a CPU the machine's memory."""
    import jax

    stats = jax.local_devices()[0].memory_stats() or {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    try:
        import os

        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check(est: MemoryEstimate, budget_gb: float = 0.0) -> int | None:
    """Raise ConfigError when ``est`` exceeds the budget (``budget_gb`` GiB, or with 0 the device's memory);
    returns the budget in bytes (None: unknown, nothing checked)."""
    budget = int(budget_gb * GIB) if budget_gb > 0 else device_memory()
    if budget is not None and est.total > budget:
        term, size = est.largest()
        where = f"memory_gb={budget_gb:g}" if budget_gb > 0 else "the device's memory"
        raise ConfigError(
            f"this run needs at least {est.total / GIB:.2f} GiB per device ({est.seeds_per_device} seeds) but "
            f"{where} is {budget / GIB:.2f} GiB; the largest term is {term} ({size / GIB:.2f} GiB). Fewer seeds "
            f"per device (more devices, fewer seeds), fewer envs, or a smaller q.buffer_size fit it")
    return budget
