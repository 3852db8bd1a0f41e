#!/usr/bin/env python
"""psjax.memory's estimate next to the measured peak, one short run per configuration in its own process.

    python benchmarks/memory_check.py [--markdown]

The peak is the process's resident memory (CPU) or the device's ``peak_bytes_in_use`` (an accelerator), minus
that of the smallest configuration (the matrix game: the JAX runtime and the compiler), so the figures compare
what the run itself adds. Each run trains 2 chunks (``max_chunks``) with checkpoints off.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent
BASELINE = {"env": "matrix", "alg": "fups", "learner": "qmix", "q.num_envs": 1, "q.buffer_size": 32}
CASES = {
    "lbf qmix nops, 4 seeds": {"env": "lbf", "alg": "nops", "learner": "qmix", "seeds": 4},
    "smax 3m qmix fups_id, 2 seeds, buffer 5000": {"env": "smax", "map": "3m", "alg": "fups_id", "learner": "qmix",
                                                   "seeds": 2, "q.buffer_size": 5000},
    "smax 3m ppo rnn fups, 128 envs": {"env": "smax", "map": "3m", "alg": "fups", "learner": "ppo",
                                       "ac.recurrent": True, "ac.shared_torso": True, "ac.num_envs": 128,
                                       "ac.rollout_len": 128, "ac.hidden": 128},
    "mpe spread ppo seps, 8 seeds": {"env": "mpe_spread", "alg": "seps", "learner": "ppo", "seeds": 8},
}

CHILD = """
import json, resource, sys
import jax
from psjax.config import make_config
from psjax.memory import estimate
from psjax.run import run
overrides = json.loads(sys.argv[1])
cfg = make_config({**overrides, "checkpoint": False, "progress": False, "out_dir": sys.argv[2],
                   "eval_every": 0.1})
est = estimate(cfg)
run(cfg, max_chunks=2)
stats = jax.local_devices()[0].memory_stats() or {}
peak = stats.get("peak_bytes_in_use") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"estimate": est.total, "terms": est.terms, "peak": peak}))
"""


def measure(overrides: dict) -> dict:
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(overrides), out], cwd=REPO,
                              capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args()
    base = measure(BASELINE)["peak"]
    rows = []
    for name, overrides in CASES.items():
        r = measure(overrides)
        largest = max(r["terms"], key=r["terms"].get)
        rows.append((name, r["estimate"], r["peak"] - base, largest))
        print(json.dumps({"case": name, **r, "baseline_peak": base}), flush=True)
    if args.markdown:
        print("| configuration | estimate MiB | measured MiB above the baseline | largest term |")
        print("|---|---:|---:|---|")
        for name, est, peak, largest in rows:
            print(f"| {name} | {est / 2**20:,.1f} | {peak / 2**20:,.1f} | {largest} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
