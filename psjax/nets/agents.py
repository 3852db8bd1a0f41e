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

from psjax.nets.init import normal, orthogonal, orthogonal_plus_noise

Masks = Sequence[chex.Array] | None  # one [..., H] array per maskable hidden layer


def _dense(features: int, scale: float = np.sqrt(2.0)) -> nn.Dense:
    return nn.Dense(features, kernel_init=orthogonal(scale), bias_init=nn.initializers.zeros)


def _apply_mask(x: chex.Array, masks: Masks, layer: int) -> chex.Array:
    return x if masks is None else x * masks[layer]


class ConvTorso(nn.Module):
    """Small conv stack for image observations: ``x[..., D] -> features[..., F]``.

    The first ``prod(obs_shape)`` features of ``x`` are a channels-last image ``(H, W, C)``
    flattened in C order (``EnvSpec.obs_shape``); anything after them (e.g. appended agent ids)
    is concatenated to the flattened conv output. Two 3x3 ReLU convolutions, the second with
    stride 2: ``F = ceil(H / 2) * ceil(W / 2) * channels[1] + (D - H * W * C)``.
    """

    obs_shape: tuple[int, ...]
    channels: tuple[int, int] = (16, 32)

    @nn.compact
    def __call__(self, x):
        h, w, c = self.obs_shape
        size = h * w * c
        lead = x.shape[:-1]
        img = x[..., :size].reshape((-1, h, w, c))
        init = dict(kernel_init=orthogonal(np.sqrt(2.0)), bias_init=nn.initializers.zeros)
        img = nn.relu(nn.Conv(self.channels[0], (3, 3), padding="SAME", **init)(img))
        img = nn.relu(nn.Conv(self.channels[1], (3, 3), strides=(2, 2), padding="SAME", **init)(img))
        return jnp.concatenate([img.reshape(lead + (-1,)), x[..., size:]], axis=-1)


def _torso(x: chex.Array, obs_shape: tuple[int, ...]) -> chex.Array:
    """The conv torso when the observation is an image (``obs_shape`` given), else ``x`` unchanged."""
    return ConvTorso(tuple(obs_shape))(x) if obs_shape else x


class RecurrentQNet(nn.Module):
    """Dense -> ReLU -> GRU -> Dense utility network (the pymarl RNN agent).

    ``__call__(h[..., H], obs[..., D], masks) -> (h'[..., H], q[..., A])``. Two maskable
    layers: the first dense layer's output and the GRU state (masked in the carried
    state too, so a masked unit never influences later steps).
    """

    hidden: int
    num_actions: int
    obs_shape: tuple[int, ...] = ()  # (H, W, C): a ConvTorso reads the image part of obs first
    num_masked_layers = 2

    @nn.compact
    def __call__(self, h, obs, masks: Masks = None):
        x = _apply_mask(nn.relu(_dense(self.hidden)(_torso(obs, self.obs_shape))), masks, 0)
        h, _ = nn.GRUCell(self.hidden, recurrent_kernel_init=orthogonal(1.0))(h, x)
        h = _apply_mask(h, masks, 1)
        return h, _dense(self.num_actions, 1.0)(h)


class MLP(nn.Module):
    """``depth`` hidden ReLU layers: ``x[..., D] -> out[..., out_dim]``; every hidden layer maskable.

    ``init_style``: ``psjax`` = hidden kernels orthogonal sqrt(2), the output kernel orthogonal ``out_scale``, zero
    biases; ``reference`` = the MADPS reference's ``initial_as_the_same=False``: every kernel orthogonal with gain
    ``REFERENCE_GAIN`` plus N(0, ``REFERENCE_NOISE``^2) noise, every bias N(0, ``REFERENCE_NOISE``^2)
    (``out_scale`` unused; the conv torso keeps its own init). ``names``: explicit module names, the conv
    torso's (used with image observations only) then the ``depth + 1`` Dense layers' from the input; ``()``
    keeps flax's auto names (``ConvTorso_0``, ``Dense_k``), which other methods select layers by.
    """

    hidden: int
    out_dim: int
    out_scale: float = 1.0
    obs_shape: tuple[int, ...] = ()  # (H, W, C): a ConvTorso reads the image part of x first
    depth: int = 2
    init_style: str = "psjax"
    names: tuple[str, ...] = ()
    num_masked_layers = 2  # at the default depth; masks, when given, have one entry per hidden layer
    INITS = ("psjax", "reference")
    REFERENCE_GAIN = 0.5
    REFERENCE_NOISE = 0.2

    def _inits(self, scale: float) -> dict:
        """``kernel_init`` / ``bias_init`` of a Dense layer whose psjax kernel scale is ``scale``."""
        if self.init_style == "reference":
            return dict(kernel_init=orthogonal_plus_noise(self.REFERENCE_GAIN, self.REFERENCE_NOISE),
                        bias_init=normal(self.REFERENCE_NOISE))
        if self.init_style != "psjax":
            raise ValueError(f"MLP init_style={self.init_style!r}; allowed: {', '.join(self.INITS)}")
        return dict(kernel_init=orthogonal(scale), bias_init=nn.initializers.zeros)

    @nn.compact
    def __call__(self, x, masks: Masks = None):
        names = self.names or (None,) * (self.depth + 2)
        if len(names) != self.depth + 2:
            raise ValueError(f"MLP names={self.names}: need {self.depth + 2}, the torso's then {self.depth + 1} Dense")
        if masks is not None and len(masks) != self.depth:
            raise ValueError(f"MLP of depth {self.depth} got {len(masks)} masks")
        if self.obs_shape:
            x = ConvTorso(tuple(self.obs_shape), name=names[0])(x)
        for layer in range(self.depth):
            dense = nn.Dense(self.hidden, name=names[1 + layer], **self._inits(np.sqrt(2.0)))
            x = _apply_mask(nn.relu(dense(x)), masks, layer)
        return nn.Dense(self.out_dim, name=names[-1], **self._inits(self.out_scale))(x)


def param_count(params) -> int:
    """Number of scalars in a parameter pytree."""
    import jax

    return int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))


def zeros_hidden(shape: Sequence[int]) -> chex.Array:
    return jnp.zeros(tuple(shape), jnp.float32)
