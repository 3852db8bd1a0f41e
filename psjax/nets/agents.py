"""Per-agent networks. Each takes optional hidden-unit masks so one set of
parameters can be specialised per agent (SNP-PS, AdaPS) without new weights.

Masks multiply hidden activations, so a masked unit outputs exactly zero and the
weights feeding it or reading from it receive exactly zero gradient.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any, Mapping, Sequence

import chex
import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from psjax.nets.init import normal, orthogonal, orthogonal_plus_noise

Masks = Sequence[chex.Array] | None  # one [..., H] array per maskable hidden layer

# Named blocks: methods and tests select an agent network's layers by block, never by a flax module name. Blocks:
# "conv" (the image torso), "hidden_<k>" (the k-th hidden Dense layer from the input; a GRU is not counted),
# "gru", "head" (the output layer) and "<block>_norm" (the LayerNorm after that block). The parameter trees keep
# flax's compact-style module names (Dense_k, GRUCell_0, ConvTorso_0): a module's name seeds its initial weights,
# so modules named after their blocks would start from other weights and change every result. ``blocks`` is the
# one place that maps the two; explicitly named modules (MADPS's front_k / back_k) are their own blocks.
NORM_SUFFIX = "_norm"


def blocks(tree: Mapping[str, Any]) -> dict[str, str]:
    """``{module name: block}`` of one agent network's parameters: ``{"params": {module: ...}}`` or the inner dict
    (leaves may lead with a slot or agent axis). The Dense modules from the input are hidden_0, hidden_1, ..., the
    last is the head."""
    modules = list(tree.get("params", tree))
    dense = sorted((m for m in modules if re.fullmatch(r"Dense_\d+", m)), key=lambda m: int(m.split("_")[1]))
    out = {m: "head" if i == len(dense) - 1 else f"hidden_{i}" for i, m in enumerate(dense)}
    for m in modules:
        base = m.removesuffix(NORM_SUFFIX)
        if m in out:
            continue
        if m == "GRUCell_0":
            out[m] = "gru"
        elif m == "ConvTorso_0":
            out[m] = "conv"
        elif m != base and base in out:
            out[m] = out[base] + NORM_SUFFIX
        else:
            out[m] = m
    return out


def dense_order(block: str) -> float | None:
    """The place of a Dense block (``blocks``) from the input: hidden_k -> k, the head last (inf); None for the
    other blocks (gru, conv, norms)."""
    if block == "head":
        return math.inf
    return int(block.removeprefix("hidden_")) if re.fullmatch(r"hidden_\d+", block) else None


def module_of(tree: Mapping[str, Any], block: str) -> str:
    """The module name of ``block`` in ``tree`` (``blocks``); a KeyError names the blocks it has."""
    for module, name in blocks(tree).items():
        if name == block:
            return module
    raise KeyError(f"no block {block!r}; this network has {sorted(blocks(tree).values())}")


def block_params(tree: Mapping[str, Any], block: str) -> Any:
    """The parameters of ``block``: ``tree["params"][module]`` (or ``tree[module]`` for the inner dict)."""
    inner = tree.get("params", tree)
    return inner[module_of(tree, block)]


@functools.lru_cache(maxsize=1)
def recurrent_blocks() -> dict[str, str]:
    """``blocks`` of a RecurrentNet at its default depth, every optional module included (image torso,
    LayerNorm), for a method that meets its leaves by path alone (PPS)."""
    import jax

    net = RecurrentNet(2, 2, obs_shape=(2, 2, 1), layer_norm=True)
    return blocks(jax.eval_shape(net.init, jax.random.PRNGKey(0), jnp.zeros(2), jnp.zeros(4)))


def blocks_before_gru(recurrent_layer: int | None = None) -> frozenset[str]:
    """The blocks a RecurrentNet runs before its GRU (its ``recurrent_layer``, the default if None): the image
    torso and the hidden Dense layers before it, with their LayerNorms."""
    layer = RecurrentNet.recurrent_layer if recurrent_layer is None else recurrent_layer
    dense = [f"hidden_{k}" for k in range(layer)]
    return frozenset(["conv", *dense, *(d + NORM_SUFFIX for d in dense)])


def dense(features: int, scale: float = np.sqrt(2.0)) -> nn.Dense:
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


def image_torso(x: chex.Array, obs_shape: tuple[int, ...]) -> chex.Array:
    """The conv torso when the observation is an image (``obs_shape`` given), else ``x`` unchanged."""
    return ConvTorso(tuple(obs_shape))(x) if obs_shape else x


INIT_STYLES = ("psjax", "reference")
REFERENCE_GAIN = 0.5  # the MADPS reference's ``initial_as_the_same=False``: orthogonal gain 0.5 ...
REFERENCE_NOISE = 0.2  # ... plus N(0, 0.2^2) noise on every kernel and bias


def dense_inits(init_style: str, scale: float) -> dict:
    """``kernel_init`` / ``bias_init`` of a Dense layer whose psjax kernel scale is ``scale``.

    ``psjax``: orthogonal ``scale``, zero bias; ``reference``: the MADPS reference's orthogonal ``REFERENCE_GAIN``
    plus N(0, ``REFERENCE_NOISE``^2) noise on kernel and bias (``scale`` unused)."""
    if init_style == "reference":
        return dict(kernel_init=orthogonal_plus_noise(REFERENCE_GAIN, REFERENCE_NOISE),
                    bias_init=normal(REFERENCE_NOISE))
    if init_style != "psjax":
        raise ValueError(f"init_style={init_style!r}; allowed: {', '.join(INIT_STYLES)}")
    return dict(kernel_init=orthogonal(scale), bias_init=nn.initializers.zeros)


def _layer_names(names: tuple[str, ...], depth: int, owner: str) -> tuple:
    """Explicit module names (torso, ``depth`` hidden layers, output) or flax's auto names (None each)."""
    if names and len(names) != depth + 2:
        raise ValueError(f"{owner} names={names}: need {depth + 2}, the torso's then {depth + 1} layers'")
    return names or (None,) * (depth + 2)


class RecurrentNet(nn.Module):
    """``depth`` hidden layers, the one at ``recurrent_layer`` a GRU: ``(h[..., H], x[..., D], masks) ->
    (h'[..., H], out[..., out_dim])``.

    The defaults (depth 2, GRU second) are Dense -> ReLU -> GRU -> Dense, the pymarl RNN agent (the Q
    networks) and the recurrent A2C / PPO actor and critic. Every hidden layer is maskable; masks, when given,
    cover the first ``len(masks)`` layers (the shared actor-critic torso's Dense and GRU; its policy head's
    layer stays unmasked). The GRU's mask multiplies its state, so a masked unit is zero in the carried state
    too and never influences later steps. ``init_style`` and ``names`` as ``MLP`` (they apply to the Dense
    layers; the GRU keeps its orthogonal recurrent kernel), so MADPS's front / back blocks name the GRU like
    any other layer; without ``names`` the modules carry flax's compact-style names (``ConvTorso_0``,
    ``Dense_k`` counted apart from ``GRUCell_0``), which other methods select layers by.

    ``layer_norm`` puts a LayerNorm (``<Dense name>_norm``) between every hidden Dense layer and its ReLU, before
    the mask (PQN's normalisation; the GRU and the output layer stay unnormalised).

    One step is ``post(cell(h, pre(x)))``; ``psjax.sharing.bank.unroll_agents`` applies ``pre`` and ``post`` to
    a whole sequence at once and scans only ``cell``.
    """

    hidden: int
    out_dim: int
    obs_shape: tuple[int, ...] = ()  # (H, W, C): a ConvTorso reads the image part of x first
    out_scale: float = 1.0
    depth: int = 2
    recurrent_layer: int = 1  # which hidden layer (from the input, 0-based) is the GRU
    init_style: str = "psjax"
    names: tuple[str, ...] = ()
    layer_norm: bool = False  # LayerNorm between each hidden Dense layer and its ReLU (PQN's normalisation)
    num_masked_layers = 2  # at the default depth

    @property
    def state_size(self) -> int:
        """The width of the carried state ``h``."""
        return self.hidden

    def setup(self):
        if not 0 <= self.recurrent_layer < self.depth:
            raise ValueError(f"RecurrentNet recurrent_layer={self.recurrent_layer}; allowed: 0 .. {self.depth - 1}")
        dense_names = iter(f"Dense_{k}" for k in range(self.depth + 1))
        auto = ("ConvTorso_0",) + tuple("GRUCell_0" if layer == self.recurrent_layer else next(dense_names)
                                         for layer in range(self.depth)) + (next(dense_names),)
        names = _layer_names(self.names, self.depth, "RecurrentNet")
        names = tuple(given or default for given, default in zip(names, auto))
        self.conv = ConvTorso(tuple(self.obs_shape), name=names[0]) if self.obs_shape else None
        self.layers = tuple(
            nn.GRUCell(self.hidden, recurrent_kernel_init=orthogonal(1.0), name=names[1 + layer])
            if layer == self.recurrent_layer else
            nn.Dense(self.hidden, name=names[1 + layer], **dense_inits(self.init_style, np.sqrt(2.0)))
            for layer in range(self.depth))
        # named after the Dense layer they follow ("Dense_0_norm"), so name-based layer selection keeps working
        self.norms = tuple(
            nn.LayerNorm(name=f"{names[1 + layer]}_norm") if self.layer_norm and layer != self.recurrent_layer
            else None for layer in range(self.depth))
        self.out = nn.Dense(self.out_dim, name=names[-1], **dense_inits(self.init_style, self.out_scale))

    def _check(self, masks: Masks) -> None:
        if masks is not None and not self.recurrent_layer < len(masks) <= self.depth:
            raise ValueError(f"RecurrentNet of depth {self.depth} got {len(masks)} masks; allowed: "
                             f"{self.recurrent_layer + 1} .. {self.depth} (through the GRU)")

    def _dense(self, x, masks: Masks, layers: range):
        for layer in layers:
            x = self.layers[layer](x)
            x = nn.relu(x if self.norms[layer] is None else self.norms[layer](x))
            if masks is not None and layer < len(masks):
                x = x * masks[layer]
        return x

    def pre(self, x, masks: Masks = None):
        """The layers before the GRU (no state): ``x[..., D] -> [..., F]``."""
        self._check(masks)
        if self.conv is not None:
            x = self.conv(x)
        return self._dense(x, masks, range(self.recurrent_layer))

    def cell(self, h, x, masks: Masks = None):
        """The GRU step on ``pre``'s features: ``h[..., H], x[..., F] -> h'[..., H]`` (masked)."""
        h, _ = self.layers[self.recurrent_layer](h, x)
        return _apply_mask(h, masks, self.recurrent_layer)

    def post(self, h, masks: Masks = None):
        """The layers after the GRU and the output: ``h[..., H] -> out[..., out_dim]``."""
        return self.out(self._dense(h, masks, range(self.recurrent_layer + 1, self.depth)))

    def state(self, h, x, masks: Masks = None):
        """One step's new state without the output layers: ``h[..., H], x[..., D] -> h'[..., H]``."""
        return self.cell(h, self.pre(x, masks), masks)

    def __call__(self, h, x, masks: Masks = None):
        h = self.state(h, x, masks)
        return h, self.post(h, masks)


class MLP(nn.Module):
    """``depth`` hidden ReLU layers: ``x[..., D] -> out[..., out_dim]``; every hidden layer maskable.

    ``init_style``: ``psjax`` = hidden kernels orthogonal sqrt(2), the output kernel orthogonal ``out_scale``, zero
    biases; ``reference`` = the MADPS reference's ``initial_as_the_same=False`` (``dense_inits``; the conv torso
    keeps its own init). ``names``: explicit module names, the conv torso's (used with image observations only)
    then the ``depth + 1`` Dense layers' from the input; ``()`` keeps flax's auto names (``ConvTorso_0``,
    ``Dense_k``), which other methods select layers by.
    """

    hidden: int
    out_dim: int
    out_scale: float = 1.0
    obs_shape: tuple[int, ...] = ()  # (H, W, C): a ConvTorso reads the image part of x first
    depth: int = 2
    init_style: str = "psjax"
    names: tuple[str, ...] = ()
    num_masked_layers = 2  # at the default depth; masks, when given, have one entry per hidden layer

    @nn.compact
    def __call__(self, x, masks: Masks = None):
        names = _layer_names(self.names, self.depth, "MLP")
        if masks is not None and len(masks) != self.depth:
            raise ValueError(f"MLP of depth {self.depth} got {len(masks)} masks")
        if self.obs_shape:
            x = ConvTorso(tuple(self.obs_shape), name=names[0])(x)
        for layer in range(self.depth):
            hidden_layer = nn.Dense(self.hidden, name=names[1 + layer], **dense_inits(self.init_style, np.sqrt(2.0)))
            x = _apply_mask(nn.relu(hidden_layer(x)), masks, layer)
        return nn.Dense(self.out_dim, name=names[-1], **dense_inits(self.init_style, self.out_scale))(x)


def param_count(params) -> int:
    """Number of scalars in a parameter pytree."""
    import jax

    return int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))


