"""The memory estimate (psjax.memory): its terms by hand on a small config, how it scales with seeds, devices
and the replay buffer, and a run refused for a device memory budget before anything is compiled."""

from __future__ import annotations

import json

import pytest

from psjax.config import ConfigError, make_config
from psjax.memory import DATA_SPLIT_TERMS, estimate
from psjax.run import run
from psjax.train import make_parts

PPO_SPREAD = {"env": "mpe_spread", "alg": "fups", "learner": "ppo", "ac.num_envs": 4, "ac.rollout_len": 8,
              "steps": 64}


def test_memory_estimate_rollout_term_by_hand():
    """One rollout's stored bytes: the Transition (obs, state, avail, action, reward, done, terminated, PPO's
    logp and value, next obs / state / avail) and each step's episode statistics, for [T, E] steps."""
    cfg = make_config(PPO_SPREAD)
    spec = make_parts(cfg).env.spec
    n, d, s, a = spec.num_agents, spec.obs_dim, spec.state_dim, spec.num_actions
    per_step = (2 * (n * d * 4 + s * 4 + n * a)  # obs / next_obs, state / next_state (f32), avail / next (bool)
                + n * 4 + n * 4 + 1 + 1  # action (i32), reward (f32), done, terminated (bool)
                + 2 * n * 4  # PPO's extras: logp and value per agent (f32)
                + 1 + 4 + 4 + 1)  # EpisodeEnd: done, return (f32), length (i32), won
    est = estimate(cfg)
    assert est.terms["rollout"] == 8 * 4 * per_step
    assert est.total == sum(est.terms.values())
    assert list(est.terms.values()) == sorted(est.terms.values(), reverse=True)  # largest first


def test_memory_estimate_scales_with_seeds_devices_and_the_replay_buffer():
    qmix = {"env": "lbf", "alg": "nops", "learner": "qmix", "q.num_envs": 2, "q.rollout_len": 4, "steps": 64}
    one = estimate(make_config({**qmix, "q.buffer_size": 512}))
    four = estimate(make_config({**qmix, "q.buffer_size": 512, "seeds": 4}))
    split = estimate(make_config({**qmix, "q.buffer_size": 512, "seeds": 4}), devices=2)
    big = estimate(make_config({**qmix, "q.buffer_size": 1024}))
    assert four.total == 4 * one.total and four.seeds_per_device == 4
    assert split.total == 2 * one.total and split.seeds_per_device == 2
    assert one.largest()[0] == "replay buffer"
    assert big.terms["replay buffer"] == pytest.approx(2 * one.terms["replay buffer"], rel=1e-3)  # + counters
    # parallel=envs: every device holds all 4 seeds' parameters, a quarter of their envs, rollout and buffer
    data = estimate(make_config({**qmix, "q.buffer_size": 512, "seeds": 4}), rows=4, data_devices=4)
    assert data.seeds_per_device == 4
    for term, size in four.terms.items():
        assert data.terms[term] == (pytest.approx(size / 4, abs=4) if term in DATA_SPLIT_TERMS else size), term


def test_device_memory_budget_refuses_a_run_before_compiling(tmp_path, fake_factory):
    cfg = make_config({"q.num_envs": 2, "q.rollout_len": 4, "steps": 32, "seeds": 2, "memory_gb": 1e-6,
                       "out_dir": str(tmp_path), "run_name": "too_big", "progress": False})
    with pytest.raises(ConfigError, match=r"memory_gb=1e-06 is 0\.00 GiB; the largest term is replay buffer"):
        run(cfg, make_program=fake_factory)
    assert fake_factory.sizes == []  # no program was even built
    assert not (tmp_path / "too_big").exists()


def test_device_memory_estimate_in_the_summary(tmp_path, fake_factory):
    # devices pinned: both seeds on one device whatever the machine has
    cfg = make_config({"q.num_envs": 2, "q.rollout_len": 4, "steps": 32, "seeds": 2, "devices": 1,
                       "out_dir": str(tmp_path), "run_name": "fits", "progress": False})
    summary = json.loads((run(cfg, make_program=fake_factory) / "summary.json").read_text())
    memory = summary["memory_estimate"]
    assert memory["seeds_per_device"] == 2 and memory["budget_bytes"] > memory["bytes_per_device"] > 0
    assert sum(memory["terms_bytes"].values()) == memory["bytes_per_device"]
