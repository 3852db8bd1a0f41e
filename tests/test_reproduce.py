"""The declared reproductions: probability of improvement, verdicts, and every declaration a valid sweep."""

import pytest

from psjax import reproduce as rp
from psjax.cli import main
from psjax.compare import sweep_configs
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


@pytest.mark.parametrize("name", list(rp.REPRODUCTIONS))
def test_every_declaration_is_a_valid_sweep(name, tmp_path):
    rep = rp.get(name)
    configs = sweep_configs(rep.env, rep.algs, rep.seeds, rep.steps, tmp_path, rep.extra)
    assert [c.alg for c in configs] == list(rep.algs)
    methods = set(rep.algs)
    assert all(p.first in methods and p.second in methods for p in rep.pairs)


def test_cli_lists_and_refuses_unknown(capsys):
    assert main(["reproduce"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in rp.REPRODUCTIONS)
    assert main(["reproduce", "nope"]) == 2
    assert "allowed: adaps_bps" in capsys.readouterr().err
