"""Several processes in one run (``distributed=on``, ``psjax.shard``): two local CPU processes with two virtual
devices each (gloo collectives) give the metrics of one process with four devices, and resume works across
processes. Each process is a subprocess; the test passes on any machine."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

import pytest
from conftest import assert_rows_close, virtual_devices_env

from psjax.config import make_config
from psjax.fields import ConfigError

SCRIPT = textwrap.dedent("""
    import sys
    from psjax.config import make_config
    from psjax.run import run
    out, name, process, processes, port, chunks = sys.argv[1:7]
    overrides = {"env": "matrix", "matrix_game": "two_step", "alg": "fups_id", "learner": "ppo", "seeds": 4,
                 "steps": 1536, "ac.num_envs": 8, "ac.rollout_len": 16, "eval_every": 0.34, "eval_envs": 4,
                 "progress": False, "out_dir": out, "run_name": name}
    if int(processes) > 1:
        overrides.update({"distributed": "on", "coordinator": f"localhost:{port}", "num_processes": int(processes),
                          "process_id": int(process)})
    cfg = make_config(overrides)
    if chunks == "all":
        run(cfg)
    else:  # stop after one chunk, then continue from the checkpoint in a second call
        run(cfg, max_chunks=int(chunks))
        run(cfg, resume=f"{out}/{name}")
""")


def _launch(tmp_path, name, processes, devices, chunks):
    with socket.socket() as s:  # a free port for the coordinator
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = virtual_devices_env(devices)
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path), name, str(i), str(processes), str(port),
                               chunks], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(processes)]
    for p in procs:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-3000:]
    run_dir = tmp_path / name
    rows = {kind: [json.loads(line) for line in (run_dir / f"{kind}.jsonl").read_text().splitlines()]
            for kind in ("metrics", "eval")}
    return rows, json.loads((run_dir / "summary.json").read_text())


def test_two_processes_equal_one_process_with_the_same_devices_and_resume(tmp_path):
    one, one_summary = _launch(tmp_path, "one", processes=1, devices=4, chunks="all")
    two, two_summary = _launch(tmp_path, "two", processes=2, devices=2, chunks="1")
    assert (one_summary["devices"], one_summary["processes"]) == (4, 1)
    assert (two_summary["devices"], two_summary["processes"]) == (4, 2)
    assert two_summary["finished"]
    for kind in ("metrics", "eval"):
        assert_rows_close(one[kind], two[kind], rtol=1e-5, atol=1e-6)


def test_distributed_config_rules():
    cfg = make_config({"distributed": "on", "coordinator": "localhost:1", "num_processes": 2, "process_id": 1})
    assert (cfg.distributed, cfg.num_processes, cfg.process_id) == ("on", 2, 1)
    with pytest.raises(ConfigError, match="distributed='ring' is not allowed"):
        make_config({"distributed": "ring"})
