#!/usr/bin/env python
"""Throughput and compile time of the psjax training program, per (env, learner, method).

For each configuration the training program ``make_program(cfg, chunk_iters)`` is built, its
``init`` and ``run_chunk`` are vmapped over ``--seeds`` seeds and jitted, and:

* compile time = wall time of ``chunk.lower(runner).compile()`` (reported on its own, never
  mixed into the run time);
* throughput = seeds * chunk_iters * steps_per_iteration / median wall time of ``--repeats``
  calls to the compiled chunk (each ended by ``jax.block_until_ready``), in env steps per second
  (summed over seeds and parallel envs; gradient steps included: value learners run with
  ``learning_starts=0``). The methods of one (env, learner) group are all compiled first and
  then timed round-robin, so load that comes and goes hits every method alike;
* ``x FuPS`` / ``x NoPS`` = a method's throughput divided by FuPS's / NoPS's in the same run,
  same env and learner.

``--set key=value`` applies an override to every configuration, e.g. ``--set
identity_pretrain_steps=0`` times SePS / AdaPS after their switch to clusters (it happens in
the untimed warm-up call).

Timings are measurements, never tests: they depend on the machine and on whatever else it runs.

    python benchmarks/throughput.py                      # default grid (`make bench`)
    python benchmarks/throughput.py --envs lbf --learners qmix,ppo --methods fups,nops --markdown
    python benchmarks/throughput.py --peer-qmix          # the one config compared with a peer JAX QMIX
    python benchmarks/throughput.py --envs lbf --learners a2c --methods fups,nops,seps --set identity_pretrain_steps=0
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import shlex
import socket
import statistics
import sys
import time
import traceback
from typing import Any, NamedTuple

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from a checkout without `pip install -e`
    sys.path.insert(0, str(REPO))

from psjax import registry  # noqa: E402
from psjax.config import ENVS, LEARNERS, VALUE_LEARNERS, ConfigError, make_config  # noqa: E402

# The "small config" of each environment.
ENV_OVERRIDES: dict[str, dict[str, Any]] = {
    "smax": {"env": "smax", "map": "3m"},
    "mpe_spread": {"env": "mpe_spread", "num_agents": 3, "num_landmarks": 3},
    "lbf": {"env": "lbf", "scenario": "8x8-2p-2f-coop"},
}
DEFAULT_ENVS = ("smax", "mpe_spread", "lbf")
METHODS = registry.names()  # every registered method, in the registry's order
DEFAULT_LEARNERS = LEARNERS  # qmix, vdn, iql, pqn, a2c, ppo
# env steps per seed per timed call unless --chunk-iters: 10 iterations of the value learners and PPO
# (16 envs x 128 steps), 512 of A2C (8 envs x 5 steps)
DEFAULT_CHUNK_STEPS = 20_480

# The configuration compared with a peer JAX QMIX implementation.
PEER_QMIX: dict[str, Any] = {
    "env": "smax", "map": "3m", "alg": "fups", "learner": "qmix", "hidden": 64, "num_envs": 16,
    "rollout_len": 128, "updates_per_rollout": 1, "batch_size": 32, "learning_starts": 0,
}


def _csv(value: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(
            f"bad {what} {', '.join(bad) or repr(value)}; allowed: {', '.join(allowed)}")
    return items


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", type=lambda v: _csv(v, ENVS, "env"), default=list(DEFAULT_ENVS),
                   help=f"comma list (default: {','.join(DEFAULT_ENVS)})")
    p.add_argument("--learners", type=lambda v: _csv(v, LEARNERS, "learner"), default=list(DEFAULT_LEARNERS),
                   help=f"comma list (default: {','.join(DEFAULT_LEARNERS)})")
    p.add_argument("--methods", type=lambda v: _csv(v, METHODS, "method"), default=list(METHODS),
                   help=f"comma list (default: every registered method: {','.join(METHODS)})")
    p.add_argument("--chunk-iters", type=int, default=None,
                   help="training iterations per timed call (default: enough for about --chunk-steps)")
    p.add_argument("--chunk-steps", type=int, default=DEFAULT_CHUNK_STEPS,
                   help="target env steps per seed per timed call when --chunk-iters is not given "
                        f"(default {DEFAULT_CHUNK_STEPS})")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per configuration (median taken)")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed calls before the timed ones (the first call pays one-off costs such as "
                        "touching freshly allocated memory; default 1)")
    p.add_argument("--seeds", type=int, default=1, help="seeds vmapped together")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="config override applied to every configuration (repeatable), e.g. "
                        "identity_pretrain_steps=0 to time SePS / AdaPS after their switch")
    p.add_argument("--out", type=pathlib.Path, default=None,
                   help="JSON file (default: benchmarks/results/throughput-<host>-<date>.json)")
    p.add_argument("--markdown", action="store_true", help="print the results as a Markdown table")
    p.add_argument("--peer-qmix", action="store_true",
                   help="measure only the configuration compared with a peer JAX QMIX "
                        "(SMAX 3m, fups, qmix, hidden 64, 16 envs x 128 steps, 1 update/rollout, batch 32)")
    args = p.parse_args(argv)
    bad = [s for s in args.sets if "=" not in s or not s.split("=", 1)[0]]
    if bad:
        p.error(f"--set takes KEY=VALUE, got {', '.join(map(repr, bad))}")
    args.overrides = dict(s.split("=", 1) for s in args.sets)
    for name in ("chunk_iters", "chunk_steps", "repeats", "seeds", "warmup"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "warmup" else 1):
            p.error(f"--{name.replace('_', '-')} must be at least {0 if name == 'warmup' else 1}")
    return args


def environment_info(argv: list[str]) -> dict[str, Any]:
    import jax
    import jaxlib

    return {
        "command": shlex.join([sys.executable, sys.argv[0] if sys.argv[0].endswith("throughput.py")
                               else str(pathlib.Path(__file__).relative_to(REPO)), *argv]),
        "devices": [str(d) for d in jax.devices()],
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def config_overrides(env: str, learner: str, method: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    overrides = {**ENV_OVERRIDES.get(env, {"env": env}), "alg": method, "learner": learner}
    if learner in VALUE_LEARNERS:
        overrides["learning_starts"] = 0  # time gradient steps too
    return {**overrides, **(extra or {})}


class Prepared(NamedTuple):
    """One configuration compiled, warmed up and ready to be timed."""

    overrides: dict[str, Any]
    compiled: Any  # the jitted, vmapped chunk, compiled
    runner: Any  # the runner after init and the warm-up calls (replaced after every timed call)
    info: dict[str, Any]  # the row's fields known before timing


def prepare(overrides: dict[str, Any], chunk_iters: int | None, chunk_steps: int, seeds: int, warmup: int = 1,
            status=lambda msg: None) -> Prepared:
    """Build, init, compile and warm up one configuration (compile time measured on its own)."""
    import jax
    import numpy as np

    from psjax.train import make_program

    cfg = make_config({**overrides, "seeds": seeds})
    spi = cfg.steps_per_iteration
    iters = chunk_iters or max(1, -(-chunk_steps // spi))
    prog = make_program(cfg, iters)
    keys = np.stack([np.asarray(jax.random.key_data(jax.random.key(s))) for s in range(seeds)])

    status("init")
    t0 = time.perf_counter()
    runner = jax.block_until_ready(jax.jit(jax.vmap(prog.init))(keys))
    init_s = time.perf_counter() - t0

    status("compile")
    chunk = jax.jit(jax.vmap(prog.run_chunk))
    t0 = time.perf_counter()
    compiled = chunk.lower(runner).compile()
    compile_s = time.perf_counter() - t0

    for i in range(warmup):
        status(f"warm-up {i + 1}/{warmup}")
        runner, _ = jax.block_until_ready(compiled(runner))
    info = {
        "config": dict(overrides),
        "param_count": int(prog.param_count),
        "seeds": seeds,
        "chunk_iters": iters,
        "steps_per_iteration": spi,
        "steps_per_call": seeds * iters * spi,
        "init_s": init_s,
        "compile_s": compile_s,
        "warmup_calls": warmup,
    }
    return Prepared(dict(overrides), compiled, runner, info)


def timed_call(prep: Prepared) -> tuple[Prepared, float]:
    """One timed call of the compiled chunk, continuing from the previous call's runner."""
    import jax

    t0 = time.perf_counter()
    runner, _ = jax.block_until_ready(prep.compiled(prep.runner))
    return prep._replace(runner=runner), time.perf_counter() - t0


def finish(prep: Prepared, times: list[float]) -> dict[str, Any]:
    """The result row; checks that the runner counted exactly the env steps it was timed for."""
    import numpy as np

    info = prep.info
    env_steps = np.asarray(prep.runner.env_steps)
    expected = (info["warmup_calls"] + len(times)) * info["chunk_iters"] * info["steps_per_iteration"]
    if not (env_steps == expected).all():
        raise RuntimeError(f"runner counted {env_steps.tolist()} env steps per seed, expected {expected}")
    median_s = statistics.median(times)
    return {**info, "run_s": times, "median_run_s": median_s, "steps_per_s": info["steps_per_call"] / median_s}


def measure(overrides: dict[str, Any], chunk_iters: int | None, chunk_steps: int, repeats: int,
            seeds: int, warmup: int = 1, status=lambda msg: None) -> dict[str, Any]:
    """Compile and time one configuration on its own; returns a result row."""
    prep = prepare(overrides, chunk_iters, chunk_steps, seeds, warmup, status)
    times = []
    for i in range(repeats):
        status(f"run {i + 1}/{repeats}")
        prep, seconds = timed_call(prep)
        times.append(seconds)
    return finish(prep, times)


def measure_group(configs: list[tuple[str, dict[str, Any]]], args: argparse.Namespace,
                  status=lambda msg: None, log=lambda msg: None) -> dict[str, dict[str, Any]]:
    """Compile every configuration of one (env, learner) group, then time them round-robin.

    Interleaving the timed calls (A B C A B C ...) exposes every method to the same load, so the
    ratios between them survive a machine whose load comes and goes. ``configs`` is a list of
    ``(name, overrides)``; returns ``{name: row}`` (a row with ``error`` where a step failed).
    """
    prepared, rows, times = {}, {}, {}
    for name, overrides in configs:
        try:
            prepared[name] = prepare(overrides, args.chunk_iters, args.chunk_steps, args.seeds, args.warmup,
                                     lambda msg, name=name: status(f"{name}: {msg}"))
            times[name] = []
        except Exception as e:  # keep the sweep going; the row records what went wrong
            rows[name] = {"error": f"{type(e).__name__}: {e}"}
            log(f"{name}: error:\n{traceback.format_exc()}")
    for i in range(args.repeats):
        for name in list(prepared):
            status(f"{name}: run {i + 1}/{args.repeats}")
            try:
                prepared[name], seconds = timed_call(prepared[name])
                times[name].append(seconds)
            except Exception as e:
                rows[name] = {"error": f"{type(e).__name__}: {e}"}
                log(f"{name}: error:\n{traceback.format_exc()}")
                del prepared[name]
    for name, prep in prepared.items():
        try:
            rows[name] = finish(prep, times[name])
        except Exception as e:
            rows[name] = {"error": f"{type(e).__name__}: {e}"}
    return rows


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """``x_fups`` / ``x_nops`` = steps/s over FuPS's / NoPS's steps/s for the same env and learner
    (None without that baseline in the run)."""
    for baseline in ("fups", "nops"):
        base_of = {(r["env"], r["learner"]): r.get("steps_per_s") for r in rows if r["method"] == baseline}
        for r in rows:
            base, own = base_of.get((r["env"], r["learner"])), r.get("steps_per_s")
            r[f"x_{baseline}"] = own / base if base and own else None


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


TABLE_COLUMNS = ("env", "learner", "method", "params", "steps/s", "x FuPS", "x NoPS", "compile s")


def table_cells(r: dict[str, Any]) -> list[str]:
    if "error" in r:
        return [r["env"], r["learner"], r["method"], "-", "error", "-", "-", "-"]
    return [r["env"], r["learner"], r["method"], f"{r['param_count']:,}", f"{r['steps_per_s']:,.0f}",
            _fmt(r["x_fups"], ".2f"), _fmt(r["x_nops"], ".2f"), f"{r['compile_s']:.1f}"]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |",
             "|" + "|".join(["---"] * 3 + ["---:"] * 5) + "|"]
    lines += ["| " + " | ".join(table_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def text_table(rows: list[dict[str, Any]]) -> str:
    cells = [list(TABLE_COLUMNS)] + [table_cells(r) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(TABLE_COLUMNS))]

    def line(row):
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    return "\n".join(line(row) for row in cells)


def peer_line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"peer-qmix: error: {r['error']}"
    config = " ".join(f"{k}={v}" for k, v in r["config"].items())
    return (f"peer-qmix ({config}, seeds={r['seeds']}): {r['steps_per_s']:,.0f} env steps/s, "
            f"compile {r['compile_s']:.1f} s, {r['param_count']:,} params")


def default_out(info: dict[str, Any]) -> pathlib.Path:
    date = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return REPO / "benchmarks" / "results" / f"throughput-{info['host']}-{date}.json"


def main(argv: list[str] | None = None, clear_caches: bool = False) -> dict[str, Any]:
    """Run the benchmark; returns the JSON document it writes (also for tests).

    ``clear_caches``: drop JAX's caches after each configuration (keeps a long sweep's memory flat;
    the command line sets it, an in-process caller such as a test session may not want it).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    import jax
    from tqdm import tqdm

    info = environment_info(argv)
    header = [f"command: {info['command']}",
              f"devices: {', '.join(info['devices'])} (backend {info['backend']})",
              f"jax {info['jax']}, jaxlib {info['jaxlib']}, python {info['python']}",
              f"cpus: {info['cpu_count']} (usable: {info['cpu_affinity']}), host {info['host']}, "
              f"{info['date']}",
              f"repeats {args.repeats} (+{args.warmup} warm-up), seeds {args.seeds}, chunk "
              + (f"{args.chunk_iters} iterations" if args.chunk_iters
                 else f"~{args.chunk_steps} env steps per seed")]
    print("\n".join(header), flush=True)

    if args.peer_qmix:
        grid = [("smax", "qmix", "fups", dict(PEER_QMIX))]
    else:
        grid, skipped = [], []
        for e in args.envs:
            for lrn in args.learners:
                for m in args.methods:
                    overrides = config_overrides(e, lrn, m, args.overrides)
                    try:  # combinations the config rejects (e.g. PPS with PPO) are not measured
                        make_config(overrides)
                        grid.append((e, lrn, m, overrides))
                    except ConfigError as err:
                        if any(k in str(err) for k in args.overrides):  # a bad --set is the user's error
                            raise SystemExit(f"--set: {err}") from None
                        skipped.append(f"{e}/{lrn}/{m}")
        if skipped:
            print(f"skipped (not a valid combination): {', '.join(skipped)}", flush=True)
    out = args.out or default_out(info)
    doc: dict[str, Any] = {
        "info": info,
        "settings": {"chunk_iters": args.chunk_iters, "chunk_steps": args.chunk_steps,
                     "repeats": args.repeats, "warmup": args.warmup, "seeds": args.seeds,
                     "peer_qmix": args.peer_qmix, "set": args.overrides},
        "results": [],
        "peer_qmix": None,
    }

    def save():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1) + "\n")

    rows = doc["results"]
    groups: dict[tuple[str, str], list] = {}
    for env, learner, method, overrides in grid:
        groups.setdefault((env, learner), []).append((method, overrides))
    bar = tqdm(total=len(grid), desc="throughput", unit="config", file=sys.stderr, dynamic_ncols=True)
    for (env, learner), configs in groups.items():
        names = {method: f"{env}/{learner}/{method}" for method, _ in configs}
        measured = measure_group([(names[m], o) for m, o in configs], args, status=bar.set_postfix_str,
                                 log=lambda msg: tqdm.write(msg, file=sys.stderr))
        for method, _ in configs:
            row: dict[str, Any] = {"env": env, "learner": learner, "method": method, **measured[names[method]]}
            if "error" not in row:
                tqdm.write(f"{names[method]}: {row['steps_per_s']:,.0f} steps/s, compile {row['compile_s']:.1f} s, "
                           f"{row['param_count']:,} params", file=sys.stderr)
            rows.append(row)
            bar.update(1)
        add_ratios(rows)
        if args.peer_qmix:
            doc["peer_qmix"] = rows[-1]
        save()
        if clear_caches:
            jax.clear_caches()
    bar.close()

    print()
    if args.peer_qmix:
        print(peer_line(doc["peer_qmix"]))
    print(markdown_table(rows) if args.markdown else text_table(rows))
    print(f"\nwrote {out}", flush=True)
    doc["out"] = str(out)
    return doc


if __name__ == "__main__":
    result = main(clear_caches=True)
    sys.exit(1 if any("error" in r for r in result["results"]) else 0)
