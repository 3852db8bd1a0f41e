"""The one training loop end to end: learning thresholds, determinism, vmapped seeds, resume."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from psjax.checkpoints import load_checkpoint
from psjax.config import make_config
from psjax.evaluate import random_policy_score
from psjax.plan import chunk_plan, seed_keys
from psjax.run import run
from psjax.train import make_parts, make_program, make_train

TWO_STEP = {
    "env": "matrix",
    "matrix_game": "two_step",
    "alg": "fups_id",
    "steps": 12800,
    "q.num_envs": 16,
    "q.rollout_len": 8,
    "q.learning_starts": 1000,
    "q.eps_decay_steps": 8000,
    "q.buffer_size": 256,
    "q.target_update_interval": 10,
    "q.updates_per_rollout": 2,
    "q.lr": 3e-3,
    "q.hidden": 32,
}


def _greedy_returns(cfg, runners, num_seeds, episodes=4):
    program = make_program(cfg, 1)
    keys = jax.random.split(jax.random.PRNGKey(123), num_seeds)
    return np.asarray(jax.jit(jax.vmap(program.evaluate))(runners, keys)["eval_return"])


def test_qmix_finds_the_optimum_of_the_two_step_game():
    """QMIX paper's two-step game: the optimum (8) needs a non-additive value, which QMIX's
    state-conditioned mixer represents. Every seed's greedy policy must reach it."""
    cfg = make_config({**TWO_STEP, "learner": "qmix"})
    runners, _ = jax.jit(jax.vmap(make_train(cfg)))(seed_keys(0, 8))
    np.testing.assert_array_equal(_greedy_returns(cfg, runners, 8), np.full(8, 8.0))


@pytest.mark.parametrize(
    ("learner", "scenario", "extra"),
    [
        ("a2c", "8x8-2p-2f", {"ac.lr": 7e-4}),  # A2C's few updates per sample: the non-cooperative variant
        ("ppo", "8x8-2p-2f-coop", {}),  # food that needs both agents at once
    ],
)
def test_actor_critic_beats_random_on_lbf(learner, scenario, extra):
    cfg = make_config(
        {"env": "lbf", "scenario": scenario, "alg": "fups", "learner": learner, "steps": 120_000, **extra}
    )
    _, metrics = jax.jit(jax.vmap(make_train(cfg)))(seed_keys(0, 2))
    random_return = float(random_policy_score(make_parts(cfg).env, jax.random.PRNGKey(0), 256)["return"])
    late = np.nanmean(np.asarray(metrics["return"])[:, -10:], axis=1)
    assert np.all(late > random_return + 0.3), (late, random_return)  # all food eaten = 1.0


def test_same_key_same_result_and_other_key_differs():
    cfg = make_config({**TWO_STEP, "learner": "vdn", "steps": 1280})
    train = jax.jit(make_train(cfg))
    a, _ = train(jax.random.PRNGKey(0))
    b, _ = train(jax.random.PRNGKey(0))
    c, _ = train(jax.random.PRNGKey(1))
    leaves = lambda r: jax.tree.leaves(r.learner.params)  # noqa: E731
    for x, y in zip(leaves(a), leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(leaves(a), leaves(c)))


@pytest.mark.parametrize("learner", ["qmix", "ppo"])
def test_vmapped_seeds_equal_single_runs(learner, vmapped_check):
    # few iterations: batched and single matmuls round differently, and chaos amplifies it over many updates
    extra = {"steps": 1280} if learner == "qmix" else {"steps": 256, "ac.num_envs": 4, "ac.rollout_len": 16}
    cfg = make_config({**TWO_STEP, "learner": learner, **extra})
    for single, batched in vmapped_check(make_train(cfg), seed_keys(3, 3), rtol=1e-5, atol=1e-6):
        np.testing.assert_allclose(single["return"], batched["return"], rtol=1e-5)


# the QMIX case compiles the replay-buffer program twice (minutes on 2 busy cores): make test-all
@pytest.mark.parametrize("learner", [pytest.param("qmix", marks=pytest.mark.slow), "ppo"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, learner):
    section = "q" if learner == "qmix" else "ac"
    base = {"env": "lbf", "alg": "nops", "learner": learner, f"{section}.num_envs": 4, f"{section}.rollout_len": 8,
            "steps": 4 * 8 * 8, "eval_every": 0.25, "eval_envs": 2, "seeds": 2, "out_dir": str(tmp_path),
            "progress": False}
    if learner == "qmix":
        base.update({"q.learning_starts": 0, "q.buffer_size": 64, "q.batch_size": 8})
    full = run(make_config({**base, "run_name": "full"}))
    part = run(make_config({**base, "run_name": "part"}), max_chunks=2)
    resumed = run(resume=str(part))
    cfg = make_config({**base, "run_name": "full"})
    program = make_program(cfg, 2)
    abstract = jax.eval_shape(jax.vmap(program.init), seed_keys(cfg.seed, cfg.seeds))
    a, _ = load_checkpoint(full, abstract)
    b, _ = load_checkpoint(resumed, abstract)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert (full / "metrics.csv").read_text() == (resumed / "metrics.csv").read_text()
    assert (full / "eval.csv").read_text() == (resumed / "eval.csv").read_text()


def test_a_remainder_chunk_runs_the_first_chunks_program(tmp_path):
    """9 iterations in chunks [2, 2, 2, 2, 1]: one chunk program compiled, and the run ends where one scan of
    all 9 iterations does (the counted loop is the scan's while loop with the trip count read at run time)."""
    cfg = make_config({"env": "lbf", "alg": "nops", "learner": "ppo", "ac.num_envs": 4, "ac.rollout_len": 8,
                       "steps": 9 * 4 * 8, "eval_every": 0.25, "eval_envs": 2, "seeds": 2, "out_dir": str(tmp_path),
                       "progress": False, "checkpoint": True})
    assert chunk_plan(cfg.num_iterations, cfg.eval_every) == [2, 2, 2, 2, 1]
    run_dir = run(cfg)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["chunk_programs"] == 1 and summary["iterations_done"] == 9
    program = make_program(cfg, 2)
    abstract = jax.eval_shape(jax.vmap(program.init), seed_keys(cfg.seed, cfg.seeds))
    saved, _ = load_checkpoint(run_dir, abstract)
    whole, metrics = jax.jit(jax.vmap(make_train(cfg)))(seed_keys(cfg.seed, cfg.seeds))
    for x, y in zip(jax.tree.leaves(saved), jax.tree.leaves(whole)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in logged[::2]] == list(range(1, 10))  # no row of the unused chunk slot
    np.testing.assert_allclose([r["env_steps"] for r in logged[1::2]], np.asarray(metrics["env_steps"])[1])


@pytest.mark.parametrize("vmapped", [False, True])
def test_no_gradient_step_before_learning_starts(vmapped):
    """An iteration whose env steps (counted after its rollout: 128 per iteration here) are below
    ``q.learning_starts`` takes no gradient step: every learner metric NaN, the parameters as initialised;
    from the first that reaches it on, every iteration takes ``updates_per_rollout`` steps. Vmapped over seeds
    the predicate is batched (``lax.cond`` becomes a select): the same."""
    from jax.flatten_util import ravel_pytree

    from psjax.train import init_runner

    cfg = make_config({**TWO_STEP, "learner": "qmix", "q.learning_starts": 512, "steps": 768})
    keys = seed_keys(0, 2)
    train = jax.jit(jax.vmap(make_train(cfg))) if vmapped else jax.jit(make_train(cfg))
    runner, metrics = train(keys if vmapped else keys[0])
    for name in ("loss", "grad_norm", "q_taken", "td_abs"):
        m = np.asarray(metrics[name]).reshape(-1, 6)
        assert np.isnan(m[:, :3]).all() and np.isfinite(m[:, 3:]).all(), name
    np.testing.assert_array_equal(np.asarray(runner.learner.updates).reshape(-1), 3 * cfg.q.updates_per_rollout)

    early = make_config({**TWO_STEP, "learner": "qmix", "q.learning_starts": 512, "steps": 384})
    params = jax.jit(make_train(early))(keys[0])[0].learner.params
    initial = jax.jit(lambda k: init_runner(make_parts(early), k))(keys[0]).learner.params
    np.testing.assert_array_equal(ravel_pytree(params)[0], ravel_pytree(initial)[0])


@pytest.mark.parametrize("tau", [0.0, 0.25])
def test_target_updates_hard_and_soft(tau):
    """Hard: the target is the online network after every ``target_update_interval``-th gradient step and
    untouched between; soft (``target_tau``): target <- tau * online + (1 - tau) * target after every step."""
    from jax.flatten_util import ravel_pytree

    from psjax.train import init_runner, train_iteration

    cfg = make_config({**TWO_STEP, "learner": "qmix", "q.learning_starts": 0, "q.updates_per_rollout": 1,
                       "q.target_update_interval": 2, "q.target_tau": tau})
    parts = make_parts(cfg)
    step = jax.jit(lambda r: train_iteration(parts, r)[0])
    runner = jax.jit(lambda k: init_runner(parts, k))(jax.random.PRNGKey(0))
    leaves = lambda tree: np.asarray(ravel_pytree(tree)[0])  # noqa: E731
    for update in (1, 2, 3):
        before = leaves(runner.learner.target)
        runner = step(runner)
        online, target = leaves(runner.learner.params), leaves(runner.learner.target)
        assert not np.allclose(online, before)  # the gradient step moved the online network
        if tau > 0:
            np.testing.assert_allclose(target, tau * online + (1 - tau) * before, rtol=1e-5, atol=1e-7)
        else:
            np.testing.assert_array_equal(target, online if update % 2 == 0 else before)
