"""Kaleidoscope (Li et al., NeurIPS 2024; code: LXXXXR/Kaleidoscope): learnable per-agent weight
masks on one shared network.

Every Dense kernel ``w[in, out]`` of every bank (the "masked layers"; GRU weights and biases stay
plainly shared) has, per agent i, a learnable threshold per weight ``t_i[in, out]``, initialised at
``-(scale * U + bias)``, U ~ Uniform(0, 1) (defaults 5, 5: sigmoid(t) <= sigmoid(-5) ~ 0.0067, so
nearly everything is shared at the start). Agent i runs the network with

    w'_i = sign(w) * relu(|w| - sigmoid(t_i)),

so its binary mask is ``1[|w| > sigmoid(t_i)]``. The thresholds live in the learner's
``params["sharing"]`` and are trained by the learner's own gradient, through ``w'`` and through the
diversity loss, whose binary masks pass gradient to the thresholds with a straight-through estimator.

Diversity loss (added to the learner's loss at every gradient step):
``-sum_l c_l sum_{i != j} || m_i^l |w^l| - m_j^l |w^l| ||_1 / (N (N - 1) P)`` with layer weights
``c_l = 1, 2, 4, 8, ...`` (``2**l`` along each bank's Dense layers) and P the number of masked weights;
it is scaled by ``|div_coef * mean(main loss) / mean(diversity loss)|`` over the last ``kal_window``
gradient steps (the current one included). Every ``kal_reset_interval`` env steps the weights that
every agent masks out are re-initialised with probability ``kal_reset_ratio``, with fresh thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
from flax.traverse_util import flatten_dict, unflatten_dict

from psjax.envs.base import EnvSpec
from psjax.fields import doc_field as _f
from psjax.nets.agents import blocks, dense_order
from psjax.registry import Method
from psjax.schema import TrainConfig
from psjax.sharing.bank import SharingState, SlotLayout
from psjax.sharing.bank_ops import map_banks, run_if
from psjax.sharing.methods import AuxLoss, Scheme


@dataclass(frozen=True)
class KaleidoscopeOptions:
    """Kaleidoscope's options (``sharing.kal_*``)."""

    kal_div_coef: float = _f(0.5, "Kaleidoscope: diversity-loss weight relative to the main loss (paper: MPE 0.5, "
                             "SMACv2 5.0)", min=0.0)
    kal_reset_interval: int = _f(200_000, "Kaleidoscope: env steps between resets of weights every agent masks out "
                                 "(paper: MPE 200k, SMACv2 1M); 0 = never", min=0)
    kal_reset_ratio: float = _f(0.1, "Kaleidoscope: probability that such a weight is reset (paper: MPE 0.1, "
                                "SMACv2 0.2)", min=0.0, max=1.0)
    kal_window: int = _f(100, "Kaleidoscope: gradient steps in the running means that rescale the diversity loss",
                         min=1)
    kal_threshold_scale: float = _f(5.0, "Kaleidoscope: thresholds start (and restart) at -(scale * U + bias), "
                                    "U ~ Uniform(0, 1)", min=0.0)
    kal_threshold_bias: float = _f(5.0, "Kaleidoscope: see kal_threshold_scale; sigmoid(-bias) is the largest "
                                   "initial shrink of a weight")

Path = tuple[str, ...]
MAX_PAIR_AGENTS = 8  # the [N, N] overlap matrix is logged up to this many agents (N^2 columns)


class LossWindow(NamedTuple):
    """The last W main and diversity losses, for the rescaling (``AuxLoss`` state)."""

    main: chex.Array  # float32[W]
    div: chex.Array  # float32[W]
    count: chex.Array  # int32, gradient steps recorded so far


def masked_paths(bank: Any) -> list[Path]:
    """The masked kernels of a bank, its Dense layers' kernels (``psjax.nets.agents.blocks``: hidden_k and the
    head, not the GRU), ordered from the input to the output layer."""
    module_blocks = blocks(bank)
    ranked = [(dense_order(module_blocks.get(p[-2], "")), p) for p in flatten_dict(bank)
              if len(p) >= 2 and p[-1] == "kernel"]
    return [p for rank, p in sorted((r, p) for r, p in ranked if r is not None)]


def effective_weights(w: chex.Array, t: chex.Array) -> chex.Array:
    """Per-agent weights ``sign(w) * relu(|w| - sigmoid(t_i))``: ``w[...], t[N, ...] -> [N, ...]``."""
    chex.assert_equal_shape([w, t[0]])
    return jnp.sign(w) * jax.nn.relu(jnp.abs(w) - jax.nn.sigmoid(t))


def binary_masks(w: chex.Array, t: chex.Array) -> chex.Array:
    """``1[|w| > sigmoid(t_i)]`` as float, ``w[...], t[N, ...] -> [N, ...]``.

    Straight-through: the forward value is binary, the gradient is that of ``|w| - sigmoid(t_i)``
    with respect to the thresholds only (w enters without gradient, as in the reference).
    """
    soft = jnp.abs(jax.lax.stop_gradient(w)) - jax.nn.sigmoid(t)
    hard = (soft > 0).astype(soft.dtype)
    return soft + jax.lax.stop_gradient(hard - soft)


def init_thresholds(key: chex.PRNGKey, banks: dict, num_agents: int, scale: float, bias: float) -> dict:
    """``{bank name: {path...: t[N, in, out]}}`` (nested like the bank) at ``-(scale * U + bias)``."""
    out = {}
    for name in sorted(banks):
        flat = flatten_dict(banks[name])
        thresholds = {}
        for i, path in enumerate(masked_paths(banks[name])):
            chex.assert_axis_dimension(flat[path], 0, 1)  # one shared slot
            u = jax.random.uniform(jax.random.fold_in(jax.random.fold_in(key, len(out)), i),
                                   (num_agents, *flat[path].shape[1:]))
            thresholds[path] = -(scale * u + bias)
        out[name] = unflatten_dict(thresholds)
    return out


def agent_params(name: str, bank: Any, owned: dict, sharing: SharingState | None = None) -> tuple[Any, Any]:
    """Every agent's parameters of bank ``name``: ``(params, in_axes)`` for ``apply_agents`` (``sharing`` unused).

    Masked kernels become ``[N, in, out]`` (in_axes 0); everything else is slot 0, shared (None).
    """
    thresholds = flatten_dict(owned[name])
    params, axes = {}, {}
    for path, leaf in flatten_dict(bank).items():
        if path in thresholds:
            params[path], axes[path] = effective_weights(leaf[0], thresholds[path]), 0
        else:
            params[path], axes[path] = leaf[0], None
    return unflatten_dict(params), unflatten_dict(axes)


def masked_layers(params: dict, names: tuple[str, ...]):
    """``(bank name, layer index within the bank, w[in, out], t[N, in, out], path)`` per masked kernel."""
    for name in names:
        flat, thresholds = flatten_dict(params[name]), flatten_dict(params["sharing"][name])
        for layer, path in enumerate(masked_paths(params[name])):
            yield name, layer, flat[path][0], thresholds[path], path


def diversity_loss(params: dict, names: tuple[str, ...]) -> chex.Array:
    """Negative mean pairwise L1 distance between the agents' |w|-weighted binary masks (a scalar).

    ``params`` holds the banks ``names`` [1, ...] and their thresholds in ``params["sharing"]``.
    Layer l of a bank weighs ``2**l``; the sum over ordered pairs is divided by ``N (N - 1)`` and by
    the number of masked weights, as in the reference. Zero for a single agent.
    """
    total, count = jnp.float32(0.0), 0
    for _, layer, w, t, _ in masked_layers(params, names):
        total = total + (2.0**layer) * pairwise_mask_distance(w, t)
        count += w.size
        num_agents = t.shape[0]
    return -total / max(num_agents * (num_agents - 1), 1) / count


def pairwise_mask_distance(w: chex.Array, t: chex.Array) -> chex.Array:
    """``sum_{i, j} || m_i |w| - m_j |w| ||_1`` over ordered agent pairs, in O(N) instead of O(N^2) memory.

    ``w[in, out], t[N, in, out] -> scalar``. The masks are binary in the forward pass, so at a weight that
    c of the N agents keep the pairs contribute ``2 c (N - c) |w|``; the gradient that ``jnp.abs`` sends to
    agent i's weighted mask through the straight-through estimator, ``2 sum_j sign(m_i - m_j) |w| =
    2 (N m_i - c) |w|``, reaches its thresholds times ``-sigmoid'(t_i)``; ``w`` gets none (as the reference).
    Value and gradient equal the pairwise form (tested), which materialised ``[N, N, in, out]`` at every update.
    """
    return _mask_distance(jnp.abs(jax.lax.stop_gradient(w)), t)


# A custom VJP rather than the straight-through gradient attached through autodiff: the same numbers, a
# third of the ops; per A2C update (40 samples) this loss runs over every masked weight of every agent.
@jax.custom_vjp
def _mask_distance(a: chex.Array, t: chex.Array) -> chex.Array:
    return _mask_distance_fwd(a, t)[0]


def _mask_distance_fwd(a, t):
    threshold = jax.nn.sigmoid(t)
    keep = (a > threshold).astype(t.dtype)  # [N, in, out]
    kept = keep.sum(0)  # c
    n = t.shape[0]
    return (2.0 * kept * (n - kept) * a).sum(), (a, threshold, keep, kept)


def _mask_distance_bwd(residuals, g):
    a, threshold, keep, kept = residuals
    n = threshold.shape[0]
    return jnp.zeros_like(a), -g * 2.0 * (n * keep - kept) * a * threshold * (1.0 - threshold)


_mask_distance.defvjp(_mask_distance_fwd, _mask_distance_bwd)


def init_window(length: int) -> LossWindow:
    return LossWindow(jnp.zeros(length, jnp.float32), jnp.zeros(length, jnp.float32), jnp.int32(0))


def rescale(window: LossWindow, main: chex.Array, div: chex.Array, coef: float) -> tuple[chex.Array, LossWindow]:
    """Record this step's losses and return ``|coef * mean(main) / mean(div)|`` over the last W steps.

    Means run over the filled entries only (fewer than W at the start); ``coef`` itself when the
    mean diversity loss is 0 (one agent, or identical masks), as in the reference.
    """
    size = window.main.shape[0]
    slot = window.count % size
    window = LossWindow(window.main.at[slot].set(main), window.div.at[slot].set(div), window.count + 1)
    filled = (jnp.arange(size) < window.count).astype(jnp.float32)
    n = jnp.minimum(window.count, size).astype(jnp.float32)
    mean_main, mean_div = (window.main * filled).sum() / n, (window.div * filled).sum() / n
    safe_div = jnp.where(mean_div == 0, 1.0, mean_div)
    scale = jnp.where(mean_div == 0, coef, jnp.abs(coef * mean_main / safe_div))
    return scale, window


def reset_layer(key, w, t, ratio: float, scale: float, bias: float):
    """Re-initialise the weights of one layer that every agent masks out, each with probability ``ratio``.

    ``w[in, out], t[N, in, out] -> (w', t', flags[in, out] bool)``. New weights are drawn uniformly
    with the layer's current RMS (psjax layers are orthogonally initialised with gains from 0.01 to
    sqrt(2), so one fan-in rule would misscale some of them); the reset weights' thresholds of every
    agent are drawn afresh at ``-(scale * U + bias)``.
    """
    u = jax.random.uniform(key, (2 + t.shape[0], *w.shape))  # one draw: flag, weight, N thresholds
    all_masked = jnp.all(jnp.abs(w) <= jax.nn.sigmoid(t), axis=0)
    flags = all_masked & (u[0] < ratio)
    bound = jnp.sqrt(3.0 * jnp.mean(w**2))
    new_w = bound * (2.0 * u[1] - 1.0)
    new_t = -(scale * u[2:] + bias)
    return jnp.where(flags, new_w, w), jnp.where(flags[None], new_t, t), flags


def mask_metrics(params: dict, names: tuple[str, ...]) -> dict:
    """Sharing ratio per agent ``[N]`` and mean, pairwise overlap (mean, and ``[N, N]`` for small N).

    Overlap of agents i, j = fraction of masked weights that both keep (1 = full sharing); the
    diagonal is each agent's own sharing ratio.
    """
    layers = masked_layers(params, names)
    keep = jnp.concatenate([(jnp.abs(w) > jax.nn.sigmoid(t)).reshape(t.shape[0], -1) for *_, w, t, _ in layers], 1)
    keep = keep.astype(jnp.float32)  # [N, P]
    n = keep.shape[0]
    ratio = keep.mean(1)
    overlap = keep @ keep.T / keep.shape[1]  # [N, N]
    off_diagonal = ~jnp.eye(n, dtype=bool)
    pair_mean = (overlap * off_diagonal).sum() / (n * (n - 1)) if n > 1 else overlap[0, 0]
    metrics = {"kal_sharing_ratio": ratio, "kal_sharing_ratio_mean": ratio.mean(), "kal_mask_overlap": pair_mean}
    if n <= MAX_PAIR_AGENTS:
        metrics["kal_overlap"] = overlap
    return metrics


def make_kaleidoscope(cfg: TrainConfig, spec: EnvSpec, hidden: int, num_masked_layers: int,
                      bank_names: tuple[str, ...]) -> Scheme:
    """The Kaleidoscope scheme: one shared slot (K = 1), thresholds in ``params["sharing"]`` for every bank of
    ``bank_names``."""
    del hidden, num_masked_layers  # weight masks follow the banks' Dense kernels, not hidden units
    sc = cfg.sharing
    n = spec.num_agents
    names = bank_names
    total_steps = cfg.num_iterations * cfg.steps_per_iteration
    interval = sc.kal_reset_interval
    threshold_init = (sc.kal_threshold_scale, sc.kal_threshold_bias)

    def init_params(key, banks):
        return init_thresholds(key, banks, n, *threshold_init)

    def aux_loss(params, window, main_loss):
        div = diversity_loss(params, names)
        scale, window = rescale(window, main_loss, jax.lax.stop_gradient(div), sc.kal_div_coef)
        return scale * div, window, {"kal_div_loss": div, "kal_div_scale": scale}

    def update(sharing, learner_state, traj, key, step, hidden0):
        del traj, hidden0
        # at the iteration that crosses a multiple of the interval; never within the last interval
        # of training, where reset weights would get no training (as the reference)
        crossed = (step // max(interval, 1)) != ((step - cfg.steps_per_iteration) // max(interval, 1))
        do_reset = jnp.bool_(interval > 0) & crossed & (total_steps - step > interval)
        layers = list(masked_layers(learner_state.params, names))

        def reset(operand, key):
            weights, count = operand
            out = []
            for k, (w, t) in zip(jax.random.split(key, len(weights)), weights):
                w, t, flags = reset_layer(k, w, t, sc.kal_reset_ratio, *threshold_init)
                out.append((w, t))
                count = count + flags.sum()
            return tuple(out), count

        # in a branch: the draws cover (2 + N) x every masked weight; run at every iteration they held
        # A2C-Kaleidoscope on LBF at 0.39 x FuPS's throughput (0.58 once here)
        weights, reset_count = run_if(
            do_reset, reset, (tuple((w, t) for _, _, w, t, _ in layers), jnp.int32(0)), key
        )
        new = {(name, *path): wt for (name, _, _, _, path), wt in zip(layers, weights)}  # -> (w', t')
        # online weights and thresholds only: the target follows at its next sync and Adam's moments
        # are kept, as in the reference
        for name in names:
            learner_state = map_banks(
                learner_state, (name,),
                lambda path, x, name=name: new[(name, *path)][0][None] if (name, *path) in new else x,
                target=False, moments=False,
            )
        learner_state = map_banks(
            learner_state, ("sharing",), lambda path, x: new[path][1] if path in new else x, target=False, moments=False
        )
        metrics = {**mask_metrics(learner_state.params, names), "kal_reset": reset_count}
        return sharing, learner_state, metrics

    return Scheme(
        SlotLayout(1, "shared", False),
        lambda key: SharingState(jnp.zeros(n, jnp.int32), ()),
        update,
        init_params=init_params,
        agent_params=agent_params,
        aux_loss=AuxLoss(lambda: init_window(sc.kal_window), aux_loss),
    )


METHODS = (  # registered by psjax.catalog
    Method("kaleidoscope", "one network, learned per-agent weight masks (thresholds) with a diversity loss and "
           "periodic resets (Kaleidoscope)", make_kaleidoscope, options=KaleidoscopeOptions),
)
