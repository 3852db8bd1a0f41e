#!/usr/bin/env bash
# What a lent GPU machine needs to run psjax's device checks in one call (benchmarks/README.md, "On a lent GPU
# machine"). That machine reaches no network and has its own Python (3.12) with JAX, flax, optax, chex and orbax
# but not psjax's environment packages, so:
#   benchmarks/device_kit.sh fetch [JAXMARL_DIR]   # here: the missing packages' wheels -> .whl/, and with a
#                                                  # JaxMARL checkout at c793d09 its baselines/ -> .peers/JaxMARL/
#   benchmarks/device_kit.sh run                   # there (carry .whl and .peers): install the wheels into
#                                                  # /tmp/site, the accelerator suite, then the peer harness
#   PY=.venv/bin/python benchmarks/device_kit.sh run --smoke   # the same steps on a CPU with psjax's .venv
#                                                  # (no install, reduced suite, tiny peer budget)
# `run` ends within about 8 minutes; its JSON files are copied to $OUT where that is set.
set -euo pipefail
cd "$(dirname "$0")/.."

# the packages psjax and the peer scripts import that the device image lacks, at the versions .venv runs
WHEELS=(distrax==0.1.9 tfp-nightly==0.26.0.dev20261027 dm-tree==0.1.10 gast==0.7.0 decorator==5.3.2 dm-env==1.6
        esquilax==2.1.0 jax-tqdm==0.4.0 gymnasium==1.3.0 farama-notifications==0.0.6 gymnax==1.0.1 jaxmarl==0.2.0
        jumanji==1.1.2 flashbax==0.1.3)
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

case "${1:-}" in
fetch)
    PY=${PY:-.venv/bin/python}
    rm -rf .whl && mkdir -p .whl
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${PLATFORMS[@]}" -d .whl "${WHEELS[@]}"
    if [ -n "${2:-}" ]; then
        [ -d "$2/baselines" ] || { echo "error: $2/baselines not found (a JaxMARL checkout at c793d09)" >&2; exit 2; }
        rm -rf .peers/JaxMARL && mkdir -p .peers/JaxMARL && cp -r "$2/baselines" .peers/JaxMARL/
    fi
    du -sh .whl .peers 2>/dev/null || true
    echo "now: run(command=\"benchmarks/device_kit.sh run\", carry=[\".whl\", \".peers\"], timeout_s=560)"
    ;;
run)
    smoke=${2:-}
    PY=${PY:-python3}
    start=$(mktemp)
    if [ "$smoke" != "--smoke" ]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
        export PYTHONPATH=/tmp/site:$PWD
    fi
    export PYTHONUNBUFFERED=1
    "$PY" -c "import jax; print('jax', jax.__version__, jax.devices())"
    if [ "$smoke" = "--smoke" ]; then
        suite=(--smoke --budget-s 60) peers=(--steps 8192 --repeats 1) limit=(240 200)
    else
        suite=(--budget-s 250) peers=(--steps 262144 --repeats 2) limit=(320 190)
    fi
    timeout "${limit[0]}" "$PY" benchmarks/device_suite.py --markdown "${suite[@]}" || echo "device_suite.py: exit $?"
    if [ -d .peers/JaxMARL/baselines ]; then
        timeout "${limit[1]}" "$PY" benchmarks/peers.py --peer-dir .peers/JaxMARL --cases ippo_ff_mpe,qmix_rnn_smax \
            --markdown "${peers[@]}" || echo "peers.py: exit $?"
    else
        echo "no .peers/JaxMARL/baselines: the peer harness skipped (benchmarks/device_kit.sh fetch JAXMARL_DIR)"
    fi
    if [ -n "${OUT:-}" ]; then
        # $OUT takes names of letters, digits, '.', '_' and '-' only (device_suite's carry a time with ':')
        find benchmarks/results -name '*.json' -newer "$start" | while read -r f; do
            cp "$f" "$OUT/$(basename "$f" | tr -c 'A-Za-z0-9._\n-' '-')"
        done
    fi
    rm -f "$start"
    ;;
*)
    echo "usage: benchmarks/device_kit.sh fetch [JAXMARL_DIR] | run [--smoke]" >&2
    exit 2
    ;;
esac
