"""The papers' comparisons, declared once as data and run by one command.

``python -m psjax reproduce`` lists them; ``python -m psjax reproduce NAME [seeds=N] [steps=N] [out=DIR]`` trains
every method of one (a ``compare-sweep``: seeds vmapped inside each run, resumable: the same command again reuses
finished runs and continues a stopped one) into ``runs/reproduce-NAME/`` and writes there, beside compare.md /
compare.png, ``verdict.md`` and ``verdict.json``: for each pair the paper orders, the probability of improvement
P(X > Y) (rliable's definition: the chance that a run of X scores above a run of Y, ties counting a half) with a
95% bootstrap interval over runs, and a verdict:

- a pair **holds** when the interval's lower end is above 0.5, is **reversed** when its upper end is below 0.5,
  and is **unresolved** otherwise; a pair claimed alike (``~``) holds when the interval contains 0.5;
- the claim is **reproduced** when every pair holds, **not reproduced** when any pair is reversed or none holds,
  **partly** otherwise; **diverged** when a run went non-finite (never a result).

A verdict is a measurement at the budget run, not a judgement of the paper: the paper's own budget is named beside
psjax's. Nothing here imports JAX until a run starts.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import NamedTuple, Sequence

import numpy as np

from psjax.compare import BOOTSTRAP_SEED, sweep
from psjax.fields import ConfigError


class Pair(NamedTuple):
    """One ordering a paper claims between two methods (as ``compare`` names them: ``alg`` or ``alg:learner``)."""

    first: str
    second: str
    relation: str = ">"  # ">": first scores above second; "~": the two cannot be told apart


class Reproduction(NamedTuple):
    """One comparison of a paper, as data."""

    name: str
    paper: str  # seed file and method, e.g. "AdaPS (seed 001)"
    claim: str  # the paper's claim, one line
    task: str  # what a reader calls the task, e.g. "BPS 15a3c (reference large_spread)"
    env: dict  # environment keys of the sweep
    algs: tuple[str, ...]
    extra: dict  # every other config key (learner, preset, method options)
    seeds: int
    steps: int  # psjax's default budget (env steps per seed)
    paper_budget: str  # what the paper ran, for the reader
    pairs: tuple[Pair, ...]


A2C = {"learner": "a2c", "eval_every": 0.05}
IDENTITY_METHODS = ("nops", "fups", "fups_id", "seps", "adaps", "snp_ps")

REPRODUCTIONS: dict[str, Reproduction] = {r.name: r for r in (
    Reproduction(
        "adaps_bps", "AdaPS (seed 001)", "on BPS NoPS is best, AdaPS close to it, FuPS poor (Fig. 3a)",
        "BPS 15a3c", {"env": "bps", "variant": "15a3c"}, IDENTITY_METHODS, A2C, 5, 500_000,
        "not stated in the text (curves to ~1e7 steps)",
        (Pair("nops", "fups"), Pair("adaps", "fups"), Pair("seps", "fups"), Pair("adaps", "nops", "~"))),
    Reproduction(
        "adaps_lbf", "AdaPS (seed 001)", "on LBF AdaPS is best, FuPS / FuPS+id slightly worse, SePS and NoPS poor "
        "(Fig. 3b)", "LBF 8x8-4p-3f, lb-foraging rules, SePS persistent levels",
        {"env": "lbf", "scenario": "8x8-4p-3f", "lbf_rules": "lbforaging", "lbf_seps_levels": True},
        IDENTITY_METHODS, A2C, 5, 1_000_000, "not stated in the text",
        (Pair("adaps", "fups"), Pair("adaps", "seps"), Pair("adaps", "nops"), Pair("fups", "nops"))),
    Reproduction(
        "adaps_crware", "AdaPS (seed 001)", "on C-RWARE FuPS is lower, the other methods alike (Fig. 3c)",
        "C-RWARE tiny, 4 robots of 2 colours (reference rules)", {"env": "crware", "variant": "tiny"},
        IDENTITY_METHODS, A2C, 5, 2_000_000, "not stated in the text",
        (Pair("nops", "fups"), Pair("seps", "fups"), Pair("adaps", "fups"), Pair("adaps", "nops", "~"))),
    Reproduction(
        "madps_bps", "MAPD / MADPS (seed 003)", "dynamic fusion / division matches or beats static sharing on BPS",
        "BPS 15a3c", {"env": "bps", "variant": "15a3c"}, ("madps", "nops", "fups_id", "seps"), A2C, 5, 500_000,
        "not stated in the appendix",
        (Pair("madps", "fups_id"), Pair("madps", "nops", "~"), Pair("madps", "seps", "~"))),
    Reproduction(
        "bdps_lbf", "BDPS (seed 000)", "bi-level sharing beats either level alone and full sharing on LBF "
        "(appendix G)", "LBF 15x15-4p-5f, lb-foraging rules", {}, ("bdps", "bdps_role", "bdps_team", "fups_id", "nops"),
        {"preset": "bdps_lbf"}, 5, 300_000, "20M steps",
        (Pair("bdps", "bdps_role"), Pair("bdps", "bdps_team"), Pair("bdps", "fups_id"), Pair("fups_id", "nops"))),
    Reproduction(
        "bdps_smax_3m", "BDPS (seed 000)", "bi-level sharing beats either level alone, full sharing beats none "
        "(Fig. 4, on 5m_vs_6m)", "SMAX 3m", {"env": "smax", "map": "3m"},
        ("bdps", "bdps_role", "bdps_team", "fups_id", "nops"), {"preset": "bdps_smax"}, 5, 200_000,
        "2M-5M steps on SMAC maps",
        (Pair("bdps", "bdps_role"), Pair("bdps", "bdps_team"), Pair("bdps", "fups_id"), Pair("fups_id", "nops"))),
    Reproduction(
        "pps_smax_3m", "PPS-QMIX (seed 002)", "A-PPS converges faster than QMIX on small symmetric maps; every PPS "
        "beats QMIX (Fig. 4)", "SMAX 3m", {"env": "smax", "map": "3m"},
        ("pps_a", "pps_rs", "pps_pp", "fups_id", "nops"), {"preset": "pps_smax"}, 5, 300_000, "2M steps on SMAC",
        (Pair("pps_a", "fups_id"), Pair("pps_rs", "fups_id"), Pair("pps_pp", "fups_id"))),
    Reproduction(
        "pps_smax_2s3z", "PPS-QMIX (seed 002)", "RS-PPS wins more than QMIX on harder maps; every PPS beats QMIX",
        "SMAX 2s3z", {"env": "smax", "map": "2s3z"}, ("pps_a", "pps_rs", "pps_pp", "fups_id", "nops"),
        {"preset": "pps_smax"}, 5, 300_000, "2M steps on SMAC",
        (Pair("pps_rs", "fups_id"), Pair("pps_a", "fups_id"), Pair("pps_pp", "fups_id"))),
)}


# --------------------------------------------------------------------------- statistics


def probability_of_improvement(x: Sequence[float], y: Sequence[float]) -> float:
    """P(X > Y) over every pair of a run of X and a run of Y, ties counting a half (rliable)."""
    x, y = np.asarray(x, float)[:, None], np.asarray(y, float)[None, :]
    return float(np.mean((x > y) + 0.5 * (x == y)))


def probability_of_improvement_ci(x: Sequence[float], y: Sequence[float], reps: int = 2000,
                                  confidence: float = 0.95, seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """``(point, low, high)``: ``probability_of_improvement`` and its percentile bootstrap interval, the runs of X
    and of Y resampled with replacement independently. Deterministic given ``seed``."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size == 0 or y.size == 0:
        raise ValueError("probability of improvement needs at least one run of each method")
    rng = np.random.default_rng(seed)
    xs = x[rng.integers(0, x.size, (reps, x.size))]
    ys = y[rng.integers(0, y.size, (reps, y.size))]
    stats = np.mean((xs[:, :, None] > ys[:, None, :]) + 0.5 * (xs[:, :, None] == ys[:, None, :]), axis=(1, 2))
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(stats, [tail, 100.0 - tail])
    return probability_of_improvement(x, y), float(low), float(high)


def pair_outcome(relation: str, low: float, high: float) -> str:
    """``holds`` / ``reversed`` / ``unresolved`` for a claimed pair from its interval (see the module doc)."""
    if relation == "~":
        return "holds" if low <= 0.5 <= high else "reversed"
    if low > 0.5:
        return "holds"
    return "reversed" if high < 0.5 else "unresolved"


def overall_verdict(outcomes: Sequence[str]) -> str:
    if outcomes and all(o == "holds" for o in outcomes):
        return "reproduced"
    if "reversed" in outcomes or "holds" not in outcomes:
        return "not reproduced"
    return "partly"


def judge(rows: list[dict], pairs: Sequence[Pair], reps: int = 2000) -> dict:
    """The verdict from ``compare.table_rows`` rows (one env): every pair's P(first > second) with its interval."""
    by_method = {(r["method"], r["learner"]): r for r in rows}

    def find(entry: str) -> dict:
        alg, _, learner = entry.partition(":")
        found = [r for (m, lrn), r in by_method.items() if m == alg and (not learner or lrn == learner)]
        if len(found) != 1:
            raise ConfigError(f"the comparison has {len(found)} rows for {entry!r}; rows: "
                              f"{', '.join(f'{m}:{lrn}' for m, lrn in by_method)}")
        return found[0]

    results, diverged = [], []
    for pair in pairs:
        a, b = find(pair.first), find(pair.second)
        diverged += [r["method"] for r in (a, b) if r.get("diverged")]
        xa = [v for v in a["final_per_seed"] if math.isfinite(v)]
        xb = [v for v in b["final_per_seed"] if math.isfinite(v)]
        point, low, high = probability_of_improvement_ci(xa, xb, reps)
        results.append({"first": pair.first, "second": pair.second, "relation": pair.relation,
                        "probability": point, "ci_low": low, "ci_high": high,
                        "outcome": pair_outcome(pair.relation, low, high)})
    verdict = "diverged" if diverged else overall_verdict([r["outcome"] for r in results])
    return {"verdict": verdict, "pairs": results, "diverged": sorted(set(diverged))}


# --------------------------------------------------------------------------- running one


def get(name: str) -> Reproduction:
    if name not in REPRODUCTIONS:
        raise ConfigError(f"unknown reproduction {name!r}; allowed: {', '.join(REPRODUCTIONS)}")
    return REPRODUCTIONS[name]


def listing() -> str:
    """One line per declared comparison (``python -m psjax reproduce``)."""
    width = max(map(len, REPRODUCTIONS))
    lines = [f"{r.name:<{width}}  {r.paper}: {r.claim} [{r.task}; {', '.join(r.algs)}; {r.seeds} seeds x "
             f"{r.steps:,} steps]" for r in REPRODUCTIONS.values()]
    return "\n".join(lines + ["", "python -m psjax reproduce NAME [seeds=N] [steps=N] [out=DIR] [key=value ...]"])


def verdict_markdown(rep: Reproduction, judged: dict, rows: list[dict], seeds: int, steps: int) -> str:
    """``verdict.md``: the claim, the budget, the table of pairs and the verdict."""
    policy = rows[0]["policy"] if rows else "?"
    metric = "win rate" if rows and rows[0]["metric"] == "eval_won" else "return"
    lines = [f"# {rep.name}: {rep.paper}", "", f"Claim: {rep.claim}.", "",
             f"Task: {rep.task}. Budget: {steps:,} env steps per seed, {seeds} seeds (the paper: "
             f"{rep.paper_budget}). Score: final {metric} of the {policy} policy.", "",
             "| method | IQM [95% CI] | seeds | type_ari |", "|---|---|---|---|"]
    for r in rows:
        ari = r.get("type_ari")
        lines.append(f"| {r['method']} ({r['learner']}) | {r['iqm']:.3g} [{r['ci_low']:.3g}, {r['ci_high']:.3g}] | "
                     f"{r['seeds']} | {'-' if ari is None else format(ari, '.2f')} |")
    lines += ["", "| claimed | P(first > second) [95% CI] | outcome |", "|---|---|---|"]
    for p in judged["pairs"]:
        sign = "beats" if p["relation"] == ">" else "alike"
        lines.append(f"| {p['first']} {sign} {p['second']} | {p['probability']:.2f} [{p['ci_low']:.2f}, "
                     f"{p['ci_high']:.2f}] | {p['outcome']} |")
    lines += ["", f"**Verdict: {judged['verdict']}**" + (f" (diverged: {', '.join(judged['diverged'])})"
                                                          if judged["diverged"] else ""), ""]
    return "\n".join(lines)


def reproduce(name: str, seeds: int | None = None, steps: int | None = None, out_dir=None,
              extra: dict | None = None) -> dict:
    """Train (or continue) the declared comparison ``name`` and write its report and verdict.

    Returns ``compare.report``'s dict plus ``"verdict"`` (``judge``'s dict) and ``"verdict_md"`` (its path).
    """
    rep = get(name)
    seeds, steps = seeds or rep.seeds, steps or rep.steps
    out = pathlib.Path(out_dir) if out_dir is not None else pathlib.Path("runs") / f"reproduce-{name}"
    result = sweep(rep.env, rep.algs, seeds, steps, out, {**rep.extra, **(extra or {})})
    judged = judge(result["rows"], rep.pairs)
    judged.update(name=name, paper=rep.paper, claim=rep.claim, task=rep.task, seeds=seeds, steps=steps)
    (out / "verdict.json").write_text(json.dumps(judged, indent=2) + "\n")
    md = out / "verdict.md"
    md.write_text(verdict_markdown(rep, judged, result["rows"], seeds, steps))
    return {**result, "verdict": judged, "verdict_md": md}
