"""Win rate wherever an env defines winning (``EnvSpec.has_won``), not only on SMAX: the host loop's summary,
curve, final line, ``compare`` and ``export`` read the spec; ``compare``'s metric=auto reads ``EnvSpec.headline``."""

from __future__ import annotations

import json

import pytest
from conftest import make_fake_program
from PIL import Image

from psjax import cli
from psjax.compare import report
from psjax.config import ConfigError, make_config
from psjax.export import export
from psjax.run import run
from psjax.run_folder import env_spec
from psjax.schema import ENVS

# 8 env steps per iteration, 4 iterations, an evaluation after every 2
FAKE = {"q.num_envs": 2, "q.rollout_len": 4, "ac.num_envs": 2, "ac.rollout_len": 4, "ac.num_minibatches": 1,
        "steps": 32, "eval_every": 0.5, "progress": False, "checkpoint": False}
WINNING = {"smax", "lbf"}  # SMAX: every enemy dead, an ally alive; LBF: every food eaten (the terminal state)


@pytest.mark.parametrize("env", ENVS)
def test_which_envs_define_winning(env):
    spec = env_spec(make_config({"env": env}))
    assert spec.has_won == (env in WINNING)
    assert spec.headline == ("won" if env == "smax" else "return")  # what compare ranks by unless told
    assert spec.headline in ("won", "return") and (spec.headline == "return" or spec.has_won)


def _fake_run(out_dir, name, **overrides):
    return run(make_config({**FAKE, "out_dir": str(out_dir), "run_name": name, **overrides}),
               make_program=make_fake_program)


def test_lbf_run_logs_plots_and_compares_its_win_rate(tmp_path, capsys):
    lbf, matrix = _fake_run(tmp_path, "lbf", env="lbf"), _fake_run(tmp_path, "matrix", env="matrix")
    summary = json.loads((lbf / "summary.json").read_text())
    assert summary["has_win"] and summary["headline"] == "return"
    assert summary["final_eval"]["mean"]["eval_won"] is not None
    other = json.loads((matrix / "summary.json").read_text())
    assert not other["has_win"] and other["headline"] == "return"
    # the curve gets its win-rate panel (a second, wider figure: 11 x 4 in against 6 x 4 at 120 dpi)
    assert Image.open(lbf / "curve.png").size[0] > 1.5 * Image.open(matrix / "curve.png").size[0]
    assert any("won=" in line for line in cli.final_eval_lines(summary))
    assert not any("won=" in line for line in cli.final_eval_lines(other))

    auto = report([lbf], tmp_path / "auto")["rows"][0]
    assert auto["metric"] == "eval_return"  # LBF's headline stays the return (the docs' LBF tables)
    won = report([lbf], tmp_path / "win", metric="win")["rows"][0]
    assert won["metric"] == "eval_won"
    assert won["final_per_seed"] == pytest.approx([r["eval_won"] for r in summary["final_eval"]["per_seed"]])
    assert "final win rate" in (tmp_path / "win" / "compare.md").read_text()
    with pytest.raises(ConfigError, match="has no win rate"):
        report([matrix], tmp_path / "bad", metric="win")

    exported = json.loads(export([lbf], tmp_path / "export.json").read_text())
    assert "win_rate" in json.dumps(exported)


def test_compare_reads_old_folders_without_headline(tmp_path):
    """A summary written before ``headline`` existed: has_win was true on SMAX only, whose auto metric is the win
    rate."""
    smax = _fake_run(tmp_path, "smax", env="smax")
    path = smax / "summary.json"
    summary = json.loads(path.read_text())
    assert summary.pop("headline") == "won"
    path.write_text(json.dumps(summary))
    assert report([smax], tmp_path / "old")["rows"][0]["metric"] == "eval_won"
