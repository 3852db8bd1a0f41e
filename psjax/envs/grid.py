"""The frame of every grid-world picture (LBF, C-RWARE): no environment imports, so that each env's own
drawing code and ``psjax.envs.render`` (which imports the envs) can share it."""

from __future__ import annotations

import numpy as np


def grid_axes(ax, width: int, height: int, title: str, grid_color: str = "0.85") -> None:
    """Cell grid, row 0 at the top, equal aspect: the frame of every grid-world picture."""
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_xticks(np.arange(width) - 0.5, minor=True)
    ax.set_yticks(np.arange(height) - 0.5, minor=True)
    ax.grid(which="minor", color=grid_color)
    ax.set_aspect("equal")
    ax.set_title(title)
