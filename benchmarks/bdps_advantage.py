#!/usr/bin/env python
# Usage: .venv/bin/python benchmarks/bdps_advantage.py bdps_smax 4e4 taken|mean [key=value ...]
# type_ari: the roles (groups) against the env's agent kinds (psjax.sharing.structure), in training and greedy eval
"""Short BDPS runs with each advantage definition: training bdps_adv_nonzero / bdps_roles_distinct, and
the same metrics over 32 greedy evaluation episodes at the end (one seed)."""
import sys
import time

import jax
import numpy as np

from psjax.config import make_config
from psjax.sharing.bdps import greedy_metrics
from psjax.train import make_program, make_train

preset, steps, kind = sys.argv[1], int(float(sys.argv[2])), sys.argv[3]
extra = dict(a.split("=", 1) for a in sys.argv[4:])
cfg = make_config({"bdps_advantage": kind, "steps": steps, "seeds": 1, **extra}, preset=preset)
t0 = time.time()
runner, m = jax.jit(make_train(cfg))(jax.random.PRNGKey(cfg.seed))
m = jax.device_get(m)
t1 = time.time()
g = greedy_metrics(cfg, make_program(cfg, 1), runner, jax.random.PRNGKey(123), num_envs=32)
t2 = time.time()
it = len(m["bdps_adv_nonzero"])
q = max(1, it // 4)


def fmt(x):
    return " ".join(f"{v:.3f}" for v in x)


print(f"== {preset} {kind} steps={cfg.steps} iters={it} train+compile {t1 - t0:.0f}s eval {t2 - t1:.0f}s {extra}")
for name in ("bdps_adv_nonzero", "bdps_roles_distinct", "bdps_groups_distinct", "type_ari", "type_ari_group"):
    print(f"train {name} (quarters):", fmt([np.nanmean(m[name][i:i + q]) for i in range(0, it, q)]))
print("train role_change last:", f'{m["bdps_role_change"][-1]:.3f}', "epsilon last:", f'{m["epsilon"][-1]:.3f}')
print("return last quarter:", f'{np.nanmean(m["return"][-q:]):.3f}',
      "won last quarter:", f'{np.nanmean(m["won"][-q:]):.3f}')
print("greedy eval:", {k: (float(v) if np.ndim(v) == 0 else v.tolist()) for k, v in g.items()})
