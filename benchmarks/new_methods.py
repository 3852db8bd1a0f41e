#!/usr/bin/env python
"""Issue 19's throughput: HyperMARL and DiCo against FuPS (same learner) and PQN against QMIX (FuPS+id), per env, every
configuration of an env compiled first and then timed round-robin in one run (``benchmarks/throughput.py``'s
``prepare`` / ``timed_call``), so load that comes and goes hits them alike. Each learner at its defaults
(QMIX: 4 gradient steps of 32 sequences per 16 x 128 rollout, from the first rollout on; PQN: its preset's
4 epochs x 2 minibatches of 8 trajectories per 16 x 128 rollout).

    python benchmarks/new_methods.py --envs bps,mpe_spread,smax,lbf --repeats 5 --markdown

Timings are measurements, never tests.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

from throughput import config_overrides, environment_info, finish, prepare, timed_call  # noqa: E402

ENV_OVERRIDES = {
    "bps": {"env": "bps", "variant": "15a3c"},
    "mpe_spread": {"env": "mpe_spread"},
    "smax": {"env": "smax", "map": "3m"},
    "lbf": {"env": "lbf", "scenario": "10x10-3p-3f"},
}
# (label, learner, method, reference label): each row's ratio is to its reference in the same env
ROWS = (("fups / ppo", "ppo", "fups", None), ("hypermarl / ppo", "ppo", "hypermarl", "fups / ppo"),
        ("dico / ppo", "ppo", "dico", "fups / ppo"),
        ("fups / a2c", "a2c", "fups", None), ("hypermarl / a2c", "a2c", "hypermarl", "fups / a2c"),
        ("dico / a2c", "a2c", "dico", "fups / a2c"),
        ("fups_id / qmix", "qmix", "fups_id", None), ("fups_id / pqn", "pqn", "fups_id", "fups_id / qmix"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--envs", default="bps,mpe_spread,smax,lbf", help=f"comma list of {', '.join(ENV_OVERRIDES)}")
    p.add_argument("--rows", default=",".join(r[0] for r in ROWS), help="comma list of row labels")
    p.add_argument("--chunk-steps", type=int, default=20_480, help="env steps per seed per timed call")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    wanted = args.rows.split(",")
    results = []
    for env in args.envs.split(","):
        rows = [r for r in ROWS if r[0] in wanted]
        prepared = {}
        for label, learner, method, _ in rows:
            overrides = config_overrides(env, learner, method, ENV_OVERRIDES[env])
            print(f"{env}: {label}: compiling", file=sys.stderr, flush=True)
            prepared[label] = prepare(overrides, None, args.chunk_steps, args.seeds)
        times = {label: [] for label in prepared}
        for _ in range(args.repeats):  # round-robin
            for label in prepared:
                prepared[label], seconds = timed_call(prepared[label])
                times[label].append(seconds)
        rows_out = {label: finish(prepared[label], times[label]) for label in prepared}
        for label, _, _, ref in rows:
            row = {"env": env, "row": label, **rows_out[label]}
            row["ratio"] = rows_out[label]["steps_per_s"] / rows_out[ref]["steps_per_s"] if ref in rows_out else None
            row["reference"] = ref
            results.append(row)
            ratio = f"{row['ratio']:.2f} x {ref}" if row["ratio"] else ""
            print(f"{env:11s} {label:16s} {row['steps_per_s']:10,.0f} env steps/s  compile {row['compile_s']:5.1f} s"
                  f"  {ratio}", flush=True)
    if args.markdown:
        print("\n| env | method / learner | env steps/s | ratio | compile s | parameters |")
        print("|---|---|---:|---|---:|---:|")
        for r in results:
            ratio = f"**{r['ratio']:.2f}** x {r['reference']}" if r["ratio"] else ""
            print(f"| {r['env']} | {r['row']} | {r['steps_per_s']:,.0f} | {ratio} | {r['compile_s']:.1f} | "
                  f"{r['param_count']:,} |")
    out = REPO / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    stamp = environment_info(sys.argv[1:])
    path = out / f"new_methods-{stamp['host']}-{stamp['date'][:19].replace(':', '')}.json"
    path.write_text(json.dumps({"environment": stamp, "results": results}, indent=1, default=str))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
