"""The notebooks run top to bottom at tiny size (PSJAX_NOTEBOOK_SMALL=1) and save their figures.

01 and 02 run in `make test` (about 40 s each on an idle 2-core CPU: each compiles two or three
tiny training programs); 03 training its own AdaPS run is slow-marked (`make test-all`), and 03
also runs unmarked on a run folder written by the host loop with a fake trainer that logs sharing
metrics of every kind the notebook looks for.
"""

from __future__ import annotations

import pathlib

import jax.numpy as jnp
import nbformat
import pytest
from conftest import make_fake_program
from nbclient import NotebookClient

from psjax.config import make_config
from psjax.run import run

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _execute(name: str, tmp_path: pathlib.Path, monkeypatch, **env) -> pathlib.Path:
    """Run a notebook in a fresh kernel (cwd tmp_path); returns its output folder."""
    out = tmp_path / "out"
    monkeypatch.setenv("PSJAX_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("PSJAX_NOTEBOOK_OUT", str(out))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(book, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    return out


def _assert_pngs(folder: pathlib.Path, names) -> None:
    for name in names:
        path = folder / name
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5_000, path


def _sharing_program(cfg, chunk_iters):
    """The conftest fake trainer plus sharing metrics: a per-agent cluster and slot, an agents x agents
    overlap, a distance matrix logged only every other iteration (NaN otherwise), and scalars."""
    base = make_fake_program(cfg, chunk_iters)

    def run_chunk(runner):
        runner, metrics = base.run_chunk(runner)
        p = metrics["q_agents"]  # [C, 3]
        metrics["cluster"] = (p > 0).astype(jnp.int32)
        metrics["madps_front"] = jnp.zeros_like(metrics["cluster"])
        metrics["mask_overlap_pairs"] = jnp.abs(jnp.tanh(p[:, :, None] * p[:, None, :]))
        due = (runner.iteration - chunk_iters + jnp.arange(chunk_iters)) % 2 == 0
        metrics["mapd_distance"] = jnp.where(due[:, None, None], jnp.abs(p[:, :, None] - p[:, None, :]), jnp.nan)
        metrics["pps_dispersion"] = jnp.abs(p).mean(-1)
        metrics["mask_overlap"] = metrics["mask_overlap_pairs"].mean((-1, -2))
        return runner, metrics

    return base._replace(run_chunk=run_chunk)


def test_inspect_run_notebook_on_a_run_folder(tmp_path, monkeypatch):
    cfg = make_config({"q.num_envs": 2, "q.rollout_len": 4, "steps": 64, "eval_every": 0.5, "seeds": 2,
                       "progress": False, "checkpoint": False, "out_dir": str(tmp_path), "run_name": "fake"})
    run_dir = run(cfg, make_program=_sharing_program)
    out = _execute("03_inspect_run.ipynb", tmp_path, monkeypatch, PSJAX_NOTEBOOK_RUN=str(run_dir))
    _assert_pngs(out, ["inspect_agents.png", "inspect_matrices.png", "inspect_scalars.png"])


@pytest.mark.slow
def test_inspect_run_notebook_trains_adaps(tmp_path, monkeypatch):
    out = _execute("03_inspect_run.ipynb", tmp_path, monkeypatch, PSJAX_NOTEBOOK_RUN="")
    _assert_pngs(out, ["inspect_agents.png", "inspect_matrices.png", "inspect_scalars.png"])
    (run_dir,) = (out / "runs").iterdir()
    _assert_pngs(run_dir, ["curve.png", "sharing.png"])


def test_quickstart_notebook(tmp_path, monkeypatch):
    out = _execute("01_quickstart.ipynb", tmp_path, monkeypatch)
    _assert_pngs(out, ["quickstart_curves.png"])


@pytest.mark.slow  # the quickstart notebook runs in `make test`; this one adds compare's tables and figure
def test_compare_methods_notebook(tmp_path, monkeypatch):
    out = _execute("02_compare_methods.ipynb", tmp_path, monkeypatch)
    _assert_pngs(out, ["sweep/compare.png", "report_again/compare.png"])
    assert sorted(p.name for p in (out / "sweep").iterdir() if p.is_dir()) == ["fups-ppo", "nops-ppo"]
    assert "| fups | ppo | 1 |" in (out / "sweep" / "compare.md").read_text()
