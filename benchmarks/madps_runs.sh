#!/usr/bin/env bash
# MADPS next to NoPS, FuPS+id and SePS on MPE spread with 6 and 9 agents (A2C) and on LBF coop (PPO), several
# seeds: the comparison issue 5 asks for, meant for a bigger machine than the 2-core CI box (each line is
# a vmapped multi-seed run; on 2 CPU cores a 2e6-step line takes hours). Each writes runs/<name>/ with
# curves.png, distance.png (MAPD distance matrix, logged every 500 iterations by every method here) and,
# for MADPS, the number of front / back slots in use over time (madps_front_slots, madps_back_slots).
#
# QUICK=1 runs only the short checks behind the MAPD / MADPS defaults (minutes on 2 CPU cores): the distance
# ranges of NoPS / FuPS+id / SePS under A2C (1e5 steps, a round every 250 iterations = 10k steps) and MADPS
# with its defaults (2e5 steps: a round every 500 iterations, the first one only measures), then prints, per
# run, the off-diagonal distances at each round and MADPS's distinct front / back slots.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
SEEDS=${SEEDS:-4}
STEPS=${STEPS:-2e6}
train() { "$PY" -m psjax train progress=false out_dir=runs eval_every=0.05 seeds="$SEEDS" steps="$STEPS" "$@"; }
mpe6="env=mpe_spread num_agents=6 num_landmarks=6"
lbf="env=lbf scenario=8x8-2p-2f-coop"

if [[ "${QUICK:-0}" == 1 ]]; then
  quick() { "$PY" -m psjax train progress=false out_dir=runs/madps_quick eval_every=0 seeds=2 learner=a2c "$@"; }
  for m in nops fups_id seps; do
    quick $mpe6 alg=$m steps=1e5 mapd_interval=250 run_name=mpe6_$m
    quick $lbf alg=$m steps=1e5 mapd_interval=250 run_name=lbf_$m
  done
  quick $mpe6 alg=madps steps=2e5 run_name=mpe6_madps
  quick $lbf alg=madps steps=2e5 run_name=lbf_madps
  "$PY" - <<'PY'
import json, pathlib, re
import numpy as np
for run in sorted(pathlib.Path("runs/madps_quick").iterdir()):
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    rounds = [r for r in rows if r.get("mapd_distance[0,1]") is not None]
    print(run.name)
    for r in rounds:
        off = [v for k, v in r.items() if (m := re.match(r"mapd_distance\[(\d+),(\d+)\]", k)) and m[1] != m[2]]
        slots = f" front/back slots {r['madps_front_slots']}/{r['madps_back_slots']}" if "madps_front_slots" in r else ""
        print(f"  seed {r['seed']} step {r['env_steps']:>7}: d {np.min(off):.3f}-{np.max(off):.3f} "
              f"(mean {np.mean(off):.3f}){slots}")
PY
  exit 0
fi

# LBF first (the cheapest), with PPO: A2C (8 envs x 5 steps) learns little on LBF coop within 1e6 steps for
# any method (docs/results.md). The PPO rollout is 16 x 128 steps: a MAPD round every 10 iterations (20k
# steps), MADPS acting from the second round.
for m in nops fups_id; do
  train $lbf alg=$m learner=ppo mapd_interval=10 run_name=lbf_coop_${m}_ppo
done
train $lbf alg=seps learner=ppo mapd_interval=10 identity_pretrain_steps=1e5 run_name=lbf_coop_seps_ppo
train $lbf alg=madps learner=ppo madps_interval=10 madps_start=20 run_name=lbf_coop_madps_ppo
for agents in 6 9; do
  env="env=mpe_spread num_agents=$agents num_landmarks=$agents"
  for m in madps nops fups_id; do
    train $env alg=$m learner=a2c mapd_interval=500 run_name=mpe${agents}_${m}_a2c
  done
  train $env alg=seps learner=a2c mapd_interval=500 identity_pretrain_steps=1e5 run_name=mpe${agents}_seps_a2c
  # the seed's spread threshold (eps1 = 1.0, 200 x psjax's default eps1 = 0.005: every back fuses at the
  # first acting round) next to the default
  train $env alg=madps learner=a2c madps_fuse_threshold=1.0 run_name=mpe${agents}_madps_eps1_a2c
done
