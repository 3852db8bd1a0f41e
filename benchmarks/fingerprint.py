#!/usr/bin/env python
"""A fingerprint of a few short training runs: a hash of the final parameters and the sum of every metric.
Run it on two checkouts and compare the outputs to check that a refactor left the results bit for bit alone:

    PYTHONPATH=/tmp/psjax-old python benchmarks/fingerprint.py > before.json
    PYTHONPATH=. python benchmarks/fingerprint.py > after.json
    diff before.json after.json

The cases cover every path that changed shape in the registry refactor: MAPD rounds on an observation buffer
(FuPS+id, A2C) and on the rollout (NoPS, QMIX), MADPS's restructuring (PPO), BDPS's agent model (VDN) and
SePS's switch to clusters (A2C); and PPO's minibatches (FuPS, Kaleidoscope), which the recurrent actor-critic
refactor touched; PPS, AdaPS, HyperMARL and DiCo, whose options and hooks issue 40 moved. ``python
benchmarks/fingerprint.py CASE ...`` runs a subset.
"""

from __future__ import annotations

import hashlib
import json
import sys

import jax
import numpy as np

from psjax.config import make_config
from psjax.train import make_train

TINY_VAE = {"mapd_epochs": 1, "mapd_pool_size": 64, "mapd_batch_size": 32}
TINY_Q = {"q.num_envs": 4, "q.rollout_len": 16, "q.learning_starts": 0, "q.buffer_size": 16, "q.batch_size": 4}
CASES = {
    "fupsid_a2c_mapd": {"alg": "fups_id", "learner": "a2c", "env": "mpe_spread", "steps": 800, "mapd_interval": 5,
                        "mapd_buffer_size": 64, **TINY_VAE},
    "madps_ppo": {"alg": "madps", "learner": "ppo", "env": "lbf", "steps": 6 * 256, "ac.num_envs": 4,
                  "ac.rollout_len": 64, "madps_interval": 2, "madps_start": 2, **TINY_VAE},
    "nops_qmix_mapd": {"alg": "nops", "learner": "qmix", "env": "mpe_spread", "steps": 4 * 64, "mapd_interval": 2,
                       **TINY_Q, **TINY_VAE},
    "bdps_vdn": {"alg": "bdps", "learner": "vdn", "env": "lbf", "steps": 4 * 64, "bdps_roles": 2, **TINY_Q},
    "fups_ppo": {"alg": "fups", "learner": "ppo", "env": "lbf", "steps": 4 * 256, "ac.num_envs": 4,
                 "ac.rollout_len": 64},
    "kaleidoscope_ppo": {"alg": "kaleidoscope", "learner": "ppo", "env": "mpe_spread", "steps": 4 * 256,
                         "ac.num_envs": 4, "ac.rollout_len": 64},
    # replay items that keep final observations at time limits only: SMAX ends by termination and by a short
    # time limit (two truncations fit in a 16-step item), PQN learns from the rollout's items
    "fupsid_qmix_smax": {"alg": "fups_id", "learner": "qmix", "env": "smax", "map": "3m", "time_limit": 8,
                         "steps": 6 * 64, **TINY_Q},
    "fupsid_pqn_lbf": {"alg": "fups_id", "learner": "pqn", "env": "lbf", "time_limit": 10, "steps": 4 * 64,
                       "q.num_envs": 4, "q.rollout_len": 16},
    "seps_a2c": {"alg": "seps", "learner": "a2c", "env": "typed", "num_agents": 4, "steps": 2000,
                 "identity_pretrain_steps": 800, "identity_epochs": 1},
    # the methods whose options left SharingConfig for their modules and the Scheme hooks only they use: PPS's
    # aggregation, AdaPS's masks, HyperMARL's generated leaves (recurrent form), DiCo's bank module and SND rescale
    "pps_rs_qmix": {"alg": "pps_rs", "learner": "qmix", "env": "lbf", "steps": 6 * 64, "pps_interval": 4, **TINY_Q},
    "adaps_a2c": {"alg": "adaps", "learner": "a2c", "env": "typed", "num_agents": 4, "steps": 2000,
                  "identity_pretrain_steps": 800, "identity_epochs": 1, "identity_clusters": "2"},
    "hypermarl_ppo_rnn": {"alg": "hypermarl", "learner": "ppo", "env": "mpe_spread", "steps": 4 * 256,
                          "ac.num_envs": 4, "ac.rollout_len": 64, "ac.recurrent": True},
    "dico_ppo": {"alg": "dico", "learner": "ppo", "env": "mpe_spread", "steps": 4 * 256, "ac.num_envs": 4,
                 "ac.rollout_len": 64},
}


def fingerprint(name: str) -> dict:
    cfg = make_config(CASES[name])
    runner, metrics = jax.jit(make_train(cfg))(jax.random.PRNGKey(0))
    leaves = jax.tree.leaves(runner.learner.params)
    digest = hashlib.sha1(b"".join(np.asarray(x).tobytes() for x in leaves)).hexdigest()
    sums = {k: float(np.nansum(np.asarray(v, dtype=np.float64))) for k, v in sorted(metrics.items())}
    return {"params_sha1": digest, "metric_sums": sums}


if __name__ == "__main__":
    names = sys.argv[1:] or list(CASES)
    print(json.dumps({name: fingerprint(name) for name in names}, indent=1))
