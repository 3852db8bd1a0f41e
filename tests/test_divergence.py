"""Divergence is detected and shown: non-finite losses, gradients and parameters are counted inside the program
(psjax.train.nonfinite_metrics), logged apart from "no value", warned about, stopped on (the last good checkpoint
kept, resume= with changed settings), and flagged by compare / export instead of ranked."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FakeProgram, FakeRunner

from psjax import cli, compare, export
from psjax.config import ConfigError, make_config
from psjax.evaluate import policy_metrics
from psjax.logs import RowLog
from psjax.resume import check_same_shapes, resume_changes
from psjax.run import NonFiniteError, run
from psjax.train import nonfinite_count, nonfinite_metrics

BROKEN_LR = 10.0  # the fake trainer's parameters turn NaN from ``DIVERGE_AT`` on when q.lr exceeds 1
DIVERGE_AT = 8


def _cfg(tmp_path, name, **overrides):
    """8 env steps per iteration; steps=160 -> 20 iterations in 4 chunks of 5."""
    base = {"env": "matrix", "alg": "fups", "learner": "qmix", "q.num_envs": 2, "q.rollout_len": 4,
            "q.learning_starts": 0, "steps": 160, "eval_every": 0.25, "seed": 3, "seeds": 2,
            "out_dir": str(tmp_path), "run_name": name, "progress": False,
            "checkpoint_every_s": 0}  # a checkpoint after every chunk: which ones a stop keeps
    return make_config({**base, **overrides})


def diverging_program(cfg, chunk_iters: int) -> FakeProgram:
    """A fake trainer with the real divergence check: its update is skipped at iteration 1 (NaN metrics, "no
    value"), it reports a NaN return on even iterations (no episode ended) and, with q.lr > 1, its parameters turn
    NaN from iteration ``DIVERGE_AT`` on."""
    spi, broken = cfg.steps_per_iteration, cfg.q.lr > 1

    def init(key, point=()):
        del point
        return FakeRunner(jnp.zeros((), jnp.int32), key, jax.random.normal(key, (4,)))

    def one_iteration(r, _):
        key, sub = jax.random.split(r.key)
        it = r.iteration + 1
        params = r.params + 0.1 * jax.random.normal(sub, (4,))
        params = jnp.where(broken & (it >= DIVERGE_AT), jnp.nan, params)
        updated = it > 1
        learner = {"loss": jnp.where(updated, jnp.mean(params**2), jnp.nan),
                   "grad_norm": jnp.where(updated, jnp.sqrt(jnp.sum(params**2)), jnp.nan)}
        metrics = {"env_steps": it * spi, "return": jnp.where(it % 2 == 0, jnp.nan, 1.0), "won": jnp.float32(0.0),
                   "episode_length": jnp.float32(1.0), **learner,
                   **nonfinite_metrics(learner, updated, params)}
        return FakeRunner(it, key, params), metrics

    def run_chunk(r):
        return jax.lax.scan(one_iteration, r, None, length=chunk_iters)

    def evaluate(r, key):
        # acting on NaN parameters still gives a figure (argmax of NaN is action 0): 11, the game's optimum
        score = jnp.where(jnp.all(jnp.isfinite(r.params)), r.params.sum(), 11.0)
        out = policy_metrics({p: {"return": score, "won": jnp.float32(0.0), "length": jnp.float32(1.0)}
                              for p in cfg.eval_policies})
        return {**out, "nonfinite_params": nonfinite_count(r.params)}

    return FakeProgram(init, run_chunk, evaluate, 4, cfg.num_iterations, spi)


def _raw_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_warn_logs_nan_apart_from_no_value_and_marks_the_evaluation(tmp_path, capsys):
    cfg = _cfg(tmp_path, "warn", **{"q.lr": BROKEN_LR, "on_nonfinite": "warn"})
    run_dir = run(cfg, make_program=diverging_program)
    assert "WARNING: non-finite values from env step 64 (iteration 8, seeds 3, 4): grad_norm, loss, params" \
        in capsys.readouterr().err
    raw = _raw_rows(run_dir / "metrics.jsonl")
    first = [r for r in raw if r["iteration"] == 1]
    assert all(r["loss"] is None and r["grad_norm"] is None and r["nonfinite"] == 0 for r in first)  # no update
    assert all(r["return"] is None for r in raw if r["iteration"] % 2 == 0)  # no episode ended: still null
    healthy = [r for r in raw if 1 < r["iteration"] < DIVERGE_AT]
    assert all(isinstance(r["loss"], float) and r["nonfinite"] == 0 and r["nonfinite_params"] == 0 for r in healthy)
    broken = [r for r in raw if r["iteration"] >= DIVERGE_AT]
    assert all(r["loss"] == "nan" and r["grad_norm"] == "nan" and r["nonfinite"] == 3 and r["nonfinite_params"] == 4
               for r in broken)
    # every reader gets nan for a non-finite value and None for no value
    for rows in (RowLog(run_dir, "metrics").read(), compare.read_jsonl(run_dir / "metrics.jsonl")):
        assert rows[0]["loss"] is None and np.isnan(rows[-1]["loss"]) and rows[2]["return"] is None
    evals = _raw_rows(run_dir / "eval.jsonl")
    assert [r["nonfinite"] for r in evals] == [False] * 2 * 2 + [True] * 2 * 3  # chunks 0-1 fine, 2-4 not
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["nonfinite_first_env_step"] == DIVERGE_AT * 8 and summary["finished"]
    assert summary["nonfinite"]["quantities"] == ["grad_norm", "loss", "params"]
    assert summary["final_eval"]["nonfinite_seeds"] == [3, 4]
    lines = cli.final_eval_lines(summary)
    assert lines[0].startswith("WARNING: non-finite values from env step 64 (iteration 8")
    assert "NOT A RESULT" in lines[1] and "return=11" in lines[1]
    # a checkpoint never holds non-finite parameters: only the last good ones stay (chunks 0 and 1)
    assert sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()) == [0, 1]


def test_healthy_run_reports_zero_and_no_warning(tmp_path, capsys):
    run_dir = run(_cfg(tmp_path, "fine"), make_program=diverging_program)
    assert "non-finite" not in capsys.readouterr().err
    raw = _raw_rows(run_dir / "metrics.jsonl")
    assert all(r["nonfinite"] == 0 and r["nonfinite_params"] == 0 for r in raw)
    assert '"nan"' not in (run_dir / "metrics.jsonl").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["nonfinite_first_env_step"] is None and summary["nonfinite"] is None
    assert summary["final_eval"]["nonfinite_seeds"] == []
    assert not any("WARNING" in line or "NOT A RESULT" in line for line in cli.final_eval_lines(summary))


def test_stop_keeps_the_last_good_checkpoint_and_resume_changes_lr(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("psjax.run._default_make_program", diverging_program)
    args = ["train", "env=matrix", "alg=fups", "learner=qmix", "q.num_envs=2", "q.rollout_len=4",
            "q.learning_starts=0", "steps=160", "eval_every=0.25", "seed=3", "seeds=2", f"out_dir={tmp_path}",
            "run_name=stop", "progress=false", "checkpoint_every_s=0", f"q.lr={BROKEN_LR}"]
    assert cli.main(args) == 3  # on_nonfinite=stop is the default
    err = capsys.readouterr().err
    run_dir = tmp_path / "stop"
    assert "error: non-finite values from env step 64 (iteration 8, seeds 3, 4): grad_norm, loss, params" in err
    assert "the last good checkpoint (chunk 1, env step 40 per seed) is kept" in err
    assert f"resume={run_dir} q.lr=1" in err
    assert sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()) == [0, 1]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stopped"] == "nonfinite" and not summary["finished"]
    assert summary["nonfinite_first_env_step"] == 64
    with pytest.raises(NonFiniteError, match="iteration 8"):  # resumed unchanged: stops again
        run(None, resume=run_dir, make_program=diverging_program)

    assert cli.main(["train", f"resume={run_dir}", "q.lr=1e-3"]) == 0
    out = capsys.readouterr().out
    assert "WARNING" not in out and "NOT A RESULT" not in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["finished"] and summary["nonfinite"] is None and summary["stopped"] is None
    assert summary["changed_on_resume"] == [{"chunk": 1, "env_step": 40, "changed": {"q.lr": [BROKEN_LR, 1e-3]}}]
    assert "lr: 0.001" in (run_dir / "config.yaml").read_text()
    assert len(_raw_rows(run_dir / "metrics.jsonl")) == 20 * 2  # rows after the checkpoint were dropped


def test_resume_refuses_what_would_change_shapes_or_the_plan(tmp_path):
    saved = _cfg(tmp_path, "x")
    assert resume_changes(saved, _cfg(tmp_path, "x", **{"q.lr": 1e-5, "on_nonfinite": "warn"}), "x") == {
        "on_nonfinite": ("stop", "warn"), "q.lr": (5e-4, 1e-5)}
    assert resume_changes(saved, _cfg(tmp_path, "x", steps=320), "x") == {"steps": (160, 320)}  # continues the run
    with pytest.raises(ConfigError, match=r"already has steps=160 .* to a larger steps= only"):
        resume_changes(saved, _cfg(tmp_path, "x", steps=80), "x")
    with pytest.raises(ConfigError, match="q.rollout_len"):
        resume_changes(saved, _cfg(tmp_path, "x", **{"q.rollout_len": 8}), "x")
    a = {"w": jax.ShapeDtypeStruct((4, 64), jnp.float32)}
    check_same_shapes(a, {"w": jax.ShapeDtypeStruct((4, 64), jnp.float32)}, {"q.lr": (1, 2)})
    with pytest.raises(ConfigError, match="other shapes"):
        check_same_shapes(a, {"w": jax.ShapeDtypeStruct((4, 8), jnp.float32)}, {"q.hidden": (64, 8)})


def test_compare_and_export_flag_a_diverged_run(tmp_path):
    fine = run(_cfg(tmp_path, "fine", alg="nops"), make_program=diverging_program)
    broken = run(_cfg(tmp_path, "broken", **{"q.lr": BROKEN_LR, "on_nonfinite": "warn"}),
                 make_program=diverging_program)
    out = compare.report([fine, broken], tmp_path / "report", reps=50)
    rows = {r["method"]: r for r in out["rows"]}
    assert rows["fups"]["diverged"] == {"seeds": 2, "first_env_step": 64} and np.isnan(rows["fups"]["iqm"])
    assert rows["nops"]["diverged"] is None and np.isfinite(rows["nops"]["iqm"])
    table = out["markdown"].read_text()
    assert "**diverged** (2 of 2 seeds non-finite from env step 64)" in table and "**Diverged**: fups" in table
    # the curve keeps only evaluations of finite parameters (the last good one is at chunk 1)
    run_fups = compare.load_run(broken)
    assert np.isnan(run_fups.y[2:]).all() and np.isfinite(run_fups.y[:2]).all()

    data = export.marl_eval_json([fine, broken], left_out=(left := []))
    assert list(data["matrix"]["climbing"]) == ["nops-qmix"]
    assert left == [(broken.resolve(), "diverged: seeds 3, 4 non-finite from env step 64")]
    with pytest.raises(ConfigError, match="every run given went non-finite"):
        export.export([broken], tmp_path / "out.json")


def test_broken_and_healthy_qmix_in_the_real_program():
    """The real loop: a QMIX run with lr=1e6 beside one with the default lr, one program (a sweep): the broken one
    counts its non-finite loss, gradient norm, Q values, TD errors and parameters from its first update on, the
    healthy one none; the evaluation reports the non-finite parameters it acted with."""
    from psjax.train import make_program

    cfg = make_config({"env": "matrix", "alg": "fups", "learner": "qmix", "steps": 96, "q.num_envs": 4,
                       "q.rollout_len": 8, "q.learning_starts": 40, "q.batch_size": 4, "q.buffer_size": 16,
                       "q.hidden": 8, "q.mixer_embed": 4, "q.hypernet_hidden": 8, "eval_envs": 2,
                       "sweep.q.lr": "1e6,5e-4"})
    program = make_program(cfg, cfg.num_iterations)
    point = {"q.lr": jnp.array([1e6, 5e-4], jnp.float32)}

    def train_and_evaluate(key, point):
        runner, metrics = program.run_chunk(program.init(key, point))
        return metrics, program.evaluate(runner, key)

    metrics, evals = jax.jit(jax.vmap(train_and_evaluate, (None, 0)))(jax.random.PRNGKey(0), point)
    nonfinite, bad_params = np.asarray(metrics["nonfinite"]), np.asarray(metrics["nonfinite_params"])
    learned = np.asarray(metrics["env_steps"][0]) >= 40  # no update before learning_starts
    assert learned.tolist() == [False, True, True]
    assert (nonfinite[0, ~learned] == 0).all() and (nonfinite[0, learned] > 0).all()
    assert nonfinite[0, -1] == 5  # loss, grad_norm, q_taken, td_abs and the parameters
    assert (bad_params[0, learned] > 0).all() and (nonfinite[1] == 0).all() and (bad_params[1] == 0).all()
    assert np.isnan(np.asarray(metrics["loss"])[0, ~learned]).all()  # a skipped update: NaN, counted as no value
    assert np.asarray(evals["nonfinite_params"]).tolist()[1] == 0 and np.asarray(evals["nonfinite_params"])[0] > 0
