#!/usr/bin/env bash
# The learning runs recorded in docs/results.md (CPU, 2 cores). Each writes runs/<name>/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
train() { "$PY" -m psjax train progress=false out_dir=runs "$@"; }

train preset=default run_name=lbf_coop_ppo_fups
train env=lbf scenario=8x8-2p-2f-coop alg=fups_id learner=qmix seeds=2 steps=5e5 eval_every=0.1 run_name=lbf_coop_qmix_fupsid
train env=lbf scenario=8x8-2p-2f-coop alg=fups_id learner=qmix seeds=2 steps=5e5 eval_every=0.1 q.td_lambda=0.6 q.updates_per_rollout=8 run_name=lbf_coop_qmix_fupsid_tdl
train env=mpe_spread alg=fups_id learner=ppo seeds=2 steps=2e6 eval_every=0.1 run_name=mpe_ppo_fupsid_2m
train env=mpe_spread alg=fups_id learner=qmix seeds=2 steps=1e6 eval_every=0.1 q.td_lambda=0.6 q.updates_per_rollout=8 run_name=mpe_qmix_fupsid_tdl
train env=mpe_spread alg=fups_id learner=qmix seeds=2 steps=3e5 eval_every=0.1 run_name=mpe_qmix_fupsid
train env=mpe_spread alg=fups_id learner=ppo seeds=2 steps=3e5 eval_every=0.1 run_name=mpe_ppo_fupsid
train env=smax map=3m alg=fups_id learner=ppo seeds=2 steps=2e6 eval_every=0.1 run_name=smax3m_ppo_fupsid
train env=smax map=3m alg=fups_id learner=qmix seeds=2 steps=2e6 eval_every=0.05 run_name=smax3m_qmix_fupsid
train preset=smax_3m_qmix q.updates_per_rollout=8 eval_envs=32 run_name=smax3m_qmix_fupsid_tdl_upd8
train preset=smax_3m_qmix run_name=smax3m_qmix_fupsid_tdl_upd16
train env=speaker_listener alg=fups_id learner=ppo seeds=2 steps=3e5 eval_every=0.1 run_name=speaker_listener_ppo_fupsid
# sharing methods (docs/results.md, "Sharing methods")
train env=lbf scenario=8x8-2p-2f-coop alg=kaleidoscope learner=ppo seeds=2 steps=3e5 run_name=lbf_coop_kal_ppo
train env=lbf scenario=8x8-2p-2f-coop alg=kaleidoscope learner=ppo seeds=2 steps=3e5 kal_reset_interval=5e4 run_name=lbf_coop_kal_ppo_reset50k
train env=mpe_spread alg=kaleidoscope learner=ppo seeds=2 steps=3e5 run_name=mpe_kal_ppo
train env=mpe_spread alg=kaleidoscope learner=qmix seeds=2 steps=3e5 run_name=mpe_kal_qmix
for args in "env=lbf scenario=8x8-2p-2f-coop" "env=mpe_spread" "env=speaker_listener" "env=smax map=3m"; do
  "$PY" benchmarks/random_baseline.py $args
done
