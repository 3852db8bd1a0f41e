"""Short checks of the MAPD distance ranges behind MADPS's defaults (minutes on 2 CPU cores; was madps_runs.sh QUICK=1).

NoPS / FuPS+id / SePS under A2C (1e5 steps, a MAPD round every 250 iterations = 10k steps) and MADPS with its
defaults (2e5 steps: a round every 500 iterations, the first one only measures) on MPE spread with 6 agents and LBF
coop, into runs/madps_quick/; then, per run, the off-diagonal distances at each round and MADPS's distinct front /
back slots. The evidence behind the defaults (initialisation, thresholds, the VAE's training pairs) is
benchmarks/madps_init.py and benchmarks/madps_vae_pairs.py. Usage: python benchmarks/madps_quick.py [--print-only]
"""

import json
import pathlib
import re
import subprocess
import sys

import numpy as np

OUT = pathlib.Path("runs/madps_quick")
TASKS = {"mpe6": ["env=mpe_spread", "num_agents=6", "num_landmarks=6"], "lbf": ["env=lbf", "scenario=8x8-2p-2f-coop"]}


def train(task: str, alg: str, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "psjax", "train", "progress=false", f"out_dir={OUT}", "eval_every=0",
                    "seeds=2", "learner=a2c", *TASKS[task], f"alg={alg}", *args, f"run_name={task}_{alg}"], check=True)


def show() -> None:
    for run in sorted(OUT.iterdir()):
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
        print(run.name)
        for r in (r for r in rows if r.get("mapd_distance[0,1]") is not None):
            off = [v for k, v in r.items() if (m := re.match(r"mapd_distance\[(\d+),(\d+)\]", k)) and m[1] != m[2]]
            slots = (f" front/back slots {r['madps_front_slots']}/{r['madps_back_slots']}"
                     if "madps_front_slots" in r else "")
            print(f"  seed {r['seed']} step {r['env_steps']:>7}: d {np.min(off):.3f}-{np.max(off):.3f} "
                  f"(mean {np.mean(off):.3f}){slots}")


if __name__ == "__main__":
    if "--print-only" not in sys.argv:
        for alg in ("nops", "fups_id", "seps"):
            for task in TASKS:
                train(task, alg, "steps=1e5", "mapd_interval=250")
        for task in TASKS:
            train(task, "madps", "steps=2e5")
    show()
