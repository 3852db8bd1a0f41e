# psjax: `make train`, `make test` (`make test-all`), `make bench`, `make lint`, `make compare`. The first target run builds .venv.
#
# make train ENV=smax ALG=bdps MAP=5m_vs_6m SEEDS=4 STEPS=2e6 ARGS="lr=5e-4 eval_every=0.1"
# Each variable is passed only when set on the make command line (not from the environment,
# where a shell's ENV could leak in); with none of them, psjax/configs/default.yaml is used.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# $(call cli_arg,VAR,key) -> key=$(VAR) when VAR was given on the command line and is non-empty.
cli_arg = $(if $(and $(filter command line,$(origin $(1))),$($(1))),$(2)=$($(1)))
TRAIN_ARGS := $(strip $(call cli_arg,ENV,env) $(call cli_arg,ALG,alg) $(call cli_arg,LEARNER,learner) \
	$(call cli_arg,MAP,map) $(call cli_arg,SEEDS,seeds) $(call cli_arg,STEPS,steps) \
	$(if $(filter command line,$(origin ARGS)),$(ARGS)))

# make compare ENV=lbf ALGS="fups nops seps" SEEDS=2 STEPS=150000 ARGS="learner=ppo" [OUT=runs/my-sweep]
# One run per method (seeds vmapped) into runs/compare-<env>-<timestamp>/ (or OUT), then compare.png + compare.md.
COMPARE_ARGS := $(strip $(call cli_arg,ENV,env) $(call cli_arg,LEARNER,learner) $(call cli_arg,MAP,map) \
	$(call cli_arg,SEEDS,seeds) $(call cli_arg,STEPS,steps) $(call cli_arg,OUT,out) \
	$(if $(and $(filter command line,$(origin ALGS)),$(ALGS)),algs="$(ALGS)") \
	$(if $(filter command line,$(origin ARGS)),$(ARGS)))

.PHONY: train test test-all bench lint compare

$(VENV): $(STAMP)

# Re-installs whenever pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e '.[dev]'
	touch $@

train: $(STAMP)
	$(PY) -m psjax train $(or $(TRAIN_ARGS),preset=default)

# The CI suite: everything except tests marked slow, in TEST_WORKERS processes (pytest-xdist). 572 tests on
# 2026-12-08: 18 min 37 s on 2 cores with 2 workers, two training jobs paused beside it (570 on 2026-12-07 night:
# 20 min 10 s; 567 in the evening:
# 22 min 21 s; 556 in the afternoon: 17 min 32 s; 553 in the morning: 17 min 10 s, 12 min 01 s rerun with psjax.run's
# programs in the compile cache, ~/.cache/psjax/xla); 417 tests took 12 min 09 s on 2026-12-06 (the new ones: the
# reproductions' 51 declarations, env rules, divergence, resume, memory). This machine's speed varies by up to 2x;
# tests/conftest.py compiles with XLA's CPU optimisations off, which halved it.
# TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -x -q --durations=15 -m "not slow" -n $(TEST_WORKERS)

# Every test, the slow-marked ones (whole training programs, notebooks) included.
test-all: $(STAMP)
	$(PY) -m pytest -x -q --durations=25 -n $(TEST_WORKERS)

compare: $(STAMP)
	$(PY) -m psjax compare-sweep $(COMPARE_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/throughput.py

lint: $(STAMP)
	$(PY) -m ruff check .
