#!/usr/bin/env bash
# The re-runs of the fidelity issue (docs/results.md, "What changed and why"): every result that bootstrapping
# through time limits, the named evaluation policy, BDPS's roles at evaluation, MADPS's reference structure
# and the PPS / AdaPS / A2C fixes can move. Groups run one at a time (2-core CPU):
#   RUNS="default spread_ppo" benchmarks/fidelity_runs.sh
# Each group is one `compare-sweep` (seeds vmapped inside each run) into runs/fid_<group>/ with compare.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
SEEDS=${SEEDS:-3}
RUNS=${RUNS:-"default lbf_ppo spread_ppo spread_a2c spread_qmix bps_a2c madps_lbf bdps_3m pps_lbf"}
sweep() { local name=$1; shift; "$PY" -m psjax compare-sweep progress=false out=runs/fid_$name "$@"; }

for group in $RUNS; do
  case $group in
    # `make train` (configs/default.yaml): LBF coop, FuPS, PPO, 2 seeds, 300k; sampled evaluation
    default) "$PY" -m psjax train preset=default progress=false run_name=fid_default ;;
    # sampled evaluation of PPO on LBF coop (was greedy); 300k steps
    lbf_ppo) sweep lbf_ppo env=lbf scenario=8x8-2p-2f-coop algs="fups nops seps adaps" learner=ppo seeds=$SEEDS steps=3e5 ;;
    # MPE spread ends only by its time limit (25 steps): every value target moved
    spread_ppo) sweep spread_ppo env=mpe_spread algs="fups_id nops seps adaps" learner=ppo seeds=$SEEDS steps=3e5 ;;
    spread_a2c) sweep spread_a2c env=mpe_spread algs="fups_id nops seps adaps" learner=a2c seeds=$SEEDS steps=3e5 ;;
    spread_qmix) sweep spread_qmix env=mpe_spread algs="fups_id" learner=qmix seeds=$SEEDS steps=3e5 ;;
    # blind-particle spread: time limit only; the SePS / AdaPS papers' task
    bps_a2c) sweep bps_a2c env=bps variant=15a3c algs="fups fups_id nops seps adaps" learner=a2c seeds=$SEEDS steps=3e5 ;;
    # MADPS with the reference's two-layer front and its defaults
    madps_lbf) sweep madps_lbf env=lbf scenario=8x8-2p-2f-coop algs="madps fups_id nops" learner=ppo seeds=$SEEDS steps=3e5 mapd_interval=10 ;;
    # BDPS with the paper's epsilon schedule, last action and sampled roles at evaluation (5 seeds in the issue)
    bdps_3m) sweep bdps_3m preset=bdps_smax env=smax map=3m algs="bdps fups_id nops" seeds=${BDPS_SEEDS:-5} steps=${BDPS_STEPS:-2e5} ;;
    bdps_3m_adv) "$PY" -m psjax train preset=bdps_smax env=smax map=3m alg=bdps seeds=${BDPS_SEEDS:-5} steps=${BDPS_STEPS:-2e5} \
                   bdps_advantage=mean progress=false run_name=fid_bdps_3m_adv_mean ;;
    # PPS with the episode reward buffer and PP-PPS's RS weights
    pps_lbf) sweep pps_lbf preset=pps_smax env=lbf scenario=10x10-3p-3f algs="pps_a pps_rs pps_pp fups_id nops" seeds=$SEEDS steps=5e5 ;;
    *) echo "unknown group $group" >&2; exit 2 ;;
  esac
done
# The "before" columns of docs/results.md that were re-run on the pre-issue-16 code (commit 974d253):
#   git worktree add /tmp/oldpsjax 974d253 && cd /tmp/oldpsjax && PYTHONPATH=. /work/main/.venv/bin/python -m psjax \
#     train env=mpe_spread alg=fups_id learner=ppo seeds=3 steps=3e5 run_name=old_spread_ppo_fupsid   (and learner=qmix)
