"""``curve.png``: a run's training and evaluation curves, mean over seeds with a min-max band, each evaluation
line naming its policy, episodes and seeds. (Method pictures: the method's ``pictures``, ``psjax.sharing.report``.)"""

from __future__ import annotations

import pathlib

import numpy as np

from psjax.config import TrainConfig
from psjax.evaluate import eval_key
from psjax.logs import RowLog, eval_label
from psjax.run_folder import env_spec


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
