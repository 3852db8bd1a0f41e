"""The papers' comparisons, declared once as data and run by one command.

``python -m psjax reproduce`` lists them; ``python -m psjax reproduce NAME [seeds=N] [steps=N] [out=DIR]`` trains
every run of one (as ``compare-sweep`` does: seeds vmapped inside each run, resumable: the same command again reuses
finished runs and continues a stopped one) into ``runs/reproduce-NAME/`` and writes there, beside compare.md /
compare.png, ``verdict.md`` and ``verdict.json``. A declaration's runs are its methods (a folder ``<alg>-<learner>``
each) or, when it declares ``variants``, its variants: named config overrides (a folder named after the variant
each; its row in the table is ``alg [variant]``, or ``alg`` where the variant is named after its method), for
comparisons that vary an option rather than the method. Every result in docs/results.md names the declaration
that reruns it; benchmarks/README.md maps the shell scripts these replaced to them.

For each pair the paper orders, verdict.md gives the probability of improvement
P(X > Y) (rliable's definition: the chance that a run of X scores above a run of Y, ties counting a half) with a
95% bootstrap interval over runs, and a verdict:

- a pair **holds** when the interval's lower end is above 0.5, is **reversed** when its upper end is below 0.5,
  and is **unresolved** otherwise; a pair claimed alike (``~``) holds when the interval contains 0.5;
- the claim is **reproduced** when every pair holds, **not reproduced** when any pair is reversed or none holds,
  **partly** otherwise; **diverged** when a run went non-finite (never a result);
- a declaration that claims no pair is a recorded comparison: its verdict is **no claim** (or **diverged**).

A verdict is a measurement at the budget run, not a judgement of the paper: the paper's own budget is named beside
psjax's. Nothing here imports JAX until a run starts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import NamedTuple, Sequence

import numpy as np

from psjax import compare
from psjax.compare import BOOTSTRAP_SEED
from psjax.fields import ConfigError
from psjax.method_runs import folder_step, method_configs


class Pair(NamedTuple):
    """One ordering a paper claims between two methods (as ``compare`` names them: ``alg`` or ``alg:learner``)."""

    first: str
    second: str
    relation: str = ">"  # ">": first scores above second; "~": the two cannot be told apart


class Reproduction(NamedTuple):
    """One comparison, as data: a paper's (with the pairs it claims) or one psjax records (no pairs)."""

    name: str
    paper: str  # seed file and method, e.g. "AdaPS (seed 001)"; or where psjax recorded it, e.g. "psjax (issue 16)"
    claim: str  # the paper's claim, one line; "" for a recorded comparison (it claims nothing)
    task: str  # what a reader calls the task, e.g. "BPS 15a3c (reference large_spread)"
    env: dict  # environment keys of the sweep
    algs: tuple[str, ...]  # the methods ("alg" or "alg:learner"); with variants: the method of those naming none
    extra: dict  # every other config key (learner, preset, method options)
    seeds: int
    steps: int  # psjax's default budget (env steps per seed)
    paper_budget: str  # what the paper ran, for the reader ("-" for a recorded comparison)
    pairs: tuple[Pair, ...] = ()  # the orderings claimed, by row name (see the module doc); () = no claim
    variants: dict = {}  # run folder name -> config overrides over env and extra (may set alg / learner); {} = algs
    note: str = ""  # what the reader should know: the old script's remarks, what changed since the recorded figures


A2C = {"learner": "a2c", "eval_every": 0.05}
PPO = {"learner": "ppo"}
IDENTITY_METHODS = ("nops", "fups", "fups_id", "seps", "adaps", "snp_ps")
LBF_COOP = {"env": "lbf", "scenario": "8x8-2p-2f-coop"}
SPREAD = {"env": "mpe_spread"}
BPS = {"env": "bps", "variant": "15a3c"}
SMAX_3M = {"env": "smax", "map": "3m"}
BPS_NOTE = ("BPS is the SePS authors' large_spread since commit cdc9356; figures in docs/results.md / changelog.md "
            "measured before are marked 'old task' and are not what this reruns.")
CRWARE_NOTE = ("C-RWARE is the SePS authors' coloured warehouse since commit 869a1c0; figures in docs/results.md / "
               "changelog.md measured before are marked 'old task' and are not what this reruns.")
FIDELITY = "psjax, issue 16 re-run"  # the groups of benchmarks/fidelity_runs.sh (runs/fid_<group>)
ENV_RUNS = "psjax, issue 7: the papers' environments"  # benchmarks/env_runs.sh (not run at this budget)
# MADPS and its baselines, each with its own options (benchmarks/madps_runs.sh): a MAPD round every 10 PPO iterations
# (20k env steps) as a metric, MADPS restructuring every 10 iterations from the second round, SePS pretraining 1e5
MADPS_PPO = {"madps": {"alg": "madps", "madps_interval": 10, "madps_start": 20},
             "nops": {"alg": "nops", "mapd_interval": 10}, "fups_id": {"alg": "fups_id", "mapd_interval": 10},
             "seps": {"alg": "seps", "mapd_interval": 10, "identity_pretrain_steps": 100_000}}
MADPS_A2C = {**{m: {"alg": m, "mapd_interval": 500} for m in ("madps", "nops", "fups_id")},
             "seps": {"alg": "seps", "mapd_interval": 500, "identity_pretrain_steps": 100_000}}
MADPS_NOTE = ("benchmarks/madps_runs.sh ran 4 seeds x 2M by default (seeds=4 steps=2e6); the recorded figures are "
              "3 seeds x 1M (MPE 9 agents 500k). The seed's spread threshold eps1 = 1.0 (the script's EPS1=1): add "
              "madps_fuse_threshold=1.0 with another out=.")
IMAGE_INDICATIONS = ("identity", "geometric", "binary", "inversion", "inversion_replacement")
PPS_METHODS = ("pps_a", "pps_rs", "pps_pp", "fups_id", "nops")
BDPS_METHODS = ("bdps", "bdps_role", "bdps_team", "fups_id", "nops")
BDPS_PAIRS = (Pair("bdps", "bdps_role"), Pair("bdps", "bdps_team"), Pair("bdps", "fups_id"), Pair("fups_id", "nops"))
# a task whose agents differ unseen: the SePS levels (kinds i % 2 for 2 agents, the indications' two types)
LBF_KINDS_UNSEEN = {"env": "lbf", "scenario": "8x8-2p-2f", "fov": 2, "lbf_rules": "lbforaging",
                    "lbf_seps_levels": True, "lbf_grid_obs": True, "lbf_grid_hide_levels": True}
PPS_PAIRS = (Pair("pps_a", "fups_id"), Pair("pps_rs", "fups_id"), Pair("pps_pp", "fups_id"))


def _recorded(name: str, paper: str, task: str, env: dict, algs: tuple, extra: dict, seeds: int, steps: int,
              note: str = "", variants: dict | None = None) -> Reproduction:
    """A comparison psjax records without a paper's claim to judge (its verdict is "no claim")."""
    return Reproduction(name, paper, "", task, env, algs, extra, seeds, steps, "-", (), variants or {}, note)


REPRODUCTIONS: dict[str, Reproduction] = {r.name: r for r in (
    # ----------------------------------------------------------------- the papers' claims
    Reproduction(
        "adaps_bps", "AdaPS (seed 001)", "on BPS NoPS is best, AdaPS close to it, FuPS poor (Fig. 3a)",
        "BPS 15a3c", BPS, IDENTITY_METHODS, A2C, 5, 500_000,
        "not stated in the text (curves to ~1e7 steps)",
        (Pair("nops", "fups"), Pair("adaps", "fups"), Pair("seps", "fups"), Pair("adaps", "nops", "~")),
        note=BPS_NOTE + " env_runs.sh's BPS 15a3c runs: seeds=4 steps=2e6 identity_clusters=3."),
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
        (Pair("nops", "fups"), Pair("seps", "fups"), Pair("adaps", "fups"), Pair("adaps", "nops", "~")),
        note=CRWARE_NOTE + " env_runs.sh's tiny (normal) runs: seeds=4 identity_clusters=2."),
    Reproduction(
        "madps_bps", "MAPD / MADPS (seed 003)", "dynamic fusion / division matches or beats static sharing on BPS",
        "BPS 15a3c", BPS, ("madps", "nops", "fups_id", "seps"), A2C, 5, 500_000,
        "not stated in the appendix",
        (Pair("madps", "fups_id"), Pair("madps", "nops", "~"), Pair("madps", "seps", "~")), note=BPS_NOTE),
    Reproduction(
        "madps_bps_late", "MAPD / MADPS (seed 003)", "dynamic fusion / division matches or beats static sharing on "
        "BPS", "BPS 15a3c, MADPS restructuring from 240k steps with eps0 0.3", BPS,
        ("madps", "nops", "fups_id", "seps"),
        {**A2C, "madps_start": 6000, "madps_back_threshold": 0.3}, 5, 500_000, "not stated in the appendix",
        (Pair("madps", "fups_id"), Pair("madps", "nops", "~"), Pair("madps", "seps", "~")),
        note=BPS_NOTE + " The colours separate in MAPD distance from ~260k steps (NoPS: within 0.07-0.13, between "
        "0.46-0.68); the first restructuring after that, with eps0 between the two bands, fuses the backs by colour "
        "(docs/methods.md, MADPS). The other methods ignore the MADPS options."),
    Reproduction(
        "bdps_lbf", "BDPS (seed 000)", "bi-level sharing beats either level alone and full sharing on LBF "
        "(appendix G)", "LBF 15x15-4p-5f, lb-foraging rules", {}, BDPS_METHODS,
        {"preset": "bdps_lbf"}, 5, 300_000, "20M steps", BDPS_PAIRS,
        note="recorded in docs/changelog.md at seeds=3 (fidelity_runs.sh bdps_lbf); bdps_runs.sh ran seeds=3 "
             "steps=2e6."),
    Reproduction(
        "bdps_smax_3m", "BDPS (seed 000)", "bi-level sharing beats either level alone, full sharing beats none "
        "(Fig. 4, on 5m_vs_6m)", "SMAX 3m", SMAX_3M, BDPS_METHODS, {"preset": "bdps_smax"}, 5, 200_000,
        "2M-5M steps on SMAC maps", BDPS_PAIRS,
        note="fidelity_runs.sh ran bdps / fups_id / nops at 5 seeds (bdps_3m) and the two ablations at 3 "
             "(bdps_3m_ablations); bdps_runs.sh ran seeds=3 steps=2e6."),
    Reproduction(
        "bdps_smax_5m_vs_6m", "BDPS (seed 000)", "bi-level sharing beats either level alone, full sharing beats "
        "none (Fig. 4)", "SMAX 5m_vs_6m", {"env": "smax", "map": "5m_vs_6m"}, BDPS_METHODS,
        {"preset": "bdps_smax"}, 3, 200_000, "2M-5M steps on SMAC maps", BDPS_PAIRS,
        note="no method wins at this budget: compare the return (python -m psjax compare DIR/*-qmix "
             "metric=return); bdps_runs.sh ran seeds=3 steps=2e6."),
    Reproduction(
        "pps_smax_3m", "PPS-QMIX (seed 002)", "A-PPS converges faster than QMIX on small symmetric maps; every PPS "
        "beats QMIX (Fig. 4)", "SMAX 3m", SMAX_3M, PPS_METHODS, {"preset": "pps_smax"}, 5, 300_000,
        "2M steps on SMAC", PPS_PAIRS,
        note="recorded in docs/changelog.md at seeds=3 (fidelity_runs.sh pps_smax); pps_runs.sh ran seeds=3 "
             "steps=2e6."),
    Reproduction(
        "pps_smax_2s3z", "PPS-QMIX (seed 002)", "RS-PPS wins more than QMIX on harder maps; every PPS beats QMIX",
        "SMAX 2s3z", {"env": "smax", "map": "2s3z"}, PPS_METHODS, {"preset": "pps_smax"}, 5, 300_000,
        "2M steps on SMAC", (Pair("pps_rs", "fups_id"), Pair("pps_a", "fups_id"), Pair("pps_pp", "fups_id")),
        note="recorded in docs/changelog.md at seeds=3 (fidelity_runs.sh pps_smax); pps_runs.sh ran seeds=3 "
             "steps=2e6."),
    Reproduction(
        "indication_lbf", "Agent indication (seed 004)", "image agent indications let one network serve agents "
        "of different kinds (Terry et al. 4.2): each beats no indication", "LBF 8x8-2p-2f, lb-foraging rules, SePS "
        "levels 1 and 2 hidden from the grid observation (fov 2)", LBF_KINDS_UNSEEN, ("fups",), PPO, 5, 100_000,
        "not stated for LBF (the paper's image tasks are MAgent / SISL)",
        tuple(Pair(f"fups [{ind}]", "fups [identity]") for ind in IMAGE_INDICATIONS[1:]),
        {ind: {"image_indication": ind} for ind in IMAGE_INDICATIONS},
        note="The two agents differ in level (1 and 2: which food each can load alone) and the grid observation "
             "shows only where agents stand, so without indication the shared network cannot tell its kind; "
             "identity (no indication) is the control. image_ind is the same comparison on interchangeable agents. "
             "100k steps: the conv torso trains at ~90 env steps/s per seed beside another run on the 2-core machine "
             "(25 runs x 300k would take ~4.5 h); FuPS collects ~0.6 of the food by 40k."),
    # ----------------------------------------------------------------- recorded comparisons (no claim)
    # fidelity_runs.sh (issue 16): 3 seeds, 300k env steps unless named
    _recorded("default", FIDELITY, "LBF 8x8-2p-2f-coop, FuPS, PPO (psjax/configs/default.yaml)", {}, ("fups",),
              {"preset": "default"}, 2, 300_000, "what `make train` runs at its defaults"),
    _recorded("lbf_ppo", FIDELITY, "LBF 8x8-2p-2f-coop, PPO", LBF_COOP, ("fups", "nops", "seps", "adaps"), PPO, 3,
              300_000, "the SePS / AdaPS table's PPO row; sampled evaluation"),
    _recorded("lbf_a2c", FIDELITY, "LBF 8x8-2p-2f-coop, A2C", LBF_COOP, ("fups", "nops", "seps", "adaps"),
              {"learner": "a2c"}, 3, 300_000, "the SePS / AdaPS table's A2C row"),
    _recorded("spread_ppo", FIDELITY, "MPE spread, PPO", SPREAD, ("fups_id", "nops", "seps", "adaps"), PPO, 3,
              300_000, "MPE spread ends only by its time limit (25 steps)"),
    _recorded("spread_ppo_2m", FIDELITY, "MPE spread, PPO, 2M", SPREAD, ("fups_id",),
              {"learner": "ppo", "eval_every": 0.1}, 3, 2_000_000),
    _recorded("spread_a2c", FIDELITY, "MPE spread, A2C", SPREAD, ("fups_id", "nops", "seps", "adaps"),
              {"learner": "a2c"}, 3, 300_000),
    _recorded("spread_qmix", FIDELITY, "MPE spread, QMIX (learner defaults)", SPREAD, ("fups_id",),
              {"learner": "qmix"}, 3, 300_000),
    _recorded("qmix_spread", FIDELITY, "MPE spread, QMIX TD(0.6), 8 updates per rollout", SPREAD, ("fups_id",),
              {"learner": "qmix", "eval_every": 0.1, "q.td_lambda": 0.6, "q.updates_per_rollout": 8}, 3, 1_000_000),
    _recorded("qmix_lbf", FIDELITY, "LBF 8x8-2p-2f-coop, QMIX", LBF_COOP, ("fups_id",),
              {"learner": "qmix", "eval_every": 0.1}, 3, 500_000,
              "the QMIX table's rows: TD(0.6) with 8 updates per rollout (fidelity_runs.sh qmix_lbf) and the "
              "learner defaults, one-step targets with 4 (learning_runs.sh lbf_coop_qmix_fupsid, 2 seeds)",
              {"upd8": {"q.td_lambda": 0.6, "q.updates_per_rollout": 8}, "upd4_td0": {}}),
    _recorded("qmix_smax3m", FIDELITY, "SMAX 3m, QMIX (psjax/configs/smax_3m_qmix.yaml)", {}, ("fups_id",),
              {"preset": "smax_3m_qmix"}, 2, 2_000_000,
              "the QMIX table's SMAX 3m rows: the preset (TD(0.6), 16 updates per rollout), 8 updates, and the "
              "learner defaults (one-step targets, 4 updates); 128-episode evaluations (learning_runs.sh ran upd8 "
              "with eval_envs=32)",
              {"upd16": {}, "upd8": {"q.updates_per_rollout": 8},
               "upd4_td0": {"q.updates_per_rollout": 4, "q.td_lambda": 0}}),
    _recorded("bps_a2c", FIDELITY, "BPS 15a3c, A2C", BPS, ("fups", "fups_id", "nops", "seps", "adaps"),
              {"learner": "a2c"}, 3, 300_000, BPS_NOTE),
    _recorded("madps_lbf", FIDELITY, "LBF 8x8-2p-2f-coop, PPO, MADPS at the reference's defaults", LBF_COOP,
              ("madps", "fups_id", "nops"), {"learner": "ppo", "mapd_interval": 10}, 3, 300_000,
              "MADPS with the reference's two-layer front and its defaults"),
    _recorded("madps_lbf_1m", FIDELITY, "LBF 8x8-2p-2f-coop, PPO, MADPS restructuring every 10 iterations",
              LBF_COOP, (), {"learner": "ppo", "eval_every": 0.05}, 3, 1_000_000, MADPS_NOTE, MADPS_PPO),
    _recorded("madps_mpe6", FIDELITY, "MPE spread 6 agents, PPO, MADPS restructuring every 10 iterations",
              {"env": "mpe_spread", "num_agents": 6, "num_landmarks": 6}, (), {"learner": "ppo", "eval_every": 0.05},
              3, 1_000_000, MADPS_NOTE, MADPS_PPO),
    _recorded("madps_mpe9", FIDELITY, "MPE spread 9 agents, PPO, MADPS restructuring every 10 iterations",
              {"env": "mpe_spread", "num_agents": 9, "num_landmarks": 9}, (), {"learner": "ppo", "eval_every": 0.05},
              3, 500_000, MADPS_NOTE, MADPS_PPO),
    _recorded("madps_a2c_mpe6", FIDELITY, "MPE spread 6 agents, A2C (8 envs x 5 steps), a MAPD round every 500 "
              "iterations", {"env": "mpe_spread", "num_agents": 6, "num_landmarks": 6}, (), A2C, 3, 1_000_000,
              "madps_runs.sh's A2C=1 runs: A2C at its defaults stays at the random policy's return here",
              MADPS_A2C),
    _recorded("madps_a2c_mpe9", FIDELITY, "MPE spread 9 agents, A2C (8 envs x 5 steps), a MAPD round every 500 "
              "iterations", {"env": "mpe_spread", "num_agents": 9, "num_landmarks": 9}, (), A2C, 3, 500_000,
              "madps_runs.sh's A2C=1 runs: A2C at its defaults stays at the random policy's return here",
              MADPS_A2C),
    _recorded("bdps_3m_adv", FIDELITY, "SMAX 3m, BDPS with the informative advantage", SMAX_3M, ("bdps",),
              {"preset": "bdps_smax", "bdps_advantage": "mean"}, 5, 200_000,
              "next to bdps_smax_3m's bdps row (bdps_advantage at its default)"),
    _recorded("pps_smax_5m_vs_6m", FIDELITY, "SMAX 5m_vs_6m, PPS", {"env": "smax", "map": "5m_vs_6m"}, PPS_METHODS,
              {"preset": "pps_smax"}, 3, 200_000, "the budget of its runs before issue 16; pps_runs.sh ran "
              "seeds=3 steps=2e6"),
    _recorded("pps_lbf", FIDELITY, "LBF 10x10-3p-3f, PPS (QMIX as psjax/configs/pps_smax.yaml)",
              {"env": "lbf", "scenario": "10x10-3p-3f"}, PPS_METHODS, {"preset": "pps_smax"}, 3, 500_000,
              "pps_runs.sh ran seeds=3 steps=2e6"),
    _recorded("ppo_smax_3m", FIDELITY, "SMAX 3m, PPO, feed-forward against recurrent (issue 21)", SMAX_3M,
              ("fups_id",), {"learner": "ppo", "eval_every": 0.1}, 3, 2_000_000,
              "fidelity_runs.sh's smax_ppo (fups_id) and ppo_rnn_smax on 3m (gru)",
              {"fups_id": {}, "gru": {"ac.recurrent": True}}),
    _recorded("ppo_smax_2s3z", FIDELITY, "SMAX 2s3z, PPO, feed-forward against recurrent (issue 21)",
              {"env": "smax", "map": "2s3z"}, ("fups_id",), {"learner": "ppo", "eval_every": 0.1}, 3, 2_000_000,
              "fidelity_runs.sh's ppo_ff_smax_2s3z (fups_id) and ppo_rnn_smax on 2s3z (gru); recorded at steps=1e6",
              {"fups_id": {}, "gru": {"ac.recurrent": True}}),
    _recorded("mappo_rnn_3m", FIDELITY, "SMAX 3m, recurrent MAPPO (psjax/configs/smax_mappo_rnn_cpu.yaml)", {},
              ("nops", "fups_id", "seps"), {"preset": "smax_mappo_rnn_cpu"}, 3, 2_000_000,
              "JaxMARL's ippo_rnn_smax settings sized for a CPU; recorded at steps=1e6"),
    _recorded("pqn_lbf", FIDELITY, "LBF 10x10-3p-3f, PQN (issue 19)", {"env": "lbf", "scenario": "10x10-3p-3f"},
              ("fups_id",), {"learner": "pqn"}, 3, 500_000, "next to pps_lbf's fups_id (QMIX) row"),
    _recorded("pqn_lbf_explore", FIDELITY, "LBF 10x10-3p-3f, PQN (psjax/configs/lbf_pqn.yaml)", {}, ("fups_id",),
              {"preset": "lbf_pqn"}, 3, 500_000, "JaxMARL's non-SMAX PQN discount 0.9, epsilon to 0.05 over 200k, "
              "8 epochs"),
    _recorded("pqn_smax3m", FIDELITY, "SMAX 3m, PQN (issue 19)", SMAX_3M, ("fups_id",),
              {"learner": "pqn", "eval_every": 0.05, "eval_envs": 128}, 3, 2_000_000,
              "next to qmix_smax3m at equal env steps"),
    _recorded("hyper_bps", FIDELITY, "BPS 15a3c, HyperMARL, A2C", BPS, ("hypermarl",), {"learner": "a2c"}, 3,
              300_000, "next to bps_a2c. " + BPS_NOTE),
    _recorded("hyper_spread", FIDELITY, "MPE spread, HyperMARL, PPO", SPREAD, ("hypermarl",), PPO, 3, 300_000,
              "next to spread_ppo"),
    _recorded("dico_bps", FIDELITY, "BPS 15a3c, DiCo at target SND 1 and 4, A2C", BPS, ("dico",),
              {"learner": "a2c"}, 3, 300_000, "next to bps_a2c. " + BPS_NOTE,
              {"dico": {}, "snd4": {"dico_snd": 4}}),
    _recorded("dico_spread", FIDELITY, "MPE spread, DiCo at target SND 1 and 4, PPO", SPREAD, ("dico",), PPO, 3,
              300_000, "next to spread_ppo", {"dico": {}, "snd4": {"dico_snd": 4}}),
    _recorded("speaker_ppo", FIDELITY, "MPE speaker-listener, PPO", {"env": "speaker_listener"}, ("fups_id",), PPO,
              3, 300_000, "time limit only"),
    _recorded("kal_lbf", FIDELITY, "LBF 8x8-2p-2f-coop, Kaleidoscope, PPO", LBF_COOP, ("kaleidoscope",), PPO, 3,
              300_000, "without and with mask resets every 50k steps",
              {"kaleidoscope": {}, "reset50k": {"kal_reset_interval": 50_000}}),
    _recorded("kal_spread", FIDELITY, "MPE spread, Kaleidoscope, PPO and QMIX", SPREAD,
              ("kaleidoscope", "kaleidoscope:qmix"), PPO, 3, 300_000),
    _recorded("crware_a2c", FIDELITY, "C-RWARE mini (no reference), A2C", {"env": "crware", "variant": "mini"},
              ("fups", "fups_id", "nops"), {"learner": "a2c", "eval_every": 0.1}, 3, 300_000, CRWARE_NOTE),
    _recorded("image_ind", FIDELITY, "LBF 8x8-2p-2f-coop grid observations (fov 2), image agent indication, FuPS, "
              "PPO", {**LBF_COOP, "fov": 2, "lbf_grid_obs": True, "lbf_fixed_levels": True}, ("fups",), PPO, 3,
              200_000, "Terry et al. 4.2; env_runs.sh ran seeds=4 steps=2e6 eval_every=0.05",
              {ind: {"image_indication": ind} for ind in IMAGE_INDICATIONS}),
    # env_runs.sh (issue 7): the papers' environments with A2C, 4 seeds x 2M (BPS 15a3c: adaps_bps; C-RWARE tiny:
    # adaps_crware); SePS / AdaPS get K = the number of colours as the script gave it (the default is auto now)
    *(_recorded(f"bps_{v}", ENV_RUNS, f"BPS {v}", {"env": "bps", "variant": v}, IDENTITY_METHODS,
                {**A2C, "identity_clusters": int(v[-2])}, 4, 2_000_000, BPS_NOTE) for v in ("30a3c", "30a5c")),
    *(_recorded(f"crware_{v}" + ("_hard" if d == "hard" else ""), ENV_RUNS, f"C-RWARE {v} ({d})",
                {"env": "crware", "variant": v, "crware_difficulty": d}, IDENTITY_METHODS,
                {**A2C, "identity_clusters": 2}, 4, 2_000_000, CRWARE_NOTE + (" mini has no reference." if v == "mini"
                                                                              else ""))
      for v, d in (("mini", "normal"), ("tiny", "hard"), ("small", "normal"), ("medium", "normal"))),
    _recorded("lbf_4p3f_levels", ENV_RUNS, "LBF 8x8-4p-3f, persistent levels (the SePS setting), vector observations",
              {"env": "lbf", "scenario": "8x8-4p-3f", "lbf_fixed_levels": True}, IDENTITY_METHODS[:5], A2C, 4,
              2_000_000),
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
    """The verdict from ``compare.table_rows`` rows: every pair's P(first > second) with its interval; with no
    pairs, "no claim" (or "diverged" when any row went non-finite)."""
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
    if not pairs:
        diverged = [r["method"] for r in rows if r.get("diverged")]
    verdict = "diverged" if diverged else "no claim" if not pairs else overall_verdict([r["outcome"] for r in results])
    return {"verdict": verdict, "pairs": results, "diverged": sorted(set(diverged))}


# --------------------------------------------------------------------------- running one


def get(name: str) -> Reproduction:
    if name not in REPRODUCTIONS:
        raise ConfigError(f"unknown reproduction {name!r}; allowed: {', '.join(REPRODUCTIONS)}")
    return REPRODUCTIONS[name]


def listing() -> str:
    """One line per declaration (``python -m psjax reproduce``): the claim, or what a recorded comparison compares."""
    width = max(map(len, REPRODUCTIONS))
    lines = []
    for r in REPRODUCTIONS.values():
        runs = ", ".join(r.variants) if r.variants else ", ".join(r.algs)
        what = f"{r.paper}: {r.claim}" if r.pairs else f"recorded ({r.paper})"
        lines.append(f"{r.name:<{width}}  {what} [{r.task}; {runs}; {r.seeds} seeds x {r.steps:,} steps]")
    return "\n".join(lines + ["", "python -m psjax reproduce NAME [seeds=N] [steps=N] [out=DIR] [key=value ...]"])


def run_configs(rep: Reproduction, seeds: int, steps: int, out_dir, extra: dict | None = None) -> list[tuple]:
    """``(row name, TrainConfig)`` of every run of ``rep`` (nothing is trained; a bad value raises ConfigError).

    Without variants: ``method_runs.method_configs`` of the methods (row name None: the method's own). With variants:
    one run per variant, its overrides over the declaration's ``env`` and ``extra``, run folder = the variant's
    name, row name ``alg [variant]`` (``alg`` where the variant is named after its method). ``extra`` (the
    command line's key=value) goes over both.
    """
    extra = dict(extra or {})
    if not rep.variants:
        return [(None, c) for c in method_configs(rep.env, rep.algs, seeds, steps, out_dir, {**rep.extra, **extra})]
    runs = []
    for name, overrides in rep.variants.items():
        overrides = dict(overrides)
        alg = overrides.pop("alg", rep.algs[0] if rep.algs else None)
        if alg is None:
            raise ConfigError(f"{rep.name}: variant {name!r} names no alg and the declaration has no algs")
        (cfg,) = method_configs(rep.env, [alg], seeds, steps, out_dir, {**rep.extra, **overrides, **extra})
        cfg = dataclasses.replace(cfg, run_name=name)
        runs.append((cfg.alg if name == cfg.alg else f"{cfg.alg} [{name}]", cfg))
    return runs


def verdict_markdown(rep: Reproduction, judged: dict, rows: list[dict], seeds: int, steps: int) -> str:
    """``verdict.md``: the claim, the budget, the table of pairs and the verdict."""
    policy = rows[0]["policy"] if rows else "?"
    metric = "win rate" if rows and rows[0]["metric"] == "eval_won" else "return"
    claim = f"Claim: {rep.claim}." if rep.pairs else f"A recorded comparison ({rep.paper}): no claim to judge."
    lines = [f"# {rep.name}: {rep.paper}", "", claim, "",
             f"Task: {rep.task}. Budget: {steps:,} env steps per seed, {seeds} seeds (the paper: "
             f"{rep.paper_budget}). Score: final {metric} of the {policy} policy.", ""]
    if rep.note:
        lines += [f"Note: {rep.note}", ""]
    lines += ["| method | IQM [95% CI] | seeds | type_ari |", "|---|---|---|---|"]
    for r in rows:
        ari = r.get("type_ari")
        lines.append(f"| {r['method']} ({r['learner']}) | {r['iqm']:.3g} [{r['ci_low']:.3g}, {r['ci_high']:.3g}] | "
                     f"{r['seeds']} | {'-' if ari is None else format(ari, '.2f')} |")
    if judged["pairs"]:
        lines += ["", "| claimed | P(first > second) [95% CI] | outcome |", "|---|---|---|"]
    for p in judged["pairs"]:
        sign = "beats" if p["relation"] == ">" else "alike"
        lines.append(f"| {p['first']} {sign} {p['second']} | {p['probability']:.2f} [{p['ci_low']:.2f}, "
                     f"{p['ci_high']:.2f}] | {p['outcome']} |")
    lines += ["", f"**Verdict: {judged['verdict']}**" + (f" (diverged: {', '.join(judged['diverged'])})"
                                                          if judged["diverged"] else ""), ""]
    return "\n".join(lines)


def reproduce(name: str, seeds: int | None = None, steps: int | None = None, out_dir=None,
              extra: dict | None = None, *, make_program=None) -> dict:
    """Train (or continue) the declared comparison ``name`` and write its report and verdict.

    Every run folder is checked before any training (``method_runs.folder_step``: a finished run is reused, a stopped
    one resumed, a folder of another config refused). ``make_program`` goes to ``psjax.run.run`` (tests use a
    fake trainer). Returns ``compare.report``'s dict plus ``"out_dir"``, ``"verdict"`` (``judge``'s dict) and
    ``"verdict_md"`` (its path).
    """
    rep = get(name)
    seeds, steps = seeds or rep.seeds, steps or rep.steps
    out = pathlib.Path(out_dir) if out_dir is not None else pathlib.Path("runs") / f"reproduce-{name}"
    runs = run_configs(rep, seeds, steps, out, extra)
    plan = [(cfg, folder_step(cfg, out / cfg.run_name)) for _, cfg in runs]
    from psjax.run import run  # JAX's training program only once every config and folder is known to be good

    out.mkdir(parents=True, exist_ok=True)
    run_dirs = []
    for cfg, step in plan:
        folder = out / cfg.run_name
        if step != "train":
            print(f"{folder}: {'finished, reused' if step == 'done' else 'resumed from its checkpoint'}")
        if step == "done":
            run_dirs.append(folder)
        else:
            run_dirs.append(run(None, resume=folder, make_program=make_program) if step == "resume"
                            else run(cfg, make_program=make_program))
    result = {**compare.report(run_dirs, out, labels=[label for label, _ in runs]), "out_dir": out}
    judged = judge(result["rows"], rep.pairs)
    judged.update(name=name, paper=rep.paper, claim=rep.claim, task=rep.task, seeds=seeds, steps=steps,
                  note=rep.note)
    (out / "verdict.json").write_text(json.dumps(judged, indent=2) + "\n")
    md = out / "verdict.md"
    md.write_text(verdict_markdown(rep, judged, result["rows"], seeds, steps))
    return {**result, "verdict": judged, "verdict_md": md}
