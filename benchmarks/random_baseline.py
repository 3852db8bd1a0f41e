"""Return (and win rate) of a uniformly random policy, the bar in docs/results.md.

    .venv/bin/python benchmarks/random_baseline.py env=lbf scenario=8x8-2p-2f-coop
"""

from __future__ import annotations

import sys

import jax

from psjax import registry
from psjax.cli import parse_pairs
from psjax.config import make_config
from psjax.envs import make_env
from psjax.evaluate import random_policy_score


def main(argv: list[str]) -> None:
    cfg = make_config(parse_pairs(argv))
    env = make_env(cfg.env, registry.get(cfg.alg).agent_id)
    score = jax.jit(lambda k: random_policy_score(env, k, 1024))(jax.random.PRNGKey(0))
    print(" ".join(argv), {k: round(float(v), 4) for k, v in score.items()})


if __name__ == "__main__":
    main(sys.argv[1:])
