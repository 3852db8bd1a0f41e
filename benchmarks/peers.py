#!/usr/bin/env python
"""A peer's training script timed against psjax's equivalent config, interleaved in one session.

The peer is JaxMARL (github.com/FLAIROx/JaxMARL) at commit ``PEER_COMMIT``. Its files stay outside this
repository (never commit them); get them once:

    git clone https://github.com/FLAIROx/JaxMARL ~/peers/JaxMARL && git -C ~/peers/JaxMARL checkout c793d09
    pip install flashbax                  # QMIX's replay buffer (qmix_rnn_smax only)
    python benchmarks/peers.py --peer-dir ~/peers/JaxMARL                      # every case
    python benchmarks/peers.py --peer-dir ~/peers/JaxMARL --cases ippo_ff_mpe --repeats 5 --markdown

The peer scripts run with the ``jaxmarl`` package psjax itself uses (the environments); their logging
imports (``wandb``, ``hydra``, ``omegaconf``) are replaced by stand-ins that do nothing, and their own
``make_train(config)`` is called with the config file they ship, overridden as each case says (the
budget, the map). psjax runs ``psjax.make_train(cfg)`` on the matching config. For each side:

* compile time = wall time of ``jax.jit(train).lower(key).compile()``, on its own;
* throughput = env steps of one ``train(key)`` call / its wall time (ended by ``block_until_ready``),
  median of ``--repeats`` calls; the two sides alternate call by call, so load that comes and goes
  hits both alike. One seed each, no evaluation, no checkpoints.

``x peer`` = psjax's throughput over the peer's. Timings are measurements, never tests.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import importlib.util
import json
import pathlib
import platform
import socket
import statistics
import sys
import time
import types
from dataclasses import dataclass
from typing import Any, Callable

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PEER_COMMIT = "c793d09"


@dataclass(frozen=True)
class Case:
    """One peer script and psjax's equivalent config."""

    script: str  # the peer's training script, relative to --peer-dir
    configs: tuple[str, ...]  # its YAML config(s), merged in order (QLearning: the main file, then the alg file)
    peer_overrides: dict  # applied after the config files
    psjax: dict  # psjax overrides (``make_config``); "preset" names a psjax/configs/*.yaml
    steps: int  # default env steps per timed call (both sides)
    note: str = ""
    merge_alg: bool = False  # QLearning scripts: config = {**config, **config["alg"]}, env passed to make_train
    # the gradient passes per iteration on each side (--breakdown varies them): the peer's key, psjax's field
    epochs_keys: tuple[str, str] = ("UPDATE_EPOCHS", "ac.epochs")


CASES: dict[str, Case] = {
    # IPPO feed-forward on MPE spread: 16 envs x 128 steps, 4 epochs x 4 minibatches, lr 2.5e-4 annealed.
    "ippo_ff_mpe": Case(
        "baselines/IPPO/ippo_ff_mpe.py", ("baselines/IPPO/config/ippo_ff_mpe.yaml",), {},
        {"env": "mpe_spread", "alg": "fups", "learner": "ppo", "ac.num_envs": 16, "ac.rollout_len": 128,
         "ac.epochs": 4, "ac.num_minibatches": 4, "ac.lr": 2.5e-4, "ac.lr_decay": True, "ac.gae_lambda": 0.95,
         "ac.normalize_adv": True, "ac.clip_eps": 0.2, "ac.ent_coef": 0.01, "ac.vf_coef": 0.25,
         "ac.max_grad_norm": 0.5, "ac.hidden": 64},
        1_048_576, "the peer's MLPs use tanh, psjax's ReLU"),
    # IPPO-rnn on SMAX 3m at the peer's own settings (128 envs x 128 steps, GRU 128); psjax without its central
    # critic (the peer's is local) and with FuPS (the peer's ADD_AGENT_ID is false).
    "ippo_rnn_smax": Case(
        "baselines/IPPO/ippo_rnn_smax.py", ("baselines/IPPO/config/ippo_rnn_smax.yaml",), {"MAP_NAME": "3m"},
        {"preset": "smax_ippo_rnn", "map": "3m"},
        1_048_576, "both share one Dense -> GRU torso between actor and critic (psjax: ac.shared_torso); psjax also "
        "bootstraps through time limits (one more torso step per stored step)"),
    # QMIX on SMAX 3m at the small config: hidden 64, 16 envs x 128 steps, 1 gradient step per rollout, batch 32;
    # the peer's mixer (embedding 64, hypernetworks 256 wide) and its agent ids (CTRolloutManager appends them).
    "qmix_rnn_smax": Case(
        "baselines/QLearning/qmix_rnn.py",
        ("baselines/QLearning/config/config.yaml", "baselines/QLearning/config/alg/ql_rnn_smax.yaml"),
        {"MAP_NAME": "3m", "HIDDEN_SIZE": 64, "NUM_EPOCHS": 1, "BUFFER_BATCH_SIZE": 32, "LEARNING_STARTS": 0,
         "TEST_DURING_TRAINING": False, "NUM_SEEDS": 1},
        {"env": "smax", "map": "3m", "alg": "fups_id", "learner": "qmix", "q.hidden": 64, "q.num_envs": 16,
         "q.rollout_len": 128, "q.updates_per_rollout": 1, "q.batch_size": 32, "q.buffer_size": 4992,
         "q.learning_starts": 65_536, "q.mixer_embed": 64, "q.hypernet_hidden": 256},
        1_048_576, "the peer samples once its buffer holds 32 rollouts per env (flashbax's min_length_time_axis = "
        "batch size) and keeps 5000 // 16 = 312 per env: psjax learns from 65,536 steps on, with 4,992 sequences; "
        "psjax's buffer also keeps the final observations of time-limited steps (2 slots per 128-step item) and "
        "bootstraps through them; the mixer's final-bias "
        "hypernetwork is 256 wide in psjax (q.hypernet_hidden), 64 in the peer (its embedding)", merge_alg=True,
        epochs_keys=("NUM_EPOCHS", "q.updates_per_rollout")),
    # PQN-VDN on SMAX 3m at psjax's CPU-sized pqn preset: hidden 64, 16 envs x 128 steps, 4 epochs x 2 minibatches,
    # one Dense -> LayerNorm -> ReLU layer before the GRU; agent ids appended on both sides (the peer's
    # CTRolloutManager does it); no memory window (psjax learns from the rollout alone)
    "pqn_vdn_rnn_smax": Case(
        "baselines/QLearning/pqn_vdn_rnn.py",
        ("baselines/QLearning/config/config.yaml", "baselines/QLearning/config/alg/pqn_vdn_rnn_smax.yaml"),
        {"MAP_NAME": "3m", "HIDDEN_SIZE": 64, "NUM_LAYERS": 1, "NORM_TYPE": "layer_norm", "NORM_INPUT": False,
         "NUM_ENVS": 16, "NUM_STEPS": 128, "NUM_MINIBATCHES": 2, "NUM_EPOCHS": 4, "MEMORY_WINDOW": 0,
         "TEST_DURING_TRAINING": False, "NUM_SEEDS": 1},
        {"env": "smax", "map": "3m", "alg": "fups_id", "learner": "pqn", "q.hidden": 64, "q.num_envs": 16,
         "q.rollout_len": 128, "q.epochs": 4, "q.num_minibatches": 2},
        1_048_576, "psjax also bootstraps through time limits (the network at truncated steps); the peer keeps a "
        "BatchNorm layer's statistics even unused", merge_alg=True, epochs_keys=("NUM_EPOCHS", "q.epochs")),
}


# --------------------------------------------------------------------------- the peer's side
def _stub_logging_modules() -> None:
    """Stand-ins for the peer's logging imports: every attribute is a callable that does nothing, and
    ``hydra.main`` is a decorator that returns the function unchanged."""

    class Anything(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return lambda *a, **k: Anything(name)

        def __call__(self, *a, **k):
            return self

    hydra = Anything("hydra")
    hydra.main = lambda *a, **k: (lambda fn: fn)
    omegaconf = Anything("omegaconf")
    omegaconf.OmegaConf = Anything("OmegaConf")
    sys.modules["wandb"] = Anything("wandb")  # always: a benchmark never logs to W&B (psjax's dev extra installs it)
    for name, module in {"hydra": hydra, "omegaconf": omegaconf}.items():
        try:
            importlib.import_module(name)
        except ImportError:
            sys.modules[name] = module


def _load_yaml(path: pathlib.Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text()) or {}


def peer_train(case: Case, peer_dir: pathlib.Path, steps: int, epochs: int | None = None) -> tuple[Callable, int]:
    """The peer's ``train(key)`` for ``case`` at ``steps`` env steps, and the env steps one call runs."""
    script = peer_dir / case.script
    if not script.is_file():
        raise FileNotFoundError(f"{script} not found: --peer-dir must be a JaxMARL checkout at {PEER_COMMIT} "
                                "(see this script's docstring)")
    _stub_logging_modules()
    spec = importlib.util.spec_from_file_location(f"peer_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = _load_yaml(peer_dir / case.configs[0])
    if case.merge_alg:
        config["alg"] = _load_yaml(peer_dir / case.configs[1])
        config = {**config, **config["alg"]}
    config.update(copy.deepcopy(case.peer_overrides))
    if epochs is not None:
        config[case.epochs_keys[0]] = epochs
    config["TOTAL_TIMESTEPS"] = steps
    config["WANDB_MODE"] = "disabled"
    per_update = config["NUM_ENVS"] * config["NUM_STEPS"]
    if case.merge_alg:
        env, _ = module.env_from_config(copy.deepcopy(config))
        train = module.make_train(config, env)
    else:
        train = module.make_train(config)
    return train, (steps // per_update) * per_update


# --------------------------------------------------------------------------- psjax's side
def psjax_config(case: Case, steps: int, epochs: int | None = None):
    """psjax's ``TrainConfig`` for ``case`` at ``steps`` env steps (no evaluation)."""
    from psjax.config import make_config

    overrides = {k: v for k, v in case.psjax.items() if k != "preset"}
    if epochs is not None:
        overrides[case.epochs_keys[1]] = epochs
    return make_config({**overrides, "steps": steps, "eval_every": 0}, preset=case.psjax.get("preset"))


def psjax_train(case: Case, steps: int, epochs: int | None = None) -> tuple[Callable, int, dict]:
    from psjax.schema import to_dict
    from psjax.train import make_train

    cfg = psjax_config(case, steps, epochs)
    return make_train(cfg), cfg.num_iterations * cfg.steps_per_iteration, to_dict(cfg)


# --------------------------------------------------------------------------- timing
def timed(fn: Callable, *args) -> tuple[Any, float]:
    """``fn(*args)`` and its wall time in seconds."""
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def compile_timed(train: Callable, key) -> tuple[Callable, float]:
    import jax

    return timed(lambda: jax.jit(train).lower(key).compile())


def run_timed(compiled: Callable, key) -> float:
    import jax

    return timed(lambda: jax.block_until_ready(compiled(key)))[1]


def measure(name: str, case: Case, peer_dir: pathlib.Path, steps: int, repeats: int,
            epochs: int | None = None) -> dict[str, Any]:
    import jax

    key = jax.random.PRNGKey(0)
    sides = {}
    peer_fn, peer_steps = peer_train(case, peer_dir, steps, epochs)
    ours_fn, our_steps, cfg = psjax_train(case, peer_steps, epochs)  # the peer rounds its budget down to updates
    if our_steps != peer_steps:
        raise ValueError(f"{name}: psjax runs {our_steps} env steps per call, the peer {peer_steps}: their "
                         "iterations differ in size")
    for side, (fn, n) in {"peer": (peer_fn, peer_steps), "psjax": (ours_fn, our_steps)}.items():
        compiled, compile_s = compile_timed(fn, key)
        run_timed(compiled, key)  # warm-up: first-touch memory, thread pools
        sides[side] = {"compiled": compiled, "compile_s": compile_s, "env_steps": n, "run_s": []}
    for _ in range(repeats):  # alternate call by call
        for side in ("peer", "psjax"):
            sides[side]["run_s"].append(run_timed(sides[side]["compiled"], key))
    out = {"case": name, "peer_script": case.script, "peer_commit": PEER_COMMIT, "note": case.note,
           "psjax_config": cfg}
    for side, s in sides.items():
        median = statistics.median(s["run_s"])
        out[side] = {"compile_s": round(s["compile_s"], 2), "env_steps": s["env_steps"],
                     "run_s": [round(x, 3) for x in s["run_s"]], "steps_per_s": s["env_steps"] / median,
                     "steps_per_s_all": [s["env_steps"] / x for x in s["run_s"]]}
    out["x_peer"] = out["psjax"]["steps_per_s"] / out["peer"]["steps_per_s"]
    return out


def breakdown(name: str, case: Case, peer_dir: pathlib.Path, steps: int, repeats: int) -> dict[str, Any]:
    """Each side's ms per iteration split into its gradient passes and the rest (rollout, targets, metrics,
    logging), by timing it with one pass and with ``max(2, default)`` passes per iteration: the difference
    is the passes' cost, so neither program needs instrumenting."""
    from psjax.schema import to_dict

    cfg_epochs = to_dict(psjax_config(case, steps))
    section, field = case.epochs_keys[1].split(".")
    many = max(2, cfg_epochs[section][field])
    one, more = measure(name, case, peer_dir, steps, repeats, 1), measure(name, case, peer_dir, steps, repeats, many)
    out = {"case": name, "passes": many}
    for side in ("peer", "psjax"):
        iters = one[side]["env_steps"] // (cfg_epochs[section]["num_envs"] * cfg_epochs[section]["rollout_len"])
        t1 = statistics.median(one[side]["run_s"]) / iters * 1e3
        tn = statistics.median(more[side]["run_s"]) / iters * 1e3
        per_pass = (tn - t1) / (many - 1)
        out[side] = {"ms_per_pass": per_pass, "ms_rest": t1 - per_pass, "ms_per_iteration": tn}
    return out


def compile_profile(name: str, case: Case, peer_dir: pathlib.Path, steps: int) -> dict[str, Any]:
    """What each side's compile time is made of: tracing and lowering to StableHLO apart from XLA's own
    compilation, the size of the optimised program (instructions, fusions: XLA's CPU backend emits one
    function per fusion), and for psjax its learner's initialisation alone (the orthogonal init's loops) and the
    two programs ``psjax train`` compiles in place of the whole one: the runner's initialisation and the chunk
    of iterations (the training loop the peer's program also holds)."""
    import re

    import jax
    import jax.numpy as jnp

    from psjax.shard import jit_over_seeds, seed_sharding
    from psjax.train import make_parts, make_program

    key = jax.random.PRNGKey(0)
    peer_fn, peer_steps = peer_train(case, peer_dir, steps)
    ours_fn, _, _ = psjax_train(case, peer_steps)
    out = {"case": name}
    for side, fn in (("peer", peer_fn), ("psjax", ours_fn)):
        lowered, lower_s = timed(jax.jit(fn).lower, key)
        compiled, xla_s = timed(lowered.compile)
        ops = re.findall(r"=\s*\S+\s+([\w-]+)\(", compiled.as_text())
        out[side] = {"lower_s": round(lower_s, 2), "xla_compile_s": round(xla_s, 2),
                     "instructions": len(ops), "fusions": ops.count("fusion")}
    cfg = psjax_config(case, peer_steps)
    out["psjax"]["init_compile_s"] = round(compile_timed(make_parts(cfg).learner.init, key)[1], 2)
    # what ``psjax train`` compiles instead of one whole program: the runner's initialisation (env reset, learner
    # init) and the chunk of iterations, each vmapped over the seeds (here one) and compiled apart
    program = make_program(cfg, cfg.num_iterations)
    where = seed_sharding(1)
    keys = jnp.stack([key])
    runner = jax.eval_shape(jax.vmap(program.init), keys)
    out["psjax"]["run_init_compile_s"] = round(timed(
        lambda: jit_over_seeds(program.init, where).lower(keys).compile())[1], 2)
    out["psjax"]["run_chunk_compile_s"] = round(timed(
        lambda: jit_over_seeds(program.run_chunk, where, donate=True).lower(runner).compile())[1], 2)
    return out


def markdown(results: list[dict]) -> str:
    lines = ["| case | peer env steps/s | psjax env steps/s | x peer | peer compile s | psjax compile s | env steps "
             "per call |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['case']} | error: {r['error']} | | | | | |")
            continue
        p, o = r["peer"], r["psjax"]
        lines.append(f"| {r['case']} | {p['steps_per_s']:,.0f} | {o['steps_per_s']:,.0f} | {r['x_peer']:.2f} | "
                     f"{p['compile_s']:.1f} | {o['compile_s']:.1f} | {o['env_steps']:,} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peer-dir", type=pathlib.Path, required=True,
                   help=f"a JaxMARL checkout at commit {PEER_COMMIT}")
    p.add_argument("--cases", default=",".join(CASES),
                   help=f"comma list (default: all): {', '.join(CASES)}")
    p.add_argument("--steps", type=int, default=None, help="env steps per timed call (default: each case's)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per side (median taken)")
    p.add_argument("--out", type=pathlib.Path, default=None,
                   help="JSON file (default: benchmarks/results/peers-<host>-<date>.json)")
    p.add_argument("--psjax-set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override psjax's side of every case (repeatable), e.g. ac.shared_torso=false")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--compile-profile", action="store_true",
                   help="also split each side's compile time: lowering, XLA's compilation, the optimised program's "
                        "size, psjax's learner init compiled alone, and the init and chunk programs psjax train "
                        "compiles in place of the whole one")
    p.add_argument("--breakdown", action="store_true",
                   help="also split each side's iteration into its gradient passes and the rest (times every "
                        "case twice more: one pass and max(2, default) passes per iteration)")
    args = p.parse_args(argv)
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    bad = [c for c in names if c not in CASES]
    if bad:
        p.error(f"unknown case(s) {', '.join(bad)}; allowed: {', '.join(CASES)}")
    extra = dict(kv.split("=", 1) for kv in args.psjax_set)
    import jax

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or REPO / "benchmarks" / "results" / f"peers-{socket.gethostname()}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"command": " ".join(sys.argv), "date": stamp, "host": socket.gethostname(),
            "machine": platform.machine(), "jax": jax.__version__, "devices": [str(d) for d in jax.devices()]}
    results = []
    for name in names:
        case = dataclasses.replace(CASES[name], psjax={**CASES[name].psjax, **extra})
        try:
            r = measure(name, case, args.peer_dir.expanduser(), args.steps or case.steps, args.repeats)
            print(f"{name}: peer {r['peer']['steps_per_s']:,.0f} env steps/s (compile {r['peer']['compile_s']} s), "
                  f"psjax {r['psjax']['steps_per_s']:,.0f} (compile {r['psjax']['compile_s']} s): "
                  f"{r['x_peer']:.2f} x peer", flush=True)
        except Exception as e:  # a missing peer dependency should not lose the other cases
            r = {"case": name, "error": f"{type(e).__name__}: {e}"}
            print(f"{name}: error: {r['error']}", flush=True)
        if args.breakdown and "error" not in r:
            b = breakdown(name, case, args.peer_dir.expanduser(), args.steps or case.steps, args.repeats)
            r["breakdown"] = b
            for side in ("peer", "psjax"):
                print(f"  {side}: {b[side]['ms_per_pass']:.1f} ms per gradient pass, {b[side]['ms_rest']:.1f} ms for "
                      f"the rest of an iteration ({b['passes']} passes: {b[side]['ms_per_iteration']:.1f} ms)",
                      flush=True)
        if args.compile_profile and "error" not in r:
            c = compile_profile(name, case, args.peer_dir.expanduser(), args.steps or case.steps)
            r["compile_profile"] = c
            for side in ("peer", "psjax"):
                init = (f", its learner init alone {c[side]['init_compile_s']} s; as psjax train compiles it: "
                        f"init program {c[side]['run_init_compile_s']} s, chunk program "
                        f"{c[side]['run_chunk_compile_s']} s") if side == "psjax" else ""
                print(f"  {side} compile: lowering {c[side]['lower_s']} s, XLA {c[side]['xla_compile_s']} s, "
                      f"{c[side]['instructions']:,} instructions, {c[side]['fusions']:,} fusions{init}", flush=True)
        results.append(r)
        # after every case: a run stopped by a time limit keeps the cases it finished
        out.write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=str))
    if args.markdown:
        print(markdown(results))
    print(f"wrote {out}")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
