"""Shared test helpers."""

from __future__ import annotations

import os
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psjax.evaluate import policy_metrics

FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def pytest_configure(config):
    """``make test`` (``-m "not slow"``) is compile-bound: hundreds of small programs, each run for a few
    iterations. XLA's CPU backend without its LLVM optimisations compiles them ~40% faster (31 -> 18 min for the
    suite). The slow tests train for real and keep the optimisations (PQN's LBF test took 9.6 min with these flags).
    XLA reads the flags when its backend starts, at the first computation, after this."""
    if "not slow" in (config.option.markexpr or ""):
        os.environ.setdefault("XLA_FLAGS", FAST_COMPILE)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def virtual_devices_env(count: int) -> dict:
    """The environment of a subprocess that sees ``count`` virtual CPU devices and imports this checkout (plus the
    suite's fast-compiling XLA flags when the parent runs with them). ``JAX_NUM_CPU_DEVICES`` in the parent's
    environment (as on a machine set up to mimic several GPUs) would win over the XLA flag, so it is set too."""
    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f)
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={count} {flags}".strip(),
            "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(count),
            "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}


def assert_rows_close(rows: list[dict], others: list[dict], rtol: float, atol: float) -> None:
    """Two runs' logged rows hold the same columns, numbers equal up to the tolerances, everything else exactly."""
    assert len(rows) == len(others) > 0
    for a, b in zip(rows, others):
        assert a.keys() == b.keys()
        for k in a:
            if isinstance(a[k], (int, float)) and not isinstance(a[k], bool):
                np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=k)
            else:
                assert a[k] == b[k], k


class FakeProgram(NamedTuple):
    """The ``psjax.train.Program`` interface, for testing the host loop without the trainer."""

    init: Callable
    run_chunk: Callable
    evaluate: Callable
    param_count: int
    num_iterations: int
    steps_per_iteration: int


class FakeRunner(NamedTuple):
    iteration: Any  # int32[]
    key: Any  # uint32[2], raw key
    params: Any  # float32[4]


def make_fake_program(cfg, chunk_iters: int) -> FakeProgram:
    """A runner that random-walks 4 params from its key: deterministic, cheap to compile.

    Every third iteration reports a NaN return (no episode finished), and ``q_agents`` is a
    per-agent metric ``[chunk, 3]`` to exercise column flattening.
    """
    spi = cfg.steps_per_iteration

    def init(key, point=()):  # a sweep's point: not used by the fake
        del point
        return FakeRunner(jnp.zeros((), jnp.int32), key, jax.random.normal(key, (4,)))

    def one_iteration(r, _):
        key, sub = jax.random.split(r.key)
        params = r.params + 0.1 * jax.random.normal(sub, (4,))
        it = r.iteration + 1
        metrics = {
            "env_steps": it * spi,
            "return": jnp.where(it % 3 == 0, jnp.nan, params.sum()),
            "won": (params[0] > 0).astype(jnp.float32),
            "episode_length": jnp.float32(10.0),
            "loss": jnp.mean(params**2),
            "q_agents": params[:3],
        }
        return FakeRunner(it, key, params), metrics

    def run_chunk(r):
        return jax.lax.scan(one_iteration, r, None, length=chunk_iters)

    def evaluate(r, key):  # every policy of cfg.eval_policies, the i-th one's return offset by i
        noise = jax.random.uniform(key)
        return policy_metrics({
            policy: {"return": r.params.sum() + noise + i, "won": (noise > 0.5).astype(jnp.float32),
                     "length": jnp.float32(7.0)}
            for i, policy in enumerate(cfg.eval_policies)})

    return FakeProgram(init, run_chunk, evaluate, 4, cfg.num_iterations, spi)


@pytest.fixture
def fake_factory():
    """``make_fake_program`` that records the chunk sizes it was asked for."""
    sizes = []

    def factory(cfg, chunk_iters):
        sizes.append(chunk_iters)
        return make_fake_program(cfg, chunk_iters)

    factory.sizes = sizes
    return factory


def check_vmapped_seeds_equal_single_runs(train, keys, rtol: float, atol: float) -> list[tuple[Any, Any]]:
    """Asserts that ``train`` vmapped over ``keys`` gives every seed's learner parameters as ``train`` run on that
    key alone; returns ``(single metrics, batched metrics of that seed)`` per key for further checks."""
    import numpy as np

    batched, batched_metrics = jax.jit(jax.vmap(train))(keys)
    pairs = []
    for i in range(len(keys)):
        single, single_metrics = jax.jit(train)(keys[i])
        for x, y in zip(jax.tree.leaves(single.learner.params), jax.tree.leaves(batched.learner.params)):
            np.testing.assert_allclose(np.asarray(y)[i], np.asarray(x), rtol=rtol, atol=atol)
        pairs.append((single_metrics, jax.tree.map(lambda m, i=i: m[i], batched_metrics)))
    return pairs


@pytest.fixture
def vmapped_check():
    """``check_vmapped_seeds_equal_single_runs`` for tests (conftest is not importable as a module)."""
    return check_vmapped_seeds_equal_single_runs
