"""A run that does not fit is refused, never killed (issue 38, item 6): the training chunk is compiled from shapes
before anything is allocated, XLA's account of it (``memory_analysis``: arguments, outputs, temporaries) is checked
against the budget less ``psjax.memory.MARGIN``, and a refusal names the largest terms and a setting that fits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from conftest import make_fake_program

from psjax.config import ConfigError, make_config
from psjax.memory import GIB, MARGIN, MemoryEstimate, check_compiled, compiled_bytes, estimate
from psjax.run import run

MIB = 2**20
ITEM = 256 * 1024  # bytes of one stored item of the hand-made buffer below (64k float32)


def _compiled(buffer_size: int):
    """A chunk-like program: a donated runner holding a replay buffer of ``buffer_size`` items, one updated in
    place, plus a 4 MiB temporary."""

    def chunk(runner):
        buffer, params = runner
        noise = jnp.sort(jnp.outer(params, jnp.arange(1024.0)).ravel())  # [1024 x 1024] f32, kept for the sort
        return (buffer.at[0].set(noise[:ITEM // 4]), params + noise[:1024]), noise.sum()

    shapes = (jax.ShapeDtypeStruct((buffer_size, ITEM // 4), jnp.float32), jax.ShapeDtypeStruct((1024,), jnp.float32))
    return jax.jit(chunk, donate_argnums=0).lower(shapes).compile()


def test_compiled_bytes_reads_xla_account():
    need = compiled_bytes(_compiled(64))
    assert need["arguments"] == 64 * ITEM + 1024 * 4
    assert need["aliased"] == need["arguments"]  # the donated runner becomes the output
    assert need["temporaries"] >= 4 * MIB  # the sorted [1024 x 1024] copy
    assert need["total"] == need["arguments"] + need["outputs"] - need["aliased"] + need["temporaries"] + need["code"]


def test_refusal_names_the_largest_terms_and_a_buffer_size_that_fits():
    cfg = make_config({"env": "matrix", "alg": "fups", "learner": "qmix", "q.buffer_size": 64, "q.batch_size": 8})
    compiled = _compiled(64)
    need = compiled_bytes(compiled)
    est = MemoryEstimate({"replay buffer": 64 * ITEM, "parameters": 4096}, 64 * ITEM + 4096, 1)
    budget_gb = 10 * MIB / GIB  # 9 MiB usable: the 16 MiB buffer does not fit
    with pytest.raises(ConfigError) as refused:
        check_compiled(compiled, est, int(budget_gb * GIB), budget_gb, cfg)
    message = str(refused.value)
    assert f"needs {need['total'] / MIB:.1f} MiB per device" in message
    assert "the largest terms: replay buffer 16.0 MiB, XLA temporaries" in message
    assert f"of which {1 - MARGIN:.0%}" in message and "Refused before anything was allocated" in message
    fit = int(message.split("allowed: q.buffer_size=")[1].split()[0])
    assert compiled_bytes(_compiled(fit))["total"] <= budget_gb * GIB * (1 - MARGIN)  # the largest power of two
    # that fits: the buffer's bytes scale with its size, the rest of this program does not
    assert compiled_bytes(_compiled(2 * fit))["total"] > budget_gb * GIB * (1 - MARGIN)
    assert check_compiled(_compiled(fit), est, int(budget_gb * GIB), budget_gb, cfg)["total"] > 0  # it passes


def _big_temporary_factory(cfg, chunk_iters):
    """The conftest's fake program with a 64 MiB temporary in its training chunk (never run: it is refused)."""
    fake = make_fake_program(cfg, chunk_iters)

    def run_chunk(runner):
        runner, metrics = fake.run_chunk(runner)
        big = jnp.sort(jnp.outer(jnp.arange(4096.0) + runner.params[0], jnp.arange(4096.0)).ravel())
        return runner._replace(params=runner.params + big[:4]), metrics

    return fake._replace(run_chunk=run_chunk)


def test_run_is_refused_before_training_and_leaves_no_folder(tmp_path):
    """The floor from shapes (``psjax.memory.estimate``) fits the budget; XLA's account of the compiled chunk does
    not: refused after compiling, before the runner is allocated or a chunk runs, and the new folder removed."""
    overrides = {"q.num_envs": 2, "q.rollout_len": 4, "steps": 32, "out_dir": str(tmp_path), "run_name": "big",
                 "progress": False}
    floor = estimate(make_config(overrides)).total
    cfg = make_config({**overrides, "memory_gb": 2 * floor / GIB})  # twice the floor, far below 64 MiB
    with pytest.raises(ConfigError, match=r"the largest terms: XLA temporaries \d+\.\d MiB.*allowed: .*memory_gb="):
        run(cfg, make_program=_big_temporary_factory)
    assert not (tmp_path / "big").exists()


def test_cpu_devices_share_the_hosts_memory(monkeypatch):
    """Virtual CPU devices (--xla_force_host_platform_device_count) live in one host's memory: each gets its share."""
    from psjax import memory

    monkeypatch.setattr(memory, "_host_memory", lambda: 8 * memory.GIB)
    assert memory.device_memory() == 8 * memory.GIB
    assert memory.device_memory(host_devices=4) == 2 * memory.GIB
    est = memory.MemoryEstimate({"replay buffer": 3 * memory.GIB}, 3 * memory.GIB, 1)
    assert memory.check(est, host_devices=2) == 4 * memory.GIB  # 3 GiB per device fits a half of 8
    with pytest.raises(memory.ConfigError, match="over the run's CPU devices"):
        memory.check(est, host_devices=4)  # but not a quarter
