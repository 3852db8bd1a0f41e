"""Per-agent networks. Each takes optional hidden-unit masks so one set of
parameters can be specialised per agent (SNP-PS, AdaPS) without new weights.

Masks multiply hidden activations, so a masked unit outputs exactly zero and the
weights feeding it or reading from it receive exactly zero gradient.
"""

from __future__ import annotations

from typing import Sequence

import chex
import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from psjax.nets.init import orthogonal

Masks = Sequence[chex.Array] | None  # one [..., H] array per maskable hidden layer


def _dense(features: int, scale: float = np.sqrt(2.0)) -> nn.Dense:
    return nn.Dense(features, kernel_init=orthogonal(scale), bias_init=nn.initializers.zeros)


def _apply_mask(x: chex.Array, masks: Masks, layer: int) -> chex.Array:
    return x if masks is None else x * masks[layer]


class RecurrentQNet(nn.Module):
    """Dense -> ReLU -> GRU -> Dense utility network (the pymarl RNN agent).

    ``__call__(h[..., H], obs[..., D], masks) -> (h'[..., H], q[..., A])``. Two maskable
    layers: the first dense layer's output and the GRU state (masked in the carried
    state too, so a masked unit never influences later steps).
    """

    hidden: int
    num_actions: int
    num_masked_layers = 2

    @nn.compact
    def __call__(self, h, obs, masks: Masks = None):
        x = _apply_mask(nn.relu(_dense(self.hidden)(obs)), masks, 0)
        h, _ = nn.GRUCell(self.hidden, recurrent_kernel_init=orthogonal(1.0))(h, x)
        h = _apply_mask(h, masks, 1)
        return h, _dense(self.num_actions, 1.0)(h)


class MLP(nn.Module):
    """Two hidden ReLU layers: ``x[..., D] -> out[..., out_dim]``; both hidden layers maskable."""

    hidden: int
    out_dim: int
    out_scale: float = 1.0
    num_masked_layers = 2

    @nn.compact
    def __call__(self, x, masks: Masks = None):
        x = _apply_mask(nn.relu(_dense(self.hidden)(x)), masks, 0)
        x = _apply_mask(nn.relu(_dense(self.hidden)(x)), masks, 1)
        return _dense(self.out_dim, self.out_scale)(x)


def param_count(params) -> int:
    """Number of scalars in a parameter pytree."""
    import jax

    return int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))


def zeros_hidden(shape: Sequence[int]) -> chex.Array:
    return jnp.zeros(tuple(shape), jnp.float32)
