"""Every method x every environment at its defaults either makes a config or refuses before compiling with a
message that names a setting that works; defaults that depend on the task fit it, a user's value is never changed
(config level only: no compilation)."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

from psjax import cli, registry
from psjax.config import ENVS, ConfigError, make_config, method_env_matrix

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs" / "methods.md"
ALLOWED = "; allowed: "  # every refusal: what is wrong, then this, then what works
SETTING = re.compile(r"\b([a-z_][\w.]*)=([\w.\-]+)")  # a key=value a refusal offers


@pytest.fixture(scope="module")
def matrix():
    return method_env_matrix()


def test_every_pair_runs_or_names_a_setting_that_works(matrix):
    assert set(matrix) == {(alg, env) for alg in registry.names() for env in ENVS}
    for (alg, env), cell in matrix.items():
        if cell.startswith("runs: "):
            continue
        message = cell.removeprefix("refuses: ")
        assert ALLOWED in message, (alg, env, message)
        offered = SETTING.findall(message.split(ALLOWED, 1)[1])
        assert offered, f"alg={alg} env={env}: the refusal offers no key=value: {message}"
        works = []
        for key, value in offered:
            try:
                make_config({"alg": alg, "env": env, key: value})
                works.append(f"{key}={value}")
            except ConfigError:
                pass
        assert works, f"alg={alg} env={env}: none of the settings offered works: {message}"


def test_the_docs_keep_the_matrix(matrix):
    """docs/methods.md holds ``python -m psjax methods matrix``'s table: rerun it when a default changes."""
    table = cli.format_matrix(matrix).split("\n\nRefusals", 1)[0]
    assert table in DOCS.read_text(), "docs/methods.md's method x env table is stale: paste `python -m psjax " \
                                      "methods matrix`"
    assert cli.main(["methods", "nothing"]) == 2


@pytest.mark.parametrize(("scenario", "roles"), [("8x8-2p-2f-coop", 2), ("10x10-3p-3f", 3), ("15x15-4p-5f", 3)])
def test_bdps_structure_fits_the_team_unless_the_user_set_it(scenario, roles):
    cfg = make_config({"env": "lbf", "scenario": scenario, "alg": "bdps"})
    assert (cfg.sharing.bdps_roles, cfg.sharing.bdps_groups) == (roles, 2)
    assert make_config({"env": "lbf", "scenario": scenario, "alg": "bdps", "bdps_roles": 2}).sharing.bdps_roles == 2
    if roles == 2:  # the user's k is refused with the range, never lowered
        with pytest.raises(ConfigError, match=r"bdps_roles=3 is not allowed with 2 agents; allowed: 2..2"):
            make_config({"env": "lbf", "scenario": scenario, "alg": "bdps", "bdps_roles": 3})
        with pytest.raises(ConfigError, match=r"bdps_groups=3 is not allowed with bdps_roles=2; allowed: 2..2"):
            make_config({"env": "lbf", "scenario": scenario, "alg": "bdps", "bdps_groups": 3})


def test_bdps_periods_fit_the_episode_unless_the_user_set_them():
    # the typed env's episodes last 10 steps: T_U = 5 fits, T_V = 2 x 5 does not, so e = 1
    sc = make_config({"env": "typed", "alg": "bdps"}).sharing
    assert (sc.bdps_role_period, sc.bdps_group_factor) == (5, 1)
    sc = make_config({"env": "typed", "alg": "bdps", "bdps_role_period": 4}).sharing  # e fits the user's T_U
    assert (sc.bdps_role_period, sc.bdps_group_factor) == (4, 2)
    with pytest.raises(ConfigError, match=r"T_V = .* = 10 must be shorter than the episode limit 10; allowed: "
                                          r"bdps_group_factor 1..1"):
        make_config({"env": "typed", "alg": "bdps", "bdps_group_factor": 2})
    sc = make_config({"env": "matrix", "matrix_game": "two_step", "alg": "bdps"}).sharing  # 2-step episodes
    assert (sc.bdps_roles, sc.bdps_groups, sc.bdps_role_period, sc.bdps_group_factor) == (2, 2, 1, 1)
    assert make_config({"env": "smax", "alg": "bdps"}).sharing.bdps_roles == 3  # SMAX 3m: the paper's k
    # a preset's value is the user's too: bdps_lbf's k = 3 is refused on 2 agents, not lowered
    with pytest.raises(ConfigError, match=r"bdps_roles=3 is not allowed with 2 agents; allowed: 2..2"):
        make_config({"scenario": "8x8-2p-2f-coop"}, preset="bdps_lbf")


def test_a_one_agent_team_is_refused_with_a_method_that_works():
    with pytest.raises(ConfigError, match=r"needs at least 2 agents .*; allowed: .*alg=fups_id"):
        make_config({"env": "mpe_spread", "num_agents": 1, "num_landmarks": 1, "alg": "bdps"})
    assert make_config({"env": "mpe_spread", "num_agents": 1, "num_landmarks": 1, "alg": "fups_id"})


FEW_STEPS = 4096  # a few thousand env steps per seed: every pair's program compiled, run and learning


@pytest.mark.slow
@pytest.mark.parametrize("alg", registry.names())
def test_every_valid_pair_trains_a_few_thousand_steps(alg, request):
    """Beyond the config: each pair that makes a config at its defaults trains ``FEW_STEPS`` env steps (its whole
    program compiled and run; replay learners learn from the first iteration, ``q.learning_starts=0``, so their
    update runs too) without a non-finite loss, gradient, Q value or parameter, and counts its env steps."""
    import jax

    from psjax.train import make_train

    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)  # compile time is most of it: XLA's fast compile
    request.addfinalizer(lambda: jax.config.update("jax_disable_most_optimizations", previous))
    for env in ENVS:
        try:  # q.* fields are read only by the replay learners (a2c / ppo ignore the section)
            cfg = make_config({"alg": alg, "env": env, "steps": FEW_STEPS, "eval_every": 0, "q.learning_starts": 0})
        except ConfigError:
            continue  # test_every_pair_runs_or_names_a_setting_that_works
        _, metrics = jax.jit(make_train(cfg))(jax.random.PRNGKey(0))
        metrics = jax.device_get(metrics)
        assert int(metrics["env_steps"][-1]) == cfg.num_iterations * cfg.steps_per_iteration >= FEW_STEPS, (alg, env)
        assert not metrics["nonfinite"].any(), f"alg={alg} env={env}: non-finite values {metrics['nonfinite']}"
        losses = [k for k in metrics if k.endswith("loss")]
        assert losses and any(np.isfinite(metrics[k]).any() for k in losses), f"alg={alg} env={env}: no update ran"
        jax.clear_caches()  # 125 programs in one process
