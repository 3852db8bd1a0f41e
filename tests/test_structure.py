"""The structure metrics against the task's ground truth: the adjusted Rand index and the within / between
kind distance ratio (hand-computed partitions), and every env's ``agent_types`` as its task defines them."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from psjax.envs import make_env
from psjax.schema import EnvConfig
from psjax.sharing.structure import adjusted_rand_index, joint_labels, type_ari, type_distance_ratio


def pair_counting_ari(x, y):
    """ARI from the pair confusion matrix, a formula independent of the contingency-table one under test."""
    tp = fp = fn = tn = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        same_x, same_y = x[i] == x[j], y[i] == y[j]
        tp += same_x and same_y
        fp += same_x and not same_y
        fn += same_y and not same_x
        tn += not same_x and not same_y
    denominator = (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)
    return 1.0 if denominator == 0 else 2.0 * (tp * tn - fn * fp) / denominator


def ari(x, y, k=None, t=None):
    x, y = np.asarray(x), np.asarray(y)
    return float(adjusted_rand_index(jnp.asarray(x), jnp.asarray(y), k or x.max() + 1, t or y.max() + 1))


def test_identical_and_permuted_partitions_score_one():
    truth = [0, 0, 0, 1, 1, 2]
    assert ari(truth, truth) == pytest.approx(1.0)
    assert ari([2, 2, 2, 0, 0, 1], truth) == pytest.approx(1.0)  # labels renamed
    assert ari(list(range(6)), list(range(6))) == pytest.approx(1.0)  # both all singletons
    assert ari([0] * 6, [0] * 6) == pytest.approx(1.0)  # both one group


def test_hand_computed_values():
    # x = {0,1}{2,3}, y = {0,1,2,3}: index 2, expected 2 * 6 / 6 = 2, best (2 + 6) / 2 = 4 -> 0
    assert ari([0, 0, 1, 1], [0, 0, 0, 0]) == pytest.approx(0.0)
    # x = {0,1}{2}{3}, y = {0,1}{2,3}: index 1, expected 1 * 2 / 6 = 1/3, best 3/2 -> (2/3) / (7/6) = 4/7
    assert ari([0, 0, 1, 2], [0, 0, 1, 1]) == pytest.approx(4 / 7)
    # one agent moved between two groups of three: below 1, above 0
    assert 0.0 < ari([0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]) < 1.0
    # a partition crossing the kinds exactly: worse than chance
    assert ari([0, 1, 0, 1], [0, 0, 1, 1]) == pytest.approx(-0.5)


def test_matches_pair_counting_on_random_partitions():
    rng = np.random.default_rng(0)
    for _ in range(100):
        n, k, t = rng.integers(2, 12), rng.integers(1, 5), rng.integers(1, 4)
        x, y = rng.integers(0, k, n), rng.integers(0, t, n)
        assert ari(x, y, k, t) == pytest.approx(pair_counting_ari(x, y), abs=1e-5)


def test_random_partitions_average_near_zero_and_batches_work():
    rng = np.random.default_rng(1)
    truth = np.repeat(np.arange(3), 5)  # BPS 15a3c's colours
    labels = rng.integers(0, 3, (2000, 15))
    values = np.asarray(adjusted_rand_index(jnp.asarray(labels), jnp.asarray(truth), 3, 3))
    assert values.shape == (2000,)
    assert abs(values.mean()) < 0.01


def test_type_ari_reads_any_type_labels_and_joint_labels():
    smax_like = (2, 2, 3, 3, 3)  # SMAX unit type ids are not 0..K-1
    assert float(type_ari(jnp.array([1, 1, 0, 0, 0]), smax_like, 2)) == pytest.approx(1.0)
    # two slot assignments together: fronts {0,1,2,3}, backs {0,1}{2,3} -> the kinds {0,1}{2,3}
    joint = joint_labels(jnp.array([0, 0, 0, 0]), jnp.array([0, 0, 2, 2]), 4)
    assert float(type_ari(joint, (0, 0, 1, 1), 16)) == pytest.approx(1.0)


def test_type_distance_ratio():
    d = np.array([[0, 1, 4, 4], [1, 0, 4, 4], [4, 4, 0, 3], [4, 4, 3, 0]], np.float32)
    # within pairs 1, 1, 3, 3 (mean 2), between pairs 4 (mean 4)
    assert float(type_distance_ratio(jnp.asarray(d), (0, 0, 1, 1))) == pytest.approx(0.5)
    assert np.isnan(float(type_distance_ratio(jnp.asarray(d), (0, 0, 0, 0))))  # one kind: undefined
    assert np.isnan(float(type_distance_ratio(jnp.asarray(d), (0, 1, 2, 3))))  # no two agents of one kind


@pytest.mark.parametrize("cfg, kinds", [
    (EnvConfig(name="bps", variant="15a3c"), [0] * 5 + [1] * 5 + [2] * 5),
    (EnvConfig(name="bps", variant="30a5c-uneven"), [0] * 3 + [1] * 3 + [2] * 3 + [3] * 12 + [4] * 9),
    (EnvConfig(name="crware", variant="tiny"), [0, 0, 1, 1]),  # the robots' colours
    (EnvConfig(name="typed", num_agents=4), [0, 0, 1, 1]),
    (EnvConfig(name="speaker_listener"), [0, 1]),
    (EnvConfig(name="mpe_spread", num_agents=3), [0, 0, 0]),  # interchangeable agents
    (EnvConfig(name="lbf", scenario="15x15-4p-5f"), [0, 0, 0, 0]),  # levels drawn per episode: interchangeable
    (EnvConfig(name="smax", map="2s3z"), [0, 0, 1, 1, 1]),  # 2 stalkers, 3 zealots
    (EnvConfig(name="smax", map="3m"), [0, 0, 0]),
])
def test_agent_types_are_the_tasks_partition(cfg, kinds):
    """``spec.agent_types`` partitions the agents exactly as the task's kinds (up to the labels' names)."""
    types = make_env(cfg).spec.agent_types
    assert len(types) == len(kinds)
    assert float(type_ari(jnp.asarray(np.unique(types, return_inverse=True)[1]), tuple(kinds), len(set(types)))) \
        == pytest.approx(1.0)
    assert len(set(types)) == len(set(kinds))


def test_type_ari_is_drawn_and_compared(tmp_path):
    """sharing.png gains the type_ari panel and compare reads every seed's final type_ari from metrics.jsonl."""
    import json

    from psjax.compare import final_type_ari
    from psjax.sharing.report import plot_sharing, type_ari_curves

    rows = []
    for seed in (0, 1):
        for step, ari_value in ((1000, 0.0), (2000, 1.0 - 0.5 * seed)):
            rows.append({"seed": seed, "env_steps": step, "type_ari": ari_value, "num_clusters": 2, "mask_overlap": 0.5,
                         **{f"cluster[{i}]": i // 2 for i in range(4)}})
    rows.append({**rows[1], "env_steps": 3000, "type_ari": None})  # a row without a value is skipped
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    steps, values, names = type_ari_curves(tmp_path)
    assert names == ["type_ari"] and list(steps) == [1000, 2000, 3000]
    np.testing.assert_allclose(values[:, 1, 0], [1.0, 0.5])
    assert final_type_ari(tmp_path) == [1.0, 0.5]
    assert plot_sharing(tmp_path).name == "sharing.png"
