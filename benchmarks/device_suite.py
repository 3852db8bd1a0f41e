#!/usr/bin/env python
"""The accelerator suite: env steps/s against environment count and vmapped seeds, in one short run.

Meant for a GPU session (``benchmarks/device_suite.sh`` wraps it with a time limit); ``--smoke`` is a reduced
grid the tests run on CPU. For each (env, learner) of SMAX 3m and LBF 8x8-2p-2f-coop under QMIX and PPO:

* FuPS at ``--envs-grid`` parallel environments (one seed);
* FuPS at ``--seeds-grid`` vmapped seeds (at ``--seeds-envs`` environments);
* NoPS and one dynamic method (``--dynamic``, default Kaleidoscope: any learner) at ``--methods-envs``;

each size for every pair before the next size.

Every row is one configuration compiled, warmed up and timed (``benchmarks/throughput.py``'s ``measure``:
compile apart from the run; env steps/s over seeds and envs) plus the process's peak memory so far (the
device's ``peak_bytes_in_use`` where the backend reports it, else the host's peak resident memory; both only
grow, so a row's figure bounds its configuration from above). Rows go to a JSON file and a Markdown table;
once ``--budget-s`` has passed no new configuration starts, and what was measured is kept.

    python benchmarks/device_suite.py --markdown                 # the full grid (a GPU: a few minutes)
    python benchmarks/device_suite.py --smoke --markdown         # seconds-to-minutes on a CPU
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import sys
import time
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import throughput  # noqa: E402

PAIRS = (("smax", "qmix"), ("smax", "ppo"), ("lbf", "qmix"), ("lbf", "ppo"))


def peak_memory() -> dict[str, Any]:
    """The process's peak memory so far: the first device's ``peak_bytes_in_use`` if it reports one, and the
    host's peak resident set."""
    import jax

    stats = jax.local_devices()[0].memory_stats() or {}
    return {"device_peak_bytes": stats.get("peak_bytes_in_use"),
            "host_peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def grid(args: argparse.Namespace) -> list[tuple[str, dict[str, Any], int]]:
    """``(label, overrides, seeds)`` for every configuration, in the order they run: each kind of row for every
    (env, learner) pair before the next kind, so a spent budget cuts the largest sizes, not whole pairs."""
    kinds = ([("fups", n, 1) for n in args.envs_grid] + [("fups", args.seeds_envs, s) for s in args.seeds_grid]
             + [(m, args.methods_envs, 1) for m in ("nops", args.dynamic)])
    out = []
    for method, num_envs, seeds in kinds:
        for env, learner in args.pairs:
            section = "q" if learner in throughput.VALUE_LEARNERS else "ac"
            extra = {f"{section}.num_envs": num_envs, f"{section}.rollout_len": args.rollout_len}
            if section == "q":  # the replay buffer holds two rollouts' worth at least (one item per env each)
                extra["q.buffer_size"] = max(2048, 2 * num_envs)
            label = f"{env}/{learner}/{method} envs={num_envs}" + (f" seeds={seeds}" if seeds > 1 else "")
            out.append((label, throughput.config_overrides(env, learner, method, extra), seeds))
    return out


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| configuration | seeds | envs | env steps/s | compile s | peak device MiB | peak host MiB |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['label']} | | | error: {r['error']} | | | |")
            continue
        dev = r["device_peak_bytes"]
        lines.append(f"| {r['label']} | {r['seeds']} | {r['num_envs']} | {r['steps_per_s']:,.0f} | "
                     f"{r['compile_s']:.1f} | {'-' if dev is None else f'{dev / 2**20:,.0f}'} | "
                     f"{r['host_peak_bytes'] / 2**20:,.0f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ints = lambda v: [int(x) for x in v.split(",") if x]  # noqa: E731
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs-grid", type=ints, default=[16, 64, 256, 1024, 4096])
    p.add_argument("--seeds-grid", type=ints, default=[8, 64])
    p.add_argument("--seeds-envs", type=int, default=64, help="environments per seed in the seeds sweep")
    p.add_argument("--methods-envs", type=int, default=256, help="environments of the NoPS / dynamic rows")
    p.add_argument("--dynamic", default="kaleidoscope", help="the dynamic method of the grid (any learner)")
    p.add_argument("--rollout-len", type=int, default=128)
    p.add_argument("--chunk-iters", type=int, default=2, help="training iterations per timed call")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--budget-s", type=float, default=420.0, help="start no configuration after this many seconds")
    p.add_argument("--smoke", action="store_true", help="a reduced grid for a CPU (what the tests run)")
    p.add_argument("--out", type=pathlib.Path, default=None,
                   help="JSON file (default: benchmarks/results/device_suite-<host>-<date>.json)")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    args.pairs = PAIRS
    if args.smoke:
        args.pairs, args.envs_grid, args.seeds_grid = (("lbf", "ppo"),), [4], [2]
        args.seeds_envs = args.methods_envs = 4
        args.rollout_len, args.chunk_iters, args.repeats = 8, 1, 1
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    info = throughput.environment_info(sys.argv[1:] if argv is None else argv)
    rows, start = [], time.perf_counter()
    out = args.out or REPO / "benchmarks" / "results" / f"device_suite-{info['host']}-{info['date'][:19]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> dict[str, Any]:  # after every row: a run stopped by its time limit keeps what it measured
        doc = {"info": info, "rows": rows, "elapsed_s": time.perf_counter() - start}
        out.write_text(json.dumps(doc, indent=1, default=str))
        return doc

    for label, overrides, seeds in grid(args):
        if time.perf_counter() - start > args.budget_s:
            print(f"budget of {args.budget_s:.0f} s spent: {label} and later not run", flush=True)
            break
        try:
            r = throughput.measure(overrides, args.chunk_iters, 0, args.repeats, seeds)
            num_envs = next(v for k, v in overrides.items() if k.endswith("num_envs"))
            r = {"label": label, "num_envs": num_envs, **r, **peak_memory()}
            print(f"{label} seeds={seeds}: {r['steps_per_s']:,.0f} env steps/s, compile {r['compile_s']:.1f} s",
                  flush=True)
        except Exception as e:  # an out-of-memory row must not lose the others
            r = {"label": label, "seeds": seeds, "error": f"{type(e).__name__}: {str(e)[:200]}"}
            print(f"{label}: error: {r['error']}", flush=True)
        rows.append(r)
        save()
    doc = save()
    if args.markdown:
        print(markdown(rows))
    print(f"wrote {out}")
    return doc


if __name__ == "__main__":
    main()
