"""A method's recommended settings come with it (issue 38, item 1): ``Method.defaults`` (its paper's settings under
a learner) and ``Method.fit_task`` (the structure that fits the task) go to the fields neither a preset nor an
override set, ``method_defaults`` records which, and the user's value always wins."""

from __future__ import annotations

import dataclasses

import pytest

from psjax import registry
from psjax.cli import format_methods
from psjax.config import ConfigError, from_dict, make_config, method_defaults_line, to_dict
from psjax.sharing.bdps import DEFAULTS

SMAX_BDPS = {"env": "smax", "alg": "bdps"}
BDPS_Q = ("q.td_lambda", "q.updates_per_rollout", "q.last_action", "q.eps_decay_steps")
BDPS_STRUCTURE = ("sharing.bdps_roles", "sharing.bdps_groups", "sharing.bdps_role_period", "sharing.bdps_group_factor")


def test_alg_bdps_gets_the_papers_settings_and_records_them():
    cfg = make_config(SMAX_BDPS)  # `make train ENV=smax ALG=bdps`
    assert cfg.learner == "qmix"
    q = cfg.q
    assert (q.td_lambda, q.updates_per_rollout, q.last_action, q.eps_decay_steps) == (0.6, 8, True, 70_000)
    s = cfg.sharing
    assert (s.bdps_roles, s.bdps_groups, s.bdps_role_period, s.bdps_group_factor) == (3, 2, 5, 2)
    assert set(cfg.method_defaults.split()) == {*BDPS_Q, *BDPS_STRUCTURE, "steps"}
    assert cfg.steps == 102_400 and cfg.num_iterations == 50  # BDPS's own budget: ~6 min on 2 cores
    assert make_config({**SMAX_BDPS, "steps": 2e6}).steps == 2_000_000
    # the same settings as the preset docs/changelog.md's BDPS figures use (where the preset sets them)
    preset = make_config({}, preset="bdps_smax")
    for path in BDPS_Q + BDPS_STRUCTURE:
        section, name = path.split(".")
        assert getattr(getattr(cfg, section), name) == getattr(getattr(preset, section), name), path


def test_an_override_or_a_preset_value_wins_and_is_not_recorded():
    cfg = make_config({**SMAX_BDPS, "q.td_lambda": 0.3, "lr": 1e-3, "sharing.bdps_role_period": 7})
    assert cfg.q.td_lambda == 0.3 and cfg.sharing.bdps_role_period == 7
    recorded = cfg.method_defaults.split()
    assert "q.td_lambda" not in recorded and "sharing.bdps_role_period" not in recorded
    assert "q.updates_per_rollout" in recorded and "sharing.bdps_group_factor" in recorded
    # a preset's values are the user's too: smax_3m_qmix sets td_lambda and 16 updates per rollout
    cfg = make_config({"alg": "bdps"}, preset="smax_3m_qmix")
    assert cfg.q.updates_per_rollout == 16 and cfg.q.td_lambda == 0.6
    assert set(cfg.method_defaults.split()) == {"q.last_action", "q.eps_decay_steps", *BDPS_STRUCTURE}
    # the preset of the figures sets everything itself: nothing comes from the method
    assert make_config({}, preset="bdps_smax").method_defaults == ""


def test_defaults_follow_the_learner_and_the_task():
    vdn = make_config({**SMAX_BDPS, "learner": "vdn"})  # the paper's settings are QMIX's
    assert (vdn.q.td_lambda, vdn.q.updates_per_rollout, vdn.q.last_action) == (0.0, 4, False)
    assert set(vdn.method_defaults.split()) == set(BDPS_STRUCTURE)
    lbf = make_config({"env": "lbf", "alg": "bdps"})  # 2 agents; the paper's LBF epsilon schedule
    # the paper's LBF epsilon schedule (200k), ended by 70% of BDPS's 102,400-step default run
    assert (lbf.sharing.bdps_roles, lbf.q.eps_decay_steps, lbf.q.last_action) == (2, 71_680, True)
    assert make_config({"env": "lbf", "alg": "bdps", "steps": 2e6}).q.eps_decay_steps == 200_000
    assert make_config({**SMAX_BDPS, "steps": 50_000}).q.eps_decay_steps == 35_000  # SMAX's 70k, a short run
    pps = make_config({"env": "smax", "alg": "pps_a"})  # soft targets, the PPS paper's Table 1
    assert pps.q.target_tau == 0.05 and pps.method_defaults == "q.target_tau"
    fups = make_config({"env": "smax", "alg": "fups_id"})  # no recommended settings: the learner's defaults
    assert fups.method_defaults == "" and fups.q.td_lambda == 0.0 and fups.q.target_tau == 0.0


def test_the_record_survives_a_resume_and_the_run_line_names_the_values():
    cfg = make_config(SMAX_BDPS)
    again = from_dict(to_dict(cfg))  # how resume= reads config.yaml: every field given
    assert again == cfg
    line = method_defaults_line(cfg)
    assert line.startswith("alg=bdps set q.td_lambda=0.6 q.updates_per_rollout=8 q.last_action=True")
    assert "sharing.bdps_roles=3" in line and "q.eps_decay_steps=70000" in line
    assert method_defaults_line(make_config({"env": "smax", "alg": "fups_id"})) == ""


def test_methods_listing_names_the_recommended_settings():
    text = format_methods()
    bdps = text.split("\nbdps ")[1].split("\nbdps_role")[0]
    assert "with learner=qmix, unless set: q.td_lambda=0.6 q.updates_per_rollout=8 q.last_action=True" in bdps
    assert "fitted to the task, unless set: sharing.bdps_roles=2" in bdps and "q.eps_decay_steps=71680" in bdps
    assert "with learner=qmix, unless set: q.target_tau=0.05" in text.split("\npps_a ")[1].split("\npps_rs")[0]
    assert registry.describe(registry.get("bdps"))["defaults"] == {"qmix": dict(DEFAULTS["qmix"])}


def test_a_record_with_bad_defaults_is_refused():
    bdps = registry.get("bdps")
    for defaults, match in (({"qmx": {"q.lr": 1e-3}}, "not a learner"), ({"qmix": {"lr": 1e-3}}, "dotted field"),
                            ({"qmix": {"q.nope": 1}}, "unknown config field"),
                            ({"qmix": {"q.lr": "fast"}}, "not a valid float")):
        with pytest.raises(ConfigError, match=match):
            registry.register(dataclasses.replace(bdps, name="bdps_bad", defaults=defaults))
    assert "bdps_bad" not in registry.names()
