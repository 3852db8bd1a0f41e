#!/usr/bin/env bash
# BDPS comparison runs (issue 6): BDPS, its two ablations (bdps_role = individual level only, bdps_team =
# team level only), QMIX FuPS+id and QMIX NoPS on SMAX 3m and 5m_vs_6m and LBF 15x15-4p-5f, at equal
# steps and QMIX settings (psjax/configs/bdps_smax.yaml = psjax/configs/smax_3m_qmix.yaml at 8 updates per rollout + the BDPS options), several
# seeds; then the throughput of BDPS against QMIX FuPS+id in one benchmark run. Long: hours on a CPU,
# meant for a GPU machine; each run writes runs/<name>/.
#
#   benchmarks/bdps_runs.sh                              # everything
#   SEEDS=5 SMAX_STEPS=2e6 LBF_STEPS=5e6 benchmarks/bdps_runs.sh
#   BDPS_ARGS="bdps_role_period=8 bdps_group_factor=1" benchmarks/bdps_runs.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
SEEDS=${SEEDS:-3}
SMAX_STEPS=${SMAX_STEPS:-2e6}
LBF_STEPS=${LBF_STEPS:-2e6}
BDPS_ARGS=${BDPS_ARGS:-}
METHODS="bdps bdps_role bdps_team fups_id nops"
train() { "$PY" -m psjax train progress=false out_dir=runs seeds="$SEEDS" eval_every=0.05 $BDPS_ARGS "$@"; }

for map in 3m 5m_vs_6m; do
  for alg in $METHODS; do
    train preset=bdps_smax env=smax map="$map" alg="$alg" steps="$SMAX_STEPS" run_name="bdps_smax_${map}_${alg}"
  done
done
# LBF 15x15-4p-5f (the paper's LBF ablation): 4 agents, k = 3, m = 2, 50-step episodes (T_V = 10)
for alg in $METHODS; do
  train preset=bdps_lbf alg="$alg" steps="$LBF_STEPS" run_name="bdps_lbf_15x15-4p-5f_${alg}"
done

# Throughput of BDPS and its ablations next to QMIX FuPS+id in the same run (target: >= 0.6 x FuPS+id).
# LBF's small config (8x8-2p-2f-coop) has 2 agents: k = m = 2 there.
"$PY" benchmarks/throughput.py --envs smax --learners qmix --methods fups_id,bdps,bdps_role,bdps_team --markdown \
  --out benchmarks/results/bdps_throughput_smax.json
"$PY" benchmarks/throughput.py --envs lbf --learners qmix --methods fups_id,bdps,bdps_role,bdps_team --markdown \
  --set bdps_roles=2 --out benchmarks/results/bdps_throughput_lbf.json
# the same with the shared-torso deviation (one Dense -> GRU torso, per-role / per-group output heads)
"$PY" benchmarks/throughput.py --envs smax --learners qmix --methods fups_id,bdps,bdps_role,bdps_team --markdown \
  --set bdps_shared_torso=true --out benchmarks/results/bdps_shared_throughput_smax.json
"$PY" benchmarks/throughput.py --envs lbf --learners qmix --methods fups_id,bdps,bdps_role,bdps_team --markdown \
  --set bdps_roles=2 --set bdps_shared_torso=true --out benchmarks/results/bdps_shared_throughput_lbf.json
