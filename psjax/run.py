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

Run folder::

    config.yaml                  resolved config (``config.to_dict``); ``resume`` reads it back
    metrics.jsonl, metrics.csv   one row per training iteration per seed; ``nonfinite`` counts the iteration's
                                 non-finite quantities (``psjax.train.nonfinite_metrics``), ``nonfinite_params``
                                 the non-finite parameters. null (CSV: empty) = no value (no episode ended, no
                                 update yet); a non-finite value = the string "nan" / "inf" / "-inf"
                                 (``psjax.logrows.decode_row`` reads both back)
    eval.jsonl, eval.csv         one row per evaluation per seed (the first one before training): eval_policy
                                 (the primary policy, whose figures are eval_return / eval_won / eval_length),
                                 then eval_<policy>_return / _won / _length for every evaluated policy;
                                 nonfinite: the evaluated parameters were non-finite (not a result)
    summary.json                 param count, throughput, compile time (a load time where compile_cache held
                                 the program), final evaluation (final_eval.policy names the policy of its
                                 plain eval_* figures), where training first went non-finite
                                 (nonfinite_first_env_step, nonfinite; None if never), stopped, psjax_version,
                                 resumed_from (this session's checkpoint and the damaged ones it skipped)
    resumes.jsonl                settings changed by ``resume=`` (which checkpoint, old and new values; a longer
                                 ``steps=`` also the chunk plan it continues with)
    curve.png                    return (and win rate) vs env steps, mean over seeds, min-max band; one eval
                                 line per evaluated policy, named with its episodes and seeds
    sharing.png                  SePS / AdaPS / MADPS: clusters, shared units, front / back slots
    distance.png                 the last MAPD policy distance matrix (``mapd_interval`` > 0, or MADPS)
    snd.png                      the team's SND over training (``snd_interval`` > 0, or DiCo, with its target)
    roles.png                    BDPS: role (and group) of each agent at every step of one greedy episode
    checkpoints/<chunk>/         orbax checkpoints of the vmapped runner (the last two kept; never one of
                                 non-finite parameters: ``on_nonfinite=stop`` leaves the last good one); the host
                                 state beside the runner records the psjax version that wrote it
    checkpoints-damaged/<chunk>/ checkpoints ``resume=`` found damaged and skipped, set aside (never deleted)
    tensorboard/, wandb/         with ``cfg.logger``: the same rows for TensorBoard / W&B (``psjax.backends``)

A sweep (``cfg.sweep``, ``psjax.sweep``) trains every point x seed in one program; its run folder holds
``config.yaml``, ``checkpoints/`` and ``sweep.json`` (the points and their folders), and one run folder per
point (``point-<i>-<field>=<value>...``: its own config.yaml, logs, summary.json and figures, as above), so
``python -m psjax compare <sweep run folder>`` compares the points (``psjax train`` writes that report there).
"""

from __future__ import annotations

import csv
import functools
import json
import math
import pathlib
import re
import shutil
import sys
import time
import types
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
import yaml

from psjax import memory, sweep
from psjax.backends import open_backends
from psjax.config import ConfigError, TrainConfig, load_run_config, method_defaults_line, to_dict
from psjax.envs import reported_return
from psjax.evaluate import EVAL_STATS, POLICY_NAMES, eval_key
from psjax.logrows import decode_row, nonfinite_quantities
from psjax.schema import set_field
from psjax.shard import (
    DATA_AXIS,
    data_mesh,
    initialize_distributed,
    is_primary,
    jit_data_parallel,
    jit_over_seeds,
    seed_sharding,
    to_devices,
    to_host,
)
from psjax.train import check_sweep, data_parallel_specs, watched

# fold_in salt that separates the evaluation key stream from the keys the trainer splits off
# the seed key, so evaluation never reuses a training key.
EVAL_SALT = 0x65766C  # "evl"


# --------------------------------------------------------------------------- pure helpers


def chunk_plan(num_iterations: int, eval_every: float) -> list[int]:
    """Training iterations per chunk; one evaluation follows each chunk.

    Chunks hold ``round(eval_every * num_iterations)`` iterations (at least 1; ``eval_every=0``:
    one chunk); the last one holds the remainder. The plan depends only on the config, so a
    resumed run cuts training at the same places as an uninterrupted one.
    """
    size = num_iterations if eval_every <= 0 else max(1, round(eval_every * num_iterations))
    size = min(size, num_iterations)
    full, rest = divmod(num_iterations, size)
    return [size] * full + ([rest] if rest else [])


def extend_plan(plan: list[int], num_iterations: int) -> list[int]:
    """``plan`` continued to ``num_iterations`` with chunks of its first chunk's size, the remainder last: a run
    continued with a larger ``steps=`` keeps the chunks (and so the evaluations) it had, its remainder chunk
    included, instead of cutting the new total by ``eval_every`` again."""
    extra = num_iterations - sum(plan)
    if extra < 0:
        raise ValueError(f"plan {plan} holds more than {num_iterations} iterations")
    full, rest = divmod(extra, plan[0])
    return list(plan) + [plan[0]] * full + ([rest] if rest else [])


def seed_keys(seed: int, seeds: int) -> np.ndarray:
    """Raw PRNG keys ``uint32[seeds, 2]`` for seeds ``seed .. seed + seeds - 1``."""
    return np.stack([np.asarray(jax.random.key_data(jax.random.key(s))) for s in range(seed, seed + seeds)])


def eval_key_base(keys: np.ndarray) -> np.ndarray:
    """Per-seed base of the evaluation keys, ``[S, 2] -> [S, 2]``."""
    return np.asarray(jax.vmap(jax.random.fold_in, (0, None))(keys, EVAL_SALT))


def eval_keys(base: np.ndarray, chunk: int) -> np.ndarray:
    """Keys ``[S, 2]`` of the evaluation after ``chunk`` chunks (0 = before training)."""
    return np.asarray(jax.vmap(jax.random.fold_in, (0, None))(base, chunk))


def _cell(v: Any, nan_is_value: bool = False) -> Any:
    """A numpy scalar as a JSON value: bools as 0/1; NaN as None ("no value": no episode ended, no update yet, a
    round not due) unless ``nan_is_value``, then the string "nan"; +-inf as "inf" / "-inf" (never "no value").

    float32 values go through their shortest decimal repr, which reads back as the same float32.
    """
    v = np.asarray(v)
    if v.dtype == bool:
        return int(v)
    if np.issubdtype(v.dtype, np.integer):
        return int(v)
    if np.isnan(v):
        return "nan" if nan_is_value else None
    if np.isinf(v):
        return "inf" if v > 0 else "-inf"
    return float(str(v)) if v.dtype == np.float32 else float(v)


def flatten_metrics(metrics: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``name -> [S, C, *rest]`` to ``column -> [S, C]``; extra axes become ``name[i]``, ``name[i,j]``."""
    out = {}
    for name, value in metrics.items():
        value = np.asarray(value)
        if value.ndim <= 2:
            out[name] = value
            continue
        for index in np.ndindex(*value.shape[2:]):
            out[f"{name}[{','.join(map(str, index))}]"] = value[(slice(None), slice(None)) + index]
    return out


def metric_rows(metrics: dict[str, np.ndarray], seeds: list[int], first_iteration: int) -> list[dict]:
    """One row per iteration per seed (iteration-major) from a chunk's metrics ``name -> [S, C, ...]``.

    ``iteration`` counts training iterations completed (1-based), ``env_steps`` comes from the trainer. A NaN of a
    ``watched`` learner metric in an iteration whose ``nonfinite`` count is positive is a value (written "nan");
    every other NaN is "no value" (None).
    """
    flat = flatten_metrics(metrics)
    names = ["env_steps"] + sorted(k for k in flat if k != "env_steps")
    num_iters = flat["env_steps"].shape[1]
    bad = flat.get("nonfinite", np.zeros_like(flat["env_steps"])) > 0
    rows = []
    for c in range(num_iters):
        for s, seed in enumerate(seeds):
            row = {"seed": seed, "iteration": first_iteration + c + 1}
            row.update({k: _cell(flat[k][s, c], bad[s, c] and watched(k.split("[")[0])) for k in names})
            rows.append(row)
    return rows


def eval_columns(policies: tuple[str, ...]) -> list[str]:
    """The metric columns of ``eval.jsonl`` / ``eval.csv``: the primary policy's plain ``eval_<stat>``, then
    ``eval_<policy>_<stat>`` for every policy (``policies`` = ``cfg.eval_policies``, primary first)."""
    return [eval_key(stat) for stat in EVAL_STATS] + [eval_key(stat, p) for p in policies for stat in EVAL_STATS]


def eval_rows(result: dict[str, np.ndarray], seeds: list[int], iteration: int, env_steps,
              policies: tuple[str, ...]) -> list[dict]:
    """One row per seed from an evaluation's scalars ``name -> [S]``; ``eval_policy`` names the primary policy;
    ``nonfinite`` (where the program reports ``nonfinite_params``, as psjax.train's does) is true where the
    evaluated parameters held non-finite values (its figures are not a result)."""
    env_steps = np.broadcast_to(np.asarray(env_steps), (len(seeds),))
    bad = np.asarray(result["nonfinite_params"]) > 0 if "nonfinite_params" in result else None
    rows = []
    for s, seed in enumerate(seeds):
        row = {"seed": seed, "iteration": iteration, "env_steps": int(env_steps[s]), "eval_policy": policies[0]}
        row.update({k: _cell(result[k][s]) for k in eval_columns(policies)})
        if bad is not None:
            row["nonfinite"] = bool(bad[s])
        rows.append(row)
    return rows


def eval_label(cfg: TrainConfig, policy: str) -> str:
    """How figures and printed lines name an evaluation, e.g. ``sampled policy, 32 episodes x 2 seeds``."""
    return f"{POLICY_NAMES[policy]} policy, {cfg.eval_envs} episodes x {cfg.seeds} seed{'s' * (cfg.seeds > 1)}"


class RowLog:
    """``NAME.jsonl`` and ``NAME.csv`` in a run folder, appended in step, one row per line."""

    def __init__(self, run_dir: pathlib.Path, name: str):
        self.name = name
        self.jsonl = run_dir / f"{name}.jsonl"
        self.csv = run_dir / f"{name}.csv"

    def append(self, rows: list[dict]) -> None:
        if not rows:
            return
        columns = list(rows[0])
        new = not self.csv.exists() or self.csv.stat().st_size == 0
        if not new:
            with self.csv.open() as f:
                header = next(csv.reader(f))
            if header != columns:
                raise RuntimeError(f"{self.csv}: columns changed from {header} to {columns}")
        with self.jsonl.open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        with self.csv.open("a", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")  # one row per line, as in the .jsonl
            if new:
                writer.writerow(columns)
            writer.writerows(["" if r[c] is None else r[c] for c in columns] for r in rows)

    def truncate(self, num_rows: int) -> None:
        """Keep the first ``num_rows`` rows: drops what was written after the restored checkpoint."""
        for path, header in ((self.jsonl, 0), (self.csv, 1)):
            data = path.read_bytes() if path.exists() else b""
            lines = data.split(b"\n")[:-1]  # complete lines; a partly written last line is dropped
            keep = header + num_rows if num_rows else 0
            if len(lines) < keep:
                found = max(0, len(lines) - header)
                raise RuntimeError(f"{path} has {found} rows; the checkpoint needs {num_rows}")
            path.write_bytes(b"".join(line + b"\n" for line in lines[:keep]))

    def read(self) -> list[dict]:
        """The rows, non-finite values back as floats ("nan" -> nan), "no value" as None (``decode_row``)."""
        if not self.jsonl.exists():
            return []
        return [decode_row(json.loads(line)) for line in self.jsonl.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- checkpoints


def _manager(run_dir: pathlib.Path, create: bool):
    import orbax.checkpoint as ocp  # slow import, only when checkpoints are used

    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=create)
    return ocp.CheckpointManager((run_dir / "checkpoints").resolve(), options=options)


def _save(manager, chunk: int, runner, host: dict) -> None:
    """Checkpoint after ``chunk`` chunks: the vmapped runner and the host loop's state."""
    import orbax.checkpoint as ocp

    args = ocp.args.Composite(runner=ocp.args.StandardSave(runner), host=ocp.args.JsonSave(host))
    manager.save(chunk, args=args)


@functools.lru_cache(maxsize=1)
def psjax_version() -> str:
    """This psjax's version as checkpoints and summary.json record it: the package's version, plus ``+g<commit>``
    when it runs from a git checkout (uncommitted changes are not told apart)."""
    import subprocess
    from importlib import metadata

    try:
        version = metadata.version("psjax")
    except metadata.PackageNotFoundError:
        version = "unknown"
    root = pathlib.Path(__file__).resolve().parent.parent
    if (root / ".git").exists():
        try:  # read-only: never touches the index
            out = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=root, capture_output=True,
                                 text=True, timeout=10)
            version += f"+g{out.stdout.strip()}" if out.returncode == 0 and out.stdout.strip() else ""
        except (OSError, subprocess.SubprocessError):
            pass
    return version


class Restored(NamedTuple):
    """A checkpoint read back (``restore_checkpoint``)."""

    runner: Any
    host: dict  # chunk (chunks completed), iteration, seeds, eval_key_base, psjax_version (since 2026-12-07)
    step: int  # the checkpoint's step (= host["chunk"])
    skipped: list[tuple[int, str]]  # newer checkpoints that did not read back, (step, why), newest first


def restore_checkpoint(run_dir, abstract_runner, step: int | None = None) -> Restored:
    """The newest checkpoint of a run folder that reads back (only ``step`` if given).

    ``abstract_runner``: the vmapped runner's structure, e.g.
    ``jax.eval_shape(jax.vmap(program.init), seed_keys(cfg.seed, cfg.seeds))``. A checkpoint that does not read
    back is either damaged (orbax's stored array tree matches ``abstract_runner`` or cannot be read, yet the arrays
    do not restore: files cut short, overwritten or missing) or of another layout (the stored tree differs:
    another psjax version, an edited config.yaml). Newer ones that fail are skipped and named in ``skipped``; when
    none reads back, a ConfigError says which of the two it is, naming each checkpoint's error.
    """
    run_dir = pathlib.Path(run_dir)
    if not (run_dir / "checkpoints").is_dir():
        raise ConfigError(f"{run_dir} has no checkpoints/ to resume from")
    manager = _manager(run_dir, create=False)
    failures = []  # (step, "damaged" | "layout", why, the psjax version its host state names)
    try:
        steps = sorted(manager.all_steps(), reverse=True) if step is None else [step]
        if not steps:
            raise ConfigError(f"{run_dir / 'checkpoints'} holds no complete checkpoint")
        for s in steps:
            try:
                out = _restore(manager, s, abstract_runner)
            except (ValueError, KeyError, OSError) as error:  # orbax / tensorstore / json: file or layout trouble
                failures.append((s, *_diagnose(manager, s, abstract_runner, error)))
                continue
            return Restored(out["runner"], out["host"], s, [(f[0], f[2]) for f in failures])
    finally:
        manager.close()
    raise _layout_error(run_dir, failures)


def load_checkpoint(run_dir, abstract_runner, step: int | None = None) -> tuple[Any, dict]:
    """The runner and host state of ``restore_checkpoint`` (the newest checkpoint that reads back unless ``step``);
    a damaged newer one skipped is named in a ``WARNING:`` line on stderr."""
    restored = restore_checkpoint(run_dir, abstract_runner, step)
    for s, why in restored.skipped:
        print(f"WARNING: {pathlib.Path(run_dir) / 'checkpoints' / str(s)} {why}; read checkpoint {restored.step} "
              "instead", file=sys.stderr)
    return restored.runner, restored.host


def _restore(manager, step: int, abstract_runner) -> dict:
    """``{"runner", "host"}`` of checkpoint ``step``. A checkpoint written before a runner field that holds no
    arrays existed (``Runner.point``, added with sweeps; ``{}`` outside one) lacks it, which orbax refuses as a
    structure mismatch: such fields are then restored as the abstract runner has them, so older runs resume."""
    import orbax.checkpoint as ocp

    def restore(item):
        return manager.restore(step, args=ocp.args.Composite(runner=ocp.args.StandardRestore(item),
                                                             host=ocp.args.JsonRestore()))

    try:
        return restore(abstract_runner)
    except ValueError as error:
        fields = getattr(abstract_runner, "_fields", ())
        empty = [f for f in fields if not jax.tree.leaves(getattr(abstract_runner, f))]
        if not empty:
            raise
        try:
            out = restore({f: getattr(abstract_runner, f) for f in fields if f not in empty})
        except ValueError:
            raise error from None
        runner = type(abstract_runner)(**out["runner"], **{f: getattr(abstract_runner, f) for f in empty})
        return {"runner": runner, "host": out["host"]}


def _layout(tree) -> dict[tuple[str, ...], tuple[int, ...]]:
    """``{key path: shape}`` of a tree's arrays, keys as plain strings (a NamedTuple field, a dict key and orbax's
    stored dict key of the same field compare equal)."""
    def name(k):
        return str(next((getattr(k, a) for a in ("key", "name", "idx") if hasattr(k, a)), k))

    return {tuple(map(name, path)): tuple(getattr(leaf, "shape", ()))
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _diagnose(manager, step: int, abstract_runner, error: Exception) -> tuple[str, str, str | None]:
    """Why checkpoint ``step`` did not restore: ``("layout" | "damaged", one line, its psjax version or None)``.
    Layout: orbax's stored array tree (``runner/_METADATA`` and the arrays' headers) reads back and differs from
    ``abstract_runner``; damaged: it reads back equal (the array data is what failed) or cannot be read at all."""
    import orbax.checkpoint as ocp

    try:
        host = manager.restore(step, args=ocp.args.Composite(host=ocp.args.JsonRestore()))["host"]
        version = host.get("psjax_version")
    except Exception:  # noqa: BLE001 - a damaged host state only means no version to name
        version = None
    try:
        stored = _layout(getattr(m := ocp.StandardCheckpointHandler().metadata(
            pathlib.Path(manager.directory) / str(step) / "runner"), "tree", m))
    except Exception:  # noqa: BLE001 - unreadable metadata is damage, whatever orbax raises
        stored = None
    built = _layout(abstract_runner)
    if stored is None or stored == built:
        text = " ".join(f"{type(error).__name__}: {error}".split())
        return "damaged", f"is damaged ({text[:300]})", version
    diffs = [f"{'.'.join(p)}: stored {stored.get(p, 'nothing')}, built {built.get(p, 'nothing')}"
             for p in sorted(stored.keys() | built.keys()) if stored.get(p) != built.get(p)]
    more = f"; {len(diffs) - 1} more" if len(diffs) > 1 else ""
    return "layout", f"holds other arrays than this psjax builds from the run's config ({diffs[0]}{more})", version


def _layout_error(run_dir: pathlib.Path, failures: list[tuple[int, str, str, str | None]]) -> ConfigError:
    """No checkpoint read back (``failures``: ``(step, kind, why, version)``, newest first): every one of another
    layout -> the version message (naming the versions); otherwise the checkpoints are damaged."""
    where = run_dir / "checkpoints"
    each = "; ".join(f"checkpoint {s} {why}" for s, _, why, _ in failures)
    if any(kind == "damaged" for _, kind, _, _ in failures):
        return ConfigError(f"the checkpoints in {where} are damaged, none can be resumed: {each}. The run's logs "
                           "and evaluations up to them stay readable; train it again to finish it")
    versions = sorted({v or "a psjax that did not record its version (before 2026-12-07)" for *_, v in failures})
    written = " and ".join(versions)
    cause = (f"it was written by another psjax version ({written}; this is {psjax_version()})"
             if psjax_version() not in versions else
             f"it was written by this psjax version ({written}), so the run's config.yaml or psjax's code changed "
             "since without a version change")
    return ConfigError(
        f"the checkpoint's arrays do not match what this psjax trains from the run's config: {cause} (for example "
        "one whose Q learners' replay items kept a final observation for every step, before 2026-12-02) and cannot "
        f"be resumed by this one; the run's logs and evaluations stay readable, train it again to finish it. {each}")


# --------------------------------------------------------------------------- outputs


def _new_run_dir(cfg: TrainConfig) -> pathlib.Path:
    """Create ``out_dir/<run_name or env-alg-learner-timestamp>``; never reuse an existing folder."""
    out = pathlib.Path(cfg.out_dir)
    if cfg.run_name:
        run_dir = out / cfg.run_name
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ConfigError(f"run folder {str(run_dir)!r} exists; resume it with resume={run_dir} "
                              "or pick another run_name")
    else:
        base = f"{cfg.env.name}-{cfg.alg}-{cfg.learner_name}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir, n = out / base, 1
        while run_dir.exists():
            run_dir, n = out / f"{base}-{n}", n + 1
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return run_dir


def _seed_table(rows: list[dict], column: str, num_seeds: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows (iteration-major, ``num_seeds`` per iteration) to ``x[I]`` (env steps) and ``y[I, S]``."""
    n = len(rows) // num_seeds * num_seeds
    rows = rows[:n]
    x = np.array([r["env_steps"] for r in rows[::num_seeds]], dtype=float)
    # an evaluation of non-finite parameters is not a result: left out like a missing value
    y = np.array([np.nan if r.get(column) is None or r.get("nonfinite") is True else r[column] for r in rows],
                 dtype=float)
    return x, y.reshape(-1, num_seeds)


def _band(ax, x: np.ndarray, y: np.ndarray, label: str, **style) -> None:
    """Mean over seeds with a min-max band; iterations where no seed has a value are skipped."""
    keep = ~np.all(np.isnan(y), axis=1)
    if not keep.any():
        return
    x, y = x[keep], y[keep]
    line = ax.plot(x, np.nanmean(y, axis=1), label=label, **style)[0]
    ax.fill_between(x, np.nanmin(y, axis=1), np.nanmax(y, axis=1), color=line.get_color(), alpha=0.2, lw=0)


def env_spec(cfg: TrainConfig):
    """The ``EnvSpec`` of ``cfg``'s environment (built once per env config; no compilation): its ``has_won`` says
    whether the win rate is shown, plotted and summarised, its ``headline`` which figure ``compare`` ranks by."""
    return _env_spec(cfg.env)


@functools.lru_cache(maxsize=16)
def _env_spec(env_cfg):
    from psjax.envs import make_env

    return make_env(env_cfg).spec


def plot_curves(run_dir: pathlib.Path, cfg: TrainConfig) -> pathlib.Path:
    """``curve.png``: training and evaluation return vs env steps (+ win rate where the env defines winning,
    ``EnvSpec.has_won``), one evaluation line per policy of ``cfg.eval_policies``, its legend naming the policy,
    episodes and seeds."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, works headless

    has_win = env_spec(cfg).has_won
    train, evals = RowLog(run_dir, "metrics").read(), RowLog(run_dir, "eval").read()
    fig = Figure(figsize=(11 if has_win else 6, 4), layout="constrained")
    axes = fig.subplots(1, 2 if has_win else 1, squeeze=False)[0]
    panels = [(axes[0], "return", "return", "return")]
    if has_win:
        panels.append((axes[1], "won", "won", "win rate"))
    for ax, train_col, stat, ylabel in panels:
        if train:
            _band(ax, *_seed_table(train, train_col, cfg.seeds), "training (explore)")
        for policy, marker in zip(cfg.eval_policies, "os"):
            if evals:
                _band(ax, *_seed_table(evals, eval_key(stat, policy), cfg.seeds),
                      f"eval {ylabel} ({eval_label(cfg, policy)})", marker=marker, ms=3)
        ax.set_xlabel("env steps per seed")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    fig.suptitle(f"{cfg.env.name} {cfg.alg} {cfg.learner_name}: mean of {cfg.seeds} seed(s), min-max band")
    path = run_dir / "curve.png"
    fig.savefig(path, dpi=120)
    return path


def summarize(run_dir: pathlib.Path, cfg: TrainConfig, info: dict) -> dict:
    """``summary.json``: ``info`` (param count, timing) plus the final evaluation per seed and mean.

    ``final_eval.policy`` names the policy of the plain ``eval_return`` / ``eval_won`` / ``eval_length``
    figures (the primary one), ``final_eval.policies`` every evaluated policy (each also under
    ``eval_<policy>_<stat>``), ``final_eval.episodes_per_seed`` the episodes behind each figure and seed,
    ``final_eval.nonfinite_seeds`` the seeds whose evaluated parameters were non-finite (not a result).
    ``nonfinite`` (``nonfinite_event``): the first env step, iteration, seeds and quantities where the run went
    non-finite, from metrics.jsonl; ``nonfinite_first_env_step`` is that step, None if it never did.
    """
    columns = eval_columns(cfg.eval_policies)
    evals = RowLog(run_dir, "eval").read()[-cfg.seeds:]
    per_seed = [{k: r[k] for k in ("seed", "env_steps", *columns)} | {"nonfinite": bool(r.get("nonfinite"))}
                for r in evals]
    mean = {}
    for k in columns:
        values = [r[k] for r in per_seed if r[k] is not None]
        mean[k] = sum(values) / len(values) if values else None
    event = nonfinite_event(RowLog(run_dir, "metrics").read())
    summary = {
        "env": cfg.env.name, "alg": cfg.alg, "learner": cfg.learner_name,
        "seeds": list(range(cfg.seed, cfg.seed + cfg.seeds)),
        "has_win": env_spec(cfg).has_won,  # EnvSpec.has_won: eval_won is meaningful (cli, compare, export)
        "headline": env_spec(cfg).headline,  # what compare's metric=auto ranks by: "won" or "return"
        "team_return": reported_return(env_spec(cfg)),  # the return is the sum or the mean over agents
        **info,
        "on_nonfinite": cfg.on_nonfinite,
        "nonfinite_first_env_step": event["env_step"] if event else None,
        "nonfinite": event,
        "final_eval": {"policy": cfg.eval_policies[0], "policies": list(cfg.eval_policies),
                       "episodes_per_seed": cfg.eval_envs, "per_seed": per_seed, "mean": mean,
                       "nonfinite_seeds": [r["seed"] for r in per_seed if r["nonfinite"]]},
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def nonfinite_event(rows: list[dict]) -> dict | None:
    """Where a run first went non-finite, from its metric rows (``RowLog.read``, iteration-major): ``{"env_step",
    "iteration", "seeds": [the seeds non-finite then], "quantities": [what was, e.g. "loss", "params"],
    "ever_seeds": [every seed that went non-finite at any time]}``; None if no row has ``nonfinite`` > 0."""
    bad = [r for r in rows if (r.get("nonfinite") or 0) > 0]
    if not bad:
        return None
    first = [r for r in bad if r["iteration"] == bad[0]["iteration"]]
    quantities = sorted({q for r in first for q in nonfinite_quantities(r)})
    return {"env_step": int(first[0]["env_steps"]), "iteration": int(first[0]["iteration"]),
            "seeds": [r["seed"] for r in first], "quantities": quantities,
            "ever_seeds": sorted({r["seed"] for r in bad})}


def nonfinite_message(event: dict) -> str:
    """``non-finite values from env step 4,096 (iteration 2, seed 0): grad_norm, loss, params``."""
    seeds = event["seeds"]
    where = f"iteration {event['iteration']}, seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}"
    return (f"non-finite values from env step {event['env_step']:,} ({where}): "
            f"{', '.join(event['quantities']) or 'the learner metrics'}")


class NonFiniteError(RuntimeError):
    """``on_nonfinite=stop``: training produced non-finite values; the run folder keeps the last good checkpoint."""


def _timing(times: list[tuple[int, float]], compile_s: float, steps_per_iter: int) -> dict:
    """Throughput (env steps per second, all seeds) from ``(iterations, seconds)`` of this session's
    chunks, which run already compiled; ``compile_s`` is the chunk programs' compile time, measured
    apart (``jit(...).lower(...).compile()``)."""
    total = sum(t for _, t in times)
    sps = sum(n for n, _ in times) * steps_per_iter / total if total else None
    return {"compile_s": compile_s, "steps_per_sec": sps}


# --------------------------------------------------------------------------- the loop


class PointRuns(NamedTuple):
    """A run's rows grouped by sweep point (point-major, ``seeds`` rows each): each point's plain config and run
    folder; without a sweep one point, the run itself."""

    cfgs: list[TrainConfig]
    dirs: list[pathlib.Path]
    columns: Any  # {field path: [points x seeds]} each row's swept values (``Runner.point``); () without a sweep

    def rows(self, tree: Any, p: int) -> Any:
        """Point ``p``'s rows of a tree whose leaves lead with the rows axis."""
        size = len(jax.tree.leaves(tree)[0]) // len(self.dirs)
        return jax.tree.map(lambda x: x[p * size:(p + 1) * size], tree)


def point_runs(run_dir: pathlib.Path, cfg: TrainConfig, create: bool) -> PointRuns:
    """The run folder of every point of ``cfg``'s sweep (created with their config.yaml and the run's
    ``sweep.json`` when ``create``); the run folder itself without a sweep."""
    if not cfg.sweep:
        return PointRuns([cfg], [run_dir], ())
    points = sweep.points(cfg)
    names = [sweep.folder_name(i, point) for i, point in enumerate(points)]
    cfgs = [sweep.point_config(set_field(cfg, "run_name", name), point) for name, point in zip(names, points)]
    dirs = [run_dir / name for name in names]
    if create:
        for point_cfg, point_dir in zip(cfgs, dirs):
            point_dir.mkdir(exist_ok=True)
            (point_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(point_cfg), sort_keys=False))
        listing = [{"index": i, "label": sweep.label(point), "values": point, "folder": name}
                   for i, (name, point) in enumerate(zip(names, points))]
        (run_dir / "sweep.json").write_text(json.dumps({"sweep": cfg.sweep, "mode": cfg.sweep_mode,
                                                        "seeds": cfg.seeds, "points": listing}, indent=2) + "\n")
    columns = {path: np.repeat(col, cfg.seeds) for path, col in sweep.columns(cfg).items()}
    return PointRuns(cfgs, dirs, columns)


def use_compile_cache(folder: str, limit_gb: float) -> pathlib.Path | None:
    """Point JAX's persistent compilation cache at ``folder`` (``~`` expanded), at most ``limit_gb`` GiB (least
    recently used programs removed beyond it): a program compiled once, by any earlier process with the same
    JAX and device, is loaded instead of compiled. Returns the folder; None when ``folder`` is empty (JAX's
    own setting left as it is) or cannot be created (training goes on without the cache)."""
    if not folder:
        return None
    path = pathlib.Path(folder).expanduser().resolve()
    limit = int(limit_gb * 2**30)
    if jax.config.jax_compilation_cache_dir == str(path) and jax.config.jax_compilation_cache_max_size == limit:
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"psjax: compile_cache={folder} unusable ({e}); compiling without it", file=sys.stderr)
        return None
    from jax.experimental.compilation_cache import compilation_cache

    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_compilation_cache_max_size", limit)
    compilation_cache.reset_cache()  # JAX opens its cache once per process: reopen it at this folder
    return path


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
    mesh = None if sharding else _data_mesh(cfg)
    memory_est = memory.estimate(cfg, sharding.mesh.size, rows=num_rows) if sharding else \
        memory.estimate(cfg, rows=num_rows, data_devices=mesh.size)
    used = (sharding.mesh if sharding else mesh).devices.flat  # this process's devices share its host's memory
    memory_budget = memory.check(memory_est, cfg.memory_gb, cfg,
                                 host_devices=sum(d.process_index == jax.process_index() for d in used))
    check_sweep(cfg)  # swept fields the program cannot trace, by name
    if resume is None:
        run_dir = _new_run_dir(cfg) if is_primary() else pathlib.Path(cfg.out_dir) / cfg.run_name
    points = point_runs(run_dir, cfg, create=resume is None and is_primary())
    if multi:  # the folders exist before any process reads or checkpoints into them
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("psjax run folder")
    make_program = make_program or _default_make_program

    # a resumed run keeps the plan it started (or was last continued) with, extended when steps= asks for more
    plan = chunk_plan(cfg.num_iterations, cfg.eval_every) if resume is None else \
        extend_plan(_recorded_plan(run_dir) or chunk_plan(saved.num_iterations, saved.eval_every), cfg.num_iterations)
    programs = {plan[0]: make_program(cfg, plan[0])}
    main = programs[plan[0]]
    if main.num_iterations != sum(plan):
        raise RuntimeError(f"program.num_iterations={main.num_iterations} but the config gives {sum(plan)}")
    starts = np.cumsum([0] + plan).tolist()  # iterations completed before each chunk
    seeds = list(range(cfg.seed, cfg.seed + cfg.seeds))
    keys = np.tile(seed_keys(cfg.seed, cfg.seeds), (len(points.dirs), 1))  # every point from the same seeds
    place = _placement(sharding or mesh, main, keys, points.columns)
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
            _check_same_shapes(*(jax.eval_shape(jax.vmap(program.init), keys, points.columns)
                                 for program in (main, make_program(saved, plan[0]))), changes)
        if "steps" in changes:  # a longer run: the same program, unless something in it depends on the total
            _check_total_free(main, make_program(set_field(cfg, "steps", saved.steps), plan[0]), keys[0],
                              jax.tree.map(lambda c: c[0], points.columns), changes["steps"])
        if multi:  # restored straight into every process's rows
            abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract)
        restored = restore_checkpoint(run_dir, abstract)
        runner, host = restored.runner, restored.host
        runner = runner if multi else place.put(runner)
        done, eval_base = host["chunk"], np.asarray(host["eval_key_base"], dtype=np.uint32)
        if host["seeds"] != seeds or host["iteration"] != starts[done]:
            raise RuntimeError(f"checkpoint {host} does not match the config's seeds / chunk plan")
        resumed_from = _resume_report(run_dir, restored, starts, main.steps_per_iteration, plan, saved, cfg, multi)
        for metrics_log, eval_log in zip(metrics_logs, eval_logs) if is_primary() else ():
            metrics_log.truncate(starts[done] * len(seeds))
            eval_log.truncate((done + 1) * len(seeds))  # +1: the evaluation before training
        backends = [open_backends(c, d, seeds, resume_step=starts[done] * main.steps_per_iteration)
                    for c, d in zip(points.cfgs, points.dirs)]
        if changes and is_primary():
            _record_changes(run_dir, cfg, points, changes, done, starts[done] * main.steps_per_iteration,
                            plan=plan if "steps" in changes else None)
    else:
        done, eval_base, resumed_from = 0, eval_key_base(keys), None
        backends = [open_backends(c, d, seeds, resume_step=None) for c, d in zip(points.cfgs, points.dirs)]
        runner = init(*to_devices((keys, points.columns), sharding))
        result = to_host(evaluate(runner, to_devices(eval_keys(eval_base, 0), sharding)))
        log(eval_logs, [eval_rows(points.rows(result, p), seeds, 0, 0, cfg.eval_policies) for p in point_ids])
    manager = _manager(run_dir, create=True) if cfg.checkpoint else None
    if manager is not None and resume is None:
        _save(manager, 0, runner, _host_state(0, 0, seeds, eval_base))
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
                _save(manager, j + 1, runner, _host_state(j + 1, starts[j + 1], seeds, eval_base))
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
        "changed_on_resume": _read_changes(run_dir),  # settings changed by resume= (resumes.jsonl)
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


# what resume= may change besides the learner's own fields (host-side only: no array, no result changes)
RESUME_HOST_FIELDS = ("on_nonfinite", "progress", "memory_gb", "compile_cache", "compile_cache_gb",
                      "checkpoint_every_s")


def resume_changes(saved: TrainConfig, cfg: TrainConfig, run_dir) -> dict[str, tuple[Any, Any]]:
    """``{field: (saved value, new value)}`` for a resumed run given ``cfg`` instead of its saved config. Allowed:
    ``RESUME_HOST_FIELDS`` and the learner's own section (``q.*`` / ``ac.*``), except fields that change the chunk
    plan (``num_envs``, ``rollout_len``); fields that change the checkpoint's array shapes are refused once the
    program is built (``_check_same_shapes``). Anything else raises a ConfigError naming it."""
    from psjax.schema import flatten

    old, new = flatten(to_dict(_without_process(saved))), flatten(to_dict(_without_process(cfg)))
    changes = {k: (old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)}
    section = "q." if saved.is_value_based else "ac."
    refused = [k for k in changes if k not in RESUME_HOST_FIELDS and k != "steps" and not k.startswith(section)]
    if "steps" in changes and not refused:
        check_more_steps(saved, cfg, run_dir)
    if chunk_plan(cfg.num_iterations, cfg.eval_every) != chunk_plan(saved.num_iterations, saved.eval_every) or \
            cfg.steps_per_iteration != saved.steps_per_iteration:
        refused += [k for k in changes if k.endswith((".num_envs", ".rollout_len")) and k not in refused]
    if refused:
        shown = ", ".join(f"{k}={changes[k][1]!r} (saved {changes[k][0]!r})" for k in refused)
        raise ConfigError(f"the config differs from {run_dir}'s in {shown}, which resume= cannot change; allowed on "
                          f"resume: {', '.join(RESUME_HOST_FIELDS)}, a larger steps, "
                          f"and {section}* fields that keep the checkpoint's shapes and the chunk plan (e.g. "
                          f"{section}lr, {section}gamma, {section}max_grad_norm)")
    return changes


def check_more_steps(saved: TrainConfig, cfg: TrainConfig, run_dir) -> None:
    """ConfigError unless ``cfg.steps`` continues the saved run: more iterations, and no learning rate that decays
    over the total (``lr_decay``: the run so far followed the schedule of its own total). The CLI asks it of any
    ``steps=`` given with ``resume=``, an equal one included."""
    spi = saved.steps_per_iteration
    if cfg.num_iterations <= saved.num_iterations:
        raise ConfigError(f"resume={run_dir} steps={cfg.steps}: the run already has steps={saved.steps} "
                          f"({saved.num_iterations} iterations of {spi} env steps per seed); resume= continues a run "
                          f"to a larger steps= only, at least {saved.num_iterations * spi + 1}")
    section = "q" if saved.is_value_based else "ac"
    if saved.learner_cfg.lr_decay or cfg.learner_cfg.lr_decay:
        raise ConfigError(f"resume={run_dir} steps={cfg.steps}: the run has {section}.lr_decay=true, a learning rate "
                          f"decaying to zero over its total of steps={saved.steps}, so continuing it would not equal a "
                          f"run started with steps={cfg.steps}; train a new run with steps={cfg.steps}")


def _check_total_free(program, same_with_old_steps, key, point, steps: tuple[int, int]) -> None:
    """ConfigError unless the training chunk and the evaluation of ``program`` (the longer run) are the same
    computation as those of ``same_with_old_steps`` (its config with the run's old ``steps``): the same jaxpr and
    constants, so nothing they compute depends on the total, and the continued run equals one started longer."""
    def traced(p):
        runner = jax.eval_shape(p.init, key, point)
        chunk = jax.make_jaxpr(p.run_chunk)(runner)
        evaluation = jax.make_jaxpr(p.evaluate)(runner, jax.ShapeDtypeStruct(np.shape(key), np.asarray(key).dtype))
        text = re.sub(r" at 0x[0-9a-f]+", "", f"{chunk}\n{evaluation}")  # function reprs carry their address
        return text, [np.asarray(c) for c in (*chunk.consts, *evaluation.consts)]

    (text, consts), (old_text, old_consts) = traced(program), traced(same_with_old_steps)
    if text != old_text or len(consts) != len(old_consts) or not all(
            a.shape == b.shape and np.array_equal(a, b) for a, b in zip(consts, old_consts)):
        raise ConfigError(
            f"steps={steps[1]} on resume: the training program differs from the run's (steps={steps[0]}) beyond its "
            "length, so something it computes depends on the total (in psjax: the learner's lr_decay, a learning "
            "rate decaying to zero over the total; Kaleidoscope's resets, none within the last "
            "sharing.kal_reset_interval env steps of training) and the continued run would not equal a run "
            f"started with steps={steps[1]}; train a new run with steps={steps[1]}")


def _resume_report(run_dir: pathlib.Path, restored: Restored, starts: list[int], spi: int, plan: list[int],
                   saved: TrainConfig, cfg: TrainConfig, multi: bool) -> dict:
    """Say where a resumed run continues from (stderr), warn about the damaged newer checkpoints it skipped and set
    them aside in ``checkpoints-damaged/`` (the next checkpoints take their steps); the record for summary.json."""
    def where(step):
        return f"checkpoint {step} (chunk {step}/{len(plan)}, env step {starts[min(step, len(plan))] * spi:,} per seed)"

    done = restored.step
    if is_primary():
        for step, why in restored.skipped:
            aside = run_dir / "checkpoints-damaged" / str(step)
            n = 1
            while aside.exists():
                aside, n = aside.with_name(f"{step}-{n}"), n + 1
            aside.parent.mkdir(exist_ok=True)
            shutil.move(str(run_dir / "checkpoints" / str(step)), str(aside))
            print(f"WARNING: {where(step)} {why}; resuming from the newest intact one, {where(done)}; the damaged one "
                  f"is kept in {aside}", file=sys.stderr)
        longer = (f"; steps={saved.steps} -> {cfg.steps}: {len(plan) - done} more chunk(s) of the run's "
                  f"{plan[0]} iterations, so evaluations stay every {plan[0] * spi:,} env steps (eval_every is not "
                  "recomputed from the new total)" if cfg.steps != saved.steps else "")
        print(f"psjax: resuming {run_dir} from {where(done)}, iteration {starts[done]}{longer}", file=sys.stderr)
    if multi:  # every process sees the damaged checkpoints set aside before any writes one
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("psjax damaged checkpoints")
    return {"checkpoint": done, "chunk": done, "iteration": starts[done], "env_step": starts[done] * spi,
            "damaged": [{"checkpoint": step, "error": why} for step, why in restored.skipped]}


def _recorded_plan(run_dir: pathlib.Path) -> list[int] | None:
    """The chunk plan a run was last continued with by a larger ``steps=`` (resumes.jsonl), None if never."""
    plans = [entry["plan"] for entry in _read_changes(run_dir) if "plan" in entry]
    return plans[-1] if plans else None


def _check_same_shapes(abstract, saved_abstract, changes: dict) -> None:
    """ConfigError unless the runner of the changed config has the saved config's structure, shapes and dtypes."""
    def layout(tree):
        return jax.tree.structure(tree), [(a.shape, a.dtype) for a in jax.tree.leaves(tree)]

    if layout(abstract) != layout(saved_abstract):
        raise ConfigError(f"resume with {', '.join(f'{k}={v[1]!r}' for k, v in changes.items())}: the checkpoint's "
                          "arrays have other shapes or structure than this config's; allowed on resume: learner "
                          "fields that keep them (e.g. lr, gamma, max_grad_norm, epsilons), on_nonfinite, progress")


def _record_changes(run_dir: pathlib.Path, cfg: TrainConfig, points, changes: dict, chunk: int, env_step: int,
                    plan: list[int] | None = None):
    """Rewrite the config.yaml files with the changed settings and log the change in ``resumes.jsonl`` (with the
    chunk plan the run continues with where ``steps`` changed: ``chunk_plan`` of the new total would cut it
    elsewhere)."""
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    for point_cfg, point_dir in zip(points.cfgs, points.dirs) if cfg.sweep else ():
        (point_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(point_cfg), sort_keys=False))
    entry = {"chunk": chunk, "env_step": env_step, "changed": {k: list(v) for k, v in changes.items()}}
    if plan is not None:
        entry["plan"] = plan
    with (run_dir / "resumes.jsonl").open("a") as f:
        f.write(json.dumps(entry) + "\n")


def _read_changes(run_dir: pathlib.Path) -> list[dict]:
    path = pathlib.Path(run_dir) / "resumes.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


class Placement(NamedTuple):
    """The program's functions compiled onto the devices (``cfg.parallel``, ``psjax.shard``)."""

    devices: int
    init: Callable  # (keys [R, 2], sweep columns) -> runner
    evaluate: Callable  # (runner, keys [R, 2]) -> scalars [R]
    chunk: Callable  # run_chunk -> its jitted form, runner -> (runner, metrics), the runner donated
    counted: Callable  # run_counted -> its jitted form, (runner, count) -> (runner, metrics), the runner donated
    put: Callable  # a restored runner onto the devices


def _placement(where, main, keys, columns) -> Placement:
    """parallel=seeds (``where``: the rows' NamedSharding): every function vmapped over the rows, split over its
    devices; envs (``where``: ``_data_mesh``'s Mesh): each run's environments, agent memory and replay items split
    over the mesh's devices, the rest replicated."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    if not isinstance(where, Mesh):
        return Placement(where.mesh.size, jit_over_seeds(main.init, where, num_args=2),
                         jit_over_seeds(main.evaluate, where, num_args=2),
                         lambda run_chunk: jit_over_seeds(run_chunk, where, donate=True),
                         lambda run_counted: jit_over_seeds(run_counted, where, num_args=2, donate=True, shared=1),
                         lambda runner: jax.device_put(runner, where))
    mesh = where
    specs = data_parallel_specs(jax.eval_shape(jax.vmap(main.init), keys, columns), DATA_AXIS)
    whole = PartitionSpec()
    named = jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
    return Placement(mesh.size, jit_data_parallel(main.init, mesh, (whole, whole), specs),
                     jit_data_parallel(main.evaluate, mesh, (specs, whole), whole),
                     lambda run_chunk: jit_data_parallel(run_chunk, mesh, (specs,), (specs, whole), donate=True),
                     lambda run_counted: jit_data_parallel(run_counted, mesh, (specs, whole), (specs, whole),
                                                           donate=True, shared=1),
                     lambda runner: jax.device_put(runner, named))


def _data_mesh(cfg: TrainConfig):
    """The devices one run's envs and replay items are split over (``parallel=envs``)."""
    lc = cfg.learner_cfg
    has_buffer = cfg.is_value_based and cfg.learner_name != "pqn"
    return data_mesh(lc.num_envs, lc.buffer_size if has_buffer else 0, cfg.devices)


def _without_process(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` without the fields that differ between the processes of one distributed run."""
    for name, value in (("coordinator", ""), ("num_processes", 0), ("process_id", -1)):
        cfg = set_field(cfg, name, value)
    return cfg


def _host_state(chunk: int, iteration: int, seeds: list[int], eval_base: np.ndarray) -> dict:
    """What the host loop needs besides the runner to continue exactly where it stopped."""
    return {"chunk": chunk, "iteration": iteration, "seeds": seeds, "eval_key_base": eval_base.tolist(),
            "psjax_version": psjax_version()}


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
