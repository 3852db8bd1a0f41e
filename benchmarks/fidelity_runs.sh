#!/usr/bin/env bash
# The re-runs of the fidelity issue (docs/results.md, "What changed and why"): every result that bootstrapping
# through time limits, the named evaluation policy, BDPS's roles at evaluation, MADPS's reference structure
# and the PPS / AdaPS / A2C fixes can move. Groups run one at a time (2-core CPU):
#   RUNS="default spread_ppo" benchmarks/fidelity_runs.sh
# Each group is one `compare-sweep` (seeds vmapped inside each run) into runs/fid_<group>/ with compare.md;
# the same command again continues a group that was stopped (finished runs reused, the stopped one resumed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
SEEDS=${SEEDS:-3}
RUNS=${RUNS:-"default lbf_ppo spread_ppo spread_a2c spread_qmix bps_a2c madps_lbf bdps_3m pps_lbf"}
sweep() { local name=$1; shift; "$PY" -m psjax compare-sweep progress=false out=runs/fid_$name "$@"; }

for group in $RUNS; do
  case $group in
    # `make train` (psjax/configs/default.yaml): LBF coop, FuPS, PPO, 2 seeds, 300k; sampled evaluation
    default) "$PY" -m psjax train preset=default progress=false run_name=fid_default ;;
    # sampled evaluation of PPO on LBF coop (was greedy); 300k steps
    lbf_ppo) sweep lbf_ppo env=lbf scenario=8x8-2p-2f-coop algs="fups nops seps adaps" learner=ppo seeds=$SEEDS steps=3e5 ;;
    # MPE spread ends only by its time limit (25 steps): every value target moved
    spread_ppo) sweep spread_ppo env=mpe_spread algs="fups_id nops seps adaps" learner=ppo seeds=$SEEDS steps=3e5 ;;
    spread_ppo_2m) sweep spread_ppo_2m env=mpe_spread algs="fups_id" learner=ppo seeds=$SEEDS steps=2e6 eval_every=0.1 ;;
    spread_a2c) sweep spread_a2c env=mpe_spread algs="fups_id nops seps adaps" learner=a2c seeds=$SEEDS steps=3e5 ;;
    spread_qmix) sweep spread_qmix env=mpe_spread algs="fups_id" learner=qmix seeds=$SEEDS steps=3e5 ;;
    # blind-particle spread: time limit only; the SePS / AdaPS papers' task
    bps_a2c) sweep bps_a2c env=bps variant=15a3c algs="fups fups_id nops seps adaps" learner=a2c seeds=$SEEDS steps=3e5 ;;
    # MADPS with the reference's two-layer front and its defaults
    madps_lbf) sweep madps_lbf env=lbf scenario=8x8-2p-2f-coop algs="madps fups_id nops" learner=ppo seeds=$SEEDS steps=3e5 mapd_interval=10 ;;
    # BDPS with the paper's epsilon schedule, last action and sampled roles at evaluation (5 seeds in the issue)
    bdps_3m) sweep bdps_3m preset=bdps_smax env=smax map=3m algs="bdps fups_id nops" seeds=${BDPS_SEEDS:-5} steps=${BDPS_STEPS:-2e5} ;;
    bdps_3m_ablations) sweep bdps_3m_ablations preset=bdps_smax env=smax map=3m algs="bdps_role bdps_team" seeds=$SEEDS \
                         steps=${BDPS_STEPS:-2e5} ;;
    bdps_5m) sweep bdps_5m preset=bdps_smax env=smax map=5m_vs_6m algs="bdps bdps_role bdps_team fups_id nops" \
               seeds=$SEEDS steps=${BDPS_STEPS:-2e5} ;;
    # the seed's LBF ablation task with its own preset (epsilon over 200k steps)
    bdps_lbf) sweep bdps_lbf preset=bdps_lbf algs="bdps bdps_role bdps_team fups_id nops" seeds=$SEEDS steps=3e5 ;;
    bdps_3m_adv) "$PY" -m psjax train preset=bdps_smax env=smax map=3m alg=bdps seeds=${BDPS_SEEDS:-5} steps=${BDPS_STEPS:-2e5} \
                   bdps_advantage=mean progress=false run_name=fid_bdps_3m_adv_mean ;;
    # PPS with the episode reward buffer and PP-PPS's RS weights; 300k on 3m and 2s3z, and 5m_vs_6m at the budget of
    # its runs before issue 16: PPS_MAPS=5m_vs_6m PPS_STEPS=2e5
    pps_smax) for map in ${PPS_MAPS:-3m 2s3z}; do
                sweep pps_smax_$map preset=pps_smax env=smax map=$map algs="pps_a pps_rs pps_pp fups_id nops" seeds=$SEEDS \
                  steps=${PPS_STEPS:-3e5}
              done ;;
    pps_lbf) sweep pps_lbf preset=pps_smax env=lbf scenario=10x10-3p-3f algs="pps_a pps_rs pps_pp fups_id nops" seeds=$SEEDS steps=5e5 ;;
    # PPO on SMAX 3m (terminates by win / loss, time limit 100 steps) and speaker-listener (time limit only)
    smax_ppo) sweep smax_ppo env=smax map=3m algs="fups_id" learner=ppo seeds=$SEEDS steps=2e6 eval_every=0.1 ;;
    # QMIX on SMAX 3m, the QMIX table's headline row (psjax/configs/smax_3m_qmix.yaml: TD(0.6), 16 updates per rollout)
    qmix_smax3m) "$PY" -m psjax train preset=smax_3m_qmix progress=false run_name=fid_smax3m_qmix_upd16 ;;
    # the QMIX table's other two SMAX 3m rows: TD(0.6) with 8 updates per rollout, and the defaults (one-step
    # targets, 4 updates per rollout); same 2 seeds, 2M steps and 128-episode evaluations as the headline row
    qmix_smax3m_upd8) "$PY" -m psjax train preset=smax_3m_qmix q.updates_per_rollout=8 progress=false \
                        run_name=fid_smax3m_qmix_upd8 ;;
    qmix_smax3m_upd4) "$PY" -m psjax train preset=smax_3m_qmix q.updates_per_rollout=4 q.td_lambda=0 progress=false \
                        run_name=fid_smax3m_qmix_upd4 ;;
    # issue 21: recurrent against feed-forward PPO (FuPS+id, default PPO settings; the 3m feed-forward row is smax_ppo)
    ppo_rnn_smax) for map in ${RNN_MAPS:-3m 2s3z}; do
                    sweep ppo_rnn_smax_$map env=smax map=$map algs="fups_id" learner=ppo ac.recurrent=true \
                      seeds=$SEEDS steps=${RNN_STEPS:-2e6} eval_every=0.1
                  done ;;
    ppo_ff_smax_2s3z) sweep ppo_ff_smax_2s3z env=smax map=2s3z algs="fups_id" learner=ppo seeds=$SEEDS steps=${RNN_STEPS:-2e6} \
                        eval_every=0.1 ;;
    # issue 21: recurrent MAPPO (central critic) at the CPU-sized JaxMARL ippo_rnn_smax settings
    mappo_rnn_3m) sweep mappo_rnn_3m preset=smax_mappo_rnn_cpu algs="nops fups_id seps" seeds=$SEEDS steps=${RNN_STEPS:-2e6} ;;
    # issue 19: PQN (learner preset: 16 envs x 128 steps, 4 epochs x 2 minibatches) against the QMIX rows at equal
    # env steps: LBF 10x10-3p-3f (QMIX: the pps_lbf group's fups_id row) and SMAX 3m (QMIX: qmix_smax3m)
    pqn_lbf) sweep pqn_lbf env=lbf scenario=10x10-3p-3f algs="fups_id" learner=pqn seeds=$SEEDS steps=5e5 ;;
    # psjax/configs/lbf_pqn.yaml: JaxMARL's discount for its non-SMAX PQN configs (0.9), epsilon to 0.05 over 200k, 8 epochs
    pqn_lbf_explore) sweep pqn_lbf_explore preset=lbf_pqn algs="fups_id" seeds=$SEEDS steps=5e5 ;;
    pqn_smax3m) sweep pqn_smax3m env=smax map=3m algs="fups_id" learner=pqn seeds=$SEEDS steps=${PQN_STEPS:-2e6} \
                  eval_every=0.05 eval_envs=128 ;;
    # issue 19: HyperMARL next to the re-run bps_a2c and spread_ppo rows (FuPS+id, NoPS, SePS), same settings
    hyper_bps) sweep hyper_bps env=bps variant=15a3c algs="hypermarl" learner=a2c seeds=$SEEDS steps=3e5 ;;
    hyper_spread) sweep hyper_spread env=mpe_spread algs="hypermarl" learner=ppo seeds=$SEEDS steps=3e5 ;;
    # DiCo next to bps_a2c / spread_ppo's FuPS+id, NoPS and SePS, at the default target SND 1 and at 4
    dico_bps) sweep dico_bps env=bps variant=15a3c algs="dico" learner=a2c seeds=$SEEDS steps=3e5 ;;
    dico_bps_snd4) sweep dico_bps_snd4 env=bps variant=15a3c algs="dico" learner=a2c seeds=$SEEDS steps=3e5 dico_snd=4 ;;
    dico_spread) sweep dico_spread env=mpe_spread algs="dico" learner=ppo seeds=$SEEDS steps=3e5 ;;
    dico_spread_snd4) sweep dico_spread_snd4 env=mpe_spread algs="dico" learner=ppo seeds=$SEEDS steps=3e5 dico_snd=4 ;;
    speaker_ppo) sweep speaker_ppo env=speaker_listener algs="fups_id" learner=ppo seeds=$SEEDS steps=3e5 ;;
    # the SePS / AdaPS table's A2C row on LBF coop (its PPO row is lbf_ppo)
    lbf_a2c) sweep lbf_a2c env=lbf scenario=8x8-2p-2f-coop algs="fups nops seps adaps" learner=a2c seeds=$SEEDS steps=3e5 ;;
    # Kaleidoscope next to the re-run FuPS / NoPS rows
    kal_lbf) sweep kal_lbf env=lbf scenario=8x8-2p-2f-coop algs="kaleidoscope" learner=ppo seeds=$SEEDS steps=3e5 ;;
    kal_lbf_reset) "$PY" -m psjax train env=lbf scenario=8x8-2p-2f-coop alg=kaleidoscope learner=ppo seeds=$SEEDS \
                     steps=3e5 kal_reset_interval=5e4 progress=false run_name=fid_kal_lbf_reset50k ;;
    kal_spread) sweep kal_spread env=mpe_spread algs="kaleidoscope kaleidoscope:qmix" learner=ppo seeds=$SEEDS steps=3e5 ;;
    # QMIX on LBF coop and MPE spread with TD(0.6) and 8 updates per rollout (the QMIX table's rows)
    qmix_lbf) sweep qmix_lbf env=lbf scenario=8x8-2p-2f-coop algs="fups_id" learner=qmix seeds=$SEEDS steps=5e5 \
                eval_every=0.1 q.td_lambda=0.6 q.updates_per_rollout=8 ;;
    qmix_spread) sweep qmix_spread env=mpe_spread algs="fups_id" learner=qmix seeds=$SEEDS steps=1e6 \
                   eval_every=0.1 q.td_lambda=0.6 q.updates_per_rollout=8 ;;
    # MADPS's restructuring (a round every 10 PPO iterations): benchmarks/madps_runs.sh, one task per group
    madps_lbf_1m) SEEDS=$SEEDS STEPS=1e6 TASKS=lbf OUT=runs/fid_madps benchmarks/madps_runs.sh ;;
    madps_mpe9) SEEDS=$SEEDS STEPS=1e6 MPE9_STEPS=5e5 TASKS=mpe9 EPS1=0 OUT=runs/fid_madps benchmarks/madps_runs.sh ;;
    madps_mpe6) SEEDS=$SEEDS STEPS=1e6 TASKS=mpe6 EPS1=0 OUT=runs/fid_madps benchmarks/madps_runs.sh ;;
    # C-RWARE mini (time limit only) and image indication on LBF grid observations
    crware_a2c) sweep crware_a2c env=crware variant=mini algs="fups fups_id nops" learner=a2c seeds=$SEEDS steps=3e5 \
                  eval_every=0.1 ;;
    image_ind) for ind in ${INDICATIONS:-identity geometric binary inversion inversion_replacement}; do
                 "$PY" -m psjax train env=lbf scenario=8x8-2p-2f-coop fov=2 lbf_grid_obs=true lbf_fixed_levels=true \
                   image_indication=$ind alg=fups learner=ppo seeds=$SEEDS steps=2e5 progress=false \
                   run_name=fid_image_$ind
               done ;;
    *) echo "unknown group $group" >&2; exit 2 ;;
  esac
done
# The "before" columns of docs/results.md that were re-run on the pre-issue-16 code (commit 974d253):
#   git worktree add /tmp/oldpsjax 974d253 && cd /tmp/oldpsjax && PYTHONPATH=. /work/main/.venv/bin/python -m psjax \
#     train env=mpe_spread alg=fups_id learner=ppo seeds=3 steps=3e5 run_name=old_spread_ppo_fupsid   (and learner=qmix)
