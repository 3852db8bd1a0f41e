"""HyperMARL (Tessera et al., 2024-25; code: KaleabTessera/HyperMARL): a shared hypernetwork generates every
agent's network weights from an agent embedding.

Each bank keeps one slot (K = 1) that fixes the agent network's shapes. For every generated leaf of it (a Dense,
GRU or conv kernel, a bias, a LayerNorm scale) the hypernetwork has a head: a ReLU
layer of ``hyper_hidden`` units (no biases; none for ``hyper_hidden = 0``, the reference's linear variant) on
the agent's embedding, then a linear map to the leaf's size. Agent i runs the network with

    theta_i[leaf] = W_leaf relu(A_leaf e_i)        (+ 1 for a LayerNorm scale),

so actor, critic and Q networks are all generated, as the reference generates actor and critic. Which leaves
(``hyper_generate``): ``all`` (the reference's feed-forward scripts), or ``after_gru`` (its recurrent scripts,
the default for recurrent networks: the layers after the GRU are generated, while the observation layer before
it and the GRU are ordinary parameters shared by every agent, the template slot's values). The agent's
network reads its observation only (``alg=hypermarl`` appends no agent id): the agent enters through the
weights alone, which decouples observation- and agent-conditioned gradients (the paper's point).

Initialisation, after the reference: each of a kernel head's output rows is an ``[in, out]`` matrix with the
Frobenius norm of an orthogonal one at the gain of psjax's own initialisation of that layer (the template's
root-mean-square singular value: sqrt(2) for hidden Dense layers, the output scale for the last one, 1 for the
GRU's recurrent kernels); the reference draws the rows orthogonal, psjax Gaussian at that norm. Bias and scale
heads start at zero. Embeddings: ``hyper_embedding=onehot`` (the reference's default) or ``learned`` (a
trainable ``[N, hyper_embed_dim]`` table, orthogonal at init); ``auto`` = learned for recurrent networks (the
reference's recurrent scripts, ``USE_AGENT_ID_EMBEDDINGS``), one-hot otherwise.
"""

from __future__ import annotations

import math
import pathlib
from dataclasses import dataclass
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from psjax.envs.base import EnvSpec
from psjax.fields import doc_field as _f
from psjax.nets.agents import blocks, blocks_before_gru
from psjax.nets.init import orthogonal, template_gain
from psjax.registry import Method
from psjax.schema import TrainConfig
from psjax.sharing.bank import SharingState, SlotLayout
from psjax.sharing.methods import Scheme


@dataclass(frozen=True)
class HyperMARLOptions:
    """HyperMARL's options (``sharing.hyper_*``)."""

    hyper_embedding: str = _f("auto", "HyperMARL: the embedding the hypernetwork reads: onehot = agent ids; learned = a"
                                      " table of hyper_embed_dim; auto = learned for recurrent networks, onehot "
                                      "otherwise",
                              choices=("auto", "onehot", "learned"))
    hyper_generate: str = _f("auto", "HyperMARL: leaves generated per agent: all, or after_gru (the layers after the "
                                     "GRU; those before it shared); auto = after_gru for recurrent networks, all "
                                     "otherwise", choices=("auto", "all", "after_gru"))
    hyper_embed_dim: int = _f(16, "HyperMARL: width of learned agent embeddings", min=1)
    hyper_hidden: int = _f(64, "HyperMARL: hidden ReLU units of each hypernetwork head (the reference's MLP "
                           "hypernetwork: 64); 0 = linear heads (its linear variant)", min=0)

EMBEDDINGS = "embeddings"  # key of params["sharing"] holding the learned [N, d] table


def is_kernel(leaf_shape: tuple[int, ...]) -> bool:
    """A leaf generated as a matrix (Dense / GRU kernels ``[in, out]``, conv kernels ``[..., in, out]``)."""
    return len(leaf_shape) >= 2


def init_head(key: chex.PRNGKey, embed_dim: int, hidden: int, template: chex.Array) -> dict:
    """One leaf's head: ``{"hidden": [d, h]}`` (when ``hidden > 0``) and ``{"out": [h or d, size]}``."""
    k_hidden, k_out = jax.random.split(key)
    fan_in = hidden or embed_dim
    head = {}
    if hidden:  # lecun normal, as flax's Dense default in the reference
        head["hidden"] = jax.random.normal(k_hidden, (embed_dim, hidden)) / math.sqrt(embed_dim)
    if is_kernel(template.shape):
        # Gaussian rows with an orthogonal(gain) matrix's Frobenius norm: the generated kernel is a sum of rows,
        # orthogonal or not (and batched QR decompositions inside the training program stalled XLA's CPU runtime)
        rows, cols = int(np.prod(template.shape[:-1])), template.shape[-1]
        std = template_gain(template) / math.sqrt(max(rows, cols))
        head["out"] = std * jax.random.normal(k_out, (fan_in, rows * cols))
    else:
        head["out"] = jnp.zeros((fan_in, template.size))
    return head


def generated_paths(bank: Any, which: str) -> list[tuple]:
    """The leaf paths of ``bank`` the hypernetwork generates: every one (``all``), or, in a bank holding a GRU,
    those of the layers after it (``after_gru``: not the conv torso, the Dense layer before the GRU or the GRU
    itself, which stay shared). A bank without a GRU (the shared torso's value head) is generated whole."""
    paths = list(flatten_dict(bank))
    module_blocks = blocks(bank)
    if which == "all" or "gru" not in module_blocks.values():
        return paths
    shared = blocks_before_gru() | {"gru"}
    return [p for p in paths if module_blocks[p[1] if p[0] == "params" else p[0]] not in shared]


def init_hypernet(key: chex.PRNGKey, banks: dict, num_agents: int, embedding: str, embed_dim: int,
                  hidden: int, which: str = "all") -> dict:
    """``params["sharing"]``: ``{bank name: {leaf path...: head}}`` (the generated leaves', ``generated_paths``)
    plus the learned embeddings."""
    dim = num_agents if embedding == "onehot" else embed_dim
    out = {}
    for b, name in enumerate(sorted(banks)):
        heads = {}
        generated = set(generated_paths(banks[name], which))
        for i, (path, leaf) in enumerate(flatten_dict(banks[name]).items()):
            chex.assert_axis_dimension(leaf, 0, 1)  # one template slot
            if path not in generated:
                continue
            heads[path] = init_head(jax.random.fold_in(jax.random.fold_in(key, b), i), dim, hidden, leaf[0])
        out[name] = unflatten_dict({p + (k,): v for p, head in heads.items() for k, v in head.items()})
    if embedding == "learned":
        # psjax's LAPACK-free orthogonal init: vmapped over seeds, QR decompositions deadlock XLA's CPU runtime
        out[EMBEDDINGS] = orthogonal(1.0)(jax.random.fold_in(key, len(banks)), (num_agents, embed_dim))
    return out


def embeddings(owned: dict, num_agents: int) -> chex.Array:
    """Every agent's embedding ``[N, d]``: the learned table, or one-hot ids."""
    return owned[EMBEDDINGS] if EMBEDDINGS in owned else jnp.eye(num_agents)


def head_features(head: dict, e: chex.Array) -> chex.Array:
    """The head's input to its output layer: ``e [N, d] -> [N, h]`` (``e`` itself for a linear head)."""
    return jax.nn.relu(e @ head["hidden"]) if "hidden" in head else e


def generate(bank: Any, heads: dict, e: chex.Array) -> Any:
    """Every agent's generated parameters of ``bank`` (template ``[1, ...]``) from embeddings ``e [N, d]``: leaves
    ``[N, ...]``, for the leaves ``heads`` has (``generated_paths``)."""
    flat_heads = flatten_dict(heads)
    out = {}
    for path, leaf in flatten_dict(bank).items():
        if path + ("out",) not in flat_heads:
            continue
        head = {k: flat_heads[path + (k,)] for k in ("hidden", "out") if path + (k,) in flat_heads}
        theta = (head_features(head, e) @ head["out"]).reshape((e.shape[0],) + leaf.shape[1:])
        out[path] = theta + 1.0 if path[-1] == "scale" else theta  # LayerNorm scales start at 1
    return unflatten_dict(out)


def num_agents_of(owned: dict) -> int:
    """N from the hypernetwork's parameters: the embedding table's rows, or a one-hot head's input width."""
    if EMBEDDINGS in owned:
        return owned[EMBEDDINGS].shape[0]
    return next(iter(flatten_dict(owned).values())).shape[0]


def pairwise_cosine(x: chex.Array) -> chex.Array:
    """Cosine similarity between the rows of ``x [N, F]``: ``[N, N]``."""
    unit = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return unit @ unit.T


def weight_similarity(params: dict, bank_name: str) -> chex.Array:
    """``[N, N]`` cosine similarity of the agents' generated parameters of bank ``bank_name`` (all leaves)."""
    owned = params["sharing"]
    theta = generate(params[bank_name], owned[bank_name], embeddings(owned, num_agents_of(owned)))
    flat = jnp.concatenate([x.reshape(x.shape[0], -1) for x in jax.tree.leaves(theta)], axis=-1)
    return pairwise_cosine(flat)


def hyper_forms(cfg: TrainConfig) -> tuple[str, str]:
    """``(embedding, generated leaves)`` with ``auto`` resolved: the reference's recurrent form (learned
    embeddings, the layers after the GRU) where the agents' networks are recurrent (``ac.recurrent``, every Q
    learner), its feed-forward form (one-hot ids, every layer) otherwise."""
    recurrent = cfg.is_value_based or cfg.ac.recurrent
    sc = cfg.sharing
    embedding = sc.hyper_embedding if sc.hyper_embedding != "auto" else ("learned" if recurrent else "onehot")
    which = sc.hyper_generate if sc.hyper_generate != "auto" else ("after_gru" if recurrent else "all")
    return embedding, which


def make_hypermarl(cfg: TrainConfig, spec: EnvSpec, hidden: int, num_masked_layers: int,
                   bank_names: tuple[str, ...]) -> Scheme:
    """One template slot per bank; every agent's generated parameters from the hypernetwork in
    ``params["sharing"]``, the others (``hyper_generate=after_gru``) the slot's, shared."""
    del hidden, num_masked_layers
    sc = cfg.sharing
    n = spec.num_agents
    names = bank_names
    embedding, which = hyper_forms(cfg)

    def init_params(key, banks):
        return init_hypernet(key, banks, n, embedding, sc.hyper_embed_dim, sc.hyper_hidden, which)

    def agent_params(name, bank, owned, sharing=None):
        del sharing
        theta = flatten_dict(generate(bank, owned[name], embeddings(owned, n)))
        flat = {path: theta.get(path, leaf[0]) for path, leaf in flatten_dict(bank).items()}
        axes = {path: 0 if path in theta else None for path in flat}  # shared leaves carry no agent axis
        return unflatten_dict(flat), unflatten_dict(axes)

    def update(sharing, learner_state, traj, key, step, hidden0):
        del traj, key, step, hidden0
        similarity = weight_similarity(learner_state.params, names[0])
        off_diagonal = (similarity.sum() - jnp.trace(similarity)) / max(n * (n - 1), 1)
        return sharing, learner_state, {"hyper_similarity": off_diagonal}

    return Scheme(SlotLayout(1, "shared", False), lambda key: SharingState(jnp.zeros(n, jnp.int32), ()), update,
                  init_params=init_params, agent_params=agent_params)


def hypermarl_picture(run_dir, cfg: TrainConfig, runner: Any, program: Any,
                      seed_index: int = 0) -> pathlib.Path | None:
    """``hypermarl.png``: for the first seed's final parameters, the cosine similarity of the agents' generated
    weights per bank, and of their embeddings (learned) or of the hypernetwork's hidden features (one-hot ids)."""
    del program
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    params = jax.tree.map(lambda x: np.asarray(x[seed_index]), runner.learner.params)
    owned = params["sharing"]
    banks = sorted(k for k in owned if k != EMBEDDINGS)
    n = num_agents_of(owned)
    panels = {f"generated {name} weights": np.asarray(weight_similarity(params, name)) for name in banks}
    if EMBEDDINGS in owned:
        panels["learned agent embeddings"] = np.asarray(pairwise_cosine(jnp.asarray(owned[EMBEDDINGS])))
    else:  # one-hot ids are orthogonal by construction: show what the hypernetwork makes of them
        first = flatten_dict(owned[banks[0]])
        head = {k[-1]: v for k, v in first.items() if k[:-1] == next(iter(first))[:-1]}
        panels[f"hypernetwork features ({banks[0]}, first head)"] = np.asarray(
            pairwise_cosine(head_features(head, jnp.eye(n))))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    for ax, (title, sim) in zip(axes[0], panels.items()):
        im = ax.imshow(sim, vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_title(f"{title}\ncosine similarity", fontsize=8)
        ax.set_xlabel("agent")
        ax.set_ylabel("agent")
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    fig.suptitle(f"HyperMARL, seed {cfg.seed + seed_index}, final parameters", fontsize=9)
    path = pathlib.Path(run_dir) / "hypermarl.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


METHODS = (  # registered by psjax.catalog
    Method("hypermarl", "a shared hypernetwork generates every agent's actor and critic (or Q network) from its "
           "agent embedding; no id in the observation (HyperMARL)", make_hypermarl, default_learner="ppo",
           pictures=(hypermarl_picture,), options=HyperMARLOptions),
)
