"""A run's schedule: the chunks its training iterations are cut into (one evaluation after each) and the
seeds' training and evaluation keys. Depends only on the config, so a resumed run cuts and draws as an
uninterrupted one."""

from __future__ import annotations

import jax
import numpy as np

# fold_in salt that separates the evaluation key stream from the keys the trainer splits off
# the seed key, so evaluation never reuses a training key.
EVAL_SALT = 0x65766C  # "evl"


def chunk_plan(num_iterations: int, eval_every: float) -> list[int]:
    """Training iterations per chunk; one evaluation follows each chunk.

    Chunks hold ``round(eval_every * num_iterations)`` iterations (at least 1; ``eval_every=0``:
    one chunk); the last one holds the remainder. The plan depends only on the config, so a
    resumed run cuts training at the same places as an uninterrupted one.
    """
    size = num_iterations if eval_every <= 0 else max(1, round(eval_every * num_iterations))
    size = min(size, num_iterations)
    full, rest = divmod(num_iterations, size)
    return [size] * full + ([rest] if rest else [])


def extend_plan(plan: list[int], num_iterations: int) -> list[int]:
    """``plan`` continued to ``num_iterations`` with chunks of its first chunk's size, the remainder last: a run
    continued with a larger ``steps=`` keeps the chunks (and so the evaluations) it had, its remainder chunk
    included, instead of cutting the new total by ``eval_every`` again."""
    extra = num_iterations - sum(plan)
    if extra < 0:
        raise ValueError(f"plan {plan} holds more than {num_iterations} iterations")
    full, rest = divmod(extra, plan[0])
    return list(plan) + [plan[0]] * full + ([rest] if rest else [])


def seed_keys(seed: int, seeds: int) -> np.ndarray:
    """Raw PRNG keys ``uint32[seeds, 2]`` for seeds ``seed .. seed + seeds - 1``."""
    return np.stack([np.asarray(jax.random.key_data(jax.random.key(s))) for s in range(seed, seed + seeds)])


def eval_key_base(keys: np.ndarray) -> np.ndarray:
    """Per-seed base of the evaluation keys, ``[S, 2] -> [S, 2]``."""
    return np.asarray(jax.vmap(jax.random.fold_in, (0, None))(keys, EVAL_SALT))


def eval_keys(base: np.ndarray, chunk: int) -> np.ndarray:
    """Keys ``[S, 2]`` of the evaluation after ``chunk`` chunks (0 = before training)."""
    return np.asarray(jax.vmap(jax.random.fold_in, (0, None))(base, chunk))
