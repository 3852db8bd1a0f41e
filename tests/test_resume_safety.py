"""Checkpoints that fail safe (issue 38, item 5): a damaged newest checkpoint is skipped for the newest intact one,
every checkpoint damaged is said as such (not "another psjax version"), a checkpoint of another layout still gets
the version message, resume= says where it continues from, and ``resume=RUN steps=N`` continues a run to N."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_fake_program

from psjax import cli
from psjax.checkpoints import load_checkpoint, open_manager, restore_checkpoint, save_checkpoint
from psjax.config import ConfigError, make_config
from psjax.plan import seed_keys
from psjax.run import run


def _cfg(tmp_path, name, **overrides):
    """8 env steps per iteration; steps=160 -> 20 iterations; eval_every=0.25 -> 4 chunks of 5."""
    base = {"q.num_envs": 2, "q.rollout_len": 4, "q.learning_starts": 0, "steps": 160, "eval_every": 0.25,
            "seed": 7, "seeds": 2, "out_dir": str(tmp_path), "run_name": name, "progress": False,
            "compile_cache": "", "checkpoint_every_s": 0}  # a checkpoint after every chunk
    return make_config({**base, **overrides})


def _abstract(cfg):
    return jax.eval_shape(jax.vmap(make_fake_program(cfg, 1).init), seed_keys(cfg.seed, cfg.seeds))


def _damage(run_dir, step):
    """Cut every array data file of checkpoint ``step`` short (what a disk error after a kill -9 leaves)."""
    files = list((run_dir / "checkpoints" / str(step) / "runner" / "d").iterdir())
    assert files
    for f in files:
        f.write_bytes(f.read_bytes()[:10])


def _same_run(a, b, cfg):
    for name in ("metrics.jsonl", "eval.jsonl", "metrics.csv", "eval.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    (runner_a, _), (runner_b, _) = load_checkpoint(a, _abstract(cfg)), load_checkpoint(b, _abstract(cfg))
    for x, y in zip(jax.tree.leaves(runner_a), jax.tree.leaves(runner_b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _checkpoint_chunks(run_dir):
    return sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())


def test_checkpoints_at_most_every_interval_and_at_a_calls_last_chunk(tmp_path):
    every = run(_cfg(tmp_path, "every"), make_program=make_fake_program)  # 0 s: every chunk (the last two kept)
    assert _checkpoint_chunks(every) == [3, 4]
    rare = run(_cfg(tmp_path, "rare", checkpoint_every_s=1e9), make_program=make_fake_program)
    assert _checkpoint_chunks(rare) == [0, 4]  # the start and the run's last chunk only
    part = run(_cfg(tmp_path, "part", checkpoint_every_s=1e9), max_chunks=2, make_program=make_fake_program)
    assert _checkpoint_chunks(part) == [0, 2]  # a call's last chunk, so resume= loses nothing
    resumed = run(None, resume=part, make_program=make_fake_program)
    assert _checkpoint_chunks(resumed) == [2, 4]
    assert (resumed / "metrics.csv").read_bytes() == (rare / "metrics.csv").read_bytes()


def test_damaged_newest_checkpoint_resumes_from_the_older_one(tmp_path, capsys):
    cfg = _cfg(tmp_path, "killed")
    full = run(_cfg(tmp_path, "full"), make_program=make_fake_program)
    killed = run(cfg, max_chunks=3, make_program=make_fake_program)  # checkpoints 2 and 3 kept
    _damage(killed, 3)
    capsys.readouterr()

    run(None, resume=killed, make_program=make_fake_program)
    err = capsys.readouterr().err
    warning = next(line for line in err.splitlines() if line.startswith("WARNING"))
    assert "checkpoint 3 (chunk 3/4, env step 120 per seed) is damaged (ValueError: OUT_OF_RANGE" in warning
    assert "resuming from the newest intact one, checkpoint 2 (chunk 2/4, env step 80 per seed)" in warning
    assert f"psjax: resuming {killed} from checkpoint 2 (chunk 2/4, env step 80 per seed), iteration 10" in err
    assert (killed / "checkpoints-damaged" / "3" / "runner").is_dir()  # set aside, not deleted
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["finished"] and summary["psjax_version"]
    assert summary["resumed_from"]["checkpoint"] == 2 and summary["resumed_from"]["env_step"] == 80
    assert [d["checkpoint"] for d in summary["resumed_from"]["damaged"]] == [3]
    _same_run(full, killed, cfg)  # the rows after checkpoint 2 were dropped and trained again


def test_every_checkpoint_damaged_is_named_as_damage(tmp_path):
    cfg = _cfg(tmp_path, "broken")
    run_dir = run(cfg, max_chunks=3, make_program=make_fake_program)
    _damage(run_dir, 3)
    _damage(run_dir, 2)
    with pytest.raises(ConfigError, match="are damaged, none can be resumed: checkpoint 3 is damaged") as error:
        run(None, resume=run_dir, make_program=make_fake_program)
    assert "checkpoint 2 is damaged" in str(error.value) and "another psjax version" not in str(error.value)


def test_checkpoints_of_another_layout_still_get_the_version_message(tmp_path):
    """Every checkpoint holds other arrays than this psjax builds (rewritten as an older psjax would have written
    them, its version named in the host state): the message names both versions."""
    cfg = _cfg(tmp_path, "old")
    run_dir = run(cfg, max_chunks=3, make_program=make_fake_program)
    manager = open_manager(run_dir, create=False)
    for step in manager.all_steps():
        runner, host = load_checkpoint(run_dir, _abstract(cfg), step=step)
        manager.delete(step)
        old = {**runner._asdict(), "params": jnp.zeros((cfg.seeds, 5))}
        save_checkpoint(manager, step, old, {**host, "psjax_version": "0.0.9"})
        manager.wait_until_finished()
    manager.close()
    with pytest.raises(ConfigError, match=r"written by another psjax version \(0\.0\.9; this is ") as error:
        run(None, resume=run_dir, make_program=make_fake_program)
    assert "cannot be resumed" in str(error.value) and "params: stored (2, 5), built (2, 4)" in str(error.value)
    assert "damaged" not in str(error.value)
    with pytest.raises(ConfigError, match="holds other arrays"):  # the same, read through the library call
        restore_checkpoint(run_dir, _abstract(cfg))


def test_resume_with_more_steps_equals_a_run_started_with_them(tmp_path, capsys):
    """A finished 20-iteration run continued to steps=320 equals a run started with steps=320 and the same chunk
    size (eval_every=0.125 of 40 iterations = 5): the same metrics, evaluations and final parameters."""
    short = run(_cfg(tmp_path, "short"), make_program=make_fake_program)
    capsys.readouterr()
    assert cli.main(["train", f"resume={short}", "steps=160"]) == 2
    assert "to a larger steps= only, at least 161" in capsys.readouterr().err
    assert cli.main(["train", f"resume={short}", "steps=100"]) == 2  # smaller: refused the same way

    longer = _cfg(tmp_path, "short", steps=320)
    run(longer, resume=short, make_program=make_fake_program)
    err = capsys.readouterr().err
    assert (f"psjax: resuming {short} from checkpoint 4 (chunk 4/8, env step 160 per seed), iteration 20; "
            "steps=160 -> 320: 4 more chunk(s) of the run's 5 iterations") in err
    fresh = run(_cfg(tmp_path, "fresh", steps=320, eval_every=0.125), make_program=make_fake_program)
    _same_run(fresh, short, longer)
    summary = json.loads((short / "summary.json").read_text())
    assert summary["finished"] and summary["iterations_done"] == 40 and summary["chunks"] == [5] * 8
    assert summary["changed_on_resume"][-1]["changed"] == {"steps": [160, 320]}
    assert summary["changed_on_resume"][-1]["plan"] == [5] * 8
    # resumed again unchanged, the run keeps the recorded plan (chunk_plan of 40 iterations would cut chunks of 10)
    run(None, resume=short, make_program=make_fake_program)
    assert json.loads((short / "summary.json").read_text())["chunks"] == [5] * 8


def test_more_steps_refused_where_the_program_depends_on_the_total(tmp_path):
    """lr_decay is refused by name before anything is built; a program whose computation reads the total (here a
    fake one whose step size is 1 / num_iterations) is refused by comparing the two programs."""
    with pytest.raises(ConfigError, match=r"q.lr_decay=true, a learning rate decaying to zero"):
        run(_cfg(tmp_path, "decay", steps=320, **{"q.lr_decay": True}),
            resume=run(_cfg(tmp_path, "decay", **{"q.lr_decay": True}), make_program=make_fake_program),
            make_program=make_fake_program)

    def total_dependent(cfg, chunk_iters):
        program = make_fake_program(cfg, chunk_iters)

        def run_chunk(r):
            r, metrics = program.run_chunk(r)
            return r._replace(params=r.params / cfg.num_iterations), metrics

        return program._replace(run_chunk=run_chunk)

    run_dir = run(_cfg(tmp_path, "total", eval_every=0.5), make_program=total_dependent)
    with pytest.raises(ConfigError, match="depends on the total.*lr_decay.*kal_reset_interval"):
        run(_cfg(tmp_path, "total", eval_every=0.5, steps=320), resume=run_dir, make_program=total_dependent)


@pytest.mark.slow
def test_resume_with_more_steps_equals_a_run_started_with_them_real_trainer(tmp_path):
    """The same with psjax's own trainer (QMIX on the climbing game, constant lr): the program comparison lets it
    through, and the continued run's metrics, evaluations and parameters equal a run started with steps=128."""
    from psjax.train import make_program

    def cfg(name, **overrides):
        base = {"env": "matrix", "alg": "fups", "learner": "qmix", "q.num_envs": 4, "q.rollout_len": 4,
                "q.learning_starts": 0, "q.buffer_size": 16, "q.batch_size": 8, "steps": 64, "eval_every": 0.5,
                "seeds": 2, "eval_envs": 4, "out_dir": str(tmp_path), "run_name": name, "progress": False,
                "compile_cache": ""}
        return make_config({**base, **overrides})

    short = run(cfg("short"))
    run(cfg("short", steps=128), resume=short)
    fresh = run(cfg("fresh", steps=128, eval_every=0.25))  # 8 iterations in chunks of 2, as the continued run
    for name in ("metrics.jsonl", "eval.jsonl"):
        assert (fresh / name).read_bytes() == (short / name).read_bytes(), name
    abstract = jax.eval_shape(jax.vmap(make_program(cfg("x"), 1).init), seed_keys(0, 2), {})
    (a, _), (b, _) = load_checkpoint(fresh, abstract), load_checkpoint(short, abstract)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
