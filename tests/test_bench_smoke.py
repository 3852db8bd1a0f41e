"""benchmarks/throughput.py runs end to end on one tiny configuration (no timing thresholds).

One configuration only (MPE spread + A2C, the grid's cheapest to compile: ~10-15 s for init and
chunk on a 2-core CPU) keeps this test well under 30 s; the FuPS ratios are checked on made-up rows.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def throughput():
    spec = importlib.util.spec_from_file_location("bench_throughput", REPO / "benchmarks" / "throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_throughput_tiny(throughput, tmp_path, capsys):
    from psjax.config import make_config
    from psjax.train import count_params, make_parts

    out = tmp_path / "bench.json"
    argv = ["--envs", "mpe_spread", "--learners", "a2c", "--methods", "nops", "--chunk-iters", "2",
            "--repeats", "1", "--out", str(out), "--markdown"]
    doc = throughput.main(argv)
    stdout = capsys.readouterr().out

    saved = json.loads(out.read_text())
    assert saved["results"] == json.loads(json.dumps(doc["results"]))
    assert saved["info"]["command"].endswith(" ".join(argv))
    assert saved["info"]["devices"] and saved["info"]["jax"] and saved["info"]["cpu_count"] >= 1
    assert saved["peer_qmix"] is None

    [row] = saved["results"]
    assert "error" not in row, row
    assert (row["env"], row["learner"], row["method"]) == ("mpe_spread", "a2c", "nops")
    assert (row["chunk_iters"], row["seeds"], row["warmup_calls"], len(row["run_s"])) == (2, 1, 1, 1)
    assert row["steps_per_call"] == 2 * row["steps_per_iteration"] > 0
    assert row["param_count"] > 0 and row["compile_s"] > 0 and row["init_s"] > 0 and row["steps_per_s"] > 0
    assert row["x_fups"] is None and row["x_nops"] == 1.0  # no FuPS row in this run; NoPS is itself
    fups = make_config({**row["config"], "alg": "fups"})
    assert row["param_count"] == 3 * count_params(make_parts(fups))  # three agents, one network each

    lines = stdout.splitlines()
    assert lines[0].startswith("command: ") and lines[1].startswith("devices: ")
    assert "| env | learner | method | params | steps/s | x FuPS | x NoPS | compile s |" in lines
    [table_row] = [line for line in lines if line.startswith("| mpe_spread ")]
    cells = [c.strip() for c in table_row.strip("|").split("|")]
    assert cells[:3] == ["mpe_spread", "a2c", "nops"] and cells[5] == "-" and cells[6] == "1.00"
    assert float(cells[4].replace(",", "")) > 0 and float(cells[7]) > 0


def test_fups_ratios_and_tables(throughput):
    rows = [{"env": "lbf", "learner": "qmix", "method": "fups", "steps_per_s": 200.0},
            {"env": "lbf", "learner": "qmix", "method": "nops", "steps_per_s": 50.0},
            {"env": "lbf", "learner": "ppo", "method": "nops", "steps_per_s": 80.0},
            {"env": "smax", "learner": "qmix", "method": "nops", "steps_per_s": 80.0},
            {"env": "lbf", "learner": "vdn", "method": "fups", "error": "boom"},
            {"env": "lbf", "learner": "vdn", "method": "nops", "steps_per_s": 10.0}]
    for r in rows:
        if "error" not in r:
            r.update(param_count=1000, compile_s=1.0)
    throughput.add_ratios(rows)
    assert [r["x_fups"] for r in rows] == [1.0, 0.25, None, None, None, None]
    assert [r["x_nops"] for r in rows] == [4.0, 1.0, 1.0, 1.0, None, 1.0]
    md = throughput.markdown_table(rows).splitlines()
    assert len(md) == 2 + len(rows)
    assert md[3] == "| lbf | qmix | nops | 1,000 | 50 | 0.25 | 1.00 | 1.0 |"
    assert md[6] == "| lbf | vdn | fups | - | error | - | - | - |"
    assert len(throughput.text_table(rows).splitlines()) == 1 + len(rows)


def test_bad_flag_values_are_rejected(throughput):
    with pytest.raises(SystemExit):
        throughput.parse_args(["--methods", "fups,nosuch"])
    with pytest.raises(SystemExit):
        throughput.parse_args(["--repeats", "0"])
    with pytest.raises(SystemExit):
        throughput.parse_args(["--set", "no_equals_sign"])
    assert throughput.parse_args(["--set", "lr=1e-3", "--set", "identity_pretrain_steps=0"]).overrides == {
        "lr": "1e-3", "identity_pretrain_steps": "0"}
    assert throughput.config_overrides("lbf", "a2c", "seps", {"identity_pretrain_steps": "0"})[
        "identity_pretrain_steps"] == "0"
    args = throughput.parse_args([])
    assert args.methods == list(throughput.METHODS) and args.envs == ["smax", "mpe_spread", "lbf"]
    assert args.learners == ["qmix", "vdn", "iql", "pqn", "a2c", "ppo"] and args.repeats == 3 and args.seeds == 1


def test_peer_qmix_config_is_valid(throughput):
    from psjax.config import make_config

    cfg = make_config(throughput.PEER_QMIX)
    assert (cfg.env.name, cfg.env.map, cfg.alg, cfg.learner_name) == ("smax", "3m", "fups", "qmix")
    assert (cfg.q.hidden, cfg.q.num_envs, cfg.q.rollout_len, cfg.q.updates_per_rollout, cfg.q.batch_size,
            cfg.q.learning_starts) == (64, 16, 128, 1, 32, 0)


def test_peer_harness_cases_are_valid_psjax_configs_and_logging_is_stubbed():
    """benchmarks/peers.py: every case's psjax side is a valid config at its budget, and the peer's logging
    imports resolve to stand-ins that accept any call (the peer scripts themselves are not in this repo)."""
    import sys

    from psjax.config import make_config

    spec = importlib.util.spec_from_file_location("bench_peers", REPO / "benchmarks" / "peers.py")
    peers = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = peers  # its dataclasses look their module up
    spec.loader.exec_module(peers)
    for name, case in peers.CASES.items():
        overrides = {k: v for k, v in case.psjax.items() if k != "preset"}
        cfg = make_config({**overrides, "steps": case.steps}, preset=case.psjax.get("preset"))
        assert cfg.num_iterations * cfg.steps_per_iteration == case.steps, name
    saved = {m: sys.modules.get(m) for m in ("wandb", "hydra", "omegaconf")}
    try:
        peers._stub_logging_modules()
        import hydra
        import wandb

        wandb.init(project="x").log({"a": 1})
        assert hydra.main(config_path="c")(len) is len
    finally:
        for m, module in saved.items():
            if module is None:
                sys.modules.pop(m, None)
            else:
                sys.modules[m] = module
    with pytest.raises(FileNotFoundError, match="JaxMARL checkout at c793d09"):
        peers.peer_train(peers.CASES["ippo_ff_mpe"], REPO / "no-such-dir", 2048)


@pytest.mark.slow  # four PPO compiles: about a minute; `make test-all` runs it
def test_device_suite_smoke_grid(tmp_path):
    """benchmarks/device_suite.py --smoke: every configuration of the reduced grid runs and is reported with
    its compile time and peak memory (no timing thresholds)."""
    import sys

    spec = importlib.util.spec_from_file_location("bench_device_suite", REPO / "benchmarks" / "device_suite.py")
    suite = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = suite
    spec.loader.exec_module(suite)
    out = tmp_path / "suite.json"
    doc = suite.main(["--smoke", "--out", str(out)])
    labels = [r["label"] for r in doc["rows"]]
    assert labels == ["lbf/ppo/fups envs=4", "lbf/ppo/fups envs=4 seeds=2", "lbf/ppo/nops envs=4",
                      "lbf/ppo/kaleidoscope envs=4"]
    for r in doc["rows"]:
        assert "error" not in r, r
        assert r["steps_per_s"] > 0 and r["compile_s"] > 0 and r["host_peak_bytes"] > 0
    assert json.loads(out.read_text())["rows"][1]["seeds"] == 2
    assert "| lbf/ppo/fups envs=4 seeds=2 | 2 | 4 |" in suite.markdown(doc["rows"])


def test_learner_forms_tiny(capsys):
    """benchmarks/learner_forms.py times two forms of one config (here A2C without and with value clipping: any
    pair of overrides) and prints both rows and their ratio."""
    spec = importlib.util.spec_from_file_location("bench_forms", REPO / "benchmarks" / "learner_forms.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["env=mpe_spread", "alg=fups", "learner=a2c", "--a", "ac.clip_value=false", "--b",
                        "ac.clip_value=true", "--iters", "1", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "| a |" in out and "| b |" in out and "b / a time:" in out
