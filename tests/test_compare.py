"""The comparison report (psjax.compare): IQM and bootstrap CIs on hand-made numbers, the report on
run folders written by the real host loop (with the fake trainer of conftest), sweeps, CLI, Makefile."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.stats
from conftest import make_fake_program

from psjax import cli
from psjax.compare import env_label, iqm, report, stratified_bootstrap_ci
from psjax.config import ConfigError, make_config
from psjax.method_runs import method_configs, train_methods
from psjax.run import run

REPO = pathlib.Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# 8 env steps per iteration, 4 iterations, evaluations after every 2 (one compiled chunk size).
FAKE = {"q.num_envs": 2, "q.rollout_len": 4, "ac.num_envs": 2, "ac.rollout_len": 4, "ac.num_minibatches": 1,
        "steps": 32, "eval_every": 0.5, "progress": False, "checkpoint": False}


# --------------------------------------------------------------------------- statistics


def test_iqm_hand_values():
    assert iqm([1, 2, 3, 4, 5, 6, 7, 8]) == pytest.approx(4.5)  # (3 + 4 + 5 + 6) / 4
    assert iqm([100, -50, 1, 2, 3, 4, 5, 6]) == pytest.approx(3.5)  # outliers cut: (2 + 3 + 4 + 5) / 4
    assert iqm([1.0, 2.0, 9.0]) == pytest.approx(4.0)  # n < 4: nothing cut, the mean
    assert iqm([[5.0, 1.0, 3.0, 7.0, 100.0]]) == pytest.approx(5.0)  # axis=None: all values; cut 1 each end
    x = np.random.default_rng(1).normal(size=(6, 13))
    np.testing.assert_allclose(iqm(x, axis=-1), scipy.stats.trim_mean(x, 0.25, axis=-1))
    np.testing.assert_allclose(iqm(x, axis=0), scipy.stats.trim_mean(x, 0.25, axis=0))
    assert iqm(x) == pytest.approx(scipy.stats.trim_mean(x.reshape(-1), 0.25))


def test_bootstrap_ci_contains_iqm_and_narrows():
    rng = np.random.default_rng(0)
    widths = []
    for n in (10, 100, 1000):
        scores = rng.normal(1.0, 1.0, size=n)
        point, low, high = stratified_bootstrap_ci(scores, reps=2000)
        assert point == pytest.approx(iqm(scores))
        assert low < point < high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2] and widths[0] > 4 * widths[2]  # ~1/sqrt(n): 100x the runs, 10x
    assert abs(point - 1.0) < 0.1 and low < 1.0 < high  # 1000 draws: the IQM of N(1, 1) is 1
    assert stratified_bootstrap_ci(scores, reps=500, seed=3) == stratified_bootstrap_ci(scores, reps=500, seed=3)


def test_bootstrap_is_stratified_and_degenerate_cases():
    # Two tasks, constant within each: a stratified resample keeps 4 runs of each task, so every
    # replicate has the same multiset and the interval collapses to the point (pooling would not).
    scores = np.array([[0.0, 10.0]] * 4)
    assert stratified_bootstrap_ci(scores) == (5.0, 5.0, 5.0)
    assert stratified_bootstrap_ci([2.5]) == (2.5, 2.5, 2.5)
    with pytest.raises(ValueError, match="finite"):
        stratified_bootstrap_ci([1.0, np.nan])


def test_env_label():
    assert env_label({"name": "smax", "map": "5m_vs_6m", "time_limit": 0}) == "smax 5m_vs_6m"
    assert env_label({"name": "lbf", "scenario": "8x8-2p-2f-coop", "fov": 2, "time_limit": 0}) == \
        "lbf 8x8-2p-2f-coop fov2"
    assert env_label({"name": "mpe_spread", "num_agents": 3, "num_landmarks": 3, "time_limit": 25}) == \
        "mpe_spread 3a-3l T25"


# --------------------------------------------------------------------------- the report


def _fake_run(out_dir, name, **overrides):
    cfg = make_config({**FAKE, "out_dir": str(out_dir), "run_name": name, **overrides})
    return run(cfg, make_program=make_fake_program)


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """fups seeds 0-1 and 2-3 in two folders (pooled), nops seeds 0-1, a SMAX fups run."""
    root = tmp_path_factory.mktemp("runs")
    _fake_run(root, "fups-a", alg="fups", seed=0, seeds=2)
    _fake_run(root, "fups-b", alg="fups", seed=2, seeds=2)
    _fake_run(root, "nops", alg="nops", seed=0, seeds=2)
    _fake_run(root, "smax", alg="fups", env="smax", seed=0, seeds=3)
    return root


def _final_evals(run_dir):
    return [r["eval_return" if "smax" not in run_dir.name else "eval_won"]
            for r in json.loads((run_dir / "summary.json").read_text())["final_eval"]["per_seed"]]


def test_report_on_run_folders(sweep_dir, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing suspicious is pooled here
        out = report([sweep_dir], tmp_path / "report")
    png, md = out["png"], out["markdown"].read_text()
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 20_000
    assert json.loads(out["json"].read_text()) == json.loads(json.dumps(out["rows"]))
    rows = out["rows"]
    assert [(r["env"], r["method"], r["learner"], r["seeds"]) for r in rows] == [
        ("lbf 8x8-2p-2f-coop", "nops", "qmix", 2),  # the registry order within an env
        ("lbf 8x8-2p-2f-coop", "fups", "qmix", 4),  # two folders pooled
        ("smax 3m", "fups", "qmix", 3),
    ]
    fups_finals = _final_evals(sweep_dir / "fups-a") + _final_evals(sweep_dir / "fups-b")
    assert rows[1]["final_per_seed"] == pytest.approx(fups_finals)
    assert rows[1]["iqm"] == pytest.approx(iqm(fups_finals))
    assert rows[1]["ci_low"] <= rows[1]["iqm"] <= rows[1]["ci_high"]
    assert rows[2]["metric"] == "eval_won"
    assert rows[2]["iqm"] == pytest.approx(np.mean(_final_evals(sweep_dir / "smax")))  # 3 seeds: IQM = mean
    summary = json.loads((sweep_dir / "nops" / "summary.json").read_text())
    assert rows[0]["steps_per_sec"] == pytest.approx(summary["steps_per_sec"])
    assert rows[0]["param_count"] == 4 and rows[0]["env_steps"] == 32 and rows[0]["finished"]

    # qmix runs: greedy by default; LBF's return is the agents' sum (env.team_return=auto: as EPyMARL reports it)
    assert "### lbf 8x8-2p-2f-coop: final return (sum over agents), greedy policy" in md
    assert "### smax 3m: final win rate, greedy policy" in md and "final win rate (greedy policy), IQM" in md
    assert [r["policy"] for r in rows] == ["greedy"] * 3 and "MIXED" not in md
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(lines) == 2 + 3  # a header row per env table + one row per group
    body = [line for line in lines if not line.startswith("| method")]
    assert [line.split(" | ")[0] for line in body] == ["| nops", "| fups", "| fups"]
    assert f"{rows[1]['iqm']:.3f} [{rows[1]['ci_low']:.3f}, {rows[1]['ci_high']:.3f}]" in md


def test_report_explicit_folders_and_warnings(sweep_dir, tmp_path):
    one = report([sweep_dir / "fups-a"], tmp_path / "one")
    assert [r["seeds"] for r in one["rows"]] == [2] and one["png"].exists()
    _fake_run(tmp_path, "fups-dup", alg="fups", seed=1, seeds=2, lr=1e-3)  # seed 1 again, another lr
    with pytest.warns(UserWarning) as caught:
        dup = report([sweep_dir / "fups-a", tmp_path / "fups-dup"], tmp_path / "dup")
    messages = " ".join(str(w.message) for w in caught)
    assert "q.lr" in messages and "seed 1" in messages
    assert dup["rows"][0]["seeds"] == 3  # seeds 0, 1 (first folder) and 2
    with pytest.raises(ConfigError, match="neither"):
        report([tmp_path / "one"], tmp_path / "bad")


def test_report_metric_return_on_smax(sweep_dir, tmp_path):
    """metric=return reads SMAX's return (where no method wins yet); metric=win needs a win rate."""
    out = report([sweep_dir / "smax"], tmp_path / "ret", metric="return")
    per_seed = json.loads((sweep_dir / "smax" / "summary.json").read_text())["final_eval"]["per_seed"]
    row = out["rows"][0]
    assert row["metric"] == "eval_return"
    assert row["final_per_seed"] == pytest.approx([r["eval_return"] for r in per_seed])
    assert "### smax 3m: final return (mean over agents), greedy policy" in out["markdown"].read_text()
    with pytest.raises(ConfigError, match="has no win rate"):  # the matrix game defines no winning
        report([_fake_run(tmp_path, "matrix", env="matrix")], tmp_path / "bad", metric="win")
    with pytest.raises(ConfigError, match="allowed: auto, win, return"):
        report([sweep_dir / "smax"], tmp_path / "bad", metric="wins")


def test_report_refuses_returns_of_two_conventions(sweep_dir, tmp_path):
    """A sum over agents is N x their mean: runs of one env under both conventions are never one table."""
    mean = _fake_run(tmp_path, "fups-mean", alg="fups", seed=4, seeds=2, **{"env.team_return": "mean"})
    assert json.loads((mean / "summary.json").read_text())["team_return"] == "mean"
    with pytest.raises(ConfigError, match=r"fups-a \(sum\), fups-mean \(mean\)"):
        report([sweep_dir / "fups-a", mean], tmp_path / "mixed")
    assert report([mean], tmp_path / "one")["rows"][0]["team_return"] == "mean"


def test_report_steps_cuts_longer_runs(sweep_dir, tmp_path):
    """steps=N compares at N env steps per seed: the final score is the last evaluation at or before N."""
    rows = [json.loads(line) for line in (sweep_dir / "nops" / "eval.jsonl").read_text().splitlines()]
    middle = sorted({r["env_steps"] for r in rows})[1]  # evaluations at 0, 16, 32 env steps
    assert 0 < middle < 32
    out = report([sweep_dir / "nops"], tmp_path / "cut", steps=middle - 3)  # rounded up to whole iterations
    row = out["rows"][0]
    assert row["env_steps"] == middle
    assert row["final_per_seed"] == pytest.approx([r["eval_return"] for r in rows if r["env_steps"] == middle])
    full = report([sweep_dir / "nops"], tmp_path / "full", steps=10**6)["rows"][0]
    assert full["env_steps"] == 32 and full["final_per_seed"] == pytest.approx(_final_evals(sweep_dir / "nops"))
    with pytest.raises(ConfigError, match="no evaluation at or before"):
        report([sweep_dir / "nops"], tmp_path / "bad", steps=-8)


# --------------------------------------------------------------------------- sweeps, CLI, Makefile


def test_sweep_python_path(tmp_path):
    """What `make compare` runs, at tiny size with the fake trainer: folders, learners, report."""
    out = tmp_path / "sweep"
    result = train_methods({"env": "lbf", "scenario": "8x8-2p-2f"}, ["fups", "nops:qmix"], seeds=2, steps=32,
                   out_dir=out, extra=FAKE, make_program=make_fake_program)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["fups-ppo", "nops-qmix"]
    assert [(r["method"], r["learner"], r["seeds"], r["env"]) for r in result["rows"]] == [
        ("nops", "qmix", 2, "lbf 8x8-2p-2f"), ("fups", "ppo", 2, "lbf 8x8-2p-2f")]
    assert result["png"] == out / "compare.png" and (out / "compare.md").exists()
    # A bad method or a repeated run fails before anything is trained.
    with pytest.raises(ConfigError, match="unknown method"):
        train_methods(None, ["fups", "no_such_method"], 1, 32, tmp_path / "bad", FAKE, make_program=make_fake_program)
    with pytest.raises(ConfigError, match="twice"):
        train_methods(None, ["fups", "fups:ppo"], 1, 32, tmp_path / "bad", FAKE, make_program=make_fake_program)
    with pytest.raises(ConfigError, match="holds a run of another config.*seeds=2 there, 1 here"):
        train_methods(None, ["fups"], 1, 32, out, FAKE, make_program=make_fake_program)
    assert not (tmp_path / "bad").exists()


def test_sweep_continues_where_it_was_stopped(tmp_path):
    """The same command on an interrupted sweep's folder: finished runs reused, the stopped one resumed from its
    checkpoint (giving the uninterrupted run's rows), the missing one trained; nothing retrained."""
    env, algs = {"env": "lbf", "scenario": "8x8-2p-2f"}, ["fups", "nops:qmix", "seps"]
    extra = {**FAKE, "checkpoint": True}
    out = tmp_path / "stopped"
    configs = method_configs(env, algs, 2, 32, out, extra)
    finished = run(configs[0], make_program=make_fake_program)
    stopped = run(configs[1], max_chunks=1, make_program=make_fake_program)
    assert not json.loads((stopped / "summary.json").read_text())["finished"]
    written = (finished / "metrics.csv").stat().st_mtime_ns
    result = train_methods(env, algs, 2, 32, out, {**extra, "progress": True}, make_program=make_fake_program)
    assert (finished / "metrics.csv").stat().st_mtime_ns == written  # reused as it was
    assert len(result["rows"]) == 3 and all((out / c.run_name / "summary.json").exists() for c in configs)
    whole = tmp_path / "whole"
    train_methods(env, algs, 2, 32, whole, extra, make_program=make_fake_program)
    for name in ("fups-ppo", "nops-qmix", "seps-ppo"):
        for log in ("metrics.csv", "eval.csv"):
            assert (out / name / log).read_text() == (whole / name / log).read_text(), (name, log)
    # an unfinished run that cannot be continued is named, before anything trains
    no_checkpoint = tmp_path / "no_checkpoint"
    run(method_configs(env, algs[:1], 2, 32, no_checkpoint, FAKE)[0], max_chunks=1, make_program=make_fake_program)
    with pytest.raises(ConfigError, match="no checkpoint to continue from"):
        train_methods(env, algs, 2, 32, no_checkpoint, FAKE, make_program=make_fake_program)
    assert sorted(p.name for p in no_checkpoint.iterdir()) == ["fups-ppo"]


def test_cli_compare(sweep_dir, tmp_path, capsys):
    assert cli.main(["compare", str(sweep_dir / "nops"), str(sweep_dir / "fups-a"), f"out={tmp_path}"]) == 0
    printed = capsys.readouterr().out
    assert "| nops | qmix | 2 |" in printed and (tmp_path / "compare.png").exists()
    assert cli.main(["compare", f"out={tmp_path}"]) == 2
    assert cli.main(["compare", str(_fake_run(tmp_path, "matrix", env="matrix")), "metric=win",
                     f"out={tmp_path / 'w'}"]) == 2
    assert cli.main(["compare", str(sweep_dir / "nops"), "steps=16", f"out={tmp_path / 's'}"]) == 0
    assert "| nops | qmix | 2 |" in capsys.readouterr().out
    assert cli.main(["compare", str(sweep_dir / "nops"), "steps=ten", f"out={tmp_path / 's'}"]) == 2
    assert cli.main(["compare-sweep", "algs=fups nothing", f"out={tmp_path / 'x'}"]) == 2
    assert cli.main(["compare-sweep", "seeds=two"]) == 2
    assert "unknown method" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_makefile_passes_only_given_variables():
    def dry(*args):
        proc = subprocess.run(["make", "-n", "-s", "compare", *args], cwd=REPO, capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin", "ENV": "leaked"}, check=True)
        return [line for line in proc.stdout.splitlines() if "compare-sweep" in line][0]

    assert dry().rstrip().endswith("-m psjax compare-sweep")  # ENV from the environment is not passed
    line = dry("ENV=mpe_spread", 'ALGS=fups nops adaps', "SEEDS=3", "STEPS=1e5", "OUT=runs/x", "ARGS=lr=1e-3")
    assert line.endswith('compare-sweep env=mpe_spread seeds=3 steps=1e5 out=runs/x algs="fups nops adaps" lr=1e-3')


@pytest.mark.slow
def test_compare_sweep_real_training(tmp_path):
    """The CLI sweep end to end with the real trainer (A2C, two methods, a few thousand steps)."""
    out = tmp_path / "real"
    cmd = [sys.executable, "-m", "psjax", "compare-sweep", "algs=fups nops", "learner=a2c", "seeds=2", "steps=2000",
           "eval_every=0.5", "eval_envs=4", "checkpoint=false", "progress=false", f"out={out}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((out / "compare.json").read_text())
    assert [(r["method"], r["learner"], r["seeds"]) for r in rows] == [("nops", "a2c", 2), ("fups", "a2c", 2)]
    assert all(r["env_steps"] >= 2000 and r["param_count"] > 0 for r in rows)
    assert rows[0]["param_count"] == 2 * rows[1]["param_count"]  # NoPS: one actor and critic per agent (2)
    assert (out / "compare.png").read_bytes()[:8] == PNG_MAGIC
