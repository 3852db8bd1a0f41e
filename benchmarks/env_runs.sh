#!/usr/bin/env bash
# Learning runs on the papers' own environments (issue 7), for a machine with time to spare:
# FuPS, FuPS+id, NoPS (and the sharing methods) on BPS and C-RWARE with A2C (the papers' learner),
# and the image agent-indication methods on LBF grid observations. Each writes runs/<name>/.
# The short CPU checks recorded in docs/envs.md are the first block at 3e5 steps.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
train() { "$PY" -m psjax train progress=false out_dir=runs eval_every=0.05 "$@"; }
STEPS=${STEPS:-2000000}
SEEDS=${SEEDS:-4}

# BPS: the three settings of the SePS / AdaPS / MADPS papers
# (SePS / AdaPS get K = the number of colours)
for variant in 15a3c 30a3c 30a5c; do
  k=${variant: -2:1}
  for alg in fups fups_id nops seps adaps snp_ps; do
    train env=bps variant=$variant alg=$alg learner=a2c seeds=$SEEDS steps=$STEPS identity_clusters=$k \
      run_name=bps_${variant}_a2c_$alg
  done
done

# C-RWARE as the SePS code runs it (semitable/robotic-warehouse, branch color; docs/envs.md): mini (no reference)
# first, then the SePS paper's tiny-4ag, tiny-4ag-hard, small-8ag and medium-16ag
for task in mini:normal tiny:normal tiny:hard small:normal medium:normal; do
  variant=${task%:*} difficulty=${task#*:}
  for alg in fups fups_id nops seps adaps snp_ps; do
    train env=crware variant=$variant crware_difficulty=$difficulty alg=$alg learner=a2c seeds=$SEEDS steps=$STEPS \
      identity_clusters=2 run_name=crware_${variant}_${difficulty}_a2c_$alg
  done
done

# LBF with persistent levels (the SePS setting), vector observations
for alg in fups fups_id nops seps adaps; do
  train env=lbf scenario=8x8-4p-3f lbf_fixed_levels=true alg=$alg learner=a2c seeds=$SEEDS steps=$STEPS \
    run_name=lbf_8x8_4p_3f_levels_a2c_$alg
done

# Image agent indication on LBF grid observations (Terry et al. 4.2), one shared network (FuPS) each.
# Needs the conv torso wired into the learners (RecurrentQNet / MLP obs_shape=spec.obs_shape).
for ind in identity geometric binary inversion inversion_replacement; do
  train env=lbf scenario=8x8-2p-2f-coop fov=2 lbf_grid_obs=true lbf_fixed_levels=true image_indication=$ind \
    alg=fups learner=ppo seeds=$SEEDS steps=$STEPS run_name=lbf_grid_ppo_fups_$ind
done
