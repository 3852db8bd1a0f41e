"""A run folder's logs: metric and evaluation rows from the program's outputs, ``RowLog`` (``NAME.jsonl`` and
``NAME.csv`` appended in step), and where a run first went non-finite (``psjax.logrows`` reads the rows back)."""

from __future__ import annotations

import csv
import json
import pathlib
from typing import Any

import numpy as np

from psjax.config import TrainConfig
from psjax.evaluate import EVAL_STATS, POLICY_NAMES, eval_key
from psjax.logrows import decode_row, nonfinite_quantities
from psjax.train import watched


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
