"""Host loop around the jitted trainer: chunks, evaluation, logs, checkpoints, plots.

``run(cfg)`` trains seeds ``cfg.seed .. cfg.seed + cfg.seeds - 1`` together (vmapped) in chunks of
training iterations. After each chunk it evaluates the policies of ``cfg.eval_policies``, appends to the
logs and writes an orbax checkpoint, so ``run(resume=folder)`` continues an interrupted run and ends with
the same params and metrics as an uninterrupted one. Python only runs between chunks, never inside one.

The trainer is used only through ``psjax.train.make_program(cfg, chunk_iters) -> Program`` with
``init(key, point) -> runner`` (``point``: a sweep row's values, ``()`` without a sweep),
``run_chunk(runner) -> (runner, metrics[chunk_iters])``, ``evaluate(runner, key) -> scalars``
(``eval_<stat>`` and ``eval_<policy>_<stat>`` for every policy of ``cfg.eval_policies``), ``param_count``,
``num_iterations`` and ``steps_per_iteration``.

The run folder's layout: ``psjax.run_folder``. Logs: ``psjax.logs``; checkpoints: ``psjax.checkpoints``;
``resume=``: ``psjax.resume``; ``curve.png``: ``psjax.plots``; devices and the compile cache: ``psjax.placement``;
the chunk plan and keys: ``psjax.plan``.
"""

from __future__ import annotations

import math
import pathlib
import shutil
import sys
import time
import types
from typing import Any, Callable

import jax
import numpy as np

from psjax import memory, sweep
from psjax.backends import open_backends
from psjax.checkpoints import host_state, open_manager, psjax_version, restore_checkpoint, save_checkpoint
from psjax.config import ConfigError, TrainConfig, load_run_config, method_defaults_line
from psjax.evaluate import POLICY_NAMES, eval_key
from psjax.logrows import decode_row
from psjax.logs import RowLog, eval_rows, metric_rows, nonfinite_event, nonfinite_message
from psjax.placement import envs_mesh, place_program, use_compile_cache
from psjax.plan import chunk_plan, eval_key_base, eval_keys, extend_plan, seed_keys
from psjax.plots import plot_curves
from psjax.resume import (
    RESUME_HOST_FIELDS,
    check_same_shapes,
    check_total_free,
    read_changes,
    record_changes,
    recorded_plan,
    resume_changes,
    resume_report,
)
from psjax.run_folder import env_spec, new_run_dir, point_runs, summarize
from psjax.schema import set_field
from psjax.shard import initialize_distributed, is_primary, seed_sharding, to_devices, to_host
from psjax.train import check_sweep


class NonFiniteError(RuntimeError):
    """``on_nonfinite=stop``: training produced non-finite values; the run folder keeps the last good checkpoint."""


def _timing(times: list[tuple[int, float]], compile_s: float, steps_per_iter: int) -> dict:
    """Throughput (env steps per second, all seeds) from ``(iterations, seconds)`` of this session's
    chunks, which run already compiled; ``compile_s`` is the chunk programs' compile time, measured
    apart (``jit(...).lower(...).compile()``)."""
    total = sum(t for _, t in times)
    sps = sum(n for n, _ in times) * steps_per_iter / total if total else None
    return {"compile_s": compile_s, "steps_per_sec": sps}


def _default_make_program(cfg: TrainConfig, chunk_iters: int):
    from psjax.train import make_program  # imported late: the trainer is the heavy part

    return make_program(cfg, chunk_iters)


def _nanmean(x) -> float:
    x = np.asarray(x, dtype=float)
    return float(np.nanmean(x)) if np.isfinite(x).any() else math.nan


def run(
    cfg: TrainConfig | None = None,
    resume: str | pathlib.Path | None = None,
    *,
    max_chunks: int | None = None,
    make_program: Callable[[TrainConfig, int], Any] | None = None,
) -> pathlib.Path:
    """Train ``cfg`` (or continue the run folder ``resume``) and return the run folder.

    Args:
      cfg: the run's config; with ``resume`` it may be left out (the folder's ``config.yaml`` is
        used) and must otherwise equal it, but for the fields ``resume_changes`` allows (learner
        hyperparameters that keep the checkpoint's shapes, ``on_nonfinite``, ...): the run then goes on with
        them (config.yaml rewritten, the change logged in ``resumes.jsonl`` and summary.json).
      resume: a run folder to continue from its latest checkpoint. Rows logged after that
        checkpoint are dropped, so the result equals an uninterrupted run (with no settings changed).
      max_chunks: stop after this many chunks in this call (e.g. to fit a time-limited job);
        ``resume`` continues later.
      make_program: ``(cfg, chunk_iters) -> Program``; default ``psjax.train.make_program``.
    """
    if resume is not None:
        run_dir = pathlib.Path(resume)
        saved = load_run_config(run_dir)
        changes = {} if cfg is None else resume_changes(saved, cfg, run_dir)
        cfg = saved if cfg is None else cfg  # a given cfg keeps this process's distributed fields
    elif cfg is None:
        raise TypeError("run() needs a cfg or a run folder to resume")
    multi = initialize_distributed(cfg)  # before any computation (distributed=on)
    cache = use_compile_cache(cfg.compile_cache, cfg.compile_cache_gb)
    if multi and resume is None and not cfg.run_name:
        raise ConfigError("distributed=on needs run_name: every process must name the same run folder; allowed: "
                          "any folder name, e.g. run_name=$SLURM_JOB_ID")
    # refused before a folder, an allocation or a compilation: the resident state from shapes (psjax.memory)
    num_rows = len(sweep.points(cfg)) * cfg.seeds  # the program's leading axis: (sweep point,) seed
    if cfg.parallel == "envs" and multi:
        raise ConfigError("parallel=envs with distributed=on is not built yet; allowed: parallel=seeds across "
                          "processes, or parallel=envs in one process")
    # parallel=seeds: the rows split over the devices (psjax.shard); envs: every device holds every row, and a
    # share of each row's envs and replay items
    sharding = seed_sharding(num_rows, cfg.devices) if cfg.parallel == "seeds" else None
    mesh = None if sharding else envs_mesh(cfg)
    memory_est = memory.estimate(cfg, sharding.mesh.size, rows=num_rows) if sharding else \
        memory.estimate(cfg, rows=num_rows, data_devices=mesh.size)
    used = (sharding.mesh if sharding else mesh).devices.flat  # this process's devices share its host's memory
    memory_budget = memory.check(memory_est, cfg.memory_gb, cfg,
                                 host_devices=sum(d.process_index == jax.process_index() for d in used))
    check_sweep(cfg)  # swept fields the program cannot trace, by name
    if resume is None:
        run_dir = new_run_dir(cfg) if is_primary() else pathlib.Path(cfg.out_dir) / cfg.run_name
    points = point_runs(run_dir, cfg, create=resume is None and is_primary())
    if multi:  # the folders exist before any process reads or checkpoints into them
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("psjax run folder")
    make_program = make_program or _default_make_program

    # a resumed run keeps the plan it started (or was last continued) with, extended when steps= asks for more
    plan = chunk_plan(cfg.num_iterations, cfg.eval_every) if resume is None else \
        extend_plan(recorded_plan(run_dir) or chunk_plan(saved.num_iterations, saved.eval_every), cfg.num_iterations)
    programs = {plan[0]: make_program(cfg, plan[0])}
    main = programs[plan[0]]
    if main.num_iterations != sum(plan):
        raise RuntimeError(f"program.num_iterations={main.num_iterations} but the config gives {sum(plan)}")
    starts = np.cumsum([0] + plan).tolist()  # iterations completed before each chunk
    seeds = list(range(cfg.seed, cfg.seed + cfg.seeds))
    keys = np.tile(seed_keys(cfg.seed, cfg.seeds), (len(points.dirs), 1))  # every point from the same seeds
    place = place_program(sharding or mesh, main, keys, points.columns)
    init, evaluate = place.init, place.evaluate
    chunk_fns, compile_times = {}, []

    # one program for every chunk size where the program can count (the first chunk is the largest): a shorter
    # remainder chunk runs the first chunk's executable instead of compiling another
    counted = getattr(main, "run_counted", None) is not None  # duck-typed programs (tests) may lack it

    def compiled_chunk(program, runner):
        # compiled ahead of the call: the compile time is measured, not inferred from a slower first chunk
        t0 = time.perf_counter()
        fn = place.counted(program.run_counted).lower(runner, jax.ShapeDtypeStruct((), np.int32)).compile() \
            if counted else place.chunk(program.run_chunk).lower(runner).compile()
        compile_times.append(time.perf_counter() - t0)
        return fn

    def chunk_fn(size, runner):
        """``runner -> (runner, metrics [R, C, ...])`` for a chunk of ``size`` iterations, compiled once; C is
        ``plan[0]`` where the program counts (rows from ``size`` on are not iterations), else ``size``."""
        if counted:
            return lambda r: chunk_fns[plan[0]](r, np.int32(size))
        if size not in chunk_fns:  # the first chunk's size, then the remainder chunk's (a second program)
            if size not in programs:
                programs[size] = make_program(cfg, size)
            chunk_fns[size] = compiled_chunk(programs[size], runner)
        return chunk_fns[size]

    # the first chunk compiled from shapes, before anything is allocated: what XLA says it needs, checked
    chunk_fns[plan[0]] = compiled_chunk(main, jax.eval_shape(init, keys, points.columns))
    try:
        memory_compiled = memory.check_compiled(chunk_fns[plan[0]], memory_est, memory_budget, cfg.memory_gb, cfg)
    except ConfigError:
        if resume is None and is_primary():  # refused: the folder made above holds nothing but its config
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    point_ids = range(len(points.dirs))
    metrics_logs = [RowLog(d, "metrics") for d in points.dirs]
    eval_logs = [RowLog(d, "eval") for d in points.dirs]
    backends = [[] for _ in points.dirs]

    def log(row_logs: list[RowLog], rows_by_point: list[list[dict]]) -> None:
        """Each point's rows to its run folder's log and backends (process 0 only)."""
        if not is_primary():
            return
        for p, (row_log, rows) in enumerate(zip(row_logs, rows_by_point)):
            row_log.append(rows)
            for backend in backends[p]:  # TensorBoard / W&B (cfg.logger): the same rows
                backend.write(row_log.name, rows)

    if resume is not None:
        abstract = jax.eval_shape(init, keys, points.columns)
        if any(k not in RESUME_HOST_FIELDS for k in changes):  # the checkpoint holds the saved config's arrays
            check_same_shapes(*(jax.eval_shape(jax.vmap(program.init), keys, points.columns)
                                 for program in (main, make_program(saved, plan[0]))), changes)
        if "steps" in changes:  # a longer run: the same program, unless something in it depends on the total
            check_total_free(main, make_program(set_field(cfg, "steps", saved.steps), plan[0]), keys[0],
                              jax.tree.map(lambda c: c[0], points.columns), changes["steps"])
        if multi:  # restored straight into every process's rows
            abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract)
        restored = restore_checkpoint(run_dir, abstract)
        runner, host = restored.runner, restored.host
        runner = runner if multi else place.put(runner)
        done, eval_base = host["chunk"], np.asarray(host["eval_key_base"], dtype=np.uint32)
        if host["seeds"] != seeds or host["iteration"] != starts[done]:
            raise RuntimeError(f"checkpoint {host} does not match the config's seeds / chunk plan")
        resumed_from = resume_report(run_dir, restored, starts, main.steps_per_iteration, plan, saved, cfg, multi)
        for metrics_log, eval_log in zip(metrics_logs, eval_logs) if is_primary() else ():
            metrics_log.truncate(starts[done] * len(seeds))
            eval_log.truncate((done + 1) * len(seeds))  # +1: the evaluation before training
        backends = [open_backends(c, d, seeds, resume_step=starts[done] * main.steps_per_iteration)
                    for c, d in zip(points.cfgs, points.dirs)]
        if changes and is_primary():
            record_changes(run_dir, cfg, points, changes, done, starts[done] * main.steps_per_iteration,
                            plan=plan if "steps" in changes else None)
    else:
        done, eval_base, resumed_from = 0, eval_key_base(keys), None
        backends = [open_backends(c, d, seeds, resume_step=None) for c, d in zip(points.cfgs, points.dirs)]
        runner = init(*to_devices((keys, points.columns), sharding))
        result = to_host(evaluate(runner, to_devices(eval_keys(eval_base, 0), sharding)))
        log(eval_logs, [eval_rows(points.rows(result, p), seeds, 0, 0, cfg.eval_policies) for p in point_ids])
    manager = open_manager(run_dir, create=True) if cfg.checkpoint else None
    if manager is not None and resume is None:
        save_checkpoint(manager, 0, runner, host_state(0, 0, seeds, eval_base))
    saved_chunk, saved_at = done, time.perf_counter()  # the newest checkpoint's chunk, and when it was written
    first_bad, stopped = None, None  # where training first went non-finite (this session); the stop message

    spi = main.steps_per_iteration
    stop = len(plan) if max_chunks is None else min(len(plan), done + max_chunks)
    bar = _progress_bar(cfg, total=sum(plan) * spi, initial=starts[done] * spi)
    if cfg.method_defaults and is_primary():  # which settings came from the method, not the user
        bar.write(method_defaults_line(cfg), file=sys.stderr)
    has_win = env_spec(cfg).has_won  # the bar shows the win rate where the env defines winning
    times, t_start = [], time.perf_counter()
    try:
        for j in range(done, stop):
            size = plan[j]
            if manager is not None:  # the chunk reuses the runner's buffers: the last checkpoint must be written
                manager.wait_until_finished()
            run_size = chunk_fn(size, runner)
            t0 = time.perf_counter()
            runner, metrics = jax.block_until_ready(run_size(runner))
            times.append((size, time.perf_counter() - t0))
            metrics = jax.tree.map(lambda m, n=size: m[:, :n], to_host(metrics))
            rows = [metric_rows(points.rows(metrics, p), seeds, starts[j]) for p in point_ids]
            log(metrics_logs, rows)
            result = to_host(evaluate(runner, to_devices(eval_keys(eval_base, j + 1), sharding)))
            log(eval_logs, [eval_rows(points.rows(result, p), seeds, starts[j + 1],
                                      points.rows(metrics["env_steps"], p)[:, -1], cfg.eval_policies)
                            for p in point_ids])
            events = [(p, nonfinite_event([decode_row(r) for r in point_rows])) for p, point_rows in enumerate(rows)]
            events = [(p, e) for p, e in events if e]
            if events and first_bad is None:
                first_bad = min(e["env_step"] for _, e in events)
                text = "; ".join((f"[{sweep.label(sweep.points(cfg)[p])}] " if cfg.sweep else "") + nonfinite_message(e)
                                 for p, e in events)
                if cfg.on_nonfinite == "stop":
                    stopped = text
                elif is_primary():
                    bar.write(f"WARNING: {text}; on_nonfinite=warn: training goes on, the figures from there are not "
                              "results", file=sys.stderr)
            # a checkpoint never holds non-finite parameters: the last good one stays for resume= with other settings
            params_bad = metrics.get("nonfinite_params")
            due = j + 1 == stop or time.perf_counter() - saved_at >= cfg.checkpoint_every_s
            if manager is not None and due and stopped is None and (params_bad is None or
                                                                     not np.any(params_bad[:, -1] > 0)):
                save_checkpoint(manager, j + 1, runner, host_state(j + 1, starts[j + 1], seeds, eval_base))
                saved_chunk, saved_at = j + 1, time.perf_counter()
            postfix = {"return": f"{_nanmean(metrics['return']):.3g}"}
            if first_bad is not None:
                postfix["NON-FINITE from step"] = f"{first_bad:,}"
            for policy in cfg.eval_policies:  # e.g. "sampled eval=0.91"
                postfix[f"{POLICY_NAMES[policy]} eval"] = f"{_nanmean(result[eval_key('return', policy)]):.3g}"
                if has_win:
                    postfix[f"{POLICY_NAMES[policy]} win"] = f"{_nanmean(result[eval_key('won', policy)]):.2f}"
            bar.set_postfix(postfix, refresh=False)  # shown by the update below
            bar.update(size * spi)
            done = j + 1
            if stopped is not None:
                break
    except KeyboardInterrupt:
        print(f"\ninterrupted after chunk {done}/{len(plan)}; continue with: "
              f"python -m psjax train resume={run_dir}", file=sys.stderr)
        raise
    finally:
        bar.close()
        for backend in sum(backends, []):
            backend.close()
        if manager is not None:
            manager.wait_until_finished()
            manager.close()

    info = {
        "param_count": int(main.param_count),
        "num_iterations": sum(plan),
        "steps_per_iteration": spi,
        "iterations_done": starts[done],
        "env_steps_per_seed": starts[done] * spi,
        "finished": done == len(plan) and stopped is None,
        "stopped": "nonfinite" if stopped is not None else None,  # on_nonfinite=stop ended the run early
        "changed_on_resume": read_changes(run_dir),  # settings changed by resume= (resumes.jsonl)
        "resumed_from": resumed_from,  # this session's checkpoint (None: started fresh) and the damaged ones skipped
        "psjax_version": psjax_version(),
        "chunks": plan,
        "devices": place.devices,  # the rows (parallel=seeds) or each run's envs (envs) were split this many ways
        "parallel": cfg.parallel,
        "processes": jax.process_count(),
        "program_rows": num_rows,  # seeds, or a sweep's points x seeds, trained in the one program
        # psjax.memory: a floor from shapes, and XLA's account of the compiled chunk (checked with its margin)
        "memory_estimate": {**memory_est.to_dict(), "budget_bytes": memory_budget, "compiled_bytes": memory_compiled},
        "session_wall_s": time.perf_counter() - t_start,
        **_timing(times, sum(compile_times) if compile_times else None, spi * num_rows),
        "chunk_programs": len(compile_times),  # chunk programs compiled this session (1 where the program counts)
        "compile_cache": str(cache) if cache else None,  # compile_s is a load time where the cache held the program
    }
    from psjax import registry
    from psjax.sharing.report import plot_distance, plot_snd

    if multi:  # the figures read the runner on process 0; gathering it takes every process
        runner = to_host(runner)
    for p, (point_cfg, point_dir) in enumerate(zip(points.cfgs, points.dirs) if is_primary() else ()):
        point_info = {**info, "sweep_point": sweep.label(sweep.points(cfg)[p])} if cfg.sweep else info
        summarize(point_dir, point_cfg, point_info)
        plot_curves(point_dir, point_cfg)
        for draw in registry.get(cfg.alg).pictures:  # the method's own (sharing.png, roles.png, ...)
            draw(point_dir, point_cfg, points.rows(runner, p), main)
        plot_distance(point_dir)  # distance.png, when MAPD distances are logged
        plot_snd(point_dir)  # snd.png, when the team's SND is logged (sharing.snd_interval, DiCo)
    if stopped is not None:
        section = "q" if cfg.is_value_based else "ac"
        kept = (f"the last good checkpoint (chunk {saved_chunk}, env step {starts[saved_chunk] * spi:,} per seed) is "
                f"kept: continue from it with changed settings, e.g. python -m psjax train resume={run_dir} "
                f"{section}.lr={cfg.learner_cfg.lr / 10:g}" if manager is not None else
                "checkpoint=false: there is no checkpoint to continue from")
        raise NonFiniteError(f"{stopped}. Stopped by on_nonfinite=stop after chunk {done}/{len(plan)}; no checkpoint "
                             f"of non-finite parameters was written, {kept} (or on_nonfinite=warn to train on)")
    return run_dir


def _progress_bar(cfg: TrainConfig, total: int, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="step", unit_scale=True, dynamic_ncols=True,
                disable=not cfg.progress or not is_primary(), desc=f"{cfg.env.name} {cfg.alg} {cfg.learner_name}")


class _CallableModule(types.ModuleType):
    """``psjax.run`` names both this module and the ``run`` function: importing the submodule
    rebinds the package attribute to the module, so the module forwards calls to ``run``."""

    def __call__(self, *args, **kwargs):
        return run(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
