"""The host loop (psjax.run) against a fake trainer: resume equality, run-folder contents."""

from __future__ import annotations

import csv
import json

import jax
import numpy as np
import pytest
import yaml
from conftest import make_fake_program

from psjax.checkpoints import load_checkpoint
from psjax.config import ConfigError, make_config
from psjax.plan import chunk_plan, seed_keys
from psjax.run import run


def _cfg(tmp_path, name, **overrides):
    """8 env steps per iteration; steps=160 -> 20 iterations; eval_every=0.25 -> 4 chunks of 5."""
    base = {"q.num_envs": 2, "q.rollout_len": 4, "q.learning_starts": 0, "steps": 160, "eval_every": 0.25,
            "seed": 7, "seeds": 3, "out_dir": str(tmp_path), "run_name": name, "progress": False}
    return make_config({**base, **overrides})


def _final_runner(run_dir, cfg):
    program = make_fake_program(cfg, 1)
    abstract = jax.eval_shape(jax.vmap(program.init), seed_keys(cfg.seed, cfg.seeds))
    return load_checkpoint(run_dir, abstract)


def _csv_rows(path):
    with path.open() as f:
        return list(csv.reader(f))


@pytest.mark.parametrize(
    ("num_iterations", "plan"), [(20, [5, 5, 5, 5]), (22, [6, 6, 6, 4]), (10, [10]), (3, [1, 1, 1]), (1, [1])]
)
def test_chunk_plan(num_iterations, plan):
    eval_every = 0.0 if plan == [10] else 0.25 if num_iterations > 3 else 0.05
    assert chunk_plan(num_iterations, eval_every) == plan


@pytest.mark.parametrize("steps", [160, 176])  # 176: 22 iterations, a remainder chunk of 4
def test_resume_equals_uninterrupted(tmp_path, fake_factory, steps):
    full_cfg = _cfg(tmp_path, "full", steps=steps)
    full = run(full_cfg, make_program=fake_factory)

    part_cfg = _cfg(tmp_path, "part", steps=steps)
    part = run(part_cfg, max_chunks=2, make_program=fake_factory)
    assert not json.loads((part / "summary.json").read_text())["finished"]
    # An interruption after logging but before the next checkpoint leaves extra and partial rows.
    for name in ("metrics", "eval"):
        with (part / f"{name}.jsonl").open("a") as f:
            f.write('{"seed": 7, "iteration": 999}\n{"seed": 8, "iter')
        with (part / f"{name}.csv").open("a") as f:
            f.write("7,999,1\n8,99")
    resumed = run(None, resume=part, make_program=fake_factory)
    assert resumed == part

    for name in ("metrics.csv", "metrics.jsonl", "eval.csv", "eval.jsonl"):
        assert (full / name).read_bytes() == (part / name).read_bytes(), name
    (runner_a, host_a), (runner_b, host_b) = _final_runner(full, full_cfg), _final_runner(part, part_cfg)
    assert host_a == host_b
    for a, b in zip(jax.tree.leaves(runner_a), jax.tree.leaves(runner_b)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    if steps == 176:
        assert 4 in fake_factory.sizes  # the remainder got its own program
    summary = json.loads((part / "summary.json").read_text())
    assert summary["finished"] and summary["iterations_done"] == full_cfg.num_iterations


def test_run_folder_contents(tmp_path, fake_factory):
    cfg = _cfg(tmp_path, "contents", **{"env": "smax"})
    run_dir = run(cfg, make_program=fake_factory)

    for name in ("config.yaml", "metrics.jsonl", "metrics.csv", "eval.jsonl", "eval.csv", "summary.json",
                 "curve.png"):
        assert (run_dir / name).stat().st_size > 0, name
    assert make_config({k: v for k, v in _flat(yaml.safe_load((run_dir / "config.yaml").read_text()))}) == cfg

    rows = _csv_rows(run_dir / "metrics.csv")
    header, body = rows[0], rows[1:]
    assert len(body) == cfg.num_iterations * cfg.seeds == 60
    assert header[:3] == ["seed", "iteration", "env_steps"]
    assert {"return", "won", "episode_length", "loss", "q_agents[0]", "q_agents[2]"} <= set(header)
    assert [r[0] for r in body[:3]] == ["7", "8", "9"]  # iteration-major, every seed per iteration
    assert body[-1][1] == "20" and body[-1][2] == str(20 * cfg.steps_per_iteration)
    ret = header.index("return")
    assert body[6][ret] == "" and body[3][ret] != ""  # iteration 3: no finished episode -> empty
    jsonl = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(jsonl) == 60 and jsonl[6]["return"] is None

    evals = _csv_rows(run_dir / "eval.csv")
    assert evals[0] == ["seed", "iteration", "env_steps", "eval_policy", "eval_return", "eval_won", "eval_length",
                        "eval_greedy_return", "eval_greedy_won", "eval_greedy_length"]  # qmix: greedy by default
    assert {r[3] for r in evals[1:]} == {"greedy"} and all(r[4:7] == r[7:10] for r in evals[1:])
    assert len(evals) - 1 == (len(chunk_plan(20, 0.25)) + 1) * cfg.seeds  # + the evaluation before training
    assert evals[1][2] == "0" and evals[-1][2] == str(cfg.num_iterations * cfg.steps_per_iteration)

    summary = json.loads((run_dir / "summary.json").read_text())
    assert {"param_count", "steps_per_sec", "compile_s", "final_eval", "has_win", "finished"} <= set(summary)
    assert summary["param_count"] == 4 and summary["has_win"] and summary["finished"]
    assert summary["compile_s"] is not None and summary["compile_s"] >= 0 and summary["steps_per_sec"] > 0
    assert [r["seed"] for r in summary["final_eval"]["per_seed"]] == [7, 8, 9]
    final = [float(r[4]) for r in evals[-3:]]
    assert summary["final_eval"]["mean"]["eval_return"] == pytest.approx(np.mean(final))
    assert summary["final_eval"]["policy"] == "greedy" and summary["final_eval"]["episodes_per_seed"] == 32
    assert len([p for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()]) == 2  # max_to_keep


def _flat(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, prefix + k + ".")
        else:
            yield prefix + k, v


def test_vmapped_seed_equals_single_seed(tmp_path, fake_factory):
    both = run(_cfg(tmp_path, "both", seeds=2, eval_every=0.5), make_program=fake_factory)
    alone = run(_cfg(tmp_path, "alone", seed=8, seeds=1, eval_every=0.5), make_program=fake_factory)
    for name in ("metrics.jsonl", "eval.jsonl"):
        rows = [json.loads(line) for line in (both / name).read_text().splitlines()]
        single = [json.loads(line) for line in (alone / name).read_text().splitlines()]
        assert [r for r in rows if r["seed"] == 8] == single
        seven = [r for r in rows if r["seed"] == 7]
        assert [r.get("loss", r.get("eval_return")) for r in seven] != [
            r.get("loss", r.get("eval_return")) for r in single]


def test_compile_cache_serves_a_repeated_run(tmp_path, fake_factory):
    """compile_cache: a run stores its compiled programs in the folder, an identical later run loads them from
    there (JAX reports cache hits) and logs the same numbers; summary.json names the folder."""
    cache = tmp_path / "xla"
    hits = []

    def listener(event, **_):
        if event == "/jax/compilation_cache/cache_hits":
            hits.append(event)

    min_time = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # the fake programs compile in ms
    jax.monitoring.register_event_listener(listener)
    try:
        first = run(_cfg(tmp_path, "first", compile_cache=str(cache)), make_program=fake_factory)
        assert any(cache.iterdir()) and not hits
        second = run(_cfg(tmp_path, "second", compile_cache=str(cache)), make_program=fake_factory)
        assert hits
    finally:
        jax.monitoring.unregister_event_listener(listener)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_time)
    for name in ("metrics.jsonl", "eval.jsonl"):
        assert (first / name).read_text() == (second / name).read_text()
    assert json.loads((second / "summary.json").read_text())["compile_cache"] == str(cache.resolve())
    # empty: JAX's own setting stays as it is, and the summary says no cache was set
    third = run(_cfg(tmp_path, "third", compile_cache=""), make_program=fake_factory)
    assert json.loads((third / "summary.json").read_text())["compile_cache"] is None


def test_refuses_existing_run_folder_and_config_mismatch(tmp_path, fake_factory):
    cfg = _cfg(tmp_path, "taken", eval_every=1.0)
    run_dir = run(cfg, make_program=fake_factory)
    with pytest.raises(ConfigError, match="taken"):
        run(cfg, make_program=fake_factory)
    with pytest.raises(ConfigError, match="differs"):
        run(_cfg(tmp_path, "taken", eval_every=1.0, seeds=2), resume=run_dir, make_program=fake_factory)


def test_no_checkpoint_no_resume(tmp_path, fake_factory):
    run_dir = run(_cfg(tmp_path, "nockpt", checkpoint=False), max_chunks=1, make_program=fake_factory)
    assert not (run_dir / "checkpoints").exists()
    with pytest.raises(ConfigError, match="no checkpoints"):
        run(resume=run_dir, make_program=fake_factory)


def _rewritten_checkpoint(tmp_path, edit):
    """A stopped tiny run whose last checkpoint is rewritten as ``edit(runner fields)`` (what another psjax
    version would have saved). Returns ``(run_dir, abstract runner, runner as saved by this psjax, host)``."""
    from psjax.checkpoints import open_manager, save_checkpoint
    from psjax.train import make_program

    cfg = make_config({"env": "matrix", "matrix_game": "two_step", "alg": "fups", "learner": "ppo", "seeds": 2,
                       "ac.num_envs": 4, "ac.rollout_len": 4, "ac.num_minibatches": 1, "steps": 64,
                       "eval_every": 0.5, "progress": False, "out_dir": str(tmp_path), "run_name": "old"})
    run_dir = run(cfg, max_chunks=1)
    abstract = jax.eval_shape(jax.vmap(make_program(cfg, 1).init), seed_keys(cfg.seed, cfg.seeds), {})
    runner, host = load_checkpoint(run_dir, abstract)
    manager = open_manager(run_dir, create=False)
    step = manager.latest_step()
    manager.delete(step)
    save_checkpoint(manager, step, edit(runner._asdict()), host)
    manager.wait_until_finished()
    manager.close()
    return run_dir, abstract, runner, host


def test_resume_reads_a_checkpoint_written_before_runner_point(tmp_path):
    """Checkpoints of psjax before sweeps hold no ``Runner.point``: such a run still restores and resumes."""
    run_dir, abstract, runner, host = _rewritten_checkpoint(
        tmp_path, lambda fields: {f: v for f, v in fields.items() if f != "point"})
    restored, restored_host = load_checkpoint(run_dir, abstract)
    assert restored_host == host and restored.point == {}
    assert jax.tree.structure(restored) == jax.tree.structure(runner)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(runner)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    run(None, resume=run_dir)
    assert json.loads((run_dir / "summary.json").read_text())["finished"]


def test_checkpoint_of_another_layout_is_refused_by_name(tmp_path):
    """A checkpoint whose arrays differ from the runner this psjax builds (another version's replay layout)
    is refused with a ConfigError that says it cannot be resumed, not orbax's structure dump alone."""
    def extra_arrays(fields):
        return {**fields, "env_steps": {"count": fields["env_steps"], "extra": fields["env_steps"]}}

    run_dir, abstract, _, host = _rewritten_checkpoint(tmp_path, extra_arrays)
    with pytest.raises(ConfigError, match="cannot be resumed"):  # the older intact one is not asked for here
        load_checkpoint(run_dir, abstract, step=host["chunk"])
