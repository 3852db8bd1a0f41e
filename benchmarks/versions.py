#!/usr/bin/env python
"""Throughput of two checkouts of psjax (before / after a change), timed interleaved in one run.

Each checkout runs in its own worker process (its ``benchmarks/throughput.py`` builds, compiles and warms up
every configuration); the driver then alternates single timed calls between the two (A B, then B A, ...),
so load that comes and goes hits both alike. Reported per configuration: median env steps/s of each, the
ratio after / before, and each compile time (measured apart, never mixed into the run time).

    python benchmarks/versions.py --before /tmp/psjax-old --after . \\
        --configs lbf:qmix:fups,lbf:qmix:nops,lbf:a2c:seps --repeats 5 --markdown

A configuration is ``env:learner:method`` (the small configs of ``throughput.py``); ``--set key=value``
applies to every one. Get the "before" checkout with ``git worktree add /tmp/psjax-old <commit>``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys


def worker(tree: str) -> None:
    """Serve prepare / time requests (JSON lines on stdin) with ``tree``'s psjax."""
    sys.path[:0] = [str(pathlib.Path(tree) / "benchmarks"), tree]
    import throughput  # noqa: E402  (the checkout's own)

    prepared = {}
    for line in sys.stdin:
        req = json.loads(line)
        if req["cmd"] == "prepare":
            overrides = throughput.config_overrides(*req["config"].split(":"), req["overrides"])
            try:
                prep = throughput.prepare(overrides, None, req["chunk_steps"], 1, 1)
            except Exception as e:  # a config this checkout refuses: reported, the others go on
                print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
                continue
            prepared[req["config"]] = prep
            out = {"compile_s": prep.info["compile_s"], "param_count": prep.info["param_count"],
                   "steps_per_call": prep.info["steps_per_call"]}
        else:
            prepared[req["config"]], seconds = throughput.timed_call(prepared[req["config"]])
            out = {"seconds": seconds}
        print(json.dumps(out), flush=True)


class Worker:
    def __init__(self, tree: str):
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", tree], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def ask(self, **req) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker failed on {req}")
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--before", help="checkout of the code before the change")
    p.add_argument("--after", default=".", help="checkout of the code after it (default: this one)")
    p.add_argument("--configs", default="lbf:qmix:fups,lbf:qmix:nops", help="comma list of env:learner:method")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per configuration and checkout")
    p.add_argument("--chunk-steps", type=int, default=20_480, help="env steps per timed call")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    overrides = dict(s.split("=", 1) for s in args.sets)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    trees = {"before": str(pathlib.Path(args.before).resolve()), "after": str(pathlib.Path(args.after).resolve())}
    workers = {name: Worker(tree) for name, tree in trees.items()}
    info = {c: {v: workers[v].ask(cmd="prepare", config=c, overrides=overrides, chunk_steps=args.chunk_steps)
                for v in workers} for c in configs}
    for c in list(configs):
        errors = {v: out["error"] for v, out in info[c].items() if "error" in out}
        if errors:
            print(f"{c}: skipped: {errors}", file=sys.stderr)
            configs.remove(c)
    times = {c: {v: [] for v in workers} for c in configs}
    for r in range(args.repeats):
        order = list(workers) if r % 2 == 0 else list(workers)[::-1]
        for c in configs:
            for v in order:
                times[c][v].append(workers[v].ask(cmd="time", config=c)["seconds"])
    for w in workers.values():
        w.close()
    rows = []
    for c in configs:
        sps = {v: info[c][v]["steps_per_call"] / statistics.median(times[c][v]) for v in workers}
        rows.append({"config": c, **{f"{v}_steps_per_s": sps[v] for v in workers},
                     "ratio": sps["after"] / sps["before"],
                     **{f"{v}_compile_s": info[c][v]["compile_s"] for v in workers},
                     **{f"{v}_run_s": times[c][v] for v in workers}})
    head = ("config", "before steps/s", "after steps/s", "after / before", "compile s before", "compile s after")
    lines = [head] + [(r["config"], f"{r['before_steps_per_s']:,.0f}", f"{r['after_steps_per_s']:,.0f}",
                       f"{r['ratio']:.2f}", f"{r['before_compile_s']:.1f}", f"{r['after_compile_s']:.1f}")
                      for r in rows]
    if args.markdown:
        print("| " + " | ".join(head) + " |\n|---|---:|---:|---:|---:|---:|")
        print("\n".join("| " + " | ".join(cells) + " |" for cells in lines[1:]))
    else:
        print("\n".join("  ".join(f"{cell:>18}" for cell in cells) for cells in lines))
    print(json.dumps({"trees": trees, "repeats": args.repeats, "chunk_steps": args.chunk_steps, "rows": rows}))
    return rows


if __name__ == "__main__":
    main()
