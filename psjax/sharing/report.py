"""A picture of what a sharing method decided, from a run folder's metrics.

``plot_sharing(run_dir)`` draws ``sharing.png`` for methods that log a per-agent ``cluster``
(SePS, AdaPS): the final cluster of every agent for every seed, and the agents x agents
overlap (fraction of hidden units two agents share; for slot methods 1 on the same slot,
0 otherwise) from ``mask_overlap_pairs``, averaged over seeds. A method that logs its partition
under names of its own hands its table builder over (``plot_sharing(run_dir, tables_of)``,
``sharing_picture_of``): nothing here knows a method by name.
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Callable

import numpy as np

_CLUSTER = re.compile(r"^cluster\[(\d+)\]$")
_PAIR = re.compile(r"^mask_overlap_pairs\[(\d+),(\d+)\]$")


def _metric_rows(run_dir) -> list[dict]:
    """Every logged training row of a run folder (``metrics.jsonl``), in file order; [] without one."""
    path = pathlib.Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _last_rows(run_dir: pathlib.Path) -> list[dict]:
    """The last logged training row of every seed, in seed order."""
    last = {row["seed"]: row for row in _metric_rows(run_dir)}
    return [last[s] for s in sorted(last)]


def sharing_tables(run_dir, tables_of: Callable[[list[dict]], dict | None] | None = None) -> dict | None:
    """``tables_of`` (default ``cluster_tables``) applied to every seed's last logged row: the table ``plot_sharing``
    draws, or None when the rows hold no partition."""
    rows = _last_rows(pathlib.Path(run_dir))
    return (tables_of or cluster_tables)(rows) if rows else None


def cluster_tables(rows: list[dict]) -> dict | None:
    """``{"seeds", "cluster" int[S, N], "overlap" float[N, N] or None, "mean_overlap" float[S], "env_steps" int[S]}``
    (optional: ``"row_labels"`` [rows of ``cluster``], ``"title"``) from every seed's last row, or None when the
    method logs no ``cluster[i]``."""
    agents = sorted(int(m.group(1)) for k in rows[0] if (m := _CLUSTER.match(k)))
    if not agents:
        return None
    n = len(agents)
    cluster = np.array([[r[f"cluster[{i}]"] for i in range(n)] for r in rows], dtype=int)
    overlap = None
    if any(_PAIR.match(k) for k in rows[0]):
        per_seed = np.array(
            [[[np.nan if r.get(f"mask_overlap_pairs[{i},{j}]") is None else r[f"mask_overlap_pairs[{i},{j}]"]
               for j in range(n)] for i in range(n)] for r in rows], dtype=float)
        overlap = np.nanmean(per_seed, axis=0)
    mean_overlap = np.array([np.nan if r.get("mask_overlap") is None else r["mask_overlap"] for r in rows])
    return {
        "seeds": [r["seed"] for r in rows],
        "cluster": cluster,
        "overlap": overlap,
        "mean_overlap": mean_overlap,
        "env_steps": [r["env_steps"] for r in rows],
    }


def type_ari_curves(run_dir) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """``(env_steps [I], values [S, I, P], names [P])``: every logged ``type_ari*`` metric (the method's partitions
    against the task's agent kinds, ``psjax.sharing.structure``) per seed and logged iteration; None without."""
    rows = _metric_rows(run_dir)
    names = sorted({k for r in rows for k in r if k.startswith("type_ari") and "[" not in k})
    if not names:
        return None
    seeds = sorted({r["seed"] for r in rows})
    steps = sorted({r["env_steps"] for r in rows})
    at = {s: i for i, s in enumerate(steps)}
    values = np.full((len(seeds), len(steps), len(names)), np.nan)
    for r in rows:
        for p, name in enumerate(names):
            if isinstance(r.get(name), (int, float)):
                values[seeds.index(r["seed"]), at[r["env_steps"]], p] = r[name]
    return np.asarray(steps), values, names


def _mean_over_seeds(values: np.ndarray) -> np.ndarray:
    """``[S, I] -> [I]``: the mean over the seeds with a value (NaN where none has one), without numpy's warning."""
    count = np.isfinite(values).sum(0)
    return np.where(count > 0, np.nansum(values, axis=0) / np.maximum(count, 1), np.nan)


def _last_finite(values: np.ndarray) -> np.ndarray:
    """``[S, I] -> [S]``: every seed's last value that is not NaN (NaN when it has none)."""
    return np.array([row[np.isfinite(row)][-1] if np.isfinite(row).any() else np.nan for row in values])


def _draw_type_ari(ax, curves) -> None:
    steps, values, names = curves
    for p, name in enumerate(names):
        line = ax.plot(steps, _mean_over_seeds(values[:, :, p]), label=f"{name} (mean)")[0]
        for seed_values in values[:, :, p]:
            ax.plot(steps, seed_values, color=line.get_color(), alpha=0.25, linewidth=0.8)
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=0.8)
    ax.set_ylim(-0.55, 1.05)
    ax.set_xlabel("env steps")
    ax.set_title(f"adjusted Rand index vs the agent kinds ({values.shape[0]} seeds, faint: each seed)", fontsize=9)
    ax.legend(fontsize=7)


def plot_sharing(run_dir, tables_of: Callable[[list[dict]], dict | None] | None = None) -> pathlib.Path | None:
    """Write ``run_dir/sharing.png`` and return its path; None (nothing written) when the run's
    method reports no partition (``tables_of``: ``sharing_tables``'s)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, works headless

    run_dir = pathlib.Path(run_dir)
    tables = sharing_tables(run_dir, tables_of)
    if tables is None:
        return None
    cluster, overlap = tables["cluster"], tables["overlap"]
    curves = type_ari_curves(run_dir)
    num_seeds, n = cluster.shape
    panels = 1 + (overlap is not None) + (curves is not None)
    fig = Figure(figsize=(5 + 0.35 * n + 4.5 * (panels - 1), 1.8 + 0.35 * num_seeds + 1.5), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]

    ax = axes[0]
    ax.imshow(cluster, cmap="tab10", vmin=0, vmax=9, aspect="auto")
    for s in range(num_seeds):
        for i in range(n):
            ax.text(i, s, str(cluster[s, i]), ha="center", va="center", fontsize=8, color="white")
    ax.set_xticks(range(n))
    ax.set_yticks(range(num_seeds), tables.get("row_labels", [f"seed {s}" for s in tables["seeds"]]))
    ax.set_xlabel("agent")
    ax.set_title(tables.get("title", "final cluster per agent"))

    if overlap is not None:
        ax = axes[1]
        image = ax.imshow(overlap, cmap="viridis", vmin=0.0, vmax=1.0)
        if n <= 8:
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, f"{overlap[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if overlap[i, j] > 0.5 else "white")
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.set_xlabel("agent")
        ax.set_ylabel("agent")
        ax.set_title("shared hidden units (mean over seeds)")
        fig.colorbar(image, ax=ax, shrink=0.8)
    ari = ""
    if curves is not None:
        _draw_type_ari(axes[-1], curves)
        name = "type_ari" if "type_ari" in curves[2] else curves[2][0]
        final = _last_finite(curves[1][:, :, curves[2].index(name)])
        ari = f", final {name} {_mean_over_seeds(final[:, None])[0]:.2f} (seeds {', '.join(f'{v:.2f}' for v in final)})"
    fig.suptitle(f"{run_dir.name}: mean overlap {np.nanmean(tables['mean_overlap']):.2f} "
                 f"at {max(tables['env_steps'])} env steps{ari}", fontsize=9)
    path = run_dir / "sharing.png"
    fig.savefig(path, dpi=120)
    return path


def sharing_picture_of(tables_of: Callable[[list[dict]], dict | None] | None = None) -> Callable:
    """``plot_sharing`` with the method's table builder, as a method record's picture
    (``psjax.registry.Method.pictures``)."""

    def sharing_picture(run_dir, cfg, runner, program) -> pathlib.Path | None:
        del cfg, runner, program
        return plot_sharing(run_dir, tables_of)

    return sharing_picture


sharing_picture = sharing_picture_of(cluster_tables)  # SePS / AdaPS: the logged ``cluster[i]``


_DISTANCE = re.compile(r"^mapd_distance\[(\d+),(\d+)\]$")


def last_distance(run_dir) -> tuple[np.ndarray, int] | None:
    """The last logged MAPD distance matrix ``[N, N]`` (mean over the seeds that logged it at that
    iteration) and its iteration, or None when the run logs no ``mapd_distance``."""
    found: dict[int, tuple[int, np.ndarray]] = {}  # seed -> (iteration, D)
    n = 0
    for row in _metric_rows(run_dir):
        cells = {(int(m.group(1)), int(m.group(2))): v for k, v in row.items() if (m := _DISTANCE.match(k))}
        if not cells or any(v is None for v in cells.values()):
            continue
        n = max(i for i, _ in cells) + 1
        d = np.zeros((n, n))
        for (i, j), v in cells.items():
            d[i, j] = v
        found[row["seed"]] = (row["iteration"], d)
    if not found:
        return None
    iteration = max(it for it, _ in found.values())
    return np.mean([d for it, d in found.values() if it == iteration], axis=0), iteration


def plot_distance(run_dir) -> pathlib.Path | None:
    """Write ``run_dir/distance.png``, the last MAPD distance matrix as a heatmap; None when there is none."""
    from matplotlib.figure import Figure

    run_dir = pathlib.Path(run_dir)
    last = last_distance(run_dir)
    if last is None:
        return None
    d, iteration = last
    n = d.shape[0]
    fig = Figure(figsize=(2.5 + 0.45 * n, 2 + 0.4 * n), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(d, cmap="magma")
    if n <= 10:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{d[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if d[i, j] < 0.5 * d.max() else "black")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("agent")
    ax.set_ylabel("agent")
    ax.set_title(f"{run_dir.name}\npolicy distance (MAPD), iteration {iteration}", fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8)
    path = run_dir / "distance.png"
    fig.savefig(path, dpi=120)
    return path


SND_BINS = 150  # snd.png: longer series are drawn as this many bins


def snd_series(run_dir) -> dict | None:
    """``{"series": {seed: (env_steps [M], snd [M])}, "type_ratio": {seed: (env_steps, ratio)}}`` over the rows
    that measured the team's SND; None when the run logs no ``snd``."""
    series: dict[int, list] = {}
    ratios: dict[int, list] = {}
    for row in _metric_rows(run_dir):
        if not isinstance(row.get("snd"), (int, float)) or not np.isfinite(row["snd"]):
            continue
        series.setdefault(row["seed"], []).append((row["env_steps"], row["snd"]))
        if isinstance(row.get("snd_type_ratio"), (int, float)) and np.isfinite(row["snd_type_ratio"]):
            ratios.setdefault(row["seed"], []).append((row["env_steps"], row["snd_type_ratio"]))
    if not series:
        return None
    out = {seed: tuple(np.array(v) for v in zip(*rows)) for seed, rows in sorted(series.items())}
    ratio = {seed: tuple(np.array(v) for v in zip(*rows)) for seed, rows in sorted(ratios.items())}
    return {"series": out, "type_ratio": ratio}


def _binned(ax, steps, values, label) -> bool:
    """Plot one seed's series; thousands of noisy points as each bin's median and 10-90% band. True if binned."""
    if len(steps) <= 2 * SND_BINS:
        ax.plot(steps, values, lw=1, label=label)
        return False
    edges = np.linspace(steps[0], steps[-1], SND_BINS + 1)
    which = np.clip(np.searchsorted(edges, steps, side="right") - 1, 0, SND_BINS - 1)
    bins = [values[which == b] for b in range(SND_BINS) if np.any(which == b)]
    centres = [steps[which == b].mean() for b in range(SND_BINS) if np.any(which == b)]
    line = ax.plot(centres, [np.median(v) for v in bins], lw=1, label=label)[0]
    ax.fill_between(centres, [np.percentile(v, 10) for v in bins], [np.percentile(v, 90) for v in bins],
                    color=line.get_color(), alpha=0.15, lw=0)
    return True


def plot_snd(run_dir, target: float | None = None, target_label: str = "target") -> pathlib.Path | None:
    """Write ``run_dir/snd.png``: every seed's System Neural Diversity (measured after each update, before a method
    driven by it acts) over env steps, with that method's ``target`` (DiCo's) where it gives one; None when the run
    logs no ``snd``."""
    from matplotlib.figure import Figure

    run_dir = pathlib.Path(run_dir)
    found = snd_series(run_dir)
    if found is None:
        return None
    ratios = found["type_ratio"]
    fig = Figure(figsize=(5.5 * (1 + bool(ratios)), 3.4), layout="constrained")
    axes = fig.subplots(1, 1 + bool(ratios), squeeze=False)[0]
    ax = axes[0]
    binned = False
    for seed, (steps, snd) in found["series"].items():
        binned |= _binned(ax, steps, snd, f"seed {seed}")
    if ratios:  # the task has agents of several kinds: do the policies differ more across kinds than within?
        for seed, (steps, ratio) in ratios.items():
            _binned(axes[1], steps, ratio, f"seed {seed}")
        axes[1].axhline(1.0, color="grey", ls=":", lw=0.8)
        axes[1].set_xlabel("env steps")
        axes[1].set_ylabel("within-kind / between-kind SND")
        axes[1].set_title("mean SND between agents of one kind over that between kinds\n(1 = the policies do not "
                          "tell the kinds apart)", fontsize=8)
        axes[1].legend(fontsize=7)
    if target is not None:
        ax.axhline(target, color="black", ls="--", lw=1, label=target_label)
    ax.set_xlabel("env steps")
    ax.set_ylabel("SND (Aitchison distance)")
    ax.set_title(f"{run_dir.name}\nteam SND after each update (every agent's training policy, the same "
                 f"rollout observations){chr(10) + 'median and 10-90% band per bin of steps' if binned else ''}",
                 fontsize=8)
    ax.legend(fontsize=7)
    path = run_dir / "snd.png"
    fig.savefig(path, dpi=120)
    return path
