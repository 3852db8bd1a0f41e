#!/usr/bin/env python
"""MAPD's VAE trained on each agent's own (o, pi_i(o)) pairs (``mapd_vae_pairs=own``, the reference, the default)
against every policy on every pooled observation (``pooled``), on the same pooled evaluation batch.

``--case constructed`` (default): agent i observes its own region, ``o ~ N(c_i, I)`` (``c_i ~ N(0, shift^2 I)``),
and policy i is linear, ``logits = o @ (W + a_i E_i)``: policies 0 and 1 are identical (``a = 0``), the others
move away from W by a growing ``a_i`` in independent random directions. The ground truth of a pair is the mean total
variation between the two action distributions on the pooled observations. Reported per variant, over ``--keys``
constructions: the distance of agent 0 to every agent, its spread, and the Spearman rank correlation between D and
the ground truth over all pairs. Identical policies measure exactly 0 under both variants (identical VAE inputs).

``--case typed``: A2C MADPS agents on the ``typed`` env (2 agents of type 0, 1 of type 1; restructuring off, so one
shared front and a back per agent) trained in chunks; after each chunk both variants measure the same policies on
the same observation buffer with ``--keys`` VAE keys. Reported: same-type and cross-type distances and their ratio
(cross-type min / same-type max: how cleanly a threshold can separate them).

    .venv/bin/python benchmarks/madps_vae_pairs.py                       # constructed, about 30 s of CPU
    .venv/bin/python benchmarks/madps_vae_pairs.py --case typed          # about a minute of CPU
"""

from __future__ import annotations

import argparse
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import dataclasses  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from psjax.config import make_config  # noqa: E402
from psjax.sharing import mapd  # noqa: E402
from psjax.train import init_runner, make_parts, train_iteration  # noqa: E402

SCALES = (0.0, 0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6)  # a_i: agents 0 and 1 identical
VARIANTS = ("own", "pooled")


def both_variants(key, logits, obs, sc, valid=None) -> dict:
    """``{variant: D[N, N]}`` of ``mapd.distance_round`` under each ``mapd_vae_pairs`` (one key: the same pooled
    evaluation batch and VAE initialisation)."""
    return {v: mapd.distance_round(key, logits, obs, dataclasses.replace(sc, mapd_vae_pairs=v), valid)[0]
            for v in VARIANTS}


def constructed(key, steps: int, obs_dim: int, actions: int, shift: float, logit_scale: float):
    """``(logits[N, T, 1, N, A], obs[T, 1, N, D], true TV [N, N])`` of the constructed agents."""
    n = len(SCALES)
    k_c, k_o, k_w, k_e = jax.random.split(key, 4)
    centres = shift * jax.random.normal(k_c, (n, obs_dim))
    obs = centres + jax.random.normal(k_o, (steps, 1, n, obs_dim))  # agent j's observations around c_j
    w = jax.random.normal(k_w, (obs_dim, actions)) / np.sqrt(obs_dim)
    e = jax.random.normal(k_e, (n, obs_dim, actions)) / np.sqrt(obs_dim)
    weights = logit_scale * (w + jnp.asarray(SCALES)[:, None, None] * e)  # [N, D, A]
    logits = jnp.einsum("tejd,ida->iteja", obs, weights)  # policy i on agent j's observations
    probs = jax.nn.softmax(logits, -1).reshape(n, -1, actions)
    tv = 0.5 * jnp.abs(probs[:, None] - probs[None, :]).sum(-1).mean(-1)
    return logits, obs, np.asarray(tv)


def spearman(x, y) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def run_constructed(args):
    sc = make_config({"alg": "nops", "learner": "a2c"}).sharing
    n = len(SCALES)
    off = ~np.eye(n, dtype=bool)
    print(f"a_i = {SCALES}; {args.steps} rows x {n} agents, D={args.obs_dim}, A={args.actions}, "
          f"shift={args.shift}, logit scale={args.logit_scale}")
    fn = jax.jit(lambda key, logits, obs: both_variants(key, logits, obs, sc))
    rows, rhos = {v: [] for v in VARIANTS}, {v: [] for v in VARIANTS}
    for k in range(args.keys):
        logits, obs, tv = constructed(jax.random.PRNGKey(100 + k), args.steps, args.obs_dim, args.actions,
                                      args.shift, args.logit_scale)
        for v, d in fn(jax.random.PRNGKey(k), logits, obs).items():
            d = np.asarray(d)
            rows[v].append(d[0])
            rhos[v].append(spearman(d[off], tv[off]))
    print("true TV(0, i), last construction " + " ".join(f"{x:.4f}" for x in tv[0]))
    for v in VARIANTS:
        r = np.stack(rows[v])
        print(f"{v:>6}: d(0, i) mean " + " ".join(f"{x:.4f}" for x in r.mean(0))
              + " | spread " + " ".join(f"{x:.4f}" for x in r.max(0) - r.min(0))
              + f" | Spearman(D, TV) {np.mean(rhos[v]):.3f} (min {np.min(rhos[v]):.3f})")


def run_typed(args):
    cfg = make_config({"env": "typed", "alg": "madps", "learner": "a2c", "madps_init": args.init,
                       "madps_interval": 10**6, "madps_start": 10**9})  # keeps the buffer, never runs a round
    parts = make_parts(cfg)
    sc = cfg.sharing
    types = np.asarray(parts.env.spec.agent_types)
    same = (types[:, None] == types[None, :]) & ~np.eye(types.size, dtype=bool)
    cross = types[:, None] != types[None, :]
    chunk_iters = int(args.chunk_steps) // cfg.steps_per_iteration
    chunk = jax.jit(lambda r: jax.lax.scan(lambda r, _: (train_iteration(parts, r)[0], None), r, None, chunk_iters)[0])

    @jax.jit
    def measure(runner, key):
        traj, valid = mapd.buffer_transition(runner.sharing.distance.buffer)
        logits = parts.learner.policy_logits(runner.learner, runner.sharing, traj, None)
        return both_variants(key, logits, traj.obs, sc, valid)

    runner = jax.jit(lambda k: init_runner(parts, k))(jax.random.PRNGKey(0))
    print(f"typed, {types.size} agents of types {types.tolist()}, madps_init={args.init}, {args.keys} VAE keys")
    for _ in range(args.chunks):
        runner = chunk(runner)
        ds = [measure(runner, jax.random.PRNGKey(k)) for k in range(args.keys)]
        line = f"  step {int(runner.env_steps):>6}:"
        for v in VARIANTS:
            d = np.stack([np.asarray(x[v]) for x in ds])
            s, x = d[:, same], d[:, cross]
            line += (f" | {v}: same {s.min():.4f}-{s.max():.4f}, cross {x.min():.4f}-{x.max():.4f}, "
                     f"ratio {x.min() / s.max():.1f}")
        print(line)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", default="constructed", choices=("constructed", "typed"))
    p.add_argument("--keys", type=int, default=4)
    p.add_argument("--steps", type=int, default=512, help="constructed: buffer rows (each with every agent's obs)")
    p.add_argument("--obs-dim", type=int, default=8)
    p.add_argument("--actions", type=int, default=5)
    p.add_argument("--shift", type=float, default=2.0, help="constructed: spread of the agents' observation centres")
    p.add_argument("--logit-scale", type=float, default=2.0)
    p.add_argument("--init", default="reference", choices=("psjax", "reference"), help="typed: madps_init")
    p.add_argument("--chunks", type=int, default=4, help="typed: training chunks")
    p.add_argument("--chunk-steps", type=float, default=5e3, help="typed: env steps per chunk")
    args = p.parse_args(argv)
    run_constructed(args) if args.case == "constructed" else run_typed(args)


if __name__ == "__main__":
    main()
