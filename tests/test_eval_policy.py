"""The evaluation policy (``TrainConfig.eval_policy``): how it resolves, what a greedy and a sampled
evaluation measure (hand-computed on the climbing game), and how run folders, the CLI and compare name it."""

from __future__ import annotations

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from conftest import make_fake_program

import psjax.run
from psjax import cli
from psjax.compare import report
from psjax.config import ConfigError, make_config
from psjax.run import run
from psjax.train import make_program

CLIMBING = np.array([[11, -30, 0], [-30, 7, 6], [0, 0, 5]], float)  # psjax.envs.matrix's payoffs, one step
UNIFORM_RETURN = CLIMBING.mean()  # -31/9: both agents uniformly random
# The host loop with the fake trainer: 8 env steps per iteration, 4 iterations, evaluations after every 2.
FAKE = {"q.num_envs": 2, "q.rollout_len": 4, "ac.num_envs": 2, "ac.rollout_len": 4, "ac.num_minibatches": 1,
        "steps": 32, "eval_every": 0.5, "progress": False, "checkpoint": False, "seeds": 2}


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"learner": "ppo"}, ("sample",)),
    ({"learner": "a2c"}, ("sample",)),
    ({"alg": "seps"}, ("sample",)),  # the method's default learner, a2c
    ({"learner": "qmix"}, ("greedy",)),
    ({"learner": "vdn"}, ("greedy",)),
    ({"learner": "iql"}, ("greedy",)),
    ({}, ("greedy",)),  # fups -> qmix
    ({"learner": "ppo", "eval_policy": "both"}, ("sample", "greedy")),  # the learner's default first
    ({"learner": "qmix", "eval_policy": "both"}, ("greedy", "sample")),
    ({"learner": "ppo", "eval_policy": "greedy"}, ("greedy",)),
    ({"learner": "qmix", "eval_policy": "sample"}, ("sample",)),
])
def test_eval_policies_resolve(overrides, expected):
    cfg = make_config(overrides)
    assert cfg.eval_policy == overrides.get("eval_policy", "auto")
    assert cfg.eval_policies == expected


def test_bad_eval_policy_names_the_allowed_ones():
    with pytest.raises(ConfigError) as err:
        make_config({"learner": "ppo", "eval_policy": "argmax"})
    assert str(err.value) == "eval_policy='argmax' is not allowed; allowed: 'auto', 'greedy', 'sample', 'both'"


# --------------------------------------------------------------------------- what each policy measures


def _climbing_evals(overrides: dict, env_steps=(0,), keys=(1, 2)) -> list[list[dict]]:
    """Evaluate the untrained runner of seed 0 on the climbing game: ``[steps][key]`` for each of ``env_steps``
    (the runner's env step counter, which sets the current epsilon) and each evaluation key."""
    cfg = make_config({"env": "matrix", "matrix_game": "climbing", "eval_policy": "both", "eval_envs": 4096,
                       "steps": 64, **overrides})
    program = make_program(cfg, 1)
    runner = program.init(jax.random.PRNGKey(0))
    evaluate = jax.jit(program.evaluate)
    return [[{k: float(v) for k, v in jax.device_get(evaluate(runner._replace(env_steps=jnp.int32(steps)),
                                                               jax.random.PRNGKey(key))).items()}
             for key in keys] for steps in env_steps]


def test_greedy_is_deterministic_and_sample_acts_epsilon_greedy_at_the_current_epsilon():
    """QMIX: greedy acting picks one joint action (the same return from every key); sample = the training
    policy, epsilon-greedy at the runner's epsilon: 1 at step 0 (uniform: the payoff table's mean, -31/9,
    within ~4 standard errors of 4096 episodes) and 0 once decayed (then exactly the greedy figure)."""
    q = {"learner": "qmix", "q.eps_start": 1.0, "q.eps_end": 0.0, "q.eps_decay_steps": 100}
    (a, b), decayed = _climbing_evals(q, env_steps=(0, 100))
    assert a["eval_greedy_return"] == b["eval_greedy_return"] and a["eval_greedy_return"] in CLIMBING
    assert a["eval_return"] == a["eval_greedy_return"] and a["eval_length"] == 1.0  # primary: greedy
    assert a["eval_sample_return"] != b["eval_sample_return"]
    for r in (a, b):
        assert r["eval_sample_return"] == pytest.approx(UNIFORM_RETURN, abs=1.0)
    for r in decayed:  # epsilon 0
        assert r["eval_sample_return"] == r["eval_greedy_return"] == a["eval_greedy_return"]


def test_actor_critic_samples_by_default_and_greedy_is_deterministic():
    """PPO: the primary figure is the sampled policy's, which differs between keys (an untrained, stochastic
    policy); the greedy figure is one payoff, the same from every key."""
    [(a, b)] = _climbing_evals({"learner": "ppo"})
    assert a["eval_return"] == a["eval_sample_return"] and b["eval_return"] == b["eval_sample_return"]
    assert a["eval_sample_return"] != b["eval_sample_return"]
    assert a["eval_greedy_return"] == b["eval_greedy_return"] and a["eval_greedy_return"] in CLIMBING


# --------------------------------------------------------------------------- run folders and the CLI


def _csv(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_run_folder_names_the_policy(tmp_path, capsys):
    """eval.csv / summary.json of a PPO run with eval_policy=both (fake trainer: greedy = sampled + 1)."""
    cfg = make_config({**FAKE, "learner": "ppo", "eval_policy": "both", "out_dir": str(tmp_path),
                       "run_name": "both", "progress": True})
    run_dir = run(cfg, make_program=make_fake_program)
    assert "sampled eval=" in capsys.readouterr().err  # the progress bar names the policy

    rows = _csv(run_dir / "eval.csv")
    assert list(rows[0]) == ["seed", "iteration", "env_steps", "eval_policy", "eval_return", "eval_won",
                             "eval_length", "eval_sample_return", "eval_sample_won", "eval_sample_length",
                             "eval_greedy_return", "eval_greedy_won", "eval_greedy_length"]
    assert len(rows) == 3 * 2 and {r["eval_policy"] for r in rows} == {"sample"}
    for r in rows:
        assert r["eval_return"] == r["eval_sample_return"]
        assert float(r["eval_greedy_return"]) == pytest.approx(float(r["eval_sample_return"]) + 1, abs=1e-5)

    final = json.loads((run_dir / "summary.json").read_text())["final_eval"]
    assert (final["policy"], final["policies"], final["episodes_per_seed"]) == ("sample", ["sample", "greedy"], 32)
    last = rows[-2:]
    assert final["mean"]["eval_sample_return"] == pytest.approx(np.mean([float(r["eval_sample_return"]) for r in last]))
    assert final["mean"]["eval_greedy_return"] == pytest.approx(final["mean"]["eval_return"] + 1, abs=1e-5)
    assert [r["seed"] for r in final["per_seed"]] == [0, 1]
    assert (run_dir / "curve.png").stat().st_size > 0


def test_cli_final_line_names_the_policy(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(psjax.run, "_default_make_program", make_fake_program)
    args = ["train", "learner=ppo", "ac.num_envs=2", "ac.rollout_len=4", "ac.num_minibatches=1", "steps=32",
            "eval_every=0.5", "seeds=2", "eval_envs=8", f"out_dir={tmp_path}", "run_name=cli", "progress=false"]
    assert cli.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    mean = summary["final_eval"]["mean"]
    assert lines[-2] == (f"final eval (sampled policy, 8 episodes per seed, mean of 2 seeds): "
                         f"return={mean['eval_sample_return']:.4g}, won={mean['eval_sample_won']:.4g}, length=7")
    assert lines[-1] == f"run folder: {tmp_path / 'cli'}"


# --------------------------------------------------------------------------- compare


def _fake_run(out_dir, name, **overrides):
    return run(make_config({**FAKE, "out_dir": str(out_dir), "run_name": name, **overrides}),
               make_program=make_fake_program)


def _strip_policy(run_dir):
    """Turn a run folder into one written before eval_policy existed (greedy evaluation, plain columns)."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    del config["eval_policy"]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["final_eval"] = {k: summary["final_eval"][k] for k in ("per_seed", "mean")}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    rows = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    keep = ("seed", "iteration", "env_steps", "eval_return", "eval_won", "eval_length")
    (run_dir / "eval.jsonl").write_text("".join(json.dumps({k: r[k] for k in keep}) + "\n" for r in rows))
    return [r["eval_return"] for r in rows[-2:]]


def test_compare_names_the_policy_and_never_mixes_silently(tmp_path):
    root = tmp_path / "runs"
    _fake_run(root, "fups-ppo", alg="fups", learner="ppo", eval_policy="both")  # sampled first, greedy = +1
    _fake_run(root, "nops-ppo", alg="nops", learner="ppo", seed=2)  # sampled
    _fake_run(root, "nops-qmix", alg="nops", learner="qmix")  # greedy

    same = report([root / "fups-ppo", root / "nops-ppo"], tmp_path / "same")
    md = same["markdown"].read_text()
    assert "### lbf 8x8-2p-2f-coop: final return (sum over agents), sampled policy" in md
    assert "| seeds | final return (sampled policy), IQM [95% CI] |" in md and "MIXED" not in md
    assert [r["policy"] for r in same["rows"]] == ["sample", "sample"]

    mixed = report([root], tmp_path / "mixed")
    md = mixed["markdown"].read_text()
    assert [(r["method"], r["learner"], r["policy"]) for r in mixed["rows"]] == [
        ("nops", "ppo", "sample"), ("nops", "qmix", "greedy"), ("fups", "ppo", "sample")]
    assert "final return (sum over agents), MIXED evaluation policies" in md
    assert "| method | learner | eval policy | seeds |" in md
    assert "| nops | qmix | greedy | 2 |" in md and "| nops | ppo | sampled | 2 |" in md
    assert "**Mixed evaluation policies**: sampled for nops (ppo), fups (ppo); greedy for nops (qmix)." in md

    # policy=greedy reads the greedy figures of a run that evaluated both; a run without them is refused
    fups = json.loads((root / "fups-ppo" / "summary.json").read_text())["final_eval"]["per_seed"]
    greedy = report([root / "fups-ppo"], tmp_path / "greedy", policy="greedy")
    assert greedy["rows"][0]["policy"] == "greedy"
    assert greedy["rows"][0]["final_per_seed"] == pytest.approx([r["eval_greedy_return"] for r in fups])
    assert greedy["rows"][0]["final_per_seed"] == pytest.approx([r["eval_return"] + 1 for r in fups], abs=1e-5)
    assert "final return (greedy policy)" in greedy["markdown"].read_text()
    with pytest.raises(ConfigError, match="evaluated the sample policy only; allowed: auto, sample"):
        report([root / "nops-ppo"], tmp_path / "bad", policy="greedy")
    with pytest.raises(ConfigError, match="allowed: auto, greedy, sample"):
        report([root / "nops-ppo"], tmp_path / "bad", policy="argmax")
    assert cli.main(["compare", str(root / "fups-ppo"), "policy=greedy", f"out={tmp_path / 'cli'}"]) == 0


def test_compare_reads_old_run_folders_as_greedy_and_says_so(tmp_path):
    root = tmp_path / "runs"
    _fake_run(root, "old", alg="nops", learner="ppo")
    old_finals = _strip_policy(root / "old")
    _fake_run(root, "new", alg="fups", learner="ppo")
    with pytest.warns(UserWarning, match="records no evaluation policy.*taken as greedy"):
        out = report([root], tmp_path / "report")
    old = out["rows"][0]
    assert (old["method"], old["policy"], old["policy_assumed"]) == ("nops", "greedy", ["old"])
    assert old["final_per_seed"] == pytest.approx(old_finals)
    md = out["markdown"].read_text()
    assert "| nops | ppo | greedy (assumed) | 2 |" in md and "Greedy assumed for old:" in md
    with pytest.raises(ConfigError, match="evaluated the greedy policy only"), pytest.warns(UserWarning):
        report([root / "old"], tmp_path / "bad", policy="sample")
