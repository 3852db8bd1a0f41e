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

import dataclasses
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


@dataclasses.dataclass
class _Session:
    """What every phase of one ``run`` call reads: fixed once the folders, the plan and the first program exist."""

    cfg: TrainConfig
    run_dir: pathlib.Path
    points: Any  # psjax.run_folder.point_runs: the sweep points' configs, folders and program columns
    plan: list[int]  # iterations per chunk
    starts: list[int]  # iterations completed before each chunk
    seeds: list[int]
    keys: np.ndarray  # every program row's seed key
    place: Any  # psjax.placement.place_program: init / evaluate / chunk placed on the devices
    main: Any  # the first chunk's Program
    sharding: Any  # parallel=seeds: the rows' sharding; None with parallel=envs
    multi: bool  # several processes (distributed=on)
    logs: _Logs | None = None
    manager: Any = None  # the orbax checkpoint manager; None with checkpoint=false

    @property
    def spi(self) -> int:
        return self.main.steps_per_iteration


class _Logs:
    """Every sweep point's metrics and evaluation logs and its logging backends (written by process 0 only)."""

    def __init__(self, dirs: list[pathlib.Path]):
        self.rows = {"metrics": [RowLog(d, "metrics") for d in dirs], "eval": [RowLog(d, "eval") for d in dirs]}
        self.backends: list[list] = [[] for _ in dirs]

    def write(self, name: str, rows_by_point: list[list[dict]]) -> None:
        """Each point's rows to its run folder's ``name`` log ("metrics" / "eval") and its backends."""
        if not is_primary():
            return
        for p, (row_log, rows) in enumerate(zip(self.rows[name], rows_by_point)):
            row_log.append(rows)
            for backend in self.backends[p]:  # TensorBoard / W&B (cfg.logger): the same rows
                backend.write(row_log.name, rows)

    def close(self) -> None:
        for backend in sum(self.backends, []):
            backend.close()


class _Chunks:
    """The run's compiled chunk programs and their compile times. Where the program can count, one executable
    serves every chunk size (the first chunk is the largest: a shorter remainder runs it with its count); else the
    remainder chunk gets a program of its own, compiled on first use."""

    def __init__(self, cfg: TrainConfig, plan: list[int], main, place, make_program: Callable):
        self.cfg, self.plan, self.place, self.make_program = cfg, plan, place, make_program
        self.programs, self.fns, self.compile_times = {plan[0]: main}, {}, []
        self.counted = getattr(main, "run_counted", None) is not None  # duck-typed programs (tests) may lack it

    def compile(self, program, runner):
        """``program``'s chunk, compiled ahead of the call: the compile time is measured, not inferred from a
        slower first chunk. ``runner`` may be shapes (``jax.eval_shape``)."""
        t0 = time.perf_counter()
        fn = self.place.counted(program.run_counted).lower(runner, jax.ShapeDtypeStruct((), np.int32)).compile() \
            if self.counted else self.place.chunk(program.run_chunk).lower(runner).compile()
        self.compile_times.append(time.perf_counter() - t0)
        return fn

    def __call__(self, size: int, runner):
        """``runner -> (runner, metrics [R, C, ...])`` for a chunk of ``size`` iterations, compiled once; C is
        ``plan[0]`` where the program counts (rows from ``size`` on are not iterations), else ``size``."""
        first = self.plan[0]
        if self.counted:
            return lambda r: self.fns[first](r, np.int32(size))
        if size not in self.fns:  # the first chunk's size, then the remainder chunk's (a second program)
            if size not in self.programs:
                self.programs[size] = self.make_program(self.cfg, size)
            self.fns[size] = self.compile(self.programs[size], runner)
        return self.fns[size]


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

    The phases, in order: the config (and what a resume changes), the devices and the memory the run needs, the run
    folders and the chunk plan, the first chunk compiled from shapes, the start (or the restored checkpoint), the
    chunks, the summary and pictures.
    """
    saved, changes = None, {}
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
    main = make_program(cfg, plan[0])
    if main.num_iterations != sum(plan):
        raise RuntimeError(f"program.num_iterations={main.num_iterations} but the config gives {sum(plan)}")
    keys = np.tile(seed_keys(cfg.seed, cfg.seeds), (len(points.dirs), 1))  # every point from the same seeds
    seeds = list(range(cfg.seed, cfg.seed + cfg.seeds))
    s = _Session(cfg, run_dir, points, plan, np.cumsum([0] + plan).tolist(), seeds, keys,
                 place_program(sharding or mesh, main, keys, points.columns), main, sharding, multi)
    chunks = _Chunks(cfg, plan, main, s.place, make_program)

    # the first chunk compiled from shapes, before anything is allocated: what XLA says it needs, checked
    chunks.fns[plan[0]] = chunks.compile(main, jax.eval_shape(s.place.init, keys, points.columns))
    try:
        memory_compiled = memory.check_compiled(chunks.fns[plan[0]], memory_est, memory_budget, cfg.memory_gb, cfg)
    except ConfigError:
        if resume is None and is_primary():  # refused: the folder made above holds nothing but its config
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    s.logs = _Logs(points.dirs)
    if resume is not None:
        runner, done, eval_base, resumed_from = _restore(s, saved, changes, make_program)
    else:
        runner, done, eval_base, resumed_from = _start(s)
    s.manager = open_manager(run_dir, create=True) if cfg.checkpoint else None
    if s.manager is not None and resume is None:
        save_checkpoint(s.manager, 0, runner, host_state(0, 0, s.seeds, eval_base))
    t_start = time.perf_counter()
    runner, done, stopped, saved_chunk, times = _train_chunks(s, chunks, runner, done, eval_base, max_chunks)

    info = {
        "param_count": int(main.param_count),
        "num_iterations": sum(plan),
        "steps_per_iteration": s.spi,
        "iterations_done": s.starts[done],
        "env_steps_per_seed": s.starts[done] * s.spi,
        "finished": done == len(plan) and stopped is None,
        "stopped": "nonfinite" if stopped is not None else None,  # on_nonfinite=stop ended the run early
        "changed_on_resume": read_changes(run_dir),  # settings changed by resume= (resumes.jsonl)
        "resumed_from": resumed_from,  # this session's checkpoint (None: started fresh) and the damaged ones skipped
        "psjax_version": psjax_version(),
        "chunks": plan,
        "devices": s.place.devices,  # the rows (parallel=seeds) or each run's envs (envs) were split this many ways
        "parallel": cfg.parallel,
        "processes": jax.process_count(),
        "program_rows": num_rows,  # seeds, or a sweep's points x seeds, trained in the one program
        # psjax.memory: a floor from shapes, and XLA's account of the compiled chunk (checked with its margin)
        "memory_estimate": {**memory_est.to_dict(), "budget_bytes": memory_budget, "compiled_bytes": memory_compiled},
        "session_wall_s": time.perf_counter() - t_start,
        **_timing(times, sum(chunks.compile_times) if chunks.compile_times else None, s.spi * num_rows),
        "chunk_programs": len(chunks.compile_times),  # compiled this session (1 where the program counts)
        "compile_cache": str(cache) if cache else None,  # compile_s is a load time where the cache held the program
    }
    _report(s, runner, info)
    if stopped is not None:
        raise NonFiniteError(_stop_message(s, stopped, done, saved_chunk))
    return run_dir


def _start(s: _Session):
    """A fresh run: its backends opened, the untrained policies evaluated and logged. Returns ``(runner, done chunks,
    the evaluation keys' base, resumed_from None)``."""
    eval_base = eval_key_base(s.keys)
    s.logs.backends = [open_backends(c, d, s.seeds, resume_step=None) for c, d in zip(s.points.cfgs, s.points.dirs)]
    runner = s.place.init(*to_devices((s.keys, s.points.columns), s.sharding))
    result = to_host(s.place.evaluate(runner, to_devices(eval_keys(eval_base, 0), s.sharding)))
    s.logs.write("eval", [eval_rows(s.points.rows(result, p), s.seeds, 0, 0, s.cfg.eval_policies)
                          for p in range(len(s.points.dirs))])
    return runner, 0, eval_base, None


def _restore(s: _Session, saved: TrainConfig, changes: dict, make_program: Callable):
    """A resumed run: the changed settings checked against the checkpoint, the runner restored, rows logged after
    the checkpoint dropped, the changes recorded. Returns ``(runner, done chunks, the evaluation keys' base,
    resumed_from)``."""
    cfg, main, keys, columns = s.cfg, s.main, s.keys, s.points.columns
    abstract = jax.eval_shape(s.place.init, keys, columns)
    if any(k not in RESUME_HOST_FIELDS for k in changes):  # the checkpoint holds the saved config's arrays
        check_same_shapes(*(jax.eval_shape(jax.vmap(program.init), keys, columns)
                            for program in (main, make_program(saved, s.plan[0]))), changes)
    if "steps" in changes:  # a longer run: the same program, unless something in it depends on the total
        check_total_free(main, make_program(set_field(cfg, "steps", saved.steps), s.plan[0]), keys[0],
                         jax.tree.map(lambda c: c[0], columns), changes["steps"])
    if s.multi:  # restored straight into every process's rows
        abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s.sharding), abstract)
    restored = restore_checkpoint(s.run_dir, abstract)
    runner, host = restored.runner, restored.host
    runner = runner if s.multi else s.place.put(runner)
    done, eval_base = host["chunk"], np.asarray(host["eval_key_base"], dtype=np.uint32)
    if host["seeds"] != s.seeds or host["iteration"] != s.starts[done]:
        raise RuntimeError(f"checkpoint {host} does not match the config's seeds / chunk plan")
    resumed_from = resume_report(s.run_dir, restored, s.starts, s.spi, s.plan, saved, cfg, s.multi)
    for metrics_log, eval_log in zip(s.logs.rows["metrics"], s.logs.rows["eval"]) if is_primary() else ():
        metrics_log.truncate(s.starts[done] * len(s.seeds))
        eval_log.truncate((done + 1) * len(s.seeds))  # +1: the evaluation before training
    s.logs.backends = [open_backends(c, d, s.seeds, resume_step=s.starts[done] * s.spi)
                       for c, d in zip(s.points.cfgs, s.points.dirs)]
    if changes and is_primary():
        record_changes(s.run_dir, cfg, s.points, changes, done, s.starts[done] * s.spi,
                       plan=s.plan if "steps" in changes else None)
    return runner, done, eval_base, resumed_from


def _train_chunks(s: _Session, chunks: _Chunks, runner, done: int, eval_base, max_chunks: int | None):
    """The chunks from ``done`` on (at most ``max_chunks``): each trained, logged, evaluated, checked for non-finite
    values and checkpointed (at most every ``checkpoint_every_s``, always the last). Returns ``(runner, chunks done,
    the non-finite stop message or None, the newest checkpoint's chunk, (iterations, seconds) per chunk)``."""
    cfg, plan, starts, manager = s.cfg, s.plan, s.starts, s.manager
    point_ids = range(len(s.points.dirs))
    saved_chunk, saved_at = done, time.perf_counter()  # the newest checkpoint's chunk, and when it was written
    first_bad, stopped = None, None  # where training first went non-finite (this session); the stop message
    stop = len(plan) if max_chunks is None else min(len(plan), done + max_chunks)
    bar = _progress_bar(cfg, total=sum(plan) * s.spi, initial=starts[done] * s.spi)
    if cfg.method_defaults and is_primary():  # which settings came from the method, not the user
        bar.write(method_defaults_line(cfg), file=sys.stderr)
    has_win = env_spec(cfg).has_won  # the bar shows the win rate where the env defines winning
    times = []
    try:
        for j in range(done, stop):
            size = plan[j]
            if manager is not None:  # the chunk reuses the runner's buffers: the last checkpoint must be written
                manager.wait_until_finished()
            run_size = chunks(size, runner)
            t0 = time.perf_counter()
            runner, metrics = jax.block_until_ready(run_size(runner))
            times.append((size, time.perf_counter() - t0))
            metrics = jax.tree.map(lambda m, n=size: m[:, :n], to_host(metrics))
            rows = [metric_rows(s.points.rows(metrics, p), s.seeds, starts[j]) for p in point_ids]
            s.logs.write("metrics", rows)
            result = to_host(s.place.evaluate(runner, to_devices(eval_keys(eval_base, j + 1), s.sharding)))
            s.logs.write("eval", [eval_rows(s.points.rows(result, p), s.seeds, starts[j + 1],
                                            s.points.rows(metrics["env_steps"], p)[:, -1], cfg.eval_policies)
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
                save_checkpoint(manager, j + 1, runner, host_state(j + 1, starts[j + 1], s.seeds, eval_base))
                saved_chunk, saved_at = j + 1, time.perf_counter()
            bar.set_postfix(_postfix(cfg, metrics, result, first_bad, has_win), refresh=False)  # shown by the update
            bar.update(size * s.spi)
            done = j + 1
            if stopped is not None:
                break
    except KeyboardInterrupt:
        print(f"\ninterrupted after chunk {done}/{len(plan)}; continue with: "
              f"python -m psjax train resume={s.run_dir}", file=sys.stderr)
        raise
    finally:
        bar.close()
        s.logs.close()
        if manager is not None:
            manager.wait_until_finished()
            manager.close()
    return runner, done, stopped, saved_chunk, times


def _postfix(cfg: TrainConfig, metrics: dict, result: dict, first_bad: int | None, has_win: bool) -> dict:
    """The progress bar's figures after a chunk: the training return, where training went non-finite, and every
    evaluated policy's return (and win rate), e.g. "sampled eval=0.91"."""
    postfix = {"return": f"{_nanmean(metrics['return']):.3g}"}
    if first_bad is not None:
        postfix["NON-FINITE from step"] = f"{first_bad:,}"
    for policy in cfg.eval_policies:
        postfix[f"{POLICY_NAMES[policy]} eval"] = f"{_nanmean(result[eval_key('return', policy)]):.3g}"
        if has_win:
            postfix[f"{POLICY_NAMES[policy]} win"] = f"{_nanmean(result[eval_key('won', policy)]):.2f}"
    return postfix


def _report(s: _Session, runner, info: dict) -> None:
    """Every point's summary.json, curve.png, the run's generic pictures and the method's own (process 0)."""
    from psjax import registry
    from psjax.sharing.report import plot_distance, plot_snd

    cfg = s.cfg
    if s.multi:  # the figures read the runner on process 0; gathering it takes every process
        runner = to_host(runner)
    for p, (point_cfg, point_dir) in enumerate(zip(s.points.cfgs, s.points.dirs) if is_primary() else ()):
        point_info = {**info, "sweep_point": sweep.label(sweep.points(cfg)[p])} if cfg.sweep else info
        summarize(point_dir, point_cfg, point_info)
        plot_curves(point_dir, point_cfg)
        plot_distance(point_dir)  # distance.png, when MAPD distances are logged
        plot_snd(point_dir)  # snd.png, when the team's SND is logged (sharing.snd_interval, DiCo)
        for draw in registry.get(cfg.alg).pictures:  # the method's own (sharing.png, roles.png, DiCo's snd.png, ...)
            draw(point_dir, point_cfg, s.points.rows(runner, p), s.main)


def _stop_message(s: _Session, stopped: str, done: int, saved_chunk: int) -> str:
    """What ``on_nonfinite=stop`` raises: where training went non-finite and how to go on from the last good
    checkpoint."""
    cfg = s.cfg
    section = "q" if cfg.is_value_based else "ac"
    kept = (f"the last good checkpoint (chunk {saved_chunk}, env step {s.starts[saved_chunk] * s.spi:,} per seed) is "
            f"kept: continue from it with changed settings, e.g. python -m psjax train resume={s.run_dir} "
            f"{section}.lr={cfg.learner_cfg.lr / 10:g}" if s.manager is not None else
            "checkpoint=false: there is no checkpoint to continue from")
    return (f"{stopped}. Stopped by on_nonfinite=stop after chunk {done}/{len(s.plan)}; no checkpoint "
            f"of non-finite parameters was written, {kept} (or on_nonfinite=warn to train on)")


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
