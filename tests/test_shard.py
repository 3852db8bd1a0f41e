"""Seeds sharded over devices (``devices=``, ``psjax.shard``): the sharded run equals the unsharded ones.

The equality test runs in a subprocess with 4 virtual CPU devices (``--xla_force_host_platform_device_count``),
so it passes on any machine; the device-count rules are checked without JAX devices.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import assert_rows_close, virtual_devices_env

from psjax.config import make_config
from psjax.fields import ConfigError
from psjax.shard import seed_device_count


def test_seed_device_count_rules():
    assert seed_device_count(4, 0, 4) == 4
    assert seed_device_count(6, 0, 4) == 3  # the most devices that divide the seeds
    assert seed_device_count(5, 0, 4) == 1
    assert seed_device_count(4, 2, 4) == 2
    with pytest.raises(ConfigError, match="devices=8 but this process sees 4"):
        seed_device_count(8, 8, 4)
    with pytest.raises(ConfigError, match="devices=3 does not divide seeds=4"):
        seed_device_count(4, 3, 4)
    with pytest.raises(ConfigError, match="devices=3 does not divide seeds=4"):
        make_config({"seeds": 4, "devices": 3})


SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    from psjax.config import make_config
    from psjax.run import run
    assert len(jax.local_devices()) == 4, jax.local_devices()
    out = {}
    lr = make_config({"learner": "ppo"}).ac.lr
    # a sweep's 2 points x 2 seeds are 4 rows on the 4 devices; its first point is the plain runs' config
    for name, seed, seeds, devices, extra in (("sharded", 0, 2, 0, {}), ("one_device", 0, 2, 1, {}),
                                              ("seed0", 0, 1, 1, {}), ("seed1", 1, 1, 1, {}),
                                              ("sweep", 0, 2, 0, {"sweep.lr": f"{lr},{2 * lr}"})):
        cfg = make_config({"env": "matrix", "matrix_game": "two_step", "alg": "fups_id", "learner": "ppo",
                           "seed": seed, "seeds": seeds, "devices": devices, "steps": 1024, "ac.num_envs": 8,
                           "ac.rollout_len": 16, "eval_every": 0.5, "eval_envs": 4, "progress": False,
                           "checkpoint": False, "out_dir": sys.argv[1], "run_name": name, **extra})
        run_dir = run(cfg)
        if extra:
            run_dir = run_dir / json.loads((run_dir / "sweep.json").read_text())["points"][0]["folder"]
        rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
        rows += [json.loads(l) for l in (run_dir / "eval.jsonl").read_text().splitlines()]
        out[name] = {"rows": rows, "devices": json.loads((run_dir / "summary.json").read_text())["devices"]}
    print(json.dumps(out))
""")


def test_seed_sharded_run_equals_unsharded_runs_on_2_of_4_devices(tmp_path):
    """Two seeds on two devices give what each seed gives alone, what the two-seed run gives on one device and
    what the same config gives as a point of a sweep sharded over four devices (2 points x 2 seeds),
    every logged number of every seed, up to float rounding: the programs are compiled apart and XLA's CPU
    reductions may round their last bit differently (measured: 1 ulp in a few losses, identical returns)."""
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=virtual_devices_env(4),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [out[k]["devices"] for k in ("sharded", "one_device", "seed0", "seed1", "sweep")] == [2, 1, 1, 1, 4]
    def by_seed(rows):
        return sorted(rows, key=lambda r: (r["iteration"], r["seed"], "loss" in r))

    sharded = by_seed(out["sharded"]["rows"])
    for other in (by_seed(out["seed0"]["rows"] + out["seed1"]["rows"]), by_seed(out["one_device"]["rows"]),
                  by_seed(out["sweep"]["rows"])):
        assert_rows_close(sharded, other, rtol=1e-5, atol=1e-6)


DATA_PARALLEL = textwrap.dedent("""
    import json, sys
    from psjax.config import make_config
    from psjax.run import run
    out = {}
    learner = sys.argv[2]
    extra = {"ppo": {"ac.num_envs": 8, "ac.rollout_len": 16, "ac.num_minibatches": 2},
             "qmix": {"q.num_envs": 8, "q.rollout_len": 8, "q.learning_starts": 0, "q.batch_size": 8,
                      "q.buffer_size": 32, "q.hidden": 16}}[learner]
    for name, devices in (("one", 1), ("four", 4)):
        cfg = make_config({"env": "lbf", "alg": "fups", "learner": learner, "seeds": 2, "parallel": "envs",
                           "devices": devices, "steps": 512, "eval_every": 0.5, "eval_envs": 4,
                           "progress": False, "checkpoint": False, "out_dir": sys.argv[1],
                           "run_name": name, **extra})
        run_dir = run(cfg)
        rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
        rows += [json.loads(l) for l in (run_dir / "eval.jsonl").read_text().splitlines()]
        summary = json.loads((run_dir / "summary.json").read_text())
        out[name] = {"rows": rows, "devices": summary["devices"]}
    print(json.dumps(out))
""")


@pytest.mark.parametrize("learner", ["ppo", pytest.param("qmix", marks=pytest.mark.slow)])
def test_data_parallel_run_equals_the_one_device_run(tmp_path, learner):
    """parallel=envs: one run's envs, agent memory and replay items (QMIX) split over 4 devices, parameters
    replicated, XLA reducing the gradients: every logged number (2 seeds) equals the one-device run's up to
    float rounding."""
    proc = subprocess.run([sys.executable, "-c", DATA_PARALLEL, str(tmp_path), learner],
                          env=virtual_devices_env(4), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    one, four = out["one"], out["four"]
    assert (one["devices"], four["devices"]) == (1, 4)
    assert_rows_close(one["rows"], four["rows"], rtol=1e-4, atol=1e-5)
