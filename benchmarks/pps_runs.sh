#!/usr/bin/env bash
# PPS comparison runs (issue 4): A-PPS, RS-PPS and PP-PPS against QMIX FuPS+id and QMIX NoPS on SMAX 3m,
# 2s3z, 5m_vs_6m and LBF 10x10-3p-3f, at equal steps and settings (psjax/configs/pps_smax.yaml: QMIX as
# psjax/configs/smax_3m_qmix.yaml with 8 updates per rollout, pps_interval 80), several seeds; then the throughput of every variant
# against NoPS-QMIX in one benchmark run. Long: hours on the 2-core CPU; each run writes runs/<name>/.
#
#   benchmarks/pps_runs.sh                      # everything
#   SEEDS=2 SMAX_STEPS=1e6 benchmarks/pps_runs.sh
#   PPS_ARGS="pps_interval=300" benchmarks/pps_runs.sh   # the paper's interval in gradient updates
#   MAPS="" THROUGHPUT=0 SEEDS=3 LBF_STEPS=5e5 benchmarks/pps_runs.sh   # LBF only
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
SEEDS=${SEEDS:-3}
SMAX_STEPS=${SMAX_STEPS:-2e6}
LBF_STEPS=${LBF_STEPS:-2e6}
PPS_ARGS=${PPS_ARGS:-}
MAPS=${MAPS-3m 2s3z 5m_vs_6m}  # SMAX maps; empty = none
LBF=${LBF:-1}  # 0 = skip LBF 10x10-3p-3f
THROUGHPUT=${THROUGHPUT:-1}  # 0 = skip the throughput benchmark
METHODS="pps_a pps_rs pps_pp fups_id nops"
train() { "$PY" -m psjax train preset=pps_smax progress=false out_dir=runs seeds="$SEEDS" eval_every=0.05 $PPS_ARGS "$@"; }

for map in $MAPS; do
  for alg in $METHODS; do
    train env=smax map="$map" alg="$alg" steps="$SMAX_STEPS" run_name="pps_smax_${map}_${alg}"
  done
done
for alg in $METHODS; do
  [[ "$LBF" == 1 ]] || break
  train env=lbf scenario=10x10-3p-3f alg="$alg" steps="$LBF_STEPS" run_name="pps_lbf_10x10-3p-3f_${alg}"
done

# Throughput of each variant next to NoPS-QMIX and FuPS+id in the same run (target: >= 0.9 x NoPS).
[[ "$THROUGHPUT" == 1 ]] || exit 0
"$PY" benchmarks/throughput.py --envs smax,lbf --learners qmix --methods nops,fups_id,pps_a,pps_rs,pps_pp \
  --markdown --out benchmarks/results/pps_throughput.json
