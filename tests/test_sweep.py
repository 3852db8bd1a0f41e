"""Hyperparameter sweeps trained in one program (``sweep.FIELD=v1,v2``, ``psjax.sweep``): the spec, the refusals,
equality with separate runs, and the run folder of every point."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from psjax import sweep
from psjax.config import from_dict, make_config, to_dict
from psjax.fields import ConfigError
from psjax.run import run
from psjax.train import make_train

BASE = {"env": "mpe_spread", "alg": "fups", "learner": "ppo", "steps": 1024, "eval_every": 0,
        "ac.num_envs": 4, "ac.rollout_len": 32, "ac.hidden": 16}


def test_sweep_spec_grid_zip_columns_and_points():
    cfg = make_config({**BASE, "sweep.lr": "1e-4,1e-3", "sweep.gamma": [0.9, 0.99]})
    assert cfg.sweep == "ac.lr=0.0001,0.001;ac.gamma=0.9,0.99"  # resolved paths, coerced values
    assert sweep.points(cfg) == [{"ac.lr": 1e-4, "ac.gamma": 0.9}, {"ac.lr": 1e-4, "ac.gamma": 0.99},
                                 {"ac.lr": 1e-3, "ac.gamma": 0.9}, {"ac.lr": 1e-3, "ac.gamma": 0.99}]
    zipped = make_config({**BASE, "sweep": cfg.sweep, "sweep_mode": "zip"})
    assert sweep.points(zipped) == [{"ac.lr": 1e-4, "ac.gamma": 0.9}, {"ac.lr": 1e-3, "ac.gamma": 0.99}]
    columns = sweep.columns(cfg)
    assert columns["ac.gamma"].dtype == np.float32
    np.testing.assert_allclose(columns["ac.gamma"], [0.9, 0.99, 0.9, 0.99])
    point = sweep.point_config(cfg, sweep.points(cfg)[3])
    assert (point.ac.lr, point.ac.gamma, point.sweep) == (1e-3, 0.99, "")
    assert sweep.label(sweep.points(cfg)[1]) == "lr=0.0001 gamma=0.99"
    assert sweep.folder_name(1, sweep.points(cfg)[1]) == "point-1-lr=0.0001-gamma=0.99"
    assert from_dict(to_dict(cfg)) == cfg  # what resume reads back from config.yaml
    qmix = make_config({"env": "mpe_spread", "alg": "fups", "learner": "qmix",
                        "sweep.target_update_interval": "100,200"})
    assert sweep.columns(qmix)["q.target_update_interval"].dtype == np.int32
    assert sweep.points(make_config(BASE)) == [{}]


def test_sweep_config_errors():
    cases = [
        ({"sweep.map": "3m"}, "sweep.env.map: only the learner's fields"),
        ({"sweep.recurrent": "true,false"}, "sweep.ac.recurrent: a bool field"),
        ({"sweep.q.lr": "0.1"}, "sweep.q.lr: only the learner's fields"),
        ({"sweep": "lr=0.1;ac.lr=0.2"}, "sweep.ac.lr is given twice"),
        ({"sweep": "lr"}, "sweep entry 'lr' is not FIELD=v1,v2"),
        ({"sweep.lr": "0.1,0.2", "sweep.gamma": "0.9", "sweep_mode": "zip"}, "sweep_mode=zip needs equally long"),
        ({"sweep.lr": "0.1,-1"}, r"sweep point lr=-1.0: ac.lr=-1.0 is below the minimum"),
        ({"sweep.nonsense": "1"}, "unknown config field 'nonsense'"),
        ({"sweep.lr": "0.1,0.2,0.3", "seeds": 2, "devices": 4}, "devices=4 does not divide the sweep's 3 points x 2"),
    ]
    for overrides, message in cases:
        with pytest.raises(ConfigError, match=message):
            make_config({**BASE, **overrides})
    make_config({**BASE, "sweep.lr": "0.1,0.2", "seeds": 1, "devices": 2})  # devices divide the rows, not the seeds


def test_three_point_sweep_equals_three_separate_runs():
    """Every point of a sweep trains what its own run trains: the swept value enters as a traced scalar where the
    plain run has a constant, so the numbers agree up to float rounding."""
    cfg = make_config({**BASE, "sweep.lr": "1e-4,1e-3,3e-3"})
    key = jax.random.PRNGKey(0)
    _, swept = jax.jit(make_train(cfg))(key)
    assert swept["loss"].shape == (3, cfg.num_iterations)
    for i, point in enumerate(sweep.points(cfg)):
        _, alone = jax.jit(make_train(make_config({**BASE, "lr": point["ac.lr"]})))(key)
        for name in ("loss", "entropy", "return", "grad_norm"):
            np.testing.assert_allclose(swept[name][i], alone[name], rtol=1e-4, atol=1e-5, err_msg=name)
    assert not np.allclose(swept["loss"][0], swept["loss"][2])  # the values reached the program


@pytest.mark.parametrize("field", ["hidden", "num_envs"])
def test_fields_the_program_needs_as_python_values_are_refused_by_name(field):
    cfg = make_config({**BASE, f"sweep.{field}": "8,16"})
    with pytest.raises(ConfigError, match=rf"sweep.ac.{field}: building the program needs ac.{field} as a Python"):
        make_train(cfg)


def test_sweep_run_writes_a_run_folder_per_point(tmp_path):
    """2 points x 2 seeds in one program: each point's folder holds a plain run's files, its rows equal the rows
    of that point's own run, and the sweep's folder lists the points; resume continues the sweep."""
    common = {**BASE, "seeds": 2, "eval_every": 0.5, "eval_envs": 2, "progress": False, "out_dir": str(tmp_path)}
    cfg = make_config({**common, "sweep.ent_coef": "0.0,0.05", "run_name": "sweep"})
    part = run(cfg, max_chunks=1)
    run_dir = run(resume=part)
    listing = json.loads((run_dir / "sweep.json").read_text())
    assert [p["label"] for p in listing["points"]] == ["ent_coef=0.0", "ent_coef=0.05"]
    for point in listing["points"]:
        point_dir = run_dir / point["folder"]
        for name in ("config.yaml", "metrics.jsonl", "eval.jsonl", "summary.json", "curve.png"):
            assert (point_dir / name).is_file(), name
        summary = json.loads((point_dir / "summary.json").read_text())
        assert summary["sweep_point"] == point["label"] and summary["program_rows"] == 4 and summary["finished"]
    from psjax.export import marl_eval_json

    exported = marl_eval_json([run_dir])["mpe_spread"]
    assert sorted(next(iter(exported.values()))) == sorted(["fups-ppo [ent_coef=0.0]", "fups-ppo [ent_coef=0.05]"])
    # point 1 against its own run (same seeds, no sweep)
    alone = run(make_config({**common, "ent_coef": 0.05, "run_name": "alone"}))
    rows = [json.loads(line) for line in (run_dir / listing["points"][1]["folder"] / "metrics.jsonl").open()]
    reference = [json.loads(line) for line in (alone / "metrics.jsonl").open()]
    assert len(rows) == len(reference) == 2 * cfg.num_iterations
    for a, b in zip(rows, reference):
        assert (a["seed"], a["iteration"]) == (b["seed"], b["iteration"])
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # the value learners' path: a replay buffer, epsilon schedule and target network per point
def test_qmix_sweep_equals_separate_runs():
    base = {"env": "lbf", "alg": "fups", "learner": "qmix", "steps": 1024, "eval_every": 0, "q.num_envs": 4,
            "q.rollout_len": 16, "q.hidden": 16, "q.learning_starts": 0, "q.batch_size": 4, "q.buffer_size": 32}
    cfg = make_config({**base, "sweep.gamma": "0.9,0.99", "sweep.eps_end": "0.05,0.2", "sweep_mode": "zip"})
    key = jax.random.PRNGKey(1)
    _, swept = jax.jit(make_train(cfg))(key)
    for i, point in enumerate(sweep.points(cfg)):
        overrides = {"gamma": point["q.gamma"], "eps_end": point["q.eps_end"]}
        _, alone = jax.jit(make_train(make_config({**base, **overrides})))(key)
        for name in ("loss", "q_taken", "epsilon", "return"):
            np.testing.assert_allclose(swept[name][i], alone[name], rtol=1e-4, atol=1e-5, err_msg=name)
