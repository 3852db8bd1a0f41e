"""Placing independent runs on devices: the leading axis of vmapped seeds sharded over a 1-D device mesh.

The seeds never talk to each other, so the sharded program needs no collectives: each device runs its
slice of the seeds, and the results are those of the unsharded program up to float rounding.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from psjax.fields import ConfigError

SEED_AXIS = "seed"


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
    """The sharding of arrays whose leading axis is the seeds: split over ``seed_device_count`` local devices
    (every other axis replicated within a device's slice)."""
    devices = jax.local_devices()
    count = seed_device_count(num_seeds, requested, len(devices))
    return NamedSharding(Mesh(np.asarray(devices[:count]), (SEED_AXIS,)), PartitionSpec(SEED_AXIS))


def jit_over_seeds(fn, sharding: NamedSharding, num_args: int = 1, donate: bool = False):
    """``jax.jit(jax.vmap(fn))`` with every argument and output split along its leading (seed) axis.

    ``shard_map`` hands each device the plain vmapped program on its own seeds (no partitioner in between, no
    collectives). The results equal the one-device run's up to float rounding: the programs are compiled
    apart, and XLA's CPU reductions can differ in the last bit (``tests/test_shard.py``). ``donate``: the
    first argument's buffers are given to the outputs (a training chunk's runner: without it the old and the
    new runner, replay buffers included, are both resident during the call)."""
    donate_argnums = (0,) if donate else ()
    if sharding.mesh.size == 1:  # one device: the plain program, compiled exactly as without sharding
        return jax.jit(jax.vmap(fn), donate_argnums=donate_argnums)
    spec = sharding.spec
    mapped = jax.shard_map(jax.vmap(fn), mesh=sharding.mesh, in_specs=(spec,) * num_args, out_specs=spec,
                           check_vma=False)  # per-device code is plain vmapped JAX: nothing to check
    return jax.jit(mapped, in_shardings=(sharding,) * num_args, out_shardings=sharding,
                   donate_argnums=donate_argnums)
