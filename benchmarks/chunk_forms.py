#!/usr/bin/env python
"""The training chunk as a scan (``Program.run_chunk``, what benchmarks/throughput.py times) against the counted
loop ``psjax.run`` runs (``Program.run_counted``: the same iterations in a while loop whose trip count is read at
run time, so a remainder chunk reuses the program), timed interleaved on one config.

    python benchmarks/chunk_forms.py env=mpe_spread alg=fups learner=ppo --iters 4 --repeats 5
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    parser.add_argument("--iters", type=int, default=4, help="iterations per chunk")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of each form, interleaved")
    args = parser.parse_args(argv)

    import jax
    import numpy as np

    from psjax.config import make_config
    from psjax.plan import seed_keys
    from psjax.train import make_program

    cfg = make_config(dict(o.split("=", 1) for o in args.overrides))
    program = make_program(cfg, args.iters)
    keys = seed_keys(cfg.seed, cfg.seeds)
    init = jax.jit(jax.vmap(program.init))
    scan = jax.jit(jax.vmap(program.run_chunk))
    counted = jax.jit(jax.vmap(program.run_counted, in_axes=(0, None)))
    count = np.int32(args.iters)
    runner = init(keys)
    forms = {"scan": lambda r: scan(r), "counted": lambda r: counted(r, count)}
    compile_s, times = {}, {name: [] for name in forms}
    for name, fn in forms.items():
        t0 = time.perf_counter()
        jax.block_until_ready(fn(runner))  # compile + first call
        compile_s[name] = time.perf_counter() - t0
    for _ in range(args.repeats):
        for name, fn in forms.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(runner))
            times[name].append(time.perf_counter() - t0)
    steps = args.iters * cfg.steps_per_iteration * cfg.seeds
    print(f"{cfg.env.name} {cfg.alg} {cfg.learner_name}: {args.iters} iterations x {args.repeats} calls each")
    print("| form | compile + first call s | median s per chunk | env steps/s |\n|---|---:|---:|---:|")
    for name in forms:
        med = statistics.median(times[name])
        print(f"| {name} | {compile_s[name]:.1f} | {med:.3f} | {steps / med:,.0f} |")
    ratio = statistics.median(times["counted"]) / statistics.median(times["scan"])
    fastest = min(times["counted"]) / min(times["scan"])
    print(f"counted / scan time: {ratio:.3f} (medians), {fastest:.3f} (fastest calls)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
