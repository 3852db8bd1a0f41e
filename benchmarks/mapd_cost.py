#!/usr/bin/env python
"""Cost of one MAPD distance round (and MADPS restructuring) next to one training iteration.

For one configuration: the training iteration without distance rounds (with A2C / PPO it still writes
to the observation buffer) and the distance round on a full observation buffer (A2C / PPO) or on an
iteration's rollout (value learners): policy evaluation of every agent on every stored observation, a
fresh conditional VAE trained for ``mapd_epochs``, the distance matrix, and for MADPS the fusion /
division with its row copies, are each jitted; compile time and the median wall time of
``--repeats`` calls are reported, with the round's cost in training iterations and amortised over
the round interval (``madps_interval`` for MADPS, else ``mapd_interval``, default 500).

    python benchmarks/mapd_cost.py                                   # MADPS A2C on LBF 8x8-2p-2f-coop
    python benchmarks/mapd_cost.py --env mpe_spread --set num_agents=6 --set num_landmarks=6
    python benchmarks/mapd_cost.py --alg fups_id --learner qmix --env mpe_spread   # the metric under QMIX

Timings are measurements, never tests: they depend on the machine and on whatever else it runs.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402

from psjax import registry  # noqa: E402
from psjax.config import make_config  # noqa: E402
from psjax.envs import agent_id_features, resolve_agent_id  # noqa: E402
from psjax.sharing import mapd, methods  # noqa: E402
from psjax.train import init_runner, make_parts, rollout_steps, train_iteration  # noqa: E402

ENV_OVERRIDES = {
    "lbf": {"env": "lbf", "scenario": "8x8-2p-2f-coop"},
    "mpe_spread": {"env": "mpe_spread"},
    "smax": {"env": "smax", "map": "3m"},
}


def _timed(fn, args, repeats: int) -> tuple[float, float]:
    """``(compile seconds, median seconds per call)`` of ``jax.jit(fn)(*args)``."""
    jitted = jax.jit(fn)
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return compile_s, statistics.median(times)


def measure(overrides: dict, repeats: int) -> dict:
    cfg = make_config(overrides)
    parts = make_parts(cfg)  # the scheme with the distance rounds (mapd.with_distance)
    spec = parts.env.spec
    drive = methods.driver(parts.scheme, "mapd")  # MADPS: the rounds are its own
    interval = (drive.interval if drive is not None else cfg.sharing.mapd_interval) or 500
    buffer_rows = 0 if cfg.learner_kind.recurrent else cfg.sharing.mapd_buffer_size
    plain_cfg = cfg if drive is not None else \
        make_config({**overrides, "mapd_interval": 0})  # the same iteration without the rounds
    plain = make_parts(plain_cfg)
    if plain_cfg is cfg:  # MADPS: its rounds are its own; time its iteration at a never-due interval
        plain = make_parts(make_config({**overrides, "madps_interval": 10**6}))
    runner = jax.jit(lambda k: init_runner(plain, k))(jax.random.PRNGKey(0))
    it_compile, it_s = _timed(lambda r: train_iteration(plain, r), (runner,), repeats)
    runner = jax.jit(lambda k: init_runner(parts, k))(jax.random.PRNGKey(0))
    if buffer_rows:  # fill the observation buffer first (no round is due yet): the round measures on all of it
        fills = -(-buffer_rows // min(cfg.sharing.mapd_buffer_add, cfg.steps_per_iteration))
        runner = jax.jit(lambda r: jax.lax.scan(lambda r, _: (train_iteration(parts, r)[0], None), r, None, fills)[0])(
            runner)
    # one rollout to measure on, then the round alone
    _, (traj, _) = jax.jit(lambda r: rollout_steps(parts, r.learner, r.sharing, r.env_state, r.ts, r.hidden, r.key,
                                              r.env_steps, parts.rollout_len, greedy=False))(runner)
    codes = agent_id_features(spec.num_agents, resolve_agent_id(cfg.env.agent_id, registry.get(cfg.alg).agent_id))
    relabel = mapd.id_relabel(codes) if codes.shape[1] else None

    def round_fn(learner, sharing, traj, hidden, key):
        return mapd.measure(parts.learner.policy_logits, cfg.sharing, relabel, drive and drive.act, learner,
                            sharing, traj, hidden, key, sharing.distance.buffer)

    args = (runner.learner, runner.sharing, traj, runner.hidden, jax.random.PRNGKey(1))
    round_compile, round_s = _timed(round_fn, args, repeats)
    return {
        "alg": cfg.alg, "learner": cfg.learner_name, "env": cfg.env.name, "agents": parts.env.spec.num_agents,
        "steps_per_iteration": cfg.steps_per_iteration, "round_interval": interval,
        "buffer_rows": buffer_rows,
        "pool": min(cfg.sharing.mapd_pool_size, (buffer_rows or cfg.steps_per_iteration) * spec.num_agents),
        "mapd_epochs": cfg.sharing.mapd_epochs,
        "iteration_s": it_s, "iteration_compile_s": it_compile,
        "round_s": round_s, "round_compile_s": round_compile,
        "round_in_iterations": round_s / it_s,
        "amortised_overhead": round_s / (interval * it_s),
        "device": str(jax.devices()[0]),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="lbf", choices=sorted(ENV_OVERRIDES))
    p.add_argument("--alg", default="madps")
    p.add_argument("--learner", default="")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=pathlib.Path, default=None, help="write the result as JSON here")
    args = p.parse_args(argv)
    overrides = {**ENV_OVERRIDES[args.env], "alg": args.alg, "learner": args.learner}
    if args.alg != "madps":
        overrides["mapd_interval"] = 500
    for item in args.sets:
        key, _, value = item.partition("=")
        overrides[key] = value
    result = measure(overrides, args.repeats)
    for k, v in result.items():
        print(f"{k:>22}: {v:.4g}" if isinstance(v, float) else f"{k:>22}: {v}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**result, "argv": sys.argv[1:] if argv is None else argv}, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
