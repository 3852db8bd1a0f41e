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
while a run it admits may still need more (docs/scaling.md compares it with measured peaks). So ``run()`` then
compiles the first training chunk from shapes, before anything is allocated, and ``check_compiled`` refuses the run
when XLA's own account of that program (arguments, outputs not donated, temporaries) exceeds the budget less
``MARGIN``, naming the largest terms and a ``q.buffer_size`` (or seeds per device) that fits.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from psjax.fields import ConfigError

GIB = 1024**3
# the budget when memory_gb=0
_DEVICE = "the device's memory (a CPU: the memory available when the run starts, over the run's CPU devices)"
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
    runner = jax.eval_shape(lambda k: train.init_runner(parts, k), jax.random.PRNGKey(0))
    traj = jax.eval_shape(
        lambda r: train.rollout_steps(parts, r.learner, r.sharing, r.env_state, r.ts, r.hidden, r.key, r.env_steps,
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


def device_memory(host_devices: int = 1) -> int | None:
    """Bytes the first local device may use: the accelerator's limit, or on a CPU the memory the machine has
    available now (``/proc/meminfo``'s MemAvailable: free plus reclaimable caches, so other processes' memory is not
    counted as this run's), else its physical memory, shared by the run's ``host_devices`` CPU devices (virtual
    devices, ``--xla_force_host_platform_device_count``, all live in the one host's memory)."""
    import jax

    stats = jax.local_devices()[0].memory_stats() or {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    host = _host_memory()
    return None if host is None else host // max(host_devices, 1)


def _host_memory() -> int | None:
    """The host's available (else physical) memory in bytes; None when neither can be read."""
    try:
        with open("/proc/meminfo") as f:
            available = next(line for line in f if line.startswith("MemAvailable:"))
        return int(available.split()[1]) * 1024  # kB
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    try:
        import os

        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check(est: MemoryEstimate, budget_gb: float = 0.0, cfg: Any = None, host_devices: int = 1) -> int | None:
    """Raise ConfigError when ``est`` exceeds the budget (``budget_gb`` GiB per device, or with 0 the device's memory:
    ``device_memory(host_devices)``), naming with ``cfg`` the settings that would fit (``_fitting_settings``, with
    ``MARGIN``); returns the budget in bytes (None: unknown, nothing checked)."""
    budget = int(budget_gb * GIB) if budget_gb > 0 else device_memory(host_devices)
    if budget is not None and est.total > budget:
        term, size = est.largest()
        where = f"memory_gb={budget_gb:g}" if budget_gb > 0 else _DEVICE
        fits = ("Fewer seeds per device (more devices, fewer seeds), fewer envs, or a smaller q.buffer_size fit it"
                if cfg is None else f"allowed: {_fitting_settings(est.total, int(budget * (1 - MARGIN)), est, cfg)}")
        raise ConfigError(
            f"this run needs at least {est.total / GIB:.2f} GiB per device ({est.seeds_per_device} seeds) but "
            f"{where} is {budget / GIB:.2f} GiB; the largest term is {term} ({size / GIB:.2f} GiB). {fits}")
    return budget


MARGIN = 0.10  # of the budget kept free beside a compiled program: the host process (Python, JAX's runtime, logs
# copied to the host) and the smaller programs (init, evaluation) whose buffers are not in the training chunk's account


def compiled_bytes(compiled: Any) -> dict[str, int] | None:
    """What a compiled program needs per device by XLA's own account (``jax.stages.Compiled.memory_analysis()``,
    CPU and accelerators alike): ``arguments``, ``outputs`` less the ``aliased`` bytes (donated arguments reused
    as outputs), ``temporaries`` and ``code``; ``total`` their sum. None where the backend reports nothing."""
    try:
        stats = compiled.memory_analysis()
    except (AttributeError, NotImplementedError, RuntimeError):
        return None
    if stats is None:
        return None
    parts = {"arguments": stats.argument_size_in_bytes, "outputs": stats.output_size_in_bytes,
             "aliased": stats.alias_size_in_bytes, "temporaries": stats.temp_size_in_bytes,
             "code": stats.generated_code_size_in_bytes}
    parts = {k: int(v) for k, v in parts.items()}
    parts["total"] = parts["arguments"] + parts["outputs"] - parts["aliased"] + parts["temporaries"] + parts["code"]
    return parts


def check_compiled(compiled: Any, est: MemoryEstimate, budget: int | None, budget_gb: float, cfg: Any) -> dict | None:
    """Refuse (ConfigError) a run whose compiled training chunk needs more than the budget less ``MARGIN``, before
    anything is allocated: the message names the largest terms (the resident state's, ``est``, and XLA's
    temporaries) and a setting that fits (the ``q.buffer_size`` that would, else fewer seeds per device). Returns
    ``compiled_bytes`` (None: not reported or no budget known, nothing checked)."""
    need = compiled_bytes(compiled)
    if need is None or budget is None:
        return need
    allowed = int(budget * (1 - MARGIN))
    if need["total"] <= allowed:
        return need
    terms = {**est.terms, "XLA temporaries": need["temporaries"]}
    largest = sorted(terms.items(), key=lambda kv: -kv[1])[:3]
    shown = ", ".join(f"{name} {_size(size)}" for name, size in largest)
    where = f"memory_gb={budget_gb:g}" if budget_gb > 0 else _DEVICE
    fits = _fitting_settings(need["total"], allowed, est, cfg)
    raise ConfigError(
        f"this run's training program needs {_size(need['total'])} per device ({est.seeds_per_device} seed(s); XLA's "
        f"account of the compiled chunk: arguments {_size(need['arguments'])} + temporaries "
        f"{_size(need['temporaries'])} + outputs not donated {_size(need['outputs'] - need['aliased'])}) but {where} "
        f"is {_size(budget)}, of which {1 - MARGIN:.0%} ({_size(allowed)}) may be used "
        f"(a {MARGIN:.0%} margin for the host process); the largest terms: {shown}. Refused before anything was "
        f"allocated; allowed: {fits}")


def _fitting_settings(total: int, allowed: int, est: MemoryEstimate, cfg: Any) -> str:
    """Settings that bring ``total`` bytes under ``allowed``: the largest power-of-two ``q.buffer_size`` that would
    (the buffer's bytes scale with it; the rest of the program assumed not to), else the seeds per device that
    would, else a larger budget."""
    options = []
    buffer = est.terms.get("replay buffer", 0)
    size = cfg.q.buffer_size
    if buffer and cfg.is_value_based:
        per_item = buffer / size
        fit = int((allowed - (total - buffer)) // per_item)
        fit = 1 << (fit.bit_length() - 1) if fit >= 1 else 0  # a power of two at most ``fit``
        if fit >= cfg.q.batch_size:
            options.append(f"q.buffer_size={fit} (now {size}; {fit} sequences of {cfg.q.rollout_len} steps, "
                           f"{_size(fit * per_item)} per device)")
    per_seed = total / max(est.seeds_per_device, 1)
    seeds = int(allowed // per_seed)
    if est.seeds_per_device > 1 and seeds >= 1:
        options.append(f"at most {seeds} seeds per device (now {est.seeds_per_device}: fewer seeds, or more devices)")
    options.append(f"a device with at least {_size(total / (1 - MARGIN))} (memory_gb= sets the budget)")
    return "; or ".join(options)


def _size(num_bytes: float) -> str:
    """``21.63 GiB``, or in MiB below a tenth of a GiB (``6.0 MiB``)."""
    return f"{num_bytes / GIB:.2f} GiB" if num_bytes >= GIB / 10 else f"{num_bytes / 2**20:.1f} MiB"
