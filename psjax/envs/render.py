"""Pictures of one state of each of the papers' environments, for the docs.

``python -m psjax.envs.render [out_dir]`` writes ``env_bps.png``, ``env_crware.png`` and
``env_lbf_grid.png`` (default folder ``docs/img``). Each state is a reset followed by a few random
steps from a fixed key, so the pictures are reproducible.
"""

from __future__ import annotations

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

from psjax.envs.bps import VARIANTS as BPS_VARIANTS
from psjax.envs.bps import make_bps, render_bps
from psjax.envs.crware import VARIANTS as CRW_VARIANTS
from psjax.envs.crware import make_crware, render_crware
from psjax.envs.lbf import make_lbf, render_lbf


def _advance(env, key, steps: int):
    """Reset then ``steps`` uniformly random available actions; returns the raw env state."""
    key, k0 = jax.random.split(key)
    wstate, ts = env.reset(k0)
    step = jax.jit(env.step)
    for _ in range(steps):
        key, k_a, k_s = jax.random.split(key, 3)
        a = jax.random.categorical(k_a, jnp.where(ts.avail_actions, 0.0, -jnp.inf)).astype(jnp.int32)
        wstate, ts = step(k_s, wstate, a)
    return wstate.env_state, ts


def _save(fig, path: pathlib.Path) -> pathlib.Path:
    fig.savefig(path, dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def render_all(out_dir: str | pathlib.Path = "docs/img", steps: int = 5, seed: int = 0) -> list[pathlib.Path]:
    """Write one PNG per environment into ``out_dir``; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.PRNGKey(seed)
    paths = []

    split = BPS_VARIANTS["15a3c"]
    st, _ = _advance(make_bps(split), key, steps)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    render_bps(st, split, ax)
    paths.append(_save(fig, out / "env_bps.png"))

    layout = CRW_VARIANTS["tiny"]
    st, _ = _advance(make_crware(layout), key, steps)
    fig, ax = plt.subplots(figsize=(4.5, 5))
    render_crware(st, layout, ax)
    paths.append(_save(fig, out / "env_crware.png"))

    env = make_lbf("8x8-2p-2f-coop", fov=2, grid_obs=True, persistent_levels=True)
    st, ts = _advance(env, key, steps)
    h, w, c = env.spec.obs_shape
    img = np.asarray(ts.obs[0]).reshape(h, w, c)
    fig, axes = plt.subplots(1, 1 + c, figsize=(3.2 * (1 + c), 3.2))
    render_lbf(st, axes[0], 8, "LBF 8x8-2p-2f-coop, fov 2")
    for k, name in enumerate(("agents", "food", "access")):
        axes[1 + k].imshow(img[..., k], vmin=0, vmax=1, cmap="viridis")
        axes[1 + k].set_title(f"agent 0 view: {name}")
        axes[1 + k].set_xticks([])
        axes[1 + k].set_yticks([])
    paths.append(_save(fig, out / "env_lbf_grid.png"))
    return paths


if __name__ == "__main__":
    for p in render_all(sys.argv[1] if len(sys.argv) > 1 else "docs/img"):
        print(p)
