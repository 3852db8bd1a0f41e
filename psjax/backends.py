"""Optional logging backends beside the run folder's JSONL / CSV: TensorBoard (tensorboardX) and Weights & Biases.

``TrainConfig.logger`` picks them; each is an extra (``pip install -e '.[tensorboard]'``, ``'.[wandb]'``). The
JSONL / CSV files stay the record (``compare``, ``resume`` and the export read them); a backend receives the
same rows as they are appended. Each seed is its own stream, at x = env steps per seed: training metrics as
``train/<name>``, evaluations as ``eval/<name>``.

* TensorBoard: ``<run>/tensorboard/seed_<s>/`` (``tensorboard --logdir runs/<run>/tensorboard``).
* W&B: one W&B run per seed, grouped by the run folder's name, config = the run's config; files under
  ``<run>/wandb/``. ``wandb_mode=offline`` writes only there (``wandb sync`` uploads later). The W&B run ids
  are kept in ``<run>/wandb_ids.json`` so that ``resume=`` continues the same W&B runs.

On ``resume`` the rows after the last checkpoint are logged again (the JSONL / CSV drop them first):
TensorBoard purges its events from that step on; W&B keeps both copies of those points (its history is
append-only), at the same env steps.
"""

from __future__ import annotations

import json
import math
import pathlib
import uuid
from typing import Any

from psjax.fields import ConfigError

KINDS = {"metrics": "train", "eval": "eval"}  # RowLog name -> scalar prefix
NOT_SCALARS = ("seed", "iteration", "env_steps")  # row keys that place a row rather than measure


def _scalars(row: dict) -> dict[str, float]:
    """The row's finite numeric values (a string such as ``eval_policy`` or a None cell is not a scalar)."""
    out = {}
    for key, value in row.items():
        if key in NOT_SCALARS or isinstance(value, (str, bool)) or value is None:
            continue
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[key] = float(value)
    return out


def _import(module: str, extra: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise ConfigError(f"logger needs the {module} package: pip install -e '.[{extra}]'") from e


class TensorBoard:
    """One tensorboardX ``SummaryWriter`` per seed under ``<run>/tensorboard/seed_<s>/``."""

    def __init__(self, run_dir: pathlib.Path, seeds: list[int], purge_step: int | None):
        tensorboardx = _import("tensorboardX", "tensorboard")
        self.writers = {s: tensorboardx.SummaryWriter(str(run_dir / "tensorboard" / f"seed_{s}"),
                                                      purge_step=purge_step) for s in seeds}

    def write(self, kind: str, rows: list[dict]) -> None:
        for row in rows:
            writer, step = self.writers[row["seed"]], int(row["env_steps"])
            for key, value in _scalars(row).items():
                writer.add_scalar(f"{KINDS[kind]}/{key}", value, step)
        for writer in self.writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


class WandB:
    """One W&B run per seed (group: the run folder's name), x axis ``env_steps``."""

    def __init__(self, run_dir: pathlib.Path, seeds: list[int], config: dict, project: str, mode: str,
                 resume: bool):
        wandb = _import("wandb", "wandb")
        ids_file = run_dir / "wandb_ids.json"
        ids = {int(k): v for k, v in json.loads(ids_file.read_text()).items()} if resume and ids_file.exists() else {}
        ids = {s: ids.get(s) or uuid.uuid4().hex[:8] for s in seeds}  # W&B run ids: [a-z0-9]
        ids_file.write_text(json.dumps({str(s): i for s, i in ids.items()}))
        self.runs = {}
        for s in seeds:
            run = wandb.init(project=project, mode=mode, dir=str(run_dir), group=run_dir.name,
                             name=f"{run_dir.name}-seed{s}", id=ids[s], resume="allow",
                             config={**config, "seed": s}, reinit="create_new")
            run.define_metric("*", step_metric="env_steps")
            self.runs[s] = run

    def write(self, kind: str, rows: list[dict]) -> None:
        for row in rows:
            scalars = {f"{KINDS[kind]}/{k}": v for k, v in _scalars(row).items()}
            self.runs[row["seed"]].log({"env_steps": int(row["env_steps"]), **scalars})

    def close(self) -> None:
        for run in self.runs.values():
            run.finish()


def open_backends(cfg: Any, run_dir: pathlib.Path, seeds: list[int], resume_step: int | None) -> list:
    """The backends ``cfg.logger`` names, opened for ``run_dir``; ``resume_step``: the env steps per seed the
    run continues from (None for a new run). Only JAX process 0 logs (``[]`` elsewhere)."""
    import jax

    from psjax.config import to_dict

    if cfg.logger == "none" or jax.process_index() != 0:
        return []
    backends = []
    if "tensorboard" in cfg.logger:
        backends.append(TensorBoard(run_dir, seeds, None if resume_step is None else resume_step + 1))
    if "wandb" in cfg.logger:
        backends.append(WandB(run_dir, seeds, to_dict(cfg), cfg.wandb_project, cfg.wandb_mode,
                              resume=resume_step is not None))
    return backends
