"""``run(resume=folder)``: what a resumed run may change (host settings, the learner's own fields, a larger
``steps``), the checks that a change keeps the checkpoint's arrays and the program, the report of where it
continues, and ``resumes.jsonl``, the record of changes."""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import sys
from typing import Any

import jax
import numpy as np
import yaml

from psjax.checkpoints import Restored
from psjax.config import ConfigError, TrainConfig, to_dict
from psjax.plan import chunk_plan
from psjax.schema import set_field
from psjax.shard import is_primary

# what resume= may change besides the learner's own fields (host-side only: no array, no result changes)
# settings that change no figure of a run (its arrays, metrics and evaluations), only how the host runs it
OUTPUT_FREE_FIELDS = ("progress", "memory_gb", "compile_cache", "compile_cache_gb", "checkpoint_every_s")
# host settings a resumed run may change: those, and what to do on non-finite values (the figures then differ only
# where the old setting would have stopped the run)
RESUME_HOST_FIELDS = ("on_nonfinite", *OUTPUT_FREE_FIELDS)


def resume_changes(saved: TrainConfig, cfg: TrainConfig, run_dir) -> dict[str, tuple[Any, Any]]:
    """``{field: (saved value, new value)}`` for a resumed run given ``cfg`` instead of its saved config. Allowed:
    ``RESUME_HOST_FIELDS`` and the learner's own section (``q.*`` / ``ac.*``), except fields that change the chunk
    plan (``num_envs``, ``rollout_len``); fields that change the checkpoint's array shapes are refused once the
    program is built (``check_same_shapes``). Anything else raises a ConfigError naming it."""
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


def check_total_free(program, same_with_old_steps, key, point, steps: tuple[int, int]) -> None:
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


def resume_report(run_dir: pathlib.Path, restored: Restored, starts: list[int], spi: int, plan: list[int],
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


def recorded_plan(run_dir: pathlib.Path) -> list[int] | None:
    """The chunk plan a run was last continued with by a larger ``steps=`` (resumes.jsonl), None if never."""
    plans = [entry["plan"] for entry in read_changes(run_dir) if "plan" in entry]
    return plans[-1] if plans else None


def check_same_shapes(abstract, saved_abstract, changes: dict) -> None:
    """ConfigError unless the runner of the changed config has the saved config's structure, shapes and dtypes."""
    def layout(tree):
        return jax.tree.structure(tree), [(a.shape, a.dtype) for a in jax.tree.leaves(tree)]

    if layout(abstract) != layout(saved_abstract):
        raise ConfigError(f"resume with {', '.join(f'{k}={v[1]!r}' for k, v in changes.items())}: the checkpoint's "
                          "arrays have other shapes or structure than this config's; allowed on resume: learner "
                          "fields that keep them (e.g. lr, gamma, max_grad_norm, epsilons), on_nonfinite, progress")


def record_changes(run_dir: pathlib.Path, cfg: TrainConfig, points, changes: dict, chunk: int, env_step: int,
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


def read_changes(run_dir: pathlib.Path) -> list[dict]:
    path = pathlib.Path(run_dir) / "resumes.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _without_process(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` without the fields that differ between the processes of one distributed run."""
    for name, value in (("coordinator", ""), ("num_processes", 0), ("process_id", -1)):
        cfg = set_field(cfg, name, value)
    return cfg
