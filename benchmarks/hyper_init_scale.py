#!/usr/bin/env python
"""HyperMARL: the initial scale of each agent's generated kernels against the template's nominal gain.

    python benchmarks/hyper_init_scale.py

For a feed-forward actor (every layer generated) and a recurrent one (the output layer after the GRU), one-hot ids
and learned embeddings (d = 16), N = 2, 3, 8 agents, 64 hidden units in each head: the mean over agents and 5 draws
of the root-mean-square singular value of a generated kernel divided by the template's (docs/methods.md, HyperMARL).
"""

from __future__ import annotations

import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main() -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax.traverse_util import flatten_dict

    from psjax.nets.agents import MLP, RecurrentNet
    from psjax.nets.init import template_gain
    from psjax.sharing.bank import init_bank
    from psjax.sharing.hypermarl import embeddings, generate, init_hypernet

    obs = 10
    nets = [("feed-forward", MLP(64, 5, out_scale=0.01), "all", (jnp.zeros((obs,)),)),
            ("recurrent", RecurrentNet(64, 5, out_scale=0.01), "after_gru", (jnp.zeros((64,)), jnp.zeros((obs,))))]
    print("| actor | embedding | N | generated kernel / nominal gain, per layer |\n|---|---|---:|---|")
    for form, net, which, args in nets:
        for embedding in ("onehot", "learned"):
            for n in (2, 3, 8):
                ratios: dict[str, list[float]] = {}
                for seed in range(5):
                    bank = init_bank(lambda k, net=net, args=args: net.init(k, *args), jax.random.PRNGKey(seed), 1)
                    owned = init_hypernet(jax.random.PRNGKey(100 + seed), {"actor": bank}, n, embedding, 16, 64,
                                          which)
                    theta = flatten_dict(generate(bank, owned["actor"], embeddings(owned, n)))
                    template = flatten_dict(bank)
                    for path, leaf in theta.items():
                        if leaf.ndim == 3:
                            nominal = float(template_gain(template[path][0]))
                            ratios.setdefault(path[1], []).extend(float(template_gain(k)) / nominal for k in leaf)
                shown = ", ".join(f"{layer} {np.mean(v):.2f}x" for layer, v in ratios.items())
                print(f"| {form} | {embedding} | {n} | {shown} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
