"""Coloured multi-robot warehouse (C-RWARE) as the SePS authors ran it, written directly in JAX.

Reference: semitable/robotic-warehouse, branch ``color``: ``robotic_warehouse/warehouse.py`` at commit
3b5c5b8 (2020-12-02, "variable number of colors", the SePS paper's); ``rware/warehouse.py`` at the branch
head b8bfaa7 adds the observation shuffle (``shuffle_obs``) and gym-version fixes. docs/envs.md lists every
rule and every difference.

Layout (RWARE's): ``W = 3 * shelf_columns + 1`` columns and ``H = (column_height + 1) *
shelf_rows + 2`` rows; a cell is highway when ``x % 3 == 0``, ``y % (column_height + 1) == 0``,
``y == H - 1`` (the delivery row) or when it lies in one of the two middle columns
``W // 2 - 1, W // 2`` below row ``H - column_height - 3`` (the queue next to the goals); every
other cell holds a shelf at reset. The goals are the two middle cells of the bottom row. Every
shelf draws its colour uniformly at every reset.

Actions: 5 for every robot (all available), labelled per colour: robot colour ``c`` taking action
``a`` does ``(a - c) % 5`` of 0 noop, 1 forward, 2 turn left, 3 turn right, 4 toggle load (the
reference's ``np.roll(arange(5), c)[a]``). Any robot loads any shelf standing at its cell and
unloads off the highway; a loaded robot cannot enter a cell holding a standing shelf.

Moves (the reference's graph rule): each robot's move ``cell -> target`` is an edge (a robot that
does not move, or moves into a wall or, loaded, into a shelf, is a loop on its cell). In each
connected part of that graph: a loop (a standing robot) stops every robot queued behind it; two
robots swapping cells both stay; a rotation of 3 or more robots goes through while robots queued
into it stay; without a cycle, only the longest queue into the free target cell moves (ties: the
robot whose cell entered the reference's graph first; see ``resolve_moves``).

Requests: ``int(robots * difficulty)`` shelves of any colour (difficulty 2 / 1 / 0.5 for easy /
normal / hard). A robot at a goal carrying a requested shelf of its own colour earns 1 (per-agent
reward, team reward "sum"), and a uniformly drawn unrequested shelf of any colour replaces the
request. No terminal state; episodes end at the time limit (500 steps).

Observation of a robot: raw x, y, loaded, heading one-hot (up, down, left, right), on highway; then
per cell of the ``(2r + 1)^2`` window around it, row by row: robot present, shelf colour one-hot
(C), shelf requested. Robot colours are not observed.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from psjax.envs.base import Env, EnvSpec, make_env_from_raw

NOOP, FORWARD, LEFT, RIGHT, TOGGLE = range(5)
NUM_ACTIONS = 5
# heading 0 up (y - 1), 1 right (x + 1), 2 down (y + 1), 3 left (x - 1): clockwise, so that turning right
# is +1; offsets as (x, y). The observation writes the reference's order (up, down, left, right).
_DIRS = np.array([[0, -1], [1, 0], [0, 1], [-1, 0]], np.int32)
_OBS_HEADING = np.array([0, 3, 1, 2], np.int32)  # psjax heading -> the reference's Direction value
DIFFICULTY = {"easy": 2.0, "normal": 1.0, "hard": 0.5}  # the reference's "-easy", "", "-hard" ids


class Layout(NamedTuple):
    shelf_columns: int
    column_height: int
    shelf_rows: int
    agents_per_colour: tuple[int, ...]
    sensor_range: int
    time_limit: int


VARIANTS: dict[str, Layout] = {
    # no reference: RWARE's rules on a 10 x 5 floor with 8 shelves and 2 robots, for tests and short learning checks
    "mini": Layout(3, 2, 1, (1, 1), 1, 100),
    "tiny": Layout(3, 8, 1, (2, 2), 1, 500),  # rware-2color-tiny-4ag: 10 x 11, 32 shelves
    "small": Layout(3, 8, 2, (4, 4), 1, 500),  # rware-2color-small-8ag: 10 x 20, 80 shelves
    "medium": Layout(5, 8, 2, (8, 8), 1, 500),  # rware-2color-medium-16ag: 16 x 20, 144 shelves
}


class CRWState(NamedTuple):
    pos: chex.Array  # [N, 2] int32 (x, y)
    heading: chex.Array  # [N] int32 in 0..3 (see _DIRS)
    carrying: chex.Array  # [N] int32 shelf index, -1 when empty
    shelf_pos: chex.Array  # [S, 2] int32 (x, y); a carried shelf is at its robot's cell
    shelf_colour: chex.Array  # [S] int32, drawn at reset
    requested: chex.Array  # [S] bool


def reference_split(num_agents: int, colours: int) -> tuple[int, ...]:
    """Robots per colour as the reference assigns them: ``n // C`` each, the remainder to colour 0."""
    return tuple(num_agents // colours + (num_agents % colours) * (k == 0) for k in range(colours))


def grid_size(layout: Layout) -> tuple[int, int]:
    """``(W, H)`` of the layout."""
    return 3 * layout.shelf_columns + 1, (layout.column_height + 1) * layout.shelf_rows + 2


def highway_mask(layout: Layout) -> np.ndarray:
    """``[H, W]`` bool, True on highway cells (no shelf at reset; no unloading)."""
    w, h = grid_size(layout)
    x, y = np.meshgrid(np.arange(w), np.arange(h))
    queue = (y > h - (layout.column_height + 3)) & ((x == w // 2 - 1) | (x == w // 2))
    return (x % 3 == 0) | (y % (layout.column_height + 1) == 0) | (y == h - 1) | queue


def goal_cells(layout: Layout) -> np.ndarray:
    """``[2, 2]`` int32 (x, y): the two middle cells of the bottom row, in the reference's order."""
    w, h = grid_size(layout)
    return np.array([[w // 2 - 1, h - 1], [w // 2, h - 1]], np.int32)


def shelf_homes(layout: Layout) -> np.ndarray:
    """``[S, 2]`` int32 (x, y) of every shelf at reset, row-major (the reference's shelf order)."""
    ys, xs = np.nonzero(~highway_mask(layout))
    return np.stack([xs, ys], axis=1).astype(np.int32)


def request_queue_size(layout: Layout, difficulty: str = "normal") -> int:
    """``int(robots * DIFFICULTY[difficulty])``, as the reference's registered ids set it."""
    return int(sum(layout.agents_per_colour) * DIFFICULTY[difficulty])


def obs_dim(layout: Layout) -> int:
    """``8 + (2r + 1)^2 (2 + C)``: 44 for two colours and sensor range 1."""
    return 8 + (2 * layout.sensor_range + 1) ** 2 * (2 + len(layout.agents_per_colour))


def obs_permutations(dim: int, colours: int) -> np.ndarray:
    """``[C, D]`` int: colour ``c``'s observation order under ``shuffle_obs`` (``obs[perm[c]]``), drawn from
    numpy seed 0 (the reference draws them from numpy's global generator when it builds the env)."""
    rng = np.random.default_rng(0)
    return np.stack([rng.permutation(dim) for _ in range(colours)])


def resolve_moves(pos: chex.Array, target: chex.Array) -> chex.Array:
    """Which robots move, by the reference's graph rule. ``pos, target [N, 2]`` (``target == pos``:
    the robot stays) -> ``[N]`` bool.

    The graph has one edge per robot, its cell -> its target cell; every cell has at most one
    outgoing edge, so each connected part holds at most one cycle. A part with a cycle moves only
    the robots on it, and only when it has 3 or more of them (a loop is a standing robot, a 2-cycle
    a swap). A part without a cycle is a tree into one free cell; the reference moves its longest
    path (networkx ``dag_longest_path``): at each cell the incoming robot with the longest queue
    behind it, ties to the robot whose cell was added to the graph first (robot ``k``'s cell at
    ``2k``, robot ``j``'s target at ``2j + 1``).
    """
    n = pos.shape[0]
    idx = jnp.arange(n)
    moving = jnp.any(target != pos, -1)
    occ = jnp.all(target[:, None, :] == pos[None, :, :], -1)  # [i, j]: robot j stands on i's target
    nxt = jnp.where(jnp.any(occ, 1), jnp.argmax(occ, 1), n)  # the robot ahead; n = a free cell
    nxt_ext = jnp.concatenate([nxt, jnp.full((1,), n, nxt.dtype)])

    def walk(k, carry):  # follow the edges: cycle length (0 off a cycle) and where each robot's queue ends
        cur, cycle_len = carry
        cur = nxt_ext[cur]
        return cur, jnp.where((cycle_len == 0) & (cur == idx), k + 1, cycle_len)

    end, cycle_len = jax.lax.fori_loop(0, n, walk, (idx, jnp.zeros((n,), jnp.int32)))
    feeds = (nxt[:, None] == idx[None, :]) & moving[:, None]  # [k, i]: robot k moves into robot i's cell
    depth = jax.lax.fori_loop(  # longest queue behind each robot (exact off cycles, the only use)
        0, n, lambda _, d: jnp.max(jnp.where(feeds, d[:, None] + 1, 0), axis=0), jnp.zeros((n,), jnp.int32))
    other = idx[:, None] != idx[None, :]
    rank = jnp.minimum(2 * idx, jnp.min(jnp.where(occ & other, 2 * idx[:, None] + 1, 2 * n + 2), axis=0))
    rivals = jnp.all(target[:, None, :] == target[None, :, :], -1) & moving[:, None] & moving[None, :] & other
    beats = (depth[:, None] > depth[None, :]) | ((depth[:, None] == depth[None, :]) & (rank[:, None] < rank[None, :]))
    wins = moving & jnp.all(~rivals | beats, axis=1)

    def spread(_, m):  # a winner moves when the robot ahead moves too, or its target is free
        return wins & (end == n) & jnp.concatenate([m, jnp.ones((1,), jnp.bool_)])[nxt]

    tree = jax.lax.fori_loop(0, n, spread, jnp.zeros((n,), jnp.bool_))
    return tree | (cycle_len >= 3)


def make_crware(layout: Layout = VARIANTS["tiny"], time_limit: int = 0, difficulty: str = "normal",
                shuffle_obs: bool = False) -> Env:
    """C-RWARE with ``layout``; see the module docstring for the rules and observations.

    obs ``[N, 8 + (2r+1)^2 (2 + C)]`` (44 for two colours), state ``[N (7 + C) + S (3 + C)]`` (per robot
    x / W, y / H, heading one-hot, loaded, colour one-hot; per shelf x / W, y / H, requested, colour
    one-hot), avail ``[N, 5]`` all True, reward ``[N]`` per robot. ``spec.agent_types`` are the colours.
    ``shuffle_obs``: each colour sees its observation in a fixed permutation of its own (the branch
    head's; ``obs_permutations``).
    """
    apc = tuple(int(k) for k in layout.agents_per_colour)
    if len(apc) < 1 or min(apc) < 1:
        raise ValueError(f"C-RWARE needs at least one robot of each colour, got {apc}")
    if difficulty not in DIFFICULTY:
        raise ValueError(f"C-RWARE difficulty {difficulty!r}; allowed: {', '.join(DIFFICULTY)}")
    colours = tuple(c for c, k in enumerate(apc) for _ in range(k))
    n, c = len(colours), len(apc)
    w, h = grid_size(layout)
    homes = shelf_homes(layout)
    s = homes.shape[0]
    queue = request_queue_size(layout, difficulty)
    if not 1 <= queue < s:
        raise ValueError(f"C-RWARE requests {queue} of {s} shelves; need 1 .. {s - 1}")
    if n > w * h:
        raise ValueError(f"{n} robots do not fit a {w} x {h} warehouse")
    r = layout.sensor_range
    side = 2 * r + 1
    d = obs_dim(layout)
    spec = EnvSpec(
        name="crware", num_agents=n, obs_dim=d, state_dim=n * (7 + c) + s * (3 + c), num_actions=NUM_ACTIONS,
        max_steps=time_limit if time_limit > 0 else layout.time_limit, agent_types=colours, team_reward="sum",
        has_won=False,
    )

    colour = jnp.asarray(colours, jnp.int32)
    colour_onehot = jax.nn.one_hot(colour, c)
    dirs = jnp.asarray(_DIRS)
    obs_heading = jnp.asarray(_OBS_HEADING)
    highway = jnp.asarray(highway_mask(layout))
    goals = goal_cells(layout)
    scale = jnp.asarray([w, h], jnp.float32)
    corner = jnp.asarray([w - 1, h - 1])
    perms = jnp.asarray(obs_permutations(d, c))  # [C, D]
    avail = jnp.ones((n, NUM_ACTIONS), jnp.bool_)

    def index_grid(p, m):
        """``[H, W]`` int32: which of the ``m`` entities at ``p [m, 2]`` stands in each cell, -1 if none."""
        return jnp.full((h, w), -1, jnp.int32).at[p[:, 1], p[:, 0]].set(jnp.arange(m, dtype=jnp.int32))

    def observe(st):
        # layers [H, W, 2 + C]: robot, shelf colour one-hot, requested. No two shelves share a cell (a loaded
        # robot never enters a standing shelf's cell), nor two robots, so the scatters are exact.
        robot = jnp.zeros((h, w, 1), jnp.float32).at[st.pos[:, 1], st.pos[:, 0]].set(1.0)
        feats = jnp.concatenate([jax.nn.one_hot(st.shelf_colour, c), st.requested[:, None].astype(jnp.float32)], -1)
        shelf = jnp.zeros((h, w, 1 + c), jnp.float32).at[st.shelf_pos[:, 1], st.shelf_pos[:, 0]].set(feats)
        padded = jnp.pad(jnp.concatenate([robot, shelf], -1), ((r, r), (r, r), (0, 0)))  # zeros beyond the walls

        def window(p):
            return jax.lax.dynamic_slice(padded, (p[1], p[0], 0), (side, side, 2 + c)).reshape(-1)

        loaded = (st.carrying >= 0).astype(jnp.float32)
        own = jnp.concatenate([
            st.pos.astype(jnp.float32), loaded[:, None], jax.nn.one_hot(obs_heading[st.heading], 4),
            highway[st.pos[:, 1], st.pos[:, 0]].astype(jnp.float32)[:, None],
        ], -1)
        obs = jnp.concatenate([own, jax.vmap(window)(st.pos)], -1)  # [N, D]
        if shuffle_obs:
            obs = jnp.take_along_axis(obs, perms[colour], axis=1)
        state = jnp.concatenate([
            jnp.concatenate([st.pos / scale, jax.nn.one_hot(st.heading, 4), loaded[:, None], colour_onehot],
                            -1).reshape(-1),
            jnp.concatenate([st.shelf_pos / scale, feats], -1).reshape(-1),
        ])
        return obs, state, avail

    def reset_raw(key):
        k_pos, k_dir, k_col, k_req = jax.random.split(key, 4)
        # n distinct cells anywhere (under shelves too): top-k of uniform scores (random.choice without
        # replacement sorts a full permutation, ~20x slower, and auto-reset runs the reset every step)
        _, cells = jax.lax.top_k(jax.random.uniform(k_pos, (w * h,)), n)
        pos = jnp.stack([cells % w, cells // w], axis=1).astype(jnp.int32)
        heading = jax.random.randint(k_dir, (n,), 0, 4, jnp.int32)
        shelf_colour = jax.random.randint(k_col, (s,), 0, c, jnp.int32)
        _, req = jax.lax.top_k(jax.random.uniform(k_req, (s,)), queue)
        requested = jnp.zeros((s,), jnp.bool_).at[req].set(True)
        st = CRWState(pos, heading, jnp.full((n,), -1, jnp.int32), jnp.asarray(homes), shelf_colour, requested)
        return (st, *observe(st))

    def step_raw(key, st, actions):
        act = (actions.astype(jnp.int32) - colour) % NUM_ACTIONS  # each colour's labels
        loaded = st.carrying >= 0
        shelves = index_grid(st.shelf_pos, s)
        robots = index_grid(st.pos, n)
        ahead = jnp.clip(st.pos + dirs[st.heading], 0, corner)  # the reference clamps moves at the walls
        ahead_robot = robots[ahead[:, 1], ahead[:, 0]]
        # a loaded robot cannot enter a cell with a shelf, unless that shelf is carried by the robot there
        ahead_carried = (ahead_robot >= 0) & loaded[jnp.maximum(ahead_robot, 0)]
        blocked = loaded & (shelves[ahead[:, 1], ahead[:, 0]] >= 0) & ~ahead_carried
        target = jnp.where(((act == FORWARD) & ~blocked)[:, None], ahead, st.pos)
        moves = resolve_moves(st.pos, target)
        pos = jnp.where(moves[:, None], target, st.pos)
        turn = jnp.where(act == LEFT, 3, jnp.where(act == RIGHT, 1, 0))
        heading = (st.heading + turn) % 4
        shelf_pos = st.shelf_pos.at[jnp.where(loaded, st.carrying, s)].set(pos, mode="drop")

        # toggle load: any shelf standing at the robot's cell; unload anywhere off the highway
        here = shelves[st.pos[:, 1], st.pos[:, 0]]
        toggle = act == TOGGLE
        carrying = jnp.where(toggle & ~loaded & (here >= 0), here,
                             jnp.where(toggle & loaded & ~highway[st.pos[:, 1], st.pos[:, 0]], -1, st.carrying))

        # deliveries, goal by goal as the reference: a requested shelf of the carrier's colour earns the carrier 1
        # and a shelf drawn uniformly among the unrequested ones (the delivered one is still requested) replaces it
        requested, reward = st.requested, jnp.zeros((n,), jnp.float32)
        for g, k in zip(goals, jax.random.split(key, len(goals))):
            at = jnp.all(pos == jnp.asarray(g), -1)  # [N]
            i = jnp.argmax(at)
            sh = jnp.maximum(carrying[i], 0)
            ok = at[i] & (carrying[i] >= 0) & requested[sh] & (st.shelf_colour[sh] == colour[i])
            new = jnp.argmax(jnp.where(requested, -1.0, jax.random.uniform(k, (s,))))
            requested = jnp.where(ok, requested.at[sh].set(False).at[new].set(True), requested)
            reward = reward.at[i].add(ok.astype(jnp.float32))
        st = CRWState(pos, heading, carrying, shelf_pos, st.shelf_colour, requested)
        false = jnp.zeros((), jnp.bool_)
        return (st, *observe(st), reward, false, false, false)

    return make_env_from_raw(spec, reset_raw, step_raw)


def render_crware(st: CRWState, layout: Layout, ax) -> None:
    """Draw one C-RWARE state on a matplotlib axis: shelves as squares in their colour (thick outline when
    requested), robots as triangles pointing along their heading in their colour, goals as grey cells."""
    from matplotlib.patches import Rectangle

    from psjax.envs.grid import grid_axes

    palette = ["tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple"]
    c = len(layout.agents_per_colour)
    colours = [k for k, m in enumerate(layout.agents_per_colour) for _ in range(m)]
    w, h = grid_size(layout)
    for gx, gy in goal_cells(layout):
        ax.add_patch(Rectangle((gx - 0.5, gy - 0.5), 1, 1, color="0.6"))
    sp, req, sc = np.asarray(st.shelf_pos), np.asarray(st.requested), np.asarray(st.shelf_colour)
    for k in range(sp.shape[0]):
        ax.scatter(sp[k, 0], sp[k, 1], s=350, marker="s", c=palette[sc[k] % len(palette)], alpha=0.45,
                   edgecolors="k", linewidths=3.0 if req[k] else 0.5)
    markers = ["^", ">", "v", "<"]
    pos, hd = np.asarray(st.pos), np.asarray(st.heading)
    for i in range(pos.shape[0]):
        ax.scatter(pos[i, 0], pos[i, 1], s=160, marker=markers[hd[i]], c=palette[colours[i] % len(palette)],
                   edgecolors="k")
    grid_axes(ax, w, h, f"C-RWARE {w}x{h}: {pos.shape[0]} robots, {c} colours")
