"""Logging backends (TensorBoard, W&B offline) and the marl-eval export, read back from what they wrote."""

from __future__ import annotations

import json
import pathlib
import struct

import pytest

from psjax.cli import main
from psjax.config import ConfigError, make_config
from psjax.export import marl_eval_json
from psjax.logs import RowLog
from psjax.run import run


def _cfg(tmp_path, name, **overrides):
    """8 env steps per iteration; steps=160 -> 20 iterations in 4 chunks; 2 seeds."""
    base = {"q.num_envs": 2, "q.rollout_len": 4, "q.learning_starts": 0, "steps": 160, "eval_every": 0.25,
            "seed": 3, "seeds": 2, "out_dir": str(tmp_path), "run_name": name, "progress": False}
    return make_config({**base, **overrides})


def _tfrecords(path: pathlib.Path) -> list[bytes]:
    """The records of a TFRecord file: u64 length, u32 crc, data, u32 crc."""
    data, pos, out = path.read_bytes(), 0, []
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        out.append(data[pos + 12:pos + 12 + length])
        pos += 12 + length + 4
    return out


def _tensorboard_scalars(folder: pathlib.Path) -> dict[str, dict[int, float]]:
    from tensorboardX.proto import event_pb2

    scalars: dict[str, dict[int, float]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for record in _tfrecords(path):
            event = event_pb2.Event.FromString(record)
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def _wandb_history(run_folder: pathlib.Path) -> list[dict]:
    """The history rows of an offline W&B run's ``.wandb`` file (a LevelDB-style log of Record protos)."""
    from wandb.proto import wandb_internal_pb2

    data = next(run_folder.glob("*.wandb")).read_bytes()
    block, pos, records, partial = 32768, 7, [], b""  # 7: the file header (":W&B", magic, version)
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:  # block padding
            pos += room
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        partial = chunk if kind in (1, 2) else partial + chunk
        if kind in (1, 4):  # a whole record, or a fragmented one's last piece
            records.append(partial)
    rows = []
    for raw in records:
        record = wandb_internal_pb2.Record.FromString(raw)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def test_tensorboard_backend_logs_every_row_at_its_env_steps(tmp_path, fake_factory):
    pytest.importorskip("tensorboardX")
    run_dir = run(_cfg(tmp_path, "tb", logger="tensorboard"), make_program=fake_factory)
    evals, metrics = RowLog(run_dir, "eval").read(), RowLog(run_dir, "metrics").read()
    for seed in (3, 4):
        got = _tensorboard_scalars(run_dir / "tensorboard" / f"seed_{seed}")
        want_eval = {r["env_steps"]: r["eval_return"] for r in evals if r["seed"] == seed}
        assert got["eval/eval_return"] == pytest.approx(want_eval)
        want_loss = {r["env_steps"]: r["loss"] for r in metrics if r["seed"] == seed}
        assert got["train/loss"] == pytest.approx(want_loss)
        assert "eval/eval_policy" not in got and "train/seed" not in got  # labels are not scalars


def test_wandb_backend_offline_logs_every_row_and_resumes_the_same_runs(tmp_path, fake_factory):
    pytest.importorskip("wandb")
    cfg = _cfg(tmp_path, "wb", logger="wandb", wandb_mode="offline")
    part = run(cfg, max_chunks=2, make_program=fake_factory)
    ids = json.loads((part / "wandb_ids.json").read_text())
    run(None, resume=part, make_program=fake_factory)
    assert json.loads((part / "wandb_ids.json").read_text()) == ids  # resume continues the same W&B runs
    evals = RowLog(part, "eval").read()
    for seed, run_id in ids.items():
        history = [row for folder in sorted((part / "wandb").glob(f"offline-run-*-{run_id}"))
                   for row in _wandb_history(folder)]
        logged = {row["env_steps"]: row["eval/eval_return"] for row in history if "eval/eval_return" in row}
        want = {r["env_steps"]: r["eval_return"] for r in evals if r["seed"] == int(seed)}
        assert logged == pytest.approx(want)


def test_marl_eval_export_reads_back_as_the_run(tmp_path, fake_factory):
    run_dir = run(_cfg(tmp_path, "exp"), make_program=fake_factory)
    out = tmp_path / "results.json"
    assert main(["export", str(run_dir), f"out={out}"]) == 0
    data = json.loads(out.read_text())
    cfg = make_config({})
    [(env, tasks)] = data.items()
    [(task, algorithms)] = tasks.items()
    assert env == cfg.env.name
    [(algorithm, runs)] = algorithms.items()
    assert algorithm == f"{cfg.alg}-qmix"
    evals = RowLog(run_dir, "eval").read()
    assert sorted(runs) == ["run_3", "run_4"]
    for seed in (3, 4):
        rows = [r for r in evals if r["seed"] == seed]
        entry = runs[f"run_{seed}"]
        steps = [k for k in entry if k.startswith("step_")]
        assert steps == [f"step_{k}" for k in range(len(rows))]  # k = 0: before training
        assert [entry[k]["step_count"] for k in steps] == [r["env_steps"] for r in rows]
        assert [entry[k]["return"] for k in steps] == [[pytest.approx(r["eval_return"])] for r in rows]
        # LBF defines winning (all food eaten): its win rate is exported too
        assert entry["absolute_metrics"] == {k: entry[steps[-1]][k] for k in ("return", "win_rate")}
        assert [entry[k]["win_rate"] for k in steps] == [[pytest.approx(r["eval_won"])] for r in rows]


def test_marl_eval_export_refuses_colliding_runs_and_unknown_options(tmp_path, fake_factory):
    first = run(_cfg(tmp_path, "a"), make_program=fake_factory)
    second = run(_cfg(tmp_path, "b"), make_program=fake_factory)
    with pytest.raises(ConfigError, match="allowed: algorithm=folder"):
        marl_eval_json([first, second])
    by_folder = marl_eval_json([first, second], algorithm="folder")
    [tasks] = by_folder.values()
    [algorithms] = tasks.values()
    assert sorted(algorithms) == ["a", "b"]
    with pytest.raises(ConfigError, match="allowed: auto, greedy, sample"):
        marl_eval_json([first], policy="best")
    with pytest.raises(ConfigError, match="evaluated the greedy policy only"):
        marl_eval_json([first], policy="sample")
    assert main(["export", str(first)]) == 2  # no out=


def test_logger_field_names_the_allowed_backends():
    with pytest.raises(ConfigError, match="tensorboard"):
        make_config({"logger": "mlflow"})
