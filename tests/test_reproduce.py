"""The declared reproductions: probability of improvement, verdicts, every declaration (variants included) a
valid set of run configs, and a tiny declared comparison run end to end with the fake trainer."""

import json

import pytest
from conftest import make_fake_program

from psjax import reproduce as rp
from psjax.cli import main
from psjax.fields import ConfigError


def test_probability_of_improvement_hand_computed():
    assert rp.probability_of_improvement([2, 3], [1, 1]) == 1.0
    assert rp.probability_of_improvement([1, 1], [2, 3]) == 0.0
    # pairs (1,1) tie 0.5, (1,2) 0, (3,1) 1, (3,2) 1 -> 2.5 / 4
    assert rp.probability_of_improvement([1, 3], [1, 2]) == pytest.approx(0.625)


def test_interval_brackets_the_point_and_separates_clear_cases():
    point, low, high = rp.probability_of_improvement_ci([5, 6, 7, 8, 9], [0, 1, 2, 3, 4])
    assert point == 1.0 and low == 1.0 and high == 1.0
    point, low, high = rp.probability_of_improvement_ci([0, 2, 4, 6, 8], [1, 3, 5, 7, 9])
    assert low < 0.5 < high and low <= point <= high
    assert rp.probability_of_improvement_ci([1, 2], [0, 3]) == rp.probability_of_improvement_ci([1, 2], [0, 3])


def test_outcomes_and_verdicts():
    assert rp.pair_outcome(">", 0.6, 0.9) == "holds"
    assert rp.pair_outcome(">", 0.1, 0.4) == "reversed"
    assert rp.pair_outcome(">", 0.3, 0.8) == "unresolved"
    assert rp.pair_outcome("~", 0.3, 0.8) == "holds"
    assert rp.pair_outcome("~", 0.7, 0.9) == "reversed"
    assert rp.overall_verdict(["holds", "holds"]) == "reproduced"
    assert rp.overall_verdict(["holds", "unresolved"]) == "partly"
    assert rp.overall_verdict(["holds", "reversed"]) == "not reproduced"
    assert rp.overall_verdict(["unresolved", "unresolved"]) == "not reproduced"


def _row(method, finals, diverged=None):
    return {"method": method, "learner": "a2c", "final_per_seed": finals, "diverged": diverged, "iqm": 0.0,
            "ci_low": 0.0, "ci_high": 0.0, "seeds": len(finals), "metric": "eval_return", "policy": "sample"}


def test_judge_reads_compare_rows():
    rows = [_row("nops", [-7, -7.5, -6.9, -7.2, -7.1]), _row("fups", [-31, -32, -30, -33, -31.5]),
            _row("seps", [-7.3, -6.8, -7.0, -7.6, -7.2])]
    judged = rp.judge(rows, (rp.Pair("nops", "fups"), rp.Pair("seps", "fups"), rp.Pair("seps", "nops", "~")))
    assert judged["verdict"] == "reproduced", judged
    assert [p["outcome"] for p in judged["pairs"]] == ["holds"] * 3
    judged = rp.judge(rows, (rp.Pair("fups", "nops"),))
    assert judged["verdict"] == "not reproduced" and judged["pairs"][0]["probability"] == 0.0
    rows[1] = _row("fups", [-31, float("nan")], diverged={"seeds": 1, "first_env_step": 1000})
    assert rp.judge(rows, (rp.Pair("nops", "fups"),))["verdict"] == "diverged"
    with pytest.raises(ConfigError, match="'madps'"):
        rp.judge(rows, (rp.Pair("madps", "fups"),))
    md = rp.verdict_markdown(rp.get("adaps_bps"), rp.judge(rows[:1] + rows[2:], (rp.Pair("seps", "nops", "~"),)),
                             rows, 5, 500_000)
    assert "Verdict: reproduced" in md and "500,000 env steps per seed, 5 seeds" in md


def test_no_claim_verdict():
    rows = [_row("nops", [-7, -7.5]), _row("fups", [-31, -32])]
    assert rp.judge(rows, ()) == {"verdict": "no claim", "pairs": [], "diverged": []}
    rows[1] = _row("fups", [-31, float("nan")], diverged={"seeds": 1, "first_env_step": 1000})
    assert rp.judge(rows, ())["verdict"] == "diverged"
    md = rp.verdict_markdown(rp.get("image_ind"), rp.judge(rows[:1], ()), rows[:1], 3, 200_000)
    assert "no claim to judge" in md and "Verdict: no claim" in md and "claimed" not in md


@pytest.mark.parametrize("name", list(rp.REPRODUCTIONS))
def test_every_declaration_is_a_valid_sweep(name, tmp_path):
    rep = rp.get(name)
    runs = rp.run_configs(rep, rep.seeds, rep.steps, tmp_path)
    labels = [label or f"{c.alg}:{c.learner_name}" for label, c in runs]
    folders = [c.run_name for _, c in runs]
    assert len(set(folders)) == len(folders) and len(set(labels)) == len(labels)
    assert all((c.seeds, c.steps, c.out_dir) == (rep.seeds, rep.steps, str(tmp_path)) for _, c in runs)
    if rep.variants:
        assert folders == list(rep.variants)
    else:
        assert [c.alg for _, c in runs] == [a.partition(":")[0] for a in rep.algs]
    named = {label.partition(" [")[0] if label else c.alg for label, c in runs} | set(labels)
    assert all(p.first.partition(":")[0] in named and p.second.partition(":")[0] in named for p in rep.pairs)
    assert rep.claim if rep.pairs else rep.paper_budget == "-"


def test_names_are_unique_and_short():
    names = [r.name for r in rp.REPRODUCTIONS.values()]
    assert len(names) == len(set(names)) == len(rp.REPRODUCTIONS)
    assert all(name.isidentifier() and name.islower() and len(name) <= 20 for name in names)


def test_variants_are_run_folders_with_their_overrides(tmp_path):
    runs = rp.run_configs(rp.get("qmix_smax3m"), 2, 1000, tmp_path)
    assert {c.run_name: (label, c.alg, c.env.map, c.q.updates_per_rollout, c.q.td_lambda, c.eval_envs)
            for label, c in runs} == {"upd16": ("fups_id [upd16]", "fups_id", "3m", 16, 0.6, 128),
                                      "upd8": ("fups_id [upd8]", "fups_id", "3m", 8, 0.6, 128),
                                      "upd4_td0": ("fups_id [upd4_td0]", "fups_id", "3m", 4, 0.0, 128)}
    runs = rp.run_configs(rp.get("image_ind"), 3, 1000, tmp_path)
    assert [(c.run_name, c.env.image_indication, c.alg) for _, c in runs] == [
        (ind, ind, "fups") for ind in rp.IMAGE_INDICATIONS]
    # a variant may name its method and its method's options; the command line's key=value goes over every one
    runs = {c.run_name: (label, c) for label, c in rp.run_configs(rp.get("madps_mpe6"), 3, 1000, tmp_path,
                                                                  {"eval_envs": 7})}
    assert {k: (label, c.alg, c.sharing.madps_interval, c.sharing.mapd_interval, c.eval_envs, c.env.num_agents)
            for k, (label, c) in runs.items()} == {"madps": ("madps", "madps", 10, 0, 7, 6),
                                                    "nops": ("nops", "nops", 0, 10, 7, 6),
                                                    "fups_id": ("fups_id", "fups_id", 0, 10, 7, 6),
                                                    "seps": ("seps", "seps", 0, 10, 7, 6)}
    assert runs["seps"][1].sharing.identity_pretrain_steps == 100_000


FAKE = {"q.num_envs": 2, "q.rollout_len": 4, "ac.num_envs": 2, "ac.rollout_len": 4, "ac.num_minibatches": 1,
        "eval_every": 0.5, "progress": False, "checkpoint": False}


def test_declared_comparison_end_to_end_with_fake_trainer(tmp_path, monkeypatch):
    """A tiny declaration with variants and a claimed pair: run folders, rows named by variant, verdict.json;
    the same command again reuses every finished run."""
    tiny = rp.Reproduction("tiny", "test", "fups with an id beats fups", "LBF 8x8-2p-2f",
                           {"env": "lbf", "scenario": "8x8-2p-2f"}, ("fups",), {"learner": "ppo"}, 2, 32, "-",
                           (rp.Pair("fups_id", "fups [plain]"),),
                           {"plain": {}, "fups_id": {"alg": "fups_id"}}, "a test")
    monkeypatch.setitem(rp.REPRODUCTIONS, "tiny", tiny)
    out = tmp_path / "tiny"
    result = rp.reproduce("tiny", out_dir=out, extra=FAKE, make_program=make_fake_program)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["fups_id", "plain"]
    assert sorted(r["method"] for r in result["rows"]) == ["fups [plain]", "fups_id"]
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["name"] == "tiny" and verdict["seeds"] == 2 and verdict["steps"] == 32
    assert [(p["first"], p["second"]) for p in verdict["pairs"]] == [("fups_id", "fups [plain]")]
    assert verdict["verdict"] in ("reproduced", "partly", "not reproduced")
    assert 0.0 <= verdict["pairs"][0]["probability"] <= 1.0
    assert "Verdict:" in result["verdict_md"].read_text() and (out / "compare.md").is_file()
    written = (out / "plain" / "metrics.csv").stat().st_mtime_ns
    again = rp.reproduce("tiny", out_dir=out, extra=FAKE, make_program=make_fake_program)
    assert (out / "plain" / "metrics.csv").stat().st_mtime_ns == written
    assert json.loads((out / "verdict.json").read_text()) == verdict and again["rows"] == result["rows"]


def test_cli_lists_and_refuses_unknown(capsys):
    assert main(["reproduce"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in rp.REPRODUCTIONS)
    assert "upd16, upd8, upd4_td0" in out and "recorded (" in out
    assert main(["reproduce", "nope"]) == 2
    assert "allowed: adaps_bps" in capsys.readouterr().err
