"""Run folders in marl-eval's JSON layout (instadeepai/marl-eval; the layout Mava and BenchMARL write).

    python -m psjax export runs/smax-fups_id-ppo runs/compare-smax-... out=results.json [policy=auto]
        [algorithm=method|folder]

Layout (marl-eval's README)::

    {env: {task: {algorithm: {"run_<seed>": {"step_<k>": {"step_count": env steps per seed,
                                                          "return": [...], "win_rate": [...]},
                                             ...,
                                             "absolute_metrics": {"return": [...], "win_rate": [...]}}}}}}

``env`` is the environment's name (``smax``), ``task`` the rest of its label (``3m``, ``8x8-2p-2f-coop``),
``algorithm`` ``<method>-<learner>`` (or the run folder's name with ``algorithm=folder``: two folders of one
method and learner, e.g. a recurrent and a feed-forward PPO, would otherwise collide), ``run_<seed>`` one
seed, ``step_<k>`` the k-th evaluation (k = 0 before training). ``win_rate`` only where the env has a win
flag (SMAX). psjax logs each evaluation's mean over ``eval_envs`` episodes, not the episodes themselves, so
every list holds that one mean: marl-eval's aggregates, which average each list first, are what they would
be from the episodes; the spread between episodes is not in the file. ``absolute_metrics`` repeats the last
evaluation (marl-eval's convention of a final evaluation over 10x the episodes is not psjax's). A run that went
non-finite (diverged: summary.json's ``nonfinite``, or an evaluation marked ``nonfinite``) is left out and named
on stderr: marl-eval has no field to flag it, and its aggregates would rank it.
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Sequence

from psjax.compare import diverged_seeds, env_label, evaluate_module, find_runs, read_jsonl
from psjax.fields import ConfigError
from psjax.schema import team_return_of

ALGORITHM_NAMES = ("method", "folder")  # export's algorithm= values
POLICIES = ("auto", "greedy", "sample")  # export's policy= values; auto = each run's primary policy


def run_entries(run_dir: pathlib.Path, policy: str = "auto") -> dict[str, dict]:
    """``{"run_<seed>": {"step_<k>": {...}, "absolute_metrics": {...}}}`` of one run folder."""
    summary = json.loads((run_dir / "summary.json").read_text())
    evaluated = summary.get("final_eval", {}).get("policies") or ["greedy"]
    if policy != "auto" and policy not in evaluated:
        raise ConfigError(f"policy={policy}: {run_dir} evaluated the {' and '.join(evaluated)} policy only; allowed: "
                          f"auto, {', '.join(evaluated)}")
    chosen = None if policy == "auto" else policy  # auto: the plain eval_* columns (the run's primary policy)
    stats = {"return": "return", **({"win_rate": "won"} if summary.get("has_win") else {})}
    eval_key = evaluate_module().eval_key
    rows = read_jsonl(run_dir / "eval.jsonl")
    runs = {}
    for seed in sorted({r["seed"] for r in rows}):
        evals = sorted((r for r in rows if r["seed"] == seed), key=lambda r: r["iteration"])
        steps = {}
        for k, row in enumerate(evals):
            entry = {"step_count": int(row["env_steps"])}
            for name, stat in stats.items():
                value = row.get(eval_key(stat, chosen))
                entry[name] = [] if value is None else [float(value)]
            steps[f"step_{k}"] = entry
        last = steps[f"step_{len(evals) - 1}"]
        runs[f"run_{seed}"] = {**steps, "absolute_metrics": {name: last[name] for name in stats}}
    return runs


def marl_eval_json(paths: Sequence, policy: str = "auto", algorithm: str = "method",
                   left_out: list | None = None, conventions: dict | None = None) -> dict:
    """The marl-eval dictionary of every run folder among ``paths`` (run folders or folders of them).

    A run that went non-finite (``psjax.compare.diverged_seeds``) is not a result: it is left out, whole (keeping
    its other seeds would rank the survivors), and ``(run folder, why)`` is appended to ``left_out``. ``conventions``
    collects, per "env/task", the return conventions over agents of the runs exported (``env.team_return``).
    """
    if policy not in POLICIES:
        raise ConfigError(f"unknown policy {policy!r}; allowed: {', '.join(POLICIES)}")
    if algorithm not in ALGORITHM_NAMES:
        raise ConfigError(f"unknown algorithm naming {algorithm!r}; allowed: {', '.join(ALGORITHM_NAMES)}")
    import yaml

    out: dict = {}
    for run_dir in find_runs(paths):
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        summary = json.loads((run_dir / "summary.json").read_text())
        diverged = diverged_seeds(summary, read_jsonl(run_dir / "eval.jsonl"))
        if diverged:
            step = (summary.get("nonfinite") or {}).get("env_step")
            why = (f"diverged: seed{'s' * (len(diverged) > 1)} {', '.join(map(str, diverged))} non-finite"
                   + (f" from env step {step:,}" if step is not None else ""))
            if left_out is not None:
                left_out.append((run_dir, why))
            continue
        env, _, task = env_label(config["env"]).partition(" ")
        if conventions is not None:  # "env/task" -> the set of return conventions over agents (env.team_return)
            conventions.setdefault(f"{env}/{task or env}", set()).add(team_return_of(config["env"], summary))
        name = (f"{summary.get('alg', config['alg'])}-{summary['learner']}" if algorithm == "method"
                else run_dir.name)
        if algorithm == "method" and summary.get("sweep_point"):  # a sweep's point: its values name it apart
            name += f" [{summary['sweep_point']}]"
        tasks = out.setdefault(env, {}).setdefault(task or env, {})
        if name in tasks:
            raise ConfigError(f"two run folders export as {env} / {task or env} / {name} (the second: {run_dir}); "
                              "allowed: algorithm=folder, which names each by its folder")
        tasks[name] = run_entries(run_dir, policy)
    return out


def export(paths: Sequence, out: str | pathlib.Path, policy: str = "auto", algorithm: str = "method") -> pathlib.Path:
    """Write ``marl_eval_json(paths)`` to ``out`` and return its path; the runs left out (diverged) are named on
    stderr, and a ConfigError is raised when every run is."""
    left_out: list = []
    found: dict[str, set] = {}
    data = marl_eval_json(paths, policy, algorithm, left_out, found)
    for run_dir, why in left_out:
        print(f"left out of the export: {run_dir} ({why}; a run that went non-finite is not a result)",
              file=sys.stderr)
    if left_out and not data:
        raise ConfigError("every run given went non-finite (diverged); nothing to export")
    mixed = {k: sorted(v) for k, v in found.items() if len(v) > 1}
    if mixed:  # sum = N x mean: marl-eval would pool them
        raise ConfigError(f"runs of one task report the return under different conventions over agents: {mixed}; "
                          "export runs of one env.team_return")
    conventions = {k: v.pop() for k, v in found.items()}
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1))
    sidecar = out.with_name(out.stem + ".team_return.json")
    sidecar.write_text(json.dumps(conventions, indent=1) + "\n")
    print(f"{out}: returns are " + "; ".join(f"{k}: {v} over agents" for k, v in conventions.items())
          + f" (also in {sidecar.name}: marl-eval's layout has no field for it)", file=sys.stderr)
    return out

