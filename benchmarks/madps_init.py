#!/usr/bin/env python
"""MAPD distance scale under MADPS's two actor initialisations, at the start and along a short A2C run.

``madps_init=psjax`` (hidden layers orthogonal sqrt(2), output layer 0.01: near-uniform policies) against
``madps_init=reference`` (the reference code's ``initial_as_the_same=False``: every layer orthogonal gain 0.5 plus
N(0, 0.2) noise). Each run is MADPS with restructuring switched off (``madps_start`` past the end: every round only
measures, so the structure stays at its start, one shared front and a back per agent), a distance round every
``--interval`` iterations, vmapped over ``--seeds`` seeds. For every round the script prints the off-diagonal
distances (min-max, mean over seeds and pairs), the mean training return since the previous round and, on the
first round, for each threshold set what the first acting round would do:
the number of pairs above eps2 (division) and below eps0 (back fusion). The first round comes after
``--interval`` iterations (1000 env steps with the defaults): the buffer has to fill first, so that round is the
distance scale "at initialisation" (25 A2C updates).

    .venv/bin/python benchmarks/madps_init.py                                  # LBF 8x8-2p-2f-coop, 40k steps
    .venv/bin/python benchmarks/madps_init.py --env mpe_spread                 # MPE spread, 3 agents
    .venv/bin/python benchmarks/madps_init.py --env typed                      # 3 agents, types 0, 0, 1
    .venv/bin/python benchmarks/madps_init.py --set madps_fuse_threshold=0.005 # any config override
    .venv/bin/python benchmarks/madps_init.py --env typed --start 500          # MADPS acting from 20k steps
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from psjax.config import make_config  # noqa: E402
from psjax.train import make_parts, make_train  # noqa: E402

ENVS = {"lbf": {"env": "lbf", "scenario": "8x8-2p-2f-coop"}, "mpe_spread": {"env": "mpe_spread"},
        "typed": {"env": "typed"}}
THRESHOLDS = {"psjax (eps1 0.005)": (0.0025, 0.005, 0.01), "reference (eps1 0.5)": (0.25, 0.5, 1.0)}


def run(overrides: dict, seeds: int) -> dict:
    cfg = make_config(overrides)
    train = jax.jit(jax.vmap(make_train(cfg)))
    t0 = time.perf_counter()
    _, metrics = train(jax.random.split(jax.random.PRNGKey(0), seeds))
    d = np.asarray(metrics["mapd_distance"])  # [S, iterations, N, N]
    ret = np.asarray(metrics["return"])  # [S, iterations], NaN where no episode ended
    steps = np.asarray(metrics["env_steps"])[0]
    types = np.asarray(make_parts(cfg).env.spec.agent_types or ())
    slots = {k: np.asarray(metrics[k]) for k in ("madps_front", "madps_back")}  # [S, iterations, N]
    return {"slots": slots, "d": d, "return": ret, "steps": steps, "seconds": time.perf_counter() - t0, "types": types}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="lbf", choices=sorted(ENVS))
    p.add_argument("--steps", type=float, default=4e4)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--interval", type=int, default=25, help="iterations between distance rounds")
    p.add_argument("--inits", default="psjax,reference")
    p.add_argument("--start", type=int, default=0, help="madps_start: iterations before MADPS acts; 0 = never "
                   "(every round only measures); with it, each round also prints the front / back slots per seed")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    for init in args.inits.split(","):
        over = {**ENVS[args.env], "alg": "madps", "learner": "a2c", "steps": args.steps, "madps_init": init,
                "madps_interval": args.interval, "madps_start": args.start or 10**9}
        for item in args.sets:
            key, _, value = item.partition("=")
            over[key] = value
        out = run(over, args.seeds)
        d = out["d"]
        n = d.shape[-1]
        off = ~np.eye(n, dtype=bool)
        rounds = np.where(np.isfinite(d[0, :, 0, 0]))[0]
        print(f"== {args.env} madps_init={init} {' '.join(args.sets)} ({args.seeds} seeds, {out['seconds']:.0f} s)")
        for r in rounds:
            vals = d[:, r][:, off]  # [S, pairs]
            ret = out["return"][:, max(0, r - args.interval + 1): r + 1]
            line = (f"  step {int(out['steps'][r]):>6}: d {vals.min():.4f}-{vals.max():.4f} mean {vals.mean():.4f}"
                    f" | return {np.nanmean(ret):.3f}")
            if np.unique(out["types"]).size > 1:  # agents of known types: same-type pairs against cross-type pairs
                same = (out["types"][:, None] == out["types"][None, :]) & off
                cross = out["types"][:, None] != out["types"][None, :]
                line += (f" | same type {d[:, r][:, same].min():.4f}-{d[:, r][:, same].max():.4f}, cross type "
                         f"{d[:, r][:, cross].min():.4f}-{d[:, r][:, cross].max():.4f}")
            if args.start:
                line += " | front/back " + " ".join(
                    f"{out['slots']['madps_front'][k, r].tolist()}/{out['slots']['madps_back'][k, r].tolist()}"
                    for k in range(args.seeds))
            if r == rounds[0]:
                for name, (eps0, _, eps2) in THRESHOLDS.items():
                    line += f" | {name}: >eps2 {(vals > eps2).sum()}, <eps0 {(vals < eps0).sum()} of {vals.size}"
            print(line)


if __name__ == "__main__":
    main()
