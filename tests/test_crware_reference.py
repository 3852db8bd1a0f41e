"""C-RWARE against its reference, semitable/robotic-warehouse branch ``color`` (``rware/warehouse.py``):
hand-built states on the ``tiny`` layout (10 x 11, robots 0, 1 of colour 0 and 2, 3 of colour 1) through one
compiled step, and statistics over resets. docs/envs.md lists the rules and the remaining differences.

Coordinates are (x, y), y down; headings 0 up, 1 right, 2 down, 3 left. Tiny's highway: x in {0, 3, 6, 9}, rows
0, 9, 10, and the queue columns x = 4, 5; goals (4, 10) and (5, 10); shelf ``k`` starts at ``HOMES[k]``
(row-major: (1, 1), (2, 1), (7, 1), (8, 1), (1, 2), ...).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from psjax.config import EnvConfig
from psjax.envs import AutoResetState, make_env, num_agents
from psjax.envs.crware import (
    FORWARD,
    LEFT,
    NOOP,
    RIGHT,
    TOGGLE,
    VARIANTS,
    CRWState,
    grid_size,
    highway_mask,
    make_crware,
    obs_dim,
    obs_permutations,
    reference_split,
    request_queue_size,
    resolve_moves,
    shelf_homes,
)

TINY = VARIANTS["tiny"]
HOMES = shelf_homes(TINY)
S = len(HOMES)
COLOUR = (0, 0, 1, 1)
PARK = ((9, 0), (9, 10))  # out-of-the-way cells for robots a test does not use
_ENV = {}


def env(**kw):
    key = tuple(sorted(kw.items()))
    if key not in _ENV:
        e = make_env(EnvConfig(name="crware", variant="tiny", **kw))
        _ENV[key] = (e, jax.jit(e.step), jax.jit(jax.vmap(e.reset)))
    return _ENV[key]


def label(action: int, colour: int) -> int:
    """The label a robot of ``colour`` uses for the reference's ``action`` (np.roll(arange(5), colour))."""
    return (action + colour) % 5


def state(pos, heading, carrying=(-1, -1, -1, -1), shelf_colour=None, requested=(), shelf_pos=None):
    """A tiny state: shelves at home unless ``shelf_pos`` ({shelf: cell}) moves some, colour 0 unless
    ``shelf_colour`` ({shelf: colour}) says otherwise; ``requested`` lists the requested shelves."""
    sp = np.array(HOMES)
    for k, cell in (shelf_pos or {}).items():
        sp[k] = cell
    sc = np.zeros(S, np.int32)
    for k, c in (shelf_colour or {}).items():
        sc[k] = c
    req = np.zeros(S, bool)
    req[list(requested)] = True
    return CRWState(jnp.asarray(pos, jnp.int32), jnp.asarray(heading, jnp.int32), jnp.asarray(carrying, jnp.int32),
                    jnp.asarray(sp, jnp.int32), jnp.asarray(sc), jnp.asarray(req))


def step(st, actions, key=0, **kw):
    """One step of the compiled tiny env from the raw state ``st``; ``actions`` are the reference's actions,
    turned into each robot's label here."""
    _, step_fn, _ = env(**kw)
    ws = AutoResetState(st, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))
    acts = jnp.asarray([label(a, c) for a, c in zip(actions, COLOUR)], jnp.int32)
    ws, ts = step_fn(jax.random.PRNGKey(key), ws, acts)
    return jax.tree.map(np.asarray, ws.env_state), jax.tree.map(np.asarray, ts)


# ------------------------------------------------------------------ actions and movement


def test_action_labels_rotate_by_colour():
    """Every robot has the same 5 actions; colour 1's labels are colour 0's shifted by one."""
    spec = env()[0].spec
    assert spec.num_actions == 5 and spec.agent_types == COLOUR
    # robot 0 (colour 0) under shelf 16 at (1, 5), robot 2 (colour 1) under shelf 18 at (7, 5), both heading up
    st = state(((1, 5), PARK[0], (7, 5), PARK[1]), (0, 0, 0, 0))
    assert HOMES[16].tolist() == [1, 5] and HOMES[18].tolist() == [7, 5]
    for lab in range(5):
        _, step_fn, _ = env()
        ws = AutoResetState(st, jnp.zeros(()), jnp.zeros((), jnp.int32))
        ws, _ = step_fn(jax.random.PRNGKey(0), ws, jnp.asarray([lab, 0, lab, 1], jnp.int32))  # 0 / 1: parked noop
        out = jax.tree.map(np.asarray, ws.env_state)
        for i, x in ((0, 1), (2, 7)):
            does = (lab - COLOUR[i]) % 5
            want_pos = [x, 4] if does == FORWARD else [x, 5]
            want_heading = {LEFT: 3, RIGHT: 1}.get(does, 0)
            want_carry = {0: 16, 2: 18}[i] if does == TOGGLE else -1
            assert out.pos[i].tolist() == want_pos, (lab, i)
            assert out.heading[i] == want_heading and out.carrying[i] == want_carry, (lab, i)
        assert out.pos[[1, 3]].tolist() == [list(PARK[0]), list(PARK[1])]
    _, ts = step(st, (NOOP,) * 4)
    assert ts.avail_actions.shape == (4, 5) and ts.avail_actions.all()


def test_swap_fails_and_queues_follow_the_reference():
    # robot 0 at (0, 5) heading down and robot 2 at (0, 6) heading up: a swap, both stay
    st = state(((0, 5), PARK[0], (0, 6), PARK[1]), (2, 0, 0, 0))
    out, _ = step(st, (FORWARD, NOOP, FORWARD, NOOP))
    assert out.pos[[0, 2]].tolist() == [[0, 5], [0, 6]]
    # robot 2 turning instead blocks robot 0 (a standing robot); robot 2 leaving downwards lets robot 0 follow
    out, _ = step(st, (FORWARD, NOOP, LEFT, NOOP))
    assert out.pos[[0, 2]].tolist() == [[0, 5], [0, 6]]
    st = state(((0, 5), PARK[0], (0, 6), PARK[1]), (2, 0, 2, 0))
    out, _ = step(st, (FORWARD, NOOP, FORWARD, NOOP))
    assert out.pos[[0, 2]].tolist() == [[0, 6], [0, 7]]
    # walls: a move off the grid is a no-op
    out, _ = step(state(((0, 0), PARK[0], (3, 3), PARK[1]), (3, 0, 0, 0)), (FORWARD, NOOP, NOOP, NOOP))
    assert out.pos[0].tolist() == [0, 0]


def _moves(pos, target, n=6):
    """``resolve_moves`` on ``pos, target`` padded to ``n`` robots (standing far away: one compiled program)."""
    pad = [[20 + k, 20] for k in range(n - len(pos))]
    out = _RESOLVE(jnp.asarray(list(pos) + pad), jnp.asarray(list(target) + pad))
    return out[:len(pos)].tolist()


_RESOLVE = jax.jit(resolve_moves)


def test_resolve_moves_graph_rule():
    f = _moves
    # a rotation of four robots goes through; a robot queued into it stays
    pos = [[0, 0], [1, 0], [1, 1], [0, 1], [2, 0]]
    target = [[1, 0], [1, 1], [0, 1], [0, 0], [1, 0]]
    assert f(pos, target) == [True, True, True, True, False]
    # two robots into one free cell: the longer queue wins, whatever the indices
    pos = [[1, 0], [2, 1], [3, 1]]
    target = [[1, 1], [1, 1], [2, 1]]
    assert f(pos, target) == [False, True, True]
    # equal queues: the robot whose cell entered the reference's graph first (robot 2's, as robot 0's target,
    # before robot 1's own): robot 2 and the robot behind it move, though robot 1 has the lower index
    pos = [[5, 2], [3, 1], [5, 1], [2, 1]]
    target = [[5, 1], [4, 1], [4, 1], [3, 1]]
    assert f(pos, target) == [True, False, True, False]
    # a standing robot stops the whole queue behind it
    pos = [[0, 0], [1, 0], [2, 0]]
    target = [[1, 0], [2, 0], [2, 0]]
    assert f(pos, target) == [False, False, False]


def test_resolve_moves_matches_networkx_reference_rule():
    """Random instances against the reference's rule run by networkx (its components built in the order cells
    entered the graph; the reference's own subgraph copies order small components by Python's set order, which
    only changes which of two equal queues wins)."""
    nx = pytest.importorskip("networkx")
    rng = np.random.default_rng(0)
    dirs = np.array([[0, 0], [0, -1], [1, 0], [0, 1], [-1, 0]])
    for _ in range(300):
        cells = rng.choice(16, 6, replace=False)
        pos = np.stack([cells % 4, cells // 4], 1)
        target = np.clip(pos + dirs[rng.integers(0, 5, 6)], 0, 3)
        g = nx.DiGraph()
        g.add_edges_from((tuple(p), tuple(t)) for p, t in zip(pos, target))
        robot_at = {tuple(p): i for i, p in enumerate(pos)}
        moved = set()
        for comp_nodes in nx.weakly_connected_components(g):
            comp = nx.DiGraph([(u, v) for u, v in g.edges if u in comp_nodes])
            try:
                cycle = nx.find_cycle(comp)
                if len(cycle) > 2:
                    moved |= {robot_at[u] for u, _ in cycle}
            except nx.NetworkXNoCycle:
                moved |= {robot_at[v] for v in nx.dag_longest_path(comp) if v in robot_at}
        want = [i in moved for i in range(6)]
        assert _moves(pos.tolist(), target.tolist()) == want, (pos.tolist(), target.tolist())


# ------------------------------------------------------------------ loading and delivery


def test_any_robot_loads_any_shelf_but_delivers_only_its_colour():
    # robot 2 (colour 1) under shelf 0 (colour 0) loads it
    out, _ = step(state(((1, 1), PARK[0], (2, 1), PARK[1]), (0, 0, 0, 0)), (NOOP, NOOP, TOGGLE, NOOP))
    assert out.carrying.tolist() == [-1, -1, 1, -1]  # shelf 1 stands at (2, 1)
    # robot 2 carries requested shelf 0 (colour 0) from (4, 9) onto goal (4, 10): no reward, the request stays
    st = state(((0, 5), PARK[0], (4, 9), (3, 3)), (0, 0, 2, 0), carrying=(-1, -1, 0, -1), requested=(0, 7, 9, 11),
               shelf_pos={0: (4, 9)})
    out, ts = step(st, (NOOP, NOOP, FORWARD, NOOP))
    assert out.pos[2].tolist() == [4, 10] and out.shelf_pos[0].tolist() == [4, 10]
    assert ts.reward.tolist() == [0, 0, 0, 0] and out.requested.tolist() == st.requested.tolist()
    # robot 0 (colour 0) doing the same delivers: reward 1 to it, shelf 0 replaced by an unrequested shelf
    st = st._replace(pos=jnp.asarray(((4, 9), PARK[0], (0, 5), (3, 3))), heading=jnp.asarray((2, 0, 0, 0)),
                     carrying=jnp.asarray((0, -1, -1, -1)))
    out, ts = step(st, (FORWARD, NOOP, NOOP, NOOP))
    assert ts.reward.tolist() == [1, 0, 0, 0] and ts.state.shape == (env()[0].spec.state_dim,)
    new = set(np.flatnonzero(out.requested)) - {7, 9, 11}
    assert not out.requested[0] and out.requested.sum() == 4 and len(new) == 1 and 0 not in new
    # the next step, still on the goal with the now unrequested shelf: nothing more
    _, ts = step(out, (NOOP,) * 4)
    assert ts.reward.tolist() == [0, 0, 0, 0]


def test_both_goals_deliver_in_one_step_and_requests_refill_with_any_colour():
    # robots 0, 1 (colour 0) step onto the two goals with requested colour-0 shelves 0, 1; shelves of odd index
    # are colour 1, so the two refills are drawn from shelves of both colours
    colours = {k: k % 2 for k in range(S)}
    colours.update({0: 0, 1: 0})
    st = state(((4, 9), (5, 9), (0, 5), (3, 3)), (2, 2, 0, 0), carrying=(0, 1, -1, -1), shelf_colour=colours,
               requested=(0, 1, 8, 10), shelf_pos={0: (4, 9), 1: (5, 9)})
    # (goal (5, 10) draws its refill after goal (4, 10)'s: shelf 0 has left the queue by then and may return)
    refills = []
    for key in range(12):
        out, ts = step(st, (FORWARD, FORWARD, NOOP, NOOP), key=key)
        assert ts.reward.tolist() == [1, 1, 0, 0] and out.requested.sum() == 4
        assert not out.requested[1] and out.requested[[8, 10]].all()
        refills += list(set(np.flatnonzero(out.requested)) - {8, 10})
    assert {colours[k] for k in refills} == {0, 1}


def test_loaded_robots_avoid_shelves_and_unload_off_the_highway():
    # robot 0 carries shelf 0 at (0, 2) heading right into shelf 4's cell (1, 2): blocked; robot 1, empty, at
    # (0, 3) heading right drives under shelf 8 at (1, 3)
    st = state(((0, 2), (0, 3), PARK[0], PARK[1]), (1, 1, 0, 0), carrying=(0, -1, -1, -1), shelf_pos={0: (0, 2)})
    out, _ = step(st, (FORWARD, FORWARD, NOOP, NOOP))
    assert out.pos[:2].tolist() == [[0, 2], [1, 3]]
    # unloading on the highway fails; off it (the shelf's empty home (1, 1)) it works
    out, _ = step(st, (TOGGLE, NOOP, NOOP, NOOP))
    assert out.carrying[0] == 0
    st = state(((1, 1), PARK[0], (3, 3), PARK[1]), (0, 0, 0, 0), carrying=(0, -1, -1, -1))
    out, _ = step(st, (TOGGLE, NOOP, NOOP, NOOP))
    assert out.carrying[0] == -1 and out.shelf_pos[0].tolist() == [1, 1]


# ------------------------------------------------------------------ layout, resets, observations


@pytest.mark.parametrize("variant, shelves, size", [("tiny", 32, (10, 11)), ("small", 80, (10, 20)),
                                                    ("medium", 144, (16, 20))])
def test_layout_highway_has_no_shelves(variant, shelves, size):
    layout = VARIANTS[variant]
    homes, hw = shelf_homes(layout), highway_mask(layout)
    w, h = grid_size(layout)
    assert (w, h) == size and len(homes) == shelves and not hw[homes[:, 1], homes[:, 0]].any()
    # the two middle columns next to the goals are free of shelves in the lowest block
    mid = np.isin(homes[:, 0], (w // 2 - 1, w // 2))
    assert not np.any(mid & (homes[:, 1] > h - layout.column_height - 3))


def test_variants_robots_and_queue_sizes():
    assert reference_split(4, 2) == (2, 2) and reference_split(5, 2) == (3, 2) and reference_split(7, 3) == (3, 2, 2)
    for v, n in (("mini", 2), ("tiny", 4), ("small", 8), ("medium", 16)):
        layout = VARIANTS[v]
        assert num_agents(EnvConfig(name="crware", variant=v)) == n
        assert layout.agents_per_colour == reference_split(n, 2) and layout.sensor_range == 1
        assert layout.time_limit == (100 if v == "mini" else 500)
    assert make_crware(VARIANTS["medium"]).spec.agent_types == (0,) * 8 + (1,) * 8
    assert obs_dim(TINY) == 44 and obs_dim(TINY._replace(agents_per_colour=(1, 1, 1))) == 53
    # the queue: int(robots x 2 / 1 / 0.5); the reset draws that many (test_shelf_colours_... checks tiny's 4)
    assert [request_queue_size(TINY, d) for d in ("easy", "normal", "hard")] == [8, 4, 2]
    assert request_queue_size(VARIANTS["medium"], "hard") == 8


def test_shelf_colours_and_requests_drawn_at_every_reset():
    _, _, reset = env()
    ws, _ = reset(jax.random.split(jax.random.PRNGKey(0), 64))
    st = jax.tree.map(np.asarray, ws.env_state)
    sc = st.shelf_colour  # [64, S]
    assert len({tuple(r) for r in sc}) == 64 and 0.4 < sc.mean() < 0.6
    assert np.all(st.shelf_pos == HOMES) and np.all(st.carrying == -1) and np.all(st.requested.sum(-1) == 4)
    req_colours = sc[st.requested]
    assert set(req_colours.tolist()) == {0, 1}  # one queue of any colour
    # a colour may have no request at all (the reference's queue ignores colours)
    assert np.any((sc * st.requested).sum(-1) == 0) or np.any(((1 - sc) * st.requested).sum(-1) == 0)


def test_observation_on_a_hand_built_state():
    # robot 0 at (1, 1) heading down, under shelf 0 (colour 1); robot 2 at (2, 2) under shelf 5 (colour 1,
    # requested); shelf 1 at (2, 1) colour 0 requested; robot 1 in the corner (9, 0) heading left; robot 3 on a
    # goal (5, 10) carrying unrequested shelf 31 (colour 1)
    st = state(((1, 1), (9, 0), (2, 2), (5, 10)), (2, 3, 0, 1), carrying=(-1, -1, -1, 31),
               shelf_colour={0: 1, 5: 1, 31: 1}, requested=(1, 5, 20, 24), shelf_pos={31: (5, 10)})
    _, ts = step(st, (NOOP,) * 4)
    assert ts.obs.shape == (4, 44)
    none, empty_shelf0 = [0, 0, 0, 0], [0, 1, 0, 0]
    want0 = [1, 1, 0, 0, 1, 0, 0, 0]  # x, y, loaded, heading (up, down, left, right), on highway
    want0 += none * 3 + none + [1, 0, 1, 0] + [0, 1, 0, 1] + none + empty_shelf0 + [1, 0, 1, 1]
    np.testing.assert_array_equal(ts.obs[0], want0)
    want1 = [9, 0, 0, 0, 0, 1, 0, 1] + none * 3 + none + [1, 0, 0, 0] + none + empty_shelf0 + none + none
    np.testing.assert_array_equal(ts.obs[1], want1)
    assert ts.obs[3][:8].tolist() == [5, 10, 1, 0, 0, 0, 1, 1]  # loaded, heading right, on the highway
    assert ts.obs[3][8 + 4 * 4:8 + 5 * 4].tolist() == [1, 0, 1, 0]  # its own cell: robot, carried shelf's colour


def test_shuffled_observations_permute_per_colour():
    st = state(((1, 1), (9, 0), (2, 2), (5, 10)), (2, 3, 0, 1), shelf_colour={0: 1}, requested=(1, 5, 9, 20))
    _, plain = step(st, (NOOP,) * 4)
    _, shuffled = step(st, (NOOP,) * 4, crware_shuffle_obs=True)
    perms = obs_permutations(44, 2)
    assert not np.array_equal(perms[0], perms[1])
    for i, c in enumerate(COLOUR):
        np.testing.assert_array_equal(shuffled.obs[i], plain.obs[i][perms[c]])
