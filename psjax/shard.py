"""Placing independent runs on devices: the leading axis of vmapped seeds sharded over a 1-D device mesh.

The seeds never talk to each other, so the sharded program needs no collectives: each device runs its
slice of the seeds, and the results are those of the unsharded program up to float rounding.

Several processes (``distributed=on``, one per host or per GPU): ``initialize_distributed`` starts
``jax.distributed``, the mesh spans every process's devices, every process holds the same host copy of the
inputs (keys, sweep points) and hands its devices their rows (``to_devices``), and ``to_host`` gathers an
output onto every process. One process changes nothing: the helpers are then plain ``jax`` calls.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from psjax.fields import ConfigError

SEED_AXIS = "seed"
DATA_AXIS = "data"  # parallel=envs: the mesh axis each run's environments and replay items are split along


def seed_device_count(num_seeds: int, requested: int, available: int) -> int:
    """How many devices to shard ``num_seeds`` over: ``requested`` (checked), or with 0 the most of the
    ``available`` ones that divide ``num_seeds`` evenly."""
    if requested == 0:
        return max(k for k in range(1, available + 1) if num_seeds % k == 0)
    if requested > available:
        raise ConfigError(f"devices={requested} but this process sees {available} local device(s); allowed: "
                          f"0 .. {available}")
    if num_seeds % requested:
        raise ConfigError(f"devices={requested} does not divide seeds={num_seeds}; allowed: a divisor of "
                          f"{num_seeds}, or 0")
    return requested


def seed_sharding(num_seeds: int, requested: int = 0) -> NamedSharding:
    """The sharding of arrays whose leading axis is the seeds: split over ``seed_device_count`` devices (every
    other axis replicated within a device's slice). Across processes the mesh is every process's devices."""
    devices = jax.devices()  # this process's alone unless jax.distributed runs
    if jax.process_count() > 1:
        if num_seeds % len(devices) or requested not in (0, len(devices)):
            raise ConfigError(f"distributed=on over {len(devices)} devices in {jax.process_count()} processes: the "
                              f"rows (seeds, or a sweep's points x seeds: {num_seeds}) must split over all of them "
                              f"(devices={requested}); allowed: a multiple of {len(devices)} rows, devices=0")
        return NamedSharding(Mesh(np.asarray(devices), (SEED_AXIS,)), PartitionSpec(SEED_AXIS))
    count = seed_device_count(num_seeds, requested, len(devices))
    return NamedSharding(Mesh(np.asarray(devices[:count]), (SEED_AXIS,)), PartitionSpec(SEED_AXIS))


def initialize_distributed(cfg) -> bool:
    """``jax.distributed.initialize`` for ``cfg.distributed=on`` (once per process, before any computation), with
    ``cfg.coordinator`` / ``num_processes`` / ``process_id`` where set; True when the run spans processes. CPU
    processes talk through gloo (GPUs and TPUs through their own collectives)."""
    if cfg.distributed != "on":
        return False
    if not jax.distributed.is_initialized():
        given = {"coordinator_address": cfg.coordinator or None, "num_processes": cfg.num_processes or None,
                 "process_id": cfg.process_id if cfg.process_id >= 0 else None}
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(**{k: v for k, v in given.items() if v is not None})
    return jax.process_count() > 1


def to_devices(tree, sharding: NamedSharding):
    """Host arrays (leading rows axis, the same on every process) as arrays split by ``sharding``: unchanged in
    one process (the jitted call places them), global arrays built from each process's rows across processes."""
    if jax.process_count() == 1:
        return tree
    return jax.tree.map(lambda x: jax.make_array_from_callback(np.shape(x), sharding,
                                                               lambda index: np.asarray(x)[index]), tree)


def to_host(tree):
    """The whole of every array of ``tree`` as numpy on this process (across processes: gathered from all)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def is_primary() -> bool:
    """The process that writes logs, figures and summaries (process 0; the only one without jax.distributed)."""
    return jax.process_index() == 0


def jit_over_seeds(fn, sharding: NamedSharding, num_args: int = 1, donate: bool = False, shared: int = 0):
    """``jax.jit(jax.vmap(fn))`` with every argument and output split along its leading (seed) axis.

    ``shard_map`` hands each device the plain vmapped program on its own seeds (no partitioner in between, no
    collectives). The results equal the one-device run's up to float rounding: the programs are compiled
    apart, and XLA's CPU reductions can differ in the last bit (``tests/test_shard.py``). ``donate``: the
    first argument's buffers are given to the outputs (a training chunk's runner: without it the old and the
    new runner, replay buffers included, are both resident during the call). ``shared``: the last ``shared`` of
    the ``num_args`` arguments are the same for every seed (not vmapped, replicated), e.g. a chunk's trip count."""
    donate_argnums = (0,) if donate else ()
    in_axes = (0,) * (num_args - shared) + (None,) * shared
    if sharding.mesh.size == 1:  # one device: the plain program, compiled exactly as without sharding
        return jax.jit(jax.vmap(fn, in_axes=in_axes), donate_argnums=donate_argnums)
    spec, whole = sharding.spec, PartitionSpec()
    in_specs = tuple(spec if axis == 0 else whole for axis in in_axes)
    mapped = jax.shard_map(jax.vmap(fn, in_axes=in_axes), mesh=sharding.mesh, in_specs=in_specs, out_specs=spec,
                           check_vma=False)  # per-device code is plain vmapped JAX: nothing to check
    return jax.jit(mapped, in_shardings=tuple(NamedSharding(sharding.mesh, s) for s in in_specs),
                   out_shardings=sharding, donate_argnums=donate_argnums)


def data_mesh(num_envs: int, buffer_size: int, requested: int = 0) -> Mesh:
    """The devices one run's environments (``num_envs``) and replay items (``buffer_size``; 0 without a buffer) are
    split over (``parallel=envs``): ``requested`` (checked) or with 0 the most devices that divide both."""
    devices = jax.devices()
    fits = [k for k in range(1, len(devices) + 1) if num_envs % k == 0 and buffer_size % k == 0]
    count = requested or max(fits)
    if count not in fits:
        raise ConfigError(f"parallel=envs with devices={requested}: it must divide the env count ({num_envs})"
                          + (f" and the replay buffer ({buffer_size})" if buffer_size else "") + f" and exist "
                          f"({len(devices)} device(s)); allowed: {', '.join(map(str, fits))}, or 0")
    return Mesh(np.asarray(devices[:count]), (DATA_AXIS,))


def jit_data_parallel(fn, mesh: Mesh, in_specs, out_specs, donate: bool = False, shared: int = 0):
    """``jax.jit(jax.vmap(fn))`` with a ``PartitionSpec`` per argument and output leaf (trees, or prefixes of
    them) over ``mesh``: XLA partitions the program (GSPMD), inserting the collectives, e.g. the gradient's
    sum over the devices' samples, so the result is the one-device program's up to float rounding. ``shared``:
    the last ``shared`` arguments are not vmapped (the same for every row)."""
    def named(tree):
        return jax.tree.map(lambda spec: NamedSharding(mesh, spec), tree,
                            is_leaf=lambda x: isinstance(x, PartitionSpec))

    in_axes = (0,) * (len(in_specs) - shared) + (None,) * shared
    return jax.jit(jax.vmap(fn, in_axes=in_axes), in_shardings=named(in_specs), out_shardings=named(out_specs),
                   donate_argnums=(0,) if donate else ())
