#!/usr/bin/env bash
# The accelerator suite (benchmarks/device_suite.py) in one call that ends within 8 minutes on one GPU:
# env steps/s against env count (16 ... 4096) and vmapped seeds (1, 8, 64) for FuPS, NoPS and Kaleidoscope under
# QMIX and PPO on SMAX 3m and LBF, with compile times and peak memory, into benchmarks/results/ (JSON + the
# Markdown table on stdout). Record its figures in docs/benchmarks.md with the device named.
#   benchmarks/device_suite.sh                 # the full grid
#   benchmarks/device_suite.sh --smoke         # a reduced grid, minutes on a CPU
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
timeout 470 "$PY" benchmarks/device_suite.py --markdown --budget-s 400 "$@"
