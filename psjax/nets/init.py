"""Orthogonal initialisation without LAPACK.

XLA's CPU QR kernel splits a batch of factorizations across the intra-op thread pool
and waits for them from inside that pool, which deadlocks intermittently on small
machines when the factorizations are vmapped (banks x seeds). Orthogonalising a
Gaussian matrix by Gram-Schmidt with re-orthogonalisation (CGS2) gives the same
distribution (the Q of a QR with positive diagonal R) using only matmuls.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _gram_schmidt(a: jax.Array) -> jax.Array:
    """Orthonormal columns spanning ``a[n, m]`` (m <= n), column by column, twice for accuracy."""
    n, m = a.shape

    def column(q, j):
        v = a[:, j]
        for _ in range(2):  # CGS2: a second pass removes the round-off left by the first
            v = v - q @ (q.T @ v)
        q = q.at[:, j].set(v / jnp.linalg.norm(v))
        return q, None

    q, _ = jax.lax.scan(column, jnp.zeros((n, m), a.dtype), jnp.arange(m))
    return q


def orthogonal(scale: float = 1.0):
    """Flax-style initializer: an orthogonal ``[..., in, out]`` kernel times ``scale``."""

    def init(key, shape, dtype=jnp.float32):
        rows, cols = int(np.prod(shape[:-1])), shape[-1]
        a = jax.random.normal(key, (max(rows, cols), min(rows, cols)), jnp.float32)
        q = _gram_schmidt(a)
        if rows < cols:
            q = q.T
        return (scale * q).reshape(shape).astype(dtype)

    return init


def orthogonal_plus_noise(scale: float, noise: float):
    """Flax-style initializer: ``orthogonal(scale)`` plus i.i.d. ``N(0, noise^2)`` on every entry.

    The MADPS reference's actor initialisation (``initial_as_the_same=False``: gain 0.5, noise 0.2). The
    noise dominates on 64-wide layers (orthogonal entries have std ``scale / sqrt(fan)`` = 0.06 there),
    so every agent starts with its own clearly non-uniform policy.
    """
    base = orthogonal(scale)

    def init(key, shape, dtype=jnp.float32):
        k_base, k_noise = jax.random.split(key)
        return (base(k_base, shape, jnp.float32) + noise * jax.random.normal(k_noise, shape)).astype(dtype)

    return init


def normal(std: float):
    """Flax-style initializer: i.i.d. ``N(0, std^2)`` (the reference's bias noise; std 0 gives zeros)."""

    def init(key, shape, dtype=jnp.float32):
        return (std * jax.random.normal(key, shape)).astype(dtype)

    return init


def template_gain(w: jax.Array) -> jax.Array:
    """The root-mean-square singular value of ``w`` flattened to ``[prod(shape[:-1]), out]``: ``g`` for an
    ``orthogonal(g)`` initialisation."""
    w = w.reshape(-1, w.shape[-1])
    return jnp.linalg.norm(w) / np.sqrt(min(w.shape))


def redraw_like(key: jax.Array, params):
    """A fresh draw of psjax's initialisation of ``params`` (one network's, no slot axis): every kernel (rank >= 2)
    orthogonal at its own ``template_gain``, LayerNorm scales one, every other leaf (biases) zero."""
    from flax.traverse_util import flatten_dict, unflatten_dict

    flat = flatten_dict(params)
    out = {}
    for i, (path, leaf) in enumerate(flat.items()):
        if leaf.ndim >= 2:
            out[path] = template_gain(leaf) * orthogonal(1.0)(jax.random.fold_in(key, i), leaf.shape, leaf.dtype)
        else:
            out[path] = jnp.ones_like(leaf) if path[-1] == "scale" else jnp.zeros_like(leaf)
    return unflatten_dict(out)
