#!/usr/bin/env python
# Usage: .venv/bin/python benchmarks/identity_offline.py RUN_DIR [epochs=20] [reconstruct=next_obs_reward]
#        [kl=1e-4] [rules=davies_bouldin,silhouette] [seeds=all]
"""The identity VAE and the choice of K, offline, on the pretraining transitions a SePS / AdaPS run folder
stored (its checkpoint's ``sharing.extra.buffer``): for every seed, a fresh VAE trained with the settings
given, then k-means with K = the number of kinds and with each K rule, each partition's adjusted Rand index
against the env's agent kinds. Prints one line per setting (psjax.sharing.structure, psjax.sharing.kmeans)."""
import sys
import time

import jax
import numpy as np

from psjax.checkpoints import load_checkpoint
from psjax.config import load_run_config
from psjax.envs import make_env
from psjax.nets.vae import IdentityVAE
from psjax.plan import seed_keys
from psjax.sharing.identity import reconstruction_size, train_identity_vae
from psjax.sharing.kmeans import kmeans, select_k
from psjax.sharing.structure import type_ari
from psjax.train import make_program

run_dir = sys.argv[1]
opts = dict(a.split("=", 1) for a in sys.argv[2:])
cfg = load_run_config(run_dir)
sc = cfg.sharing
epochs = int(opts.get("epochs", sc.identity_epochs))
reconstruct = opts.get("reconstruct", sc.identity_reconstruct)
kl = float(opts.get("kl", sc.identity_kl_coef))
rules = opts.get("rules", "davies_bouldin,silhouette").split(",")
spec = make_env(cfg.env).spec
kinds = len(set(spec.agent_types))
n = spec.num_agents
program = make_program(cfg, 1)
runner, _ = load_checkpoint(run_dir, jax.eval_shape(jax.vmap(program.init), seed_keys(cfg.seed, cfg.seeds)))
buffers = runner.sharing.extra.buffer
seeds = range(cfg.seeds) if opts.get("seeds", "all") == "all" else range(int(opts["seeds"]))
vae = IdentityVAE(n, spec.obs_dim, spec.num_actions, sc.identity_latent, sc.identity_hidden,
                  reconstruction_size(spec.obs_dim, reconstruct))


@jax.jit
def one_seed(key, buffer):
    _, means, _, losses = train_identity_vae(key, vae, buffer, epochs, sc.identity_batch_size, sc.identity_lr, kl,
                                             reconstruct)
    given = kmeans(key, means, kinds, kinds, sc.identity_kmeans_restarts)
    out = {"given": type_ari(given.labels, spec.agent_types, kinds), "loss": losses[-1]}
    for rule in rules:
        chosen, _ = select_k(key, means, 2, n - 1, sc.identity_kmeans_restarts, rule=rule)
        out[rule] = (type_ari(chosen.labels, spec.agent_types, n - 1), chosen.num_clusters)
    return out


start = time.time()
results = [jax.device_get(one_seed(jax.random.PRNGKey(100 + s), jax.tree.map(lambda x, s=s: x[s], buffers)))
           for s in seeds]
line = f"{run_dir} epochs={epochs} reconstruct={reconstruct} kl={kl} ({time.time() - start:.0f} s): "
line += f"K={kinds} given: ari=1 in {sum(r['given'] > 0.999 for r in results)}/{len(results)}"
for rule in rules:
    ks = [int(r[rule][1]) for r in results]
    line += f"; {rule}: K={ks}, ari=1 in {sum(r[rule][0] > 0.999 for r in results)}/{len(results)}"
print(line, f"; final VAE loss {np.mean([r['loss'] for r in results]):.3f}")
