#!/usr/bin/env bash
# MADPS next to NoPS, FuPS+id and SePS on MPE spread with 6 and 9 agents and on LBF coop, several seeds: the
# comparison issue 5 asks for, with PPO (each line is a vmapped multi-seed run; docs/results.md has the runs
# of `SEEDS=3 STEPS=1e6`, MPE9_STEPS=5e5, minutes each on 2 CPU cores). Each writes runs/<name>/ with
# curves.png, distance.png (MAPD distance matrix, logged every 10 iterations = 20k env steps by every method
# here) and, for MADPS, the number of front / back slots in use over time (madps_front_slots,
# madps_back_slots). A2C at its defaults (8 envs x 5 steps) stays at the random policy's return on spread
# with 6 and 9 agents for NoPS, SePS and MADPS within 1e6 steps and learns little on LBF coop; A2C=1 adds
# those A2C runs (the seed's learner; a MAPD round every 500 iterations = 20k env steps).
#
# QUICK=1 runs short checks of the MAPD distance ranges (minutes on 2 CPU cores): NoPS / FuPS+id / SePS under
# A2C (1e5 steps, a round every 250 iterations = 10k steps) and MADPS with its defaults (2e5 steps: a round
# every 500 iterations, the first one only measures), then prints, per run, the off-diagonal distances at each
# round and MADPS's distinct front / back slots. The evidence behind the defaults (initialisation, thresholds,
# the VAE's training pairs) is benchmarks/madps_init.py and benchmarks/madps_vae_pairs.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
SEEDS=${SEEDS:-4}
STEPS=${STEPS:-2e6}
MPE9_STEPS=${MPE9_STEPS:-$STEPS}
TASKS=${TASKS:-"lbf mpe6 mpe9"}   # which of the three tasks to run
EPS1=${EPS1:-1}                   # 0 leaves out the seed's eps1 = 1.0 variant
train() { "$PY" -m psjax train progress=false out_dir="${OUT:-runs}" eval_every=0.05 seeds="$SEEDS" steps="$STEPS" "$@"; }
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

# The PPO rollout is 16 x 128 steps: a MAPD round every 10 iterations (20k steps), MADPS acting from the second.
ppo="learner=ppo mapd_interval=10"
madps_ppo="learner=ppo madps_interval=10 madps_start=20"
if [[ " $TASKS " == *" lbf "* ]]; then
  for m in nops fups_id; do
    train $lbf alg=$m $ppo run_name=lbf_coop_${m}_ppo
  done
  train $lbf alg=seps $ppo identity_pretrain_steps=1e5 run_name=lbf_coop_seps_ppo
  train $lbf alg=madps $madps_ppo run_name=lbf_coop_madps_ppo
fi
for agents in 6 9; do
  [[ " $TASKS " == *" mpe$agents "* ]] || continue
  env="env=mpe_spread num_agents=$agents num_landmarks=$agents"
  steps=$STEPS; [[ $agents == 9 ]] && steps=$MPE9_STEPS
  train $env alg=madps $madps_ppo steps=$steps run_name=mpe${agents}_madps_ppo
  for m in nops fups_id; do
    train $env alg=$m $ppo steps=$steps run_name=mpe${agents}_${m}_ppo
  done
  train $env alg=seps $ppo steps=$steps identity_pretrain_steps=1e5 run_name=mpe${agents}_seps_ppo
  # the seed's spread threshold (eps1 = 1.0, twice the reference code's default 0.5) next to the default
  if [[ "$EPS1" == 1 ]]; then
    train $env alg=madps $madps_ppo steps=$steps madps_fuse_threshold=1.0 run_name=mpe${agents}_madps_eps1_ppo
  fi
  if [[ "${A2C:-0}" == 1 ]]; then
    for m in madps nops fups_id; do
      train $env alg=$m learner=a2c mapd_interval=500 steps=$steps run_name=mpe${agents}_${m}_a2c
    done
    train $env alg=seps learner=a2c mapd_interval=500 steps=$steps identity_pretrain_steps=1e5 \
      run_name=mpe${agents}_seps_a2c
  fi
done
