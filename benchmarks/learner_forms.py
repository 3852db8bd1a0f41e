#!/usr/bin/env python
"""Throughput of one config in two forms (two sets of overrides), timed interleaved: a learner's reference form
against psjax's earlier one (issue 39: replay burn-in, PPO value clipping, DiCo's starting scale).

    python benchmarks/learner_forms.py preset=smax_3m_qmix seeds=1 --a q.stored_state=false q.burn_in=0 --b \
        --iters 2 --repeats 5

Each form's training chunk (``make_program(cfg, iters)``, vmapped over seeds, jitted; value learners with
``learning_starts=0`` so every iteration runs its gradient steps) is compiled, then the two are called in turn
``--repeats`` times; the table gives each form's median seconds per chunk and env steps per second, and the ratio
b / a of the medians. Timings are measurements, never tests.
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


def _overrides(pairs: list[str]) -> dict[str, str]:
    return dict(p.split("=", 1) for p in pairs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="key=value overrides both forms share")
    parser.add_argument("--a", nargs="*", default=[], help="form a's key=value overrides")
    parser.add_argument("--b", nargs="*", default=[], help="form b's key=value overrides")
    parser.add_argument("--iters", type=int, default=2, help="iterations per chunk")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of each form, interleaved")
    args = parser.parse_args(argv)

    import jax

    from psjax.config import make_config
    from psjax.plan import seed_keys
    from psjax.train import make_program

    base = _overrides(args.overrides)
    forms, runners, compile_s, times = {}, {}, {}, {}
    for name, extra in (("a", args.a), ("b", args.b)):
        overrides = {**base, **_overrides(extra)}
        preset = overrides.pop("preset", None)
        cfg = make_config(overrides, preset=preset)
        if cfg.is_value_based:
            cfg = make_config({**overrides, "q.learning_starts": 0}, preset=preset)
        program = make_program(cfg, args.iters)
        runners[name] = jax.jit(jax.vmap(program.init))(seed_keys(cfg.seed, cfg.seeds))
        forms[name] = (jax.jit(jax.vmap(program.run_chunk)), cfg)
        t0 = time.perf_counter()
        jax.block_until_ready(forms[name][0](runners[name]))  # compile + first call
        compile_s[name], times[name] = time.perf_counter() - t0, []
    for _ in range(args.repeats):
        for name, (chunk, _) in forms.items():
            t0 = time.perf_counter()
            jax.block_until_ready(chunk(runners[name]))
            times[name].append(time.perf_counter() - t0)
    print(f"shared: {' '.join(args.overrides)}; a: {' '.join(args.a) or '(none)'}; b: {' '.join(args.b) or '(none)'}; "
          f"{args.iters} iterations x {args.repeats} calls each, interleaved")
    print("| form | compile + first call s | median s per chunk | env steps/s |\n|---|---:|---:|---:|")
    for name, (_, cfg) in forms.items():
        med = statistics.median(times[name])
        steps = args.iters * cfg.steps_per_iteration * cfg.seeds
        print(f"| {name} | {compile_s[name]:.1f} | {med:.3f} | {steps / med:,.0f} |")
    print(f"b / a time: {statistics.median(times['b']) / statistics.median(times['a']):.3f} (medians), "
          f"{min(times['b']) / min(times['a']):.3f} (fastest calls)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
