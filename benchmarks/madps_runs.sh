#!/usr/bin/env bash
# MADPS next to NoPS, FuPS+id and SePS (A2C) on MPE spread with 6 and 9 agents and on LBF coop, several
# seeds: the comparison issue 5 asks for, meant for a bigger machine than the 2-core CI box (each line is
# a vmapped multi-seed run; on 2 CPU cores a 2e6-step line takes hours). Each writes runs/<name>/ with
# curves.png, distance.png (MAPD distance matrix, logged every 500 iterations by every method here) and,
# for MADPS, the number of front / back slots in use over time (madps_front_slots, madps_back_slots).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
SEEDS=${SEEDS:-4}
STEPS=${STEPS:-2e6}
train() { "$PY" -m psjax train progress=false out_dir=runs eval_every=0.05 seeds="$SEEDS" steps="$STEPS" "$@"; }

for agents in 6 9; do
  env="env=mpe_spread num_agents=$agents num_landmarks=$agents"
  for m in madps nops fups_id; do
    train $env alg=$m learner=a2c mapd_interval=500 run_name=mpe${agents}_${m}_a2c
  done
  train $env alg=seps learner=a2c mapd_interval=500 identity_pretrain_steps=1e5 run_name=mpe${agents}_seps_a2c
  # the seed's spread threshold (eps1 = 1.0) next to the reference code's default (0.5)
  train $env alg=madps learner=a2c madps_fuse_threshold=1.0 run_name=mpe${agents}_madps_eps1_a2c
done
lbf="env=lbf scenario=8x8-2p-2f-coop"
for m in madps nops fups_id; do
  train $lbf alg=$m learner=a2c mapd_interval=500 run_name=lbf_coop_${m}_a2c
done
train $lbf alg=seps learner=a2c mapd_interval=500 identity_pretrain_steps=1e5 run_name=lbf_coop_seps_a2c
# PPO as the learner under MADPS (the rollout is 16 x 128 steps: a round every 10 iterations)
train $lbf alg=madps learner=ppo madps_interval=10 run_name=lbf_coop_madps_ppo
