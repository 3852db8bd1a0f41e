"""Coloured multi-robot warehouse (C-RWARE), written directly in JAX.

The warehouse of RWARE (Papoudakis et al.) with coloured robots and shelves, as the SePS paper
uses it: robot ``i`` has a fixed colour and can load, and so deliver, only shelves of its colour;
robots of different colours have different action spaces.

Layout (RWARE's): ``W = 3 * shelf_columns + 1`` columns and ``H = (column_height + 1) *
shelf_rows + 2`` rows; a cell is highway when ``x % 3 == 0``, ``y % (column_height + 1) == 0`` or
``y >= H - 2``; every other cell is a shelf's home. The goals are the two middle cells of the
bottom row. Shelf ``s`` (row-major over home cells) has colour ``s % C``.

Actions: 0 noop, 1 forward, 2 turn left, 3 turn right, 4 toggle load (load the own-coloured
shelf at the robot's cell / unload on a shelf home cell, as RWARE); robots of odd colours have
a sixth action, 5 backward (move one cell against the heading without turning). Spaces are
padded to 6 with ``psjax.envs.wrappers.Padding``: action 5 is unavailable to even colours.
A loaded robot cannot enter a cell that holds a shelf; an empty robot may drive under shelves.

Collisions are resolved, never fatal (unlike jumanji's RobotWarehouse, which ends the episode):
each robot's move is first checked against the walls and shelves, then moves that conflict are
cancelled until none is left: a robot stays when another robot stays in its target cell, when a
robot of lower index moves into the same cell, or when two robots would swap cells. Cancelling is
monotone (a cancelled move is never restored within the step), so N rounds always reach a fixed
point and two robots never share a cell.

Requests: each colour has as many requested shelves as it has robots. Delivering one (a robot at
a goal cell carrying a requested shelf of its own colour) rewards that robot 1 (per-agent reward,
team reward "sum"), and a new shelf of the same colour, not already requested, is requested in its
place. No terminal state; episodes end at the time limit.

Observation of robot ``i``: own x / W, y / H, heading one-hot (4), loaded, loaded shelf requested;
then a ``(2r + 1)^2`` window around the robot, per cell: outside the grid, goal, robot, shelf,
requested shelf, shelf colour one-hot (C). Robot colours are not observed (the robots must find
their type from rewards, as in SePS).
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from psjax.envs.base import Env, EnvSpec, make_env_from_raw
from psjax.envs.wrappers import Padding, pad_raw

NOOP, FORWARD, LEFT, RIGHT, TOGGLE, BACKWARD = range(6)
# heading 0 up (y - 1), 1 right (x + 1), 2 down (y + 1), 3 left (x - 1); offsets as (x, y)
_DIRS = np.array([[0, -1], [1, 0], [0, 1], [-1, 0]], np.int32)


class Layout(NamedTuple):
    shelf_columns: int
    column_height: int
    shelf_rows: int
    agents_per_colour: tuple[int, ...]
    sensor_range: int
    time_limit: int


# "mini" is the smallest that a short run can learn on: 4 x 5 cells, 4 shelves, 2 robots of 2 colours.
VARIANTS: dict[str, Layout] = {
    "mini": Layout(1, 2, 1, (1, 1), 2, 100),
    "tiny": Layout(3, 8, 1, (2, 2), 1, 500),  # RWARE tiny (10 x 11), 4 robots
    "small": Layout(3, 8, 2, (4, 4), 1, 500),  # RWARE small (10 x 20), 8 robots
}


class CRWState(NamedTuple):
    pos: chex.Array  # [N, 2] int32 (x, y)
    heading: chex.Array  # [N] int32 in 0..3
    carrying: chex.Array  # [N] int32 shelf index, -1 when empty
    shelf_pos: chex.Array  # [S, 2] int32 (x, y)
    requested: chex.Array  # [S] bool


def grid_size(layout: Layout) -> tuple[int, int]:
    """``(W, H)`` of the layout."""
    return 3 * layout.shelf_columns + 1, (layout.column_height + 1) * layout.shelf_rows + 2


def highway_mask(layout: Layout) -> np.ndarray:
    """``[H, W]`` bool, True on highway cells (no shelf home)."""
    w, h = grid_size(layout)
    x, y = np.meshgrid(np.arange(w), np.arange(h))
    return (x % 3 == 0) | (y % (layout.column_height + 1) == 0) | (y >= h - 2)


def goal_cells(layout: Layout) -> np.ndarray:
    """``[2, 2]`` int32 (x, y): the two middle cells of the bottom row."""
    w, h = grid_size(layout)
    return np.array([[w // 2 - 1, h - 1], [w // 2, h - 1]], np.int32)


def shelf_homes(layout: Layout) -> np.ndarray:
    """``[S, 2]`` int32 (x, y) of every shelf home, row-major."""
    ys, xs = np.nonzero(~highway_mask(layout))
    return np.stack([xs, ys], axis=1).astype(np.int32)


def resolve_moves(pos: chex.Array, target: chex.Array, moving: chex.Array) -> chex.Array:
    """Cancel conflicting moves. ``pos, target [N, 2]``, ``moving [N]`` bool -> ``moving [N]``.

    A move is cancelled when the target holds a robot that stays, when a lower-index robot moves
    into the same cell, or when two robots would swap; repeated N times (monotone: a fixed point).
    """
    n = pos.shape[0]
    idx = jnp.arange(n)
    lower = idx[None, :] < idx[:, None]  # [i, j]: j has a lower index than i
    other = idx[None, :] != idx[:, None]
    swap = (
        jnp.all(target[:, None, :] == pos[None, :, :], -1) & jnp.all(target[None, :, :] == pos[:, None, :], -1) & other
    )

    def round_(_, mv):
        final = jnp.where(mv[:, None], target, pos)
        same = jnp.all(final[:, None, :] == final[None, :, :], -1) & other  # [i, j] i and j end in one cell
        blocked_by_stayer = same & ~mv[None, :]
        blocked_by_lower = same & mv[None, :] & lower
        swapping = swap & mv[None, :]
        blocked = jnp.any(blocked_by_stayer | blocked_by_lower | swapping, axis=1)
        return mv & ~blocked

    return jax.lax.fori_loop(0, n, round_, moving)


def make_crware(layout: Layout = VARIANTS["mini"], time_limit: int = 0) -> Env:
    """C-RWARE with ``layout``; see the module docstring for the rules and observations.

    obs ``[N, 8 + (2r+1)^2 (5 + C)]``, state ``[N (7 + C) + 3S]`` (per robot x / W, y / H, heading
    one-hot, loaded, colour one-hot; per shelf x / W, y / H, requested), avail ``[N, 6]`` (action 5
    only for odd colours), reward ``[N]`` per robot. ``spec.agent_types`` are the colours.
    """
    apc = tuple(int(k) for k in layout.agents_per_colour)
    if len(apc) < 1 or min(apc) < 1:
        raise ValueError(f"C-RWARE needs at least one robot of each colour, got {apc}")
    colours = tuple(c for c, k in enumerate(apc) for _ in range(k))
    n, c = len(colours), len(apc)
    w, h = grid_size(layout)
    homes = shelf_homes(layout)
    s = homes.shape[0]
    shelf_colour_np = np.arange(s) % c
    if np.any(np.bincount(shelf_colour_np, minlength=c) <= np.asarray(apc)):
        raise ValueError(f"C-RWARE layout {layout} has too few shelves per colour for its requests")
    if n > w * h:
        raise ValueError(f"{n} robots do not fit a {w} x {h} warehouse")
    r = layout.sensor_range
    side = 2 * r + 1
    per_cell = 5 + c
    counts = tuple(5 + (k % 2) for k in colours)
    padding = Padding(obs_sizes=(8 + side * side * per_cell,) * n, action_counts=counts)
    spec = EnvSpec(
        name="crware", num_agents=n, obs_dim=padding.obs_dim, state_dim=n * (7 + c) + 3 * s,
        num_actions=padding.num_actions, max_steps=time_limit if time_limit > 0 else layout.time_limit,
        agent_types=colours, team_reward="sum", has_won=False,
    )

    colour = jnp.asarray(colours, jnp.int32)
    colour_onehot = jax.nn.one_hot(colour, c)
    shelf_colour = jnp.asarray(shelf_colour_np, jnp.int32)
    dirs = jnp.asarray(_DIRS)
    highway = jnp.asarray(highway_mask(layout))
    goals = jnp.asarray(goal_cells(layout))
    goal_grid = jnp.zeros((h, w), jnp.float32).at[goals[:, 1], goals[:, 0]].set(1.0)
    scale = jnp.asarray([w, h], jnp.float32)

    def in_grid(p):
        return (p[..., 0] >= 0) & (p[..., 0] < w) & (p[..., 1] >= 0) & (p[..., 1] < h)

    def stationary_shelf_grid(st):
        """``[H, W]`` int32: index of the shelf standing (not carried) at each cell, -1 if none."""
        carried = jnp.any(st.carrying[:, None] == jnp.arange(s)[None, :], axis=0)
        ys = jnp.where(carried, h, st.shelf_pos[:, 1])  # carried shelves are written to a spare row
        grid = jnp.full((h + 1, w), -1, jnp.int32)
        return grid.at[ys, st.shelf_pos[:, 0]].set(jnp.arange(s, dtype=jnp.int32))[:h]

    def observe(st):
        # layers [H, W, 5 + C]: outside, goal, robot, shelf, requested, shelf colour one-hot.
        # Shelves never share a cell (a loaded robot cannot enter a shelf's cell), so .set is exact.
        robot = jnp.zeros((h, w, 1), jnp.float32).at[st.pos[:, 1], st.pos[:, 0]].set(1.0)
        feats = jnp.concatenate([jnp.ones((s, 1)), st.requested[:, None].astype(jnp.float32),
                                 jax.nn.one_hot(shelf_colour, c)], -1)  # [S, 2 + C]
        shelf_layers = jnp.zeros((h, w, 2 + c), jnp.float32).at[st.shelf_pos[:, 1], st.shelf_pos[:, 0]].set(feats)
        layers = jnp.concatenate([jnp.zeros((h, w, 1)), goal_grid[..., None], robot, shelf_layers], -1)
        outside = jnp.zeros((1, 1, per_cell)).at[..., 0].set(1.0)
        padded = jnp.pad(layers, ((r, r), (r, r), (0, 0)))
        pad_mask = jnp.pad(jnp.zeros((h, w, 1)), ((r, r), (r, r), (0, 0)), constant_values=1.0)
        padded = padded + pad_mask * outside

        def window(p):
            return jax.lax.dynamic_slice(padded, (p[1], p[0], 0), (side, side, per_cell)).reshape(-1)

        windows = jax.vmap(window)(st.pos)  # [N, side^2 * per_cell]
        loaded = (st.carrying >= 0).astype(jnp.float32)
        loaded_req = loaded * st.requested[jnp.maximum(st.carrying, 0)].astype(jnp.float32)
        own = jnp.concatenate(
            [st.pos / scale, jax.nn.one_hot(st.heading, 4), loaded[:, None], loaded_req[:, None]], -1
        )
        obs = jnp.concatenate([own, windows], -1)
        state = jnp.concatenate([
            jnp.concatenate([st.pos / scale, jax.nn.one_hot(st.heading, 4), loaded[:, None], colour_onehot],
                            -1).reshape(-1),
            jnp.concatenate([st.shelf_pos / scale, st.requested[:, None].astype(jnp.float32)], -1).reshape(-1),
        ])
        return [obs[i] for i in range(n)], state, None

    def reset_het(key):
        k_pos, k_dir, k_req = jax.random.split(key, 3)
        # n distinct cells: top-k of uniform scores (random.choice without replacement sorts a full
        # permutation, ~20x slower, and the reset runs on every auto-reset step)
        _, cells = jax.lax.top_k(jax.random.uniform(k_pos, (w * h,)), n)
        pos = jnp.stack([cells % w, cells // w], axis=1).astype(jnp.int32)
        heading = jax.random.randint(k_dir, (n,), 0, 4, jnp.int32)
        scores = jax.random.uniform(k_req, (s,))
        requested = jnp.zeros((s,), jnp.bool_)
        for k in range(c):  # apc[k] requests of colour k: the top scores among that colour's shelves
            _, top = jax.lax.top_k(jnp.where(shelf_colour == k, scores, -1.0), apc[k])
            requested = requested.at[top].set(True)
        st = CRWState(pos, heading, jnp.full((n,), -1, jnp.int32), jnp.asarray(homes), requested)
        return (st, *observe(st))

    def step_het(key, st, actions):
        actions = actions.astype(jnp.int32)
        heading = jnp.where(actions == LEFT, (st.heading + 3) % 4,
                            jnp.where(actions == RIGHT, (st.heading + 1) % 4, st.heading))
        sign = jnp.where(actions == BACKWARD, -1, 1)
        target = st.pos + sign[:, None] * dirs[st.heading]
        shelves = stationary_shelf_grid(st)
        tgt_c = jnp.clip(target, 0, jnp.asarray([w - 1, h - 1]))
        blocked_by_shelf = (st.carrying >= 0) & (shelves[tgt_c[:, 1], tgt_c[:, 0]] >= 0)
        wants = (actions == FORWARD) | (actions == BACKWARD)
        moving = resolve_moves(st.pos, target, wants & in_grid(target) & ~blocked_by_shelf)
        pos = jnp.where(moving[:, None], target, st.pos)
        loaded = st.carrying >= 0
        shelf_pos = st.shelf_pos.at[jnp.where(loaded, st.carrying, s)].set(pos, mode="drop")

        # toggle load: pick up the own-coloured shelf standing here, or put the shelf down off the highway
        here = shelves[pos[:, 1], pos[:, 0]]
        toggle = actions == TOGGLE
        can_load = toggle & ~loaded & (here >= 0) & (shelf_colour[jnp.maximum(here, 0)] == colour)
        can_drop = toggle & loaded & ~highway[pos[:, 1], pos[:, 0]]
        carrying = jnp.where(can_load, here, jnp.where(can_drop, -1, st.carrying))

        # deliveries, one robot after another, each replacing its request by a free shelf of its colour.
        # One uniform draw per step serves every delivery: each takes the highest-scoring free shelf
        # (uniform among them), and a second delivery of the same colour in the same step sees the
        # first one's pick as requested.
        at_goal = jnp.any(jnp.all(pos[:, None, :] == goals[None, :, :], -1), -1)
        score = jax.random.uniform(key, (s,))

        def deliver(i, carry):
            requested, reward = carry
            sh = carrying[i]
            sh0 = jnp.maximum(sh, 0)
            ok = (sh >= 0) & at_goal[i] & requested[sh0] & (shelf_colour[sh0] == colour[i])
            candidates = (shelf_colour == colour[i]) & ~requested & (jnp.arange(s) != sh)
            new = jnp.argmax(jnp.where(candidates, score, -1.0))
            requested = jnp.where(ok, requested.at[sh0].set(False).at[new].set(True), requested)
            return requested, reward.at[i].set(ok.astype(jnp.float32))

        requested, reward = jax.lax.fori_loop(0, n, deliver, (st.requested, jnp.zeros((n,), jnp.float32)))
        st = CRWState(pos, heading, carrying, shelf_pos, requested)
        false = jnp.zeros((), jnp.bool_)
        return (st, *observe(st), reward, false, false, false)

    reset_raw, step_raw = pad_raw(padding, reset_het, step_het)
    return make_env_from_raw(spec, reset_raw, step_raw)


def render_crware(st: CRWState, layout: Layout, ax) -> None:
    """Draw one C-RWARE state on a matplotlib axis: shelves as squares in their colour (thick
    outline when requested), robots as triangles pointing along their heading in their colour,
    goals as grey cells."""
    from matplotlib.patches import Rectangle

    palette = ["tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple"]
    c = len(layout.agents_per_colour)
    colours = [k for k, m in enumerate(layout.agents_per_colour) for _ in range(m)]
    w, h = grid_size(layout)
    for gx, gy in goal_cells(layout):
        ax.add_patch(Rectangle((gx - 0.5, gy - 0.5), 1, 1, color="0.6"))
    sp, req = np.asarray(st.shelf_pos), np.asarray(st.requested)
    for k in range(sp.shape[0]):
        ax.scatter(sp[k, 0], sp[k, 1], s=350, marker="s", c=palette[(k % c) % len(palette)], alpha=0.45,
                   edgecolors="k", linewidths=3.0 if req[k] else 0.5)
    markers = ["^", ">", "v", "<"]
    pos, hd = np.asarray(st.pos), np.asarray(st.heading)
    for i in range(pos.shape[0]):
        ax.scatter(pos[i, 0], pos[i, 1], s=160, marker=markers[hd[i]], c=palette[colours[i] % len(palette)],
                   edgecolors="k")
    from psjax.envs.grid import grid_axes

    grid_axes(ax, w, h, f"C-RWARE {w}x{h}: {pos.shape[0]} robots, {c} colours")
