"""The command line: errors come back before any compilation; train and resume run end to end."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import jax
import pytest
import yaml
from conftest import make_fake_program

import psjax.run
from psjax import cli
from psjax.config import CONFIG_DIR, ConfigError, QConfig, field_docs, make_config

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture
def no_jit(monkeypatch):
    """Any attempt to compile fails the test."""

    def fail(*args, **kwargs):
        raise AssertionError("jax.jit was called")

    monkeypatch.setattr(jax, "jit", fail)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["train", "env=bogus"], "'bogus'"),
        (["train", "alg=nope"], "'nope'"),
        (["train", "method=nope"], "'nope'"),
        (["train", "learner=xyz"], "'xyz'"),
        (["train", "bogus_field=1"], "'bogus_field'"),
        (["train", "steps=abc"], "steps='abc'"),
        (["train", "q.gamma=1.5"], "q.gamma=1.5"),
        (["train", "seeds=0"], "seeds=0"),
        (["train", "env=smax", "seeds"], "'seeds'"),
        (["train", "preset=nope"], "'nope'"),
        (["train", "eval_policy=argmax"], "eval_policy='argmax' is not allowed; allowed: 'auto', 'greedy', 'sample'"),
        (["train", "resume=/no/such/run"], "/no/such/run"),
        (["train", "resume=x", "seeds=2"], "seeds"),
        (["frobnicate"], "'frobnicate'"),
    ],
)
def test_errors_name_the_bad_value_before_compiling(args, named, no_jit, capsys):
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and named in err


def test_error_path_never_imports_jax():
    code = ("import sys; from psjax.cli import main; rc = main(['train', 'steps=abc']); "
            "print(rc, 'jax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["2", "False"]
    assert "error: steps='abc' is not a valid int" in out.stderr


def test_python_dash_m_exit_code():
    out = subprocess.run([sys.executable, "-m", "psjax", "train", "q.gamma=1.5"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "q.gamma=1.5" in out.stderr


def test_fields_lists_every_field_with_doc_and_default(capsys):
    assert cli.main(["fields"]) == 0
    out = capsys.readouterr().out
    for path, doc in field_docs().items():
        line = next(line for line in out.splitlines() if line.startswith(f"{path} = "))
        assert doc in line
    assert f"q.lr = {QConfig().lr}" in out and "env.name = 'lbf'" in out


def test_field_docs_are_one_or_two_lines():
    """A field's doc says what it is in at most 200 characters; measurements and history live in the docs
    (docs/config.md), where they can be kept true."""
    long = {path: len(doc) for path, doc in field_docs().items() if len(doc) > 200}
    assert long == {}


def test_parse_pairs_keeps_equals_in_values():
    assert cli.parse_pairs(["run_name=a=b", "lr=1e-3", "lr=2e-3"]) == {"run_name": "a=b", "lr": "2e-3"}


@pytest.mark.parametrize("preset", sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
def test_presets_validate_and_comment_every_value(preset):
    cfg = make_config(preset=preset)
    text = (CONFIG_DIR / f"{preset}.yaml").read_text()
    for line in text.splitlines():
        body = line.split("#")[0]
        if ":" in body and body.split(":", 1)[1].strip():
            assert "#" in line, f"{preset}.yaml: no comment on {line!r}"
    assert yaml.safe_load(text)
    if preset == "default":
        assert (cfg.env.name, cfg.alg, cfg.learner_name) == ("lbf", "fups", "ppo")


def test_train_then_resume_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(psjax.run, "_default_make_program", make_fake_program)
    args = ["train", "q.num_envs=2", "q.rollout_len=4", "steps=64", "eval_every=0.5", "seeds=2",
            f"out_dir={tmp_path}", "run_name=cli", "progress=false"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    run_dir = tmp_path / "cli"
    assert f"run folder: {run_dir}" in out  # qmix: evaluated greedily; LBF's win rate (all food eaten) printed
    assert "final eval (greedy policy, 32 episodes per seed, mean of 2 seeds): return=" in out and "won=" in out
    assert json.loads((run_dir / "summary.json").read_text())["finished"]
    assert cli.main(["train", f"resume={run_dir}"]) == 0  # finished already: rewrites the summary only
    assert cli.main(args) == 2  # the folder exists
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize(("overrides", "named"), [
    ({"env": "smax", "map": "4m_vs_nothing"}, ("4m_vs_nothing", "3m", "5m_vs_6m")),
    ({"env": "lbf", "scenario": "8x8-2p"}, ("8x8-2p", "GRIDxGRID-Np-Mf")),
])
def test_make_config_checks_maps_and_scenarios(overrides, named):
    with pytest.raises(ConfigError) as err:
        make_config(overrides)
    assert all(word in str(err.value) for word in named)
