"""Compare methods across run folders: learning curves with confidence bands and IQM tables.

``report(run_dirs, out_dir)`` reads finished run folders (written by ``psjax.run``) or sweep folders
holding them, groups the runs by (environment, method, learner, evaluation policy) and writes into
``out_dir``:

    compare.png    evaluation return (win rate on SMAX) vs env steps per seed, one panel per
                   environment: IQM over seeds with a 95% bootstrap band, one line per method; the axis
                   (or, where runs differ, each line) names the evaluation policy
    compare.md     one Markdown table per environment: method, learner, seeds, final IQM [95% CI],
                   env steps, steps per second, compile time, parameter count; the headers name the
                   evaluation policy, and a table whose runs used different policies says so
    compare.json   the same rows as numbers (and the run folders behind each row)

Training the runs to compare is ``psjax.method_runs`` (``make compare``, ``python -m psjax compare-sweep``).

Statistics follow Agarwal et al. (2021, "Deep RL at the edge of the statistical precipice"):
final performance is the interquartile mean (IQM: the mean of the middle 50% of runs, with
``floor(n / 4)`` runs cut from each end, as ``scipy.stats.trim_mean(x, 0.25)``; with fewer than 4 seeds
it equals the mean) and its 95% confidence interval comes from a stratified percentile bootstrap
(runs resampled with replacement within each task). Their library, rliable, is not used: rliable
1.2.0 requires ``arch<8``, and arch 7.2.0 fails at import with our pandas 3.1 (``TypeError:
deprecate_kwarg() missing 1 required positional argument`` in ``arch.univariate.base``; checked in
.venv with numpy 2.4.6 / scipy 1.17.1), and it would pull in statsmodels, patsy, formulaic and
narwhals for two statistics that take a few lines of numpy (below).

The final score of a seed is its last evaluation (as in ``summary.json``) with the run's primary
evaluation policy (``eval_policy``: sampled for A2C / PPO, greedy for value learners by default), or with
the policy that ``policy=greedy|sample`` names where the runs evaluated it (``eval_policy=both``). Runs of
one method evaluated with different policies are never pooled: they get a row each. Run folders written
before the policy was recorded count as greedy (their only evaluation then), and the report says so.
With 2-3 seeds the bootstrap interval is little more than the range of the seeds: read it as such.
"""

from __future__ import annotations

import json
import math
import pathlib
import warnings
from typing import Callable, NamedTuple, Sequence

import numpy as np
import yaml

from psjax.fields import ConfigError
from psjax.logrows import decode_row, nonfinite_quantities  # noqa: F401  (also read from here)
from psjax.schema import flatten, team_return_of

# Config keys that may differ between run folders pooled into one row (they do not change results).
# eval_policy: the policy compared is part of a row's identity (Group.policy), so both vs sample may pool.
# method_defaults: a record of where values came from (the values themselves are compared), absent in older folders.
POOL_IGNORED = ("seed", "seeds", "run_name", "out_dir", "progress", "checkpoint", "on_nonfinite", "eval_policy",
                "compile_cache", "compile_cache_gb", "method_defaults")
BOOTSTRAP_SEED = 0  # the report is deterministic given its run folders


# --------------------------------------------------------------------------- statistics


def iqm(scores, axis: int | None = None) -> np.ndarray:
    """Interquartile mean: sort, drop ``floor(n / 4)`` values at each end, average the rest.

    ``axis=None`` uses every value; otherwise the statistic is taken along ``axis``.
    Equals ``scipy.stats.trim_mean(scores, 0.25, axis)`` (and rliable's ``aggregate_iqm``).
    """
    x = np.asarray(scores, dtype=float)
    if axis is None:
        x, axis = x.reshape(-1), 0
    x = np.sort(np.moveaxis(x, axis, -1), axis=-1)
    n = x.shape[-1]
    if n == 0:
        raise ValueError("iqm of an empty set")
    cut = n // 4
    return np.mean(x[..., cut:n - cut], axis=-1)


def stratified_bootstrap_ci(
    scores,
    statistic: Callable[..., np.ndarray] = iqm,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float, float]:
    """``(point, low, high)``: ``statistic`` of ``scores[runs, tasks]`` and its percentile bootstrap CI.

    Each bootstrap replicate resamples the runs with replacement independently within each task
    (stratified), then applies ``statistic(sample[reps, runs * tasks], axis=-1)``. A 1-D ``scores``
    is one task. Deterministic given ``seed``.
    """
    x = np.asarray(scores, dtype=float)
    x = x[:, None] if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"scores must be [runs] or [runs, tasks] with runs >= 1; got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("scores must be finite")
    runs, tasks = x.shape
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, runs, size=(reps, runs, tasks))
    samples = np.take_along_axis(np.broadcast_to(x, (reps, runs, tasks)), idx, axis=1)
    stats = statistic(samples.reshape(reps, runs * tasks), axis=-1)
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(stats, [tail, 100.0 - tail])
    return float(statistic(x.reshape(-1))), float(low), float(high)


# --------------------------------------------------------------------------- run folders


class Run(NamedTuple):
    """One run folder, reduced to what the report needs."""

    path: pathlib.Path
    env: str  # environment label, e.g. "lbf 8x8-2p-2f-coop", "smax 3m"
    method: str  # the method; a sweep point's as "fups [lr=0.001]"
    learner: str
    config: dict  # config.yaml, nested
    summary: dict  # summary.json
    metric: str  # "eval_won" on SMAX, else "eval_return"
    policy: str  # the evaluation policy of y: "greedy" or "sample"
    policy_assumed: bool  # the folder records no policy (written before eval_policy existed): greedy assumed
    seeds: list[int]
    x: np.ndarray  # float[I] env steps per seed at each evaluation
    y: np.ndarray  # float[I, S] the metric per evaluation and seed (NaN where missing)
    diverged: tuple = ()  # the seeds that went non-finite (never a result: the run is flagged, not ranked)
    diverged_step: int | None = None  # the env step per seed where the run first went non-finite

    @property
    def team_return(self) -> str:
        """Its return's convention over agents: "sum" or "mean" (``env.team_return``)."""
        return team_return_of(self.config["env"], self.summary)


def diverged_seeds(summary: dict, eval_rows: list[dict]) -> list[int]:
    """The seeds of a run folder that went non-finite: in training (summary.json's ``nonfinite``) or in an
    evaluation of non-finite parameters (an eval.jsonl row with ``nonfinite`` true)."""
    event = summary.get("nonfinite") or {}
    return sorted(set(event.get("ever_seeds", event.get("seeds", []))) |
                  {r["seed"] for r in eval_rows if r.get("nonfinite") is True})


def env_label(env: dict) -> str:
    """A short name for an environment config: its name plus the options that change the task."""
    name = env["name"]
    details = {
        "smax": [env.get("map")],
        "lbf": [env.get("scenario")] + ([f"fov{env['fov']}"] if env.get("fov", -1) != -1 else []),
        "mpe_spread": [f"{env.get('num_agents')}a-{env.get('num_landmarks')}l"],
        "typed": [f"{env.get('num_agents')}a"],
        "matrix": [env.get("matrix_game")],
    }.get(name, [])
    if env.get("time_limit"):
        details.append(f"T{env['time_limit']}")
    return " ".join([name] + [str(d) for d in details if d is not None])


def read_jsonl(path: pathlib.Path) -> list[dict]:
    """The rows of a run folder's JSONL log, decoded (``decode_row``)."""
    return [decode_row(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def evaluate_module():
    """``psjax.evaluate`` (metric names, policy names), imported on use: it loads JAX, which a report does not
    otherwise need."""
    from psjax import evaluate

    return evaluate


METRICS = {"auto": None, "win": "eval_won", "return": "eval_return"}  # compare's metric= values
POLICIES = ("auto", "greedy", "sample")  # compare's policy= values; auto = each run's primary policy


def load_run(run_dir, metric: str = "auto", steps: int | None = None, policy: str = "auto") -> Run:
    """Read ``config.yaml``, ``summary.json`` and ``eval.jsonl`` of a run folder.

    ``metric``: "auto" (the env's headline figure, ``EnvSpec.headline``: win rate on SMAX, return elsewhere),
    "win" (any env that defines winning, ``EnvSpec.has_won``: SMAX, LBF) or "return" (e.g. SMAX maps where no
    method wins yet at the steps compared).
    ``policy``: "auto" (the run's primary evaluation policy), "greedy" or "sample" (the run must have
    evaluated it). A folder that records no policy (written before ``eval_policy``) is taken as greedy,
    with a warning.
    ``steps``: keep the evaluations up to this many env steps per seed, rounded up to whole iterations as
    training rounds ``steps`` (so runs of different lengths compare at one budget); None keeps all.
    """
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; allowed: {', '.join(METRICS)}")
    if policy not in POLICIES:
        raise ConfigError(f"unknown policy {policy!r}; allowed: {', '.join(POLICIES)}")
    path = pathlib.Path(run_dir)
    for name in ("config.yaml", "summary.json", "eval.jsonl"):
        if not (path / name).is_file():
            raise ConfigError(f"{path} is not a finished run folder: no {name}")
    config = yaml.safe_load((path / "config.yaml").read_text())
    summary = json.loads((path / "summary.json").read_text())
    if metric == "win" and not summary.get("has_win"):
        raise ConfigError(f"metric=win: {path} ({config['env']['name']}) has no win rate; allowed: auto, return")
    # auto: the env's headline figure (EnvSpec.headline); folders written before it had has_win on SMAX only
    headline = summary.get("headline", "won" if summary.get("has_win") else "return")
    metric = METRICS[metric] or f"eval_{headline}"
    evaluated = summary.get("final_eval", {}).get("policies")
    assumed = evaluated is None
    if assumed:
        warnings.warn(f"{path} records no evaluation policy (written before eval_policy existed): its evaluations "
                      "are taken as greedy, the only policy psjax evaluated then", stacklevel=2)
        evaluated = ["greedy"]
    chosen = evaluated[0] if policy == "auto" else policy
    if chosen not in evaluated:
        raise ConfigError(f"policy={policy}: {path} evaluated the {' and '.join(evaluated)} policy only; allowed: "
                          f"auto, {', '.join(evaluated)} (eval_policy=both evaluates both)")
    column = metric if assumed else evaluate_module().eval_key(metric.removeprefix("eval_"), chosen)
    rows = read_jsonl(path / "eval.jsonl")
    seeds = sorted({r["seed"] for r in rows})
    by_seed = {s: [r for r in rows if r["seed"] == s] for s in seeds}
    num = min(len(v) for v in by_seed.values())  # a seed cut short is not expected; keep the common part
    x = np.array([r["env_steps"] for r in by_seed[seeds[0]][:num]], dtype=float)
    # an evaluation of non-finite parameters is no figure (argmax of NaN acts as action 0): left out like a gap
    y = np.array([[np.nan if by_seed[s][i].get(column) is None or by_seed[s][i].get("nonfinite") is True
                   else by_seed[s][i][column] for s in seeds] for i in range(num)],
                 dtype=float).reshape(num, len(seeds))
    diverged = diverged_seeds(summary, rows)
    if steps is not None:
        per_iteration = summary.get("steps_per_iteration") or 1
        limit = -(-int(steps) // per_iteration) * per_iteration
        keep = x <= limit
        if not keep.any():
            raise ConfigError(f"steps={steps}: {path} has no evaluation at or before {limit:,} env steps; "
                              f"its first is at {int(x[0]):,}")
        x, y = x[keep], y[keep]
        summary = {**summary, "env_steps_per_seed": min(summary.get("env_steps_per_seed", limit), limit)}
    method = summary.get("alg", config["alg"])
    if summary.get("sweep_point"):  # a point of a sweep run (psjax.sweep): its values name it apart
        method = f"{method} [{summary['sweep_point']}]"
    first = (summary.get("nonfinite") or {}).get("env_step")
    if diverged and first is None:  # only an evaluation says so: its step
        first = min(r["env_steps"] for r in rows if r.get("nonfinite") is True)
    return Run(path, env_label(config["env"]), method, summary["learner"], config, summary, metric, chosen, assumed,
               seeds, x, y, tuple(diverged), first)


def find_runs(paths: Sequence) -> list[pathlib.Path]:
    """Run folders among ``paths``: each is a run folder (has ``summary.json``) or a folder of them (a sweep run's
    point folders included)."""
    found = []
    for p in map(pathlib.Path, paths):
        if (p / "summary.json").is_file():
            found.append(p)
            continue
        children = sorted(p.iterdir()) if p.is_dir() else []
        # a sweep run (psjax.sweep) among them holds its points' run folders one level further down
        children += [g for c in children if (c / "sweep.json").is_file() for g in sorted(c.iterdir())]
        inner = [c for c in children if (c / "summary.json").is_file()]
        if not inner:
            raise ConfigError(f"{p} is neither a finished run folder (summary.json) nor a folder holding some")
        found.extend(inner)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise ConfigError("no run folders given")
    return unique


def _method_order(method: str) -> tuple:
    """The method registry's order (``psjax.catalog``); methods it does not list come after, alphabetically."""
    from psjax import (
        catalog,  # noqa: F401  (the built-in methods, in their order)
        registry,
    )

    names = registry.names()
    base = method.split(" [")[0]  # a sweep point's label: after its method, in the points' label order
    return (names.index(base), method) if base in names else (len(names), method)


class Group(NamedTuple):
    """The runs of one (env, method, learner, evaluation policy), their seeds pooled."""

    env: str
    method: str
    learner: str
    policy: str  # "greedy" or "sample"
    runs: list[Run]
    x: np.ndarray  # float[I] common evaluation grid (env steps per seed)
    y: np.ndarray  # float[I, S] all seeds on that grid
    final: np.ndarray  # float[S] last evaluation of every seed


def config_diff(a: dict, b: dict, ignored: Sequence[str] = ()) -> list[str]:
    """The dotted keys where two configs (nested or flat dicts) differ, sorted, leaving out ``ignored``."""
    a, b = flatten(a), flatten(b)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k not in ignored)


def group_runs(runs: list[Run]) -> list[Group]:
    """Pool the seeds of runs with the same (env, method, learner, evaluation policy); sorted by env, then
    the registry's method order, learner, policy.

    Seeds of pooled runs are put on the first run's evaluation grid (linear interpolation where
    the grids differ). A seed number seen twice in one group is kept once (the first folder), and
    a warning names runs whose configs differ beyond seeds and folder names.
    """
    for env in {r.env for r in runs}:  # a sum over agents is N x their mean: never one table
        same = [r for r in runs if r.env == env and r.metric == "eval_return"]
        if len({r.team_return for r in same}) > 1:
            named = ", ".join(f"{r.path.name} ({r.team_return})" for r in same)
            raise ConfigError(f"{env}: these runs report the return under different conventions over agents: "
                              f"{named}; compare runs of one env.team_return (sum = N x mean), or metric=win")
    keys = sorted({(r.env, r.method, r.learner, r.policy) for r in runs},
                  key=lambda k: (k[0], _method_order(k[1]), k[2], k[3]))
    groups = []
    for env, method, learner, policy in keys:
        members = [r for r in runs if (r.env, r.method, r.learner, r.policy) == (env, method, learner, policy)]
        for r in members[1:]:
            diff = config_diff(members[0].config, r.config, POOL_IGNORED)
            if diff:
                warnings.warn(f"pooling {r.path.name} with {members[0].path.name} although their configs differ "
                              f"in {', '.join(diff)}", stacklevel=2)
        x = members[0].x
        columns, finals, seen = [], [], set()
        for r in members:
            for s, seed in enumerate(r.seeds):
                if seed in seen:
                    warnings.warn(f"{env} {method} {learner}: seed {seed} appears in more than one run folder; "
                                  f"kept once (from the first)", stacklevel=2)
                    continue
                seen.add(seed)
                col, ok = r.y[:, s], np.isfinite(r.y[:, s])
                if not np.array_equal(r.x, x):
                    col = np.interp(x, r.x[ok], col[ok], left=np.nan, right=np.nan) if ok.any() else x * np.nan
                columns.append(col)
                finals.append(r.y[ok, s][-1] if ok.any() else np.nan)
        groups.append(Group(env, method, learner, policy, members, x, np.stack(columns, axis=1), np.array(finals)))
    return groups


# --------------------------------------------------------------------------- table and figure


def final_type_ari(run_dir) -> list[float]:
    """Every seed's last logged ``type_ari`` (the method's partition of the agents against the task's kinds,
    ``psjax.sharing.structure``) from a run folder's metrics.jsonl; [] when the method logs none."""
    last: dict[int, float] = {}
    path = pathlib.Path(run_dir) / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            if '"type_ari"' in line:
                row = json.loads(line)
                if isinstance(row.get("type_ari"), (int, float)):
                    last[row["seed"]] = float(row["type_ari"])
    return [last[s] for s in sorted(last)]


def _mean_of(runs: list[Run], key: str) -> float | None:
    values = [r.summary.get(key) for r in runs if r.summary.get(key) is not None]
    return float(np.mean(values)) if values else None


def table_rows(groups: list[Group], reps: int = 2000) -> list[dict]:
    """One row per group: final IQM with its 95% CI, seeds, throughput, parameters (numbers, not text). A group
    with a seed that went non-finite gets no IQM, CI or mean (NaN): ``diverged`` names how many seeds and from
    which env step; None for the others."""
    rows = []
    for g in groups:
        finals = g.final[np.isfinite(g.final)]
        diverged = [r for r in g.runs if r.diverged]
        point, low, high = stratified_bootstrap_ci(finals, reps=reps) if finals.size and not diverged \
            else (math.nan,) * 3
        param_counts = sorted({r.summary.get("param_count") for r in g.runs})
        rows.append({
            "env": g.env, "method": g.method, "learner": g.learner,
            "metric": g.runs[0].metric, "policy": g.policy,
            "policy_assumed": [r.path.name for r in g.runs if r.policy_assumed],
            "seeds": int(finals.size),
            "iqm": point, "ci_low": low, "ci_high": high,
            "mean": float(np.mean(finals)) if finals.size and not diverged else math.nan,
            "diverged": {"seeds": sum(len(r.diverged) for r in diverged),
                         "first_env_step": min(r.diverged_step for r in diverged)} if diverged else None,
            "final_per_seed": [float(v) for v in g.final],
            "team_return": g.runs[0].team_return,
            # mean over seeds of the final adjusted Rand index against the agent kinds; None: the method logs none
            "type_ari": float(np.mean(aris)) if (aris := [v for r in g.runs for v in final_type_ari(r.path)]) else None,
            "env_steps": int(max(r.summary.get("env_steps_per_seed", 0) for r in g.runs)),
            "steps_per_sec": _mean_of(g.runs, "steps_per_sec"),
            # run folders written before compile time was measured apart timed it with the first chunk
            "steps_per_sec_includes_compile": any(r.summary.get("steps_per_sec_includes_compile") for r in g.runs),
            "compile_s": _mean_of(g.runs, "compile_s"),
            "param_count": param_counts[0] if len(param_counts) == 1 else param_counts,
            "finished": all(r.summary.get("finished", True) for r in g.runs),
            "runs": [str(r.path) for r in g.runs],
        })
    return rows


def _fmt(v, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def markdown(rows: list[dict]) -> str:
    """One table per environment, rows in the order given.

    The headers name the evaluation policy; where the rows of a table come from different policies the
    table gets a policy column and a line that says so (and how to compare one policy).
    """
    names = evaluate_module().POLICY_NAMES
    out = []
    for env in dict.fromkeys(r["env"] for r in rows):
        sub = [r for r in rows if r["env"] == env]
        name = "win rate" if sub[0]["metric"] == "eval_won" else "return"
        convention = "" if name == "win rate" else f" ({sub[0]['team_return']} over agents)"
        policies = list(dict.fromkeys(r["policy"] for r in sub))
        mixed = len(policies) > 1
        ari = any(r.get("type_ari") is not None for r in sub)  # a method here partitions the agents
        which = "MIXED evaluation policies (see the policy column)" if mixed else f"{names[policies[0]]} policy"
        final = f"final {name}" if mixed else f"final {name} ({names[policies[0]]} policy)"
        out += [f"### {env}: final {name}{convention}, {which}", "",
                "| method | learner | " + ("eval policy | " if mixed else "") + f"seeds | {final}, IQM [95% CI] | "
                "env steps per seed | env steps/s (all seeds) | compile s | parameters |"
                + (" type_ari |" if ari else ""),
                "|---|---|" + ("---|" if mixed else "") + "---:|---|---:|---:|---:|---:|" + ("---:|" if ari else "")]
        for r in sub:
            sps = _fmt(r["steps_per_sec"], ",.0f") + ("*" if r["steps_per_sec_includes_compile"] else "")
            steps = f"{r['env_steps']:,}" + ("" if r["finished"] else " (unfinished)")
            params = (f"{r['param_count']:,}" if isinstance(r["param_count"], int)
                      else " / ".join(f"{p:,}" for p in r["param_count"] if p is not None) or "-")
            policy = f"{names[r['policy']]}{' (assumed)' if r['policy_assumed'] else ''} | " if mixed else ""
            score = (f"{_fmt(r['iqm'], '.3f')} [{_fmt(r['ci_low'], '.3f')}, {_fmt(r['ci_high'], '.3f')}]"
                     if not r.get("diverged") else
                     f"**diverged** ({r['diverged']['seeds']} of {r['seeds']} seeds non-finite from env step "
                     f"{r['diverged']['first_env_step']:,})")
            out.append(f"| {r['method']} | {r['learner']} | {policy}{r['seeds']} | {score} | {steps} | {sps} | "
                       f"{_fmt(r['compile_s'], '.1f')} | {params} |"
                       + (f" {_fmt(r.get('type_ari'), '.2f')} |" if ari else ""))
        out.append("")
        diverged = [f"{r['method']} ({r['learner']})" for r in sub if r.get("diverged")]
        if diverged:
            out += [f"**Diverged**: {', '.join(diverged)} went non-finite (loss, gradients or parameters; see each "
                    "run's summary.json `nonfinite`): not a result, so not ranked. Rerun with a smaller learning "
                    "rate, or resume= from its last good checkpoint with changed settings.", ""]
        if mixed:
            used = "; ".join(f"{names[p]} for " + ", ".join(f"{r['method']} ({r['learner']})" for r in sub
                                                          if r["policy"] == p) for p in policies)
            out += [f"**Mixed evaluation policies**: {used}. A greedy and a sampled figure measure different "
                    "policies and are not comparable; to compare one policy, train with eval_policy=both and "
                    "compare with policy=greedy or policy=sample.", ""]
        assumed = [name for r in sub for name in r["policy_assumed"]]
        if assumed:
            out += [f"Greedy assumed for {', '.join(assumed)}: run folders written before the evaluation policy "
                    "was recorded (psjax evaluated greedily only then).", ""]
    out.append("Final = each seed's last evaluation with the policy named; IQM over seeds (the mean when there are "
               "fewer than 4) with a 95% stratified percentile bootstrap interval. Steps per second: every seed of a "
               "run together, compilation excluded (* = included: the run had no second chunk to time). type_ari "
               "(where a method partitions the agents): the final adjusted Rand index between its partition and the "
               "task's agent kinds, mean over seeds (1 = exactly the kinds, ~0 = unrelated).")
    return "\n".join(out) + "\n"


def curve_band(y: np.ndarray, reps: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IQM over seeds and its 95% bootstrap band at every evaluation: ``y[I, S] -> 3 x float[I]``.

    Points where no seed has a value are NaN.
    """
    out = np.full((3, y.shape[0]), np.nan)
    for i, row in enumerate(y):
        values = row[np.isfinite(row)]
        if values.size:
            out[:, i] = stratified_bootstrap_ci(values, reps=reps)
    return out[0], out[1], out[2]


def plot(groups: list[Group], path: pathlib.Path) -> pathlib.Path:
    """``compare.png``: one panel per environment, one line per (method, learner, policy) with its band."""
    names = evaluate_module().POLICY_NAMES
    from matplotlib import colormaps
    from matplotlib.figure import Figure  # no pyplot: no global backend state, works headless

    envs = list(dict.fromkeys(g.env for g in groups))
    cols = min(3, len(envs))
    rows = math.ceil(len(envs) / cols)
    fig = Figure(figsize=(6 * cols, 4.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).reshape(-1)
    labels = list(dict.fromkeys((g.method, g.learner, g.policy) for g in groups))
    colors = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    for ax, env in zip(axes, envs):
        for g in (g for g in groups if g.env == env):
            mid, low, high = curve_band(g.y)
            keep = np.isfinite(mid)
            color = colors(labels.index((g.method, g.learner, g.policy)) % colors.N)
            diverged = any(r.diverged for r in g.runs)  # dashed, named: its evaluations up to going non-finite
            ax.plot(g.x[keep], mid[keep], color=color, marker="o", ms=2.5, ls="--" if diverged else "-",
                    label=f"{g.method} ({g.learner}, {names[g.policy]} policy, {g.y.shape[1]} seeds)"
                          + (" DIVERGED: not a result" if diverged else ""))
            ax.fill_between(g.x[keep], low[keep], high[keep], color=color, alpha=0.2, lw=0)
        metric = "win rate" if g.runs[0].metric == "eval_won" else "return"
        policies = list(dict.fromkeys(g.policy for g in groups if g.env == env))
        ax.set_title(env)
        ax.set_xlabel("env steps per seed")
        ax.set_ylabel(f"eval {metric} ({names[policies[0]]} policy)" if len(policies) == 1 else
                      f"eval {metric} (MIXED policies: see the legend)")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    for ax in axes[len(envs):]:
        ax.set_visible(False)
    fig.suptitle("IQM over seeds, 95% bootstrap band")
    fig.savefig(path, dpi=120)
    return path


def report(run_dirs: Sequence, out_dir, *, reps: int = 2000, metric: str = "auto", steps: int | None = None,
           policy: str = "auto", labels: Sequence[str | None] | None = None) -> dict:
    """Write ``compare.png``, ``compare.md`` and ``compare.json`` for ``run_dirs`` into ``out_dir``.

    Args:
      run_dirs: run folders and / or sweep folders holding run folders.
      out_dir: where the three files go (created if needed).
      reps: bootstrap replicates of the final-performance intervals.
      metric: "auto" (win rate on SMAX, return elsewhere), "win" or "return".
      steps: compare at this many env steps per seed: later evaluations are left out, and a run's final
        score is its last evaluation at or before it (None: every run's own last evaluation).
      policy: "auto" (each run's primary evaluation policy), "greedy" or "sample" (every run must have
        evaluated it: eval_policy=both, or that policy alone).
      labels: a row name per run folder of ``run_dirs`` (run folders only; None keeps the method's name), e.g.
        ``psjax.reproduce``'s variants.

    Returns ``{"png", "markdown", "json"}`` paths, ``"rows"`` (see ``table_rows``) and ``"runs"``.
    """
    paths = find_runs(run_dirs)
    loaded = [load_run(p, metric, steps, policy) for p in paths]
    if labels is not None:
        loaded = [r._replace(method=label) if label else r for label, r in zip(labels, loaded, strict=True)]
    groups = group_runs(loaded)
    rows = table_rows(groups, reps=reps)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = plot(groups, out / "compare.png")
    md = out / "compare.md"
    md.write_text(markdown(rows))
    js = out / "compare.json"
    js.write_text(json.dumps(rows, indent=2) + "\n")
    return {"png": png, "markdown": md, "json": js, "rows": rows, "runs": paths}
