"""Train the runs a comparison needs: one run per method (its seeds vmapped inside one compiled program,
``psjax.run``) into one folder, then ``psjax.compare.report`` on them. ``make compare`` and
``python -m psjax compare-sweep`` call ``train_methods``; ``psjax.reproduce`` plans its declared comparisons with
``method_configs`` and ``folder_step``. (``psjax.sweep`` is another thing: hyperparameter points in one program.)

A comparison's folder is resumable: the same command again reuses finished runs and continues a stopped one from
its checkpoint, and refuses a folder that holds another config's run.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Callable, Sequence

from psjax.compare import config_diff, report
from psjax.fields import ConfigError
from psjax.resume import OUTPUT_FREE_FIELDS
from psjax.schema import flatten

DEFAULT_ENV = {"env": "lbf", "scenario": "8x8-2p-2f-coop"}  # the default comparison: a few minutes on a CPU
DEFAULT_METHODS = ("fups", "nops", "seps")
DEFAULT_LEARNER = "ppo"


def _parse_alg(entry: str) -> tuple[str, str | None]:
    """``"fups"`` or ``"fups:qmix"`` -> (method, learner or None)."""
    alg, _, learner = entry.partition(":")
    return alg, learner or None


def method_configs(env_overrides: dict | None, algs: Sequence[str], seeds: int, steps: int, out_dir,
                  extra: dict | None = None) -> list:
    """The validated ``TrainConfig`` of every run of a comparison (nothing is trained).

    Layers, last wins: ``DEFAULT_ENV`` (only when neither dict names ``env``), learner ``ppo`` (only
    when neither names a learner), ``env_overrides``, ``extra`` (may hold ``preset``), then
    ``alg``, a per-method learner (``"alg:learner"``), ``seeds``, ``steps``, ``out_dir`` and
    ``run_name = <alg>-<learner>``. A bad method or value raises ConfigError before any training.
    """
    from psjax.config import make_config  # the method registry: JAX, which a report alone does not need

    env_overrides, extra = dict(env_overrides or {}), dict(extra or {})
    preset = extra.pop("preset", None)
    given = {**env_overrides, **extra}
    base = {} if {"env", "env.name"} & set(given) or preset else dict(DEFAULT_ENV)
    if "learner" not in given and not preset:
        base["learner"] = DEFAULT_LEARNER
    if not algs:
        raise ConfigError("algs is empty; give at least one method, e.g. algs='fups nops'")
    configs = []
    for entry in algs:
        alg, learner = _parse_alg(entry)
        overrides = {**base, **given, "alg": alg, "seeds": seeds, "steps": steps, "out_dir": str(out_dir)}
        if learner:
            overrides["learner"] = learner
        cfg = make_config(overrides, preset=preset)
        cfg = make_config({**overrides, "run_name": f"{cfg.alg}-{cfg.learner_name}"}, preset=preset)
        configs.append(cfg)
    names = [c.run_name for c in configs]
    if len(set(names)) != len(names):
        raise ConfigError(f"algs gives the same method and learner twice: {', '.join(names)}")
    return configs




def folder_step(cfg, folder: pathlib.Path) -> str:
    """What ``train_methods`` does with its run ``folder`` for ``cfg``: ``"train"`` (no such run yet), ``"done"`` (that
    run finished: reused), ``"resume"`` (that run was stopped: continued from its last checkpoint). A folder holding
    another config's run, or an unfinished run with no checkpoint, raises a ConfigError naming it, so running the
    same command again continues an interrupted comparison and never mixes two configs."""
    from psjax.config import load_run_config
    from psjax.schema import to_dict

    if not folder.is_dir() or not any(folder.iterdir()):
        return "train"
    if not (folder / "config.yaml").is_file():
        raise ConfigError(f"{folder} exists and is not a run folder; pick another out= or remove it")
    saved, wanted = flatten(to_dict(load_run_config(folder))), flatten(to_dict(cfg))
    differ = config_diff(saved, wanted, OUTPUT_FREE_FIELDS)  # a continued run keeps its saved ones
    if differ:
        shown = ", ".join(f"{k}={saved.get(k)!r} there, {wanted.get(k)!r} here" for k in differ[:4])
        raise ConfigError(f"{folder} holds a run of another config ({shown}{', ...' if len(differ) > 4 else ''}); "
                          "pick another out= or give the same arguments as that comparison")
    summary = folder / "summary.json"  # also written when a run stops early (max_chunks), with finished false
    if summary.is_file() and json.loads(summary.read_text()).get("finished", False):
        return "done"
    checkpoints = folder / "checkpoints"
    if checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir()):
        return "resume"
    raise ConfigError(f"{folder} holds an unfinished run with no checkpoint to continue from (checkpoint=false, or "
                      "stopped before its first); remove that folder to train it again")


def default_out_dir(env_name: str) -> pathlib.Path:
    """``runs/compare-<env>-<YYYYmmdd-HHMMSS>``, never an existing folder."""
    base = pathlib.Path("runs") / f"compare-{env_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        path, n = pathlib.Path(f"{base}-{n}"), n + 1
    return path


def train_methods(
    env_overrides: dict | None = None,
    algs: Sequence[str] = DEFAULT_METHODS,
    seeds: int = 2,
    steps: int = 150_000,
    out_dir=None,
    extra: dict | None = None,
    *,
    make_program: Callable | None = None,
) -> dict:
    """Train one run per method (``seeds`` vmapped inside each) into one folder, then report.

    Called again with the same arguments on an interrupted comparison's folder, it reuses the finished runs and
    resumes the stopped one from its checkpoint (``folder_step``).

    Args:
      env_overrides: environment keys (``{"env": "smax", "map": "3m"}``); default LBF 8x8-2p-2f-coop.
      algs: method names, or ``"method:learner"`` to give one method its own learner.
      seeds: seeds per method, trained together with ``jax.vmap``.
      steps: env steps per seed.
      out_dir: the comparison folder; default ``runs/compare-<env>-<timestamp>``.
      extra: any other config keys (``learner``, ``lr``, ``eval_every``, ``preset``, ...).
      make_program: passed to ``psjax.run.run`` (tests use a fake trainer).

    Returns ``compare.report(...)``'s dict plus ``"out_dir"``.
    """
    probe = method_configs(env_overrides, algs, seeds, steps, out_dir or ".", extra)  # validate first
    out = pathlib.Path(out_dir) if out_dir is not None else default_out_dir(probe[0].env.name)
    configs = method_configs(env_overrides, algs, seeds, steps, out, extra)
    plan = [(cfg, folder_step(cfg, out / cfg.run_name)) for cfg in configs]  # every folder checked before training
    from psjax.run import run  # JAX is imported only once the configs are known to be good

    out.mkdir(parents=True, exist_ok=True)
    run_dirs = []
    for cfg, step in plan:
        if step != "train":
            print(f"{out / cfg.run_name}: {'finished, reused' if step == 'done' else 'resumed from its checkpoint'}")
        if step == "done":
            run_dirs.append(out / cfg.run_name)
        elif step == "resume":  # the folder's own config (it may differ in OUTPUT_FREE_FIELDS)
            run_dirs.append(run(None, resume=out / cfg.run_name, make_program=make_program))
        else:
            run_dirs.append(run(cfg, make_program=make_program))
    result = report(run_dirs, out)
    result["out_dir"] = out
    return result
