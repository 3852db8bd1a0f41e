"""A run's folders: creating one (never reusing a folder), the per-point folders of a sweep, and
``summary.json``.

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

import functools
import json
import pathlib
import time
from typing import Any, NamedTuple

import jax
import numpy as np
import yaml

from psjax import sweep
from psjax.config import ConfigError, TrainConfig, to_dict
from psjax.envs import reported_return
from psjax.logs import RowLog, eval_columns, nonfinite_event
from psjax.schema import set_field


def new_run_dir(cfg: TrainConfig) -> pathlib.Path:
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


def env_spec(cfg: TrainConfig):
    """The ``EnvSpec`` of ``cfg``'s environment (built once per env config; no compilation): its ``has_won`` says
    whether the win rate is shown, plotted and summarised, its ``headline`` which figure ``compare`` ranks by."""
    return _env_spec(cfg.env)


@functools.lru_cache(maxsize=16)
def _env_spec(env_cfg):
    from psjax.envs import make_env

    return make_env(env_cfg).spec


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
