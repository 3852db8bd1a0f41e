"""Where the program runs and compiles: its functions placed on the devices (``parallel=seeds``: the rows split
over them; ``parallel=envs``: each run's envs and replay items split, ``psjax.shard``) and JAX's persistent
compilation cache (``compile_cache``)."""

from __future__ import annotations

import pathlib
import sys
from typing import Callable, NamedTuple

import jax

from psjax.config import TrainConfig
from psjax.shard import DATA_AXIS, data_mesh, jit_data_parallel, jit_over_seeds
from psjax.train import data_parallel_specs


class Placement(NamedTuple):
    """The program's functions compiled onto the devices (``cfg.parallel``, ``psjax.shard``)."""

    devices: int
    init: Callable  # (keys [R, 2], sweep columns) -> runner
    evaluate: Callable  # (runner, keys [R, 2]) -> scalars [R]
    chunk: Callable  # run_chunk -> its jitted form, runner -> (runner, metrics), the runner donated
    counted: Callable  # run_counted -> its jitted form, (runner, count) -> (runner, metrics), the runner donated
    put: Callable  # a restored runner onto the devices


def place_program(where, main, keys, columns) -> Placement:
    """parallel=seeds (``where``: the rows' NamedSharding): every function vmapped over the rows, split over its
    devices; envs (``where``: ``envs_mesh``'s Mesh): each run's environments, agent memory and replay items split
    over the mesh's devices, the rest replicated."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    if not isinstance(where, Mesh):
        return Placement(where.mesh.size, jit_over_seeds(main.init, where, num_args=2),
                         jit_over_seeds(main.evaluate, where, num_args=2),
                         lambda run_chunk: jit_over_seeds(run_chunk, where, donate=True),
                         lambda run_counted: jit_over_seeds(run_counted, where, num_args=2, donate=True, shared=1),
                         lambda runner: jax.device_put(runner, where))
    mesh = where
    specs = data_parallel_specs(jax.eval_shape(jax.vmap(main.init), keys, columns), DATA_AXIS)
    whole = PartitionSpec()
    named = jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
    return Placement(mesh.size, jit_data_parallel(main.init, mesh, (whole, whole), specs),
                     jit_data_parallel(main.evaluate, mesh, (specs, whole), whole),
                     lambda run_chunk: jit_data_parallel(run_chunk, mesh, (specs,), (specs, whole), donate=True),
                     lambda run_counted: jit_data_parallel(run_counted, mesh, (specs, whole), (specs, whole),
                                                           donate=True, shared=1),
                     lambda runner: jax.device_put(runner, named))


def envs_mesh(cfg: TrainConfig):
    """The devices one run's envs and replay items are split over (``parallel=envs``)."""
    lc = cfg.learner_cfg
    has_buffer = cfg.learner_kind.replay
    return data_mesh(lc.num_envs, lc.buffer_size if has_buffer else 0, cfg.devices)


def use_compile_cache(folder: str, limit_gb: float) -> pathlib.Path | None:
    """Point JAX's persistent compilation cache at ``folder`` (``~`` expanded), at most ``limit_gb`` GiB (least
    recently used programs removed beyond it): a program compiled once, by any earlier process with the same
    JAX and device, is loaded instead of compiled. Returns the folder; None when ``folder`` is empty (JAX's
    own setting left as it is) or cannot be created (training goes on without the cache)."""
    if not folder:
        return None
    path = pathlib.Path(folder).expanduser().resolve()
    limit = int(limit_gb * 2**30)
    if jax.config.jax_compilation_cache_dir == str(path) and jax.config.jax_compilation_cache_max_size == limit:
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"psjax: compile_cache={folder} unusable ({e}); compiling without it", file=sys.stderr)
        return None
    from jax.experimental.compilation_cache import compilation_cache

    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_compilation_cache_max_size", limit)
    compilation_cache.reset_cache()  # JAX opens its cache once per process: reopen it at this folder
    return path
