"""Blind-particle spread (BPS), the SePS / AdaPS / MADPS motivating task, written in JAX.

MPE-style particles on the plane: N agents and one landmark per colour, C colours. Agent ``i``
has a fixed colour (the first ``n_0`` agents colour 0, the next ``n_1`` colour 1, ...) and is
rewarded for being near the landmark of its colour, but no agent observes its own colour nor
any other agent's: a network shared by every agent without indication (FuPS) cannot tell
which landmark to go to, while one network per colour (or an identity signal) can.

Dynamics as MPE (``dt = 0.1``, damping 0.25, acceleration 5 per unit action, unit mass);
agents do not collide (many agents share one landmark, so MPE's collision forces and
penalties would fight the task). Landmark ``k`` has colour ``k`` and landmarks appear in that
order in every observation.

Reward of agent ``i`` (per agent; team reward is the mean): ``-min_{l: colour(l) = colour(i)}
|p_i - x_l|``, MPE spread's distance shaping taken per colour. An agent on a landmark of its
colour gets 0; on another colour's landmark it gets minus the distance to its own.
Episodes last 50 steps (time limit, truncation), there is no terminal state.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from psjax.envs.base import Env, EnvSpec, make_env_from_raw

DEFAULT_EPISODE_LENGTH = 50
NUM_ACTIONS = 5  # noop, +x, -x, +y, -y (MPE's discrete action order)
DT, DAMPING, ACCEL = 0.1, 0.25, 5.0

# The papers' settings: agents per colour.
VARIANTS: dict[str, tuple[int, ...]] = {
    "15a3c": (5, 5, 5),
    "30a3c": (10, 10, 10),
    "30a5c": (6, 6, 6, 6, 6),
}

_MOVES = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], np.float32)


class BPSState(NamedTuple):
    pos: chex.Array  # [N, 2] float32
    vel: chex.Array  # [N, 2] float32
    landmarks: chex.Array  # [C, 2] float32


def colours_of(agents_per_colour: tuple[int, ...]) -> tuple[int, ...]:
    """Colour of every agent: ``(2, 1) -> (0, 0, 1)``."""
    return tuple(c for c, k in enumerate(agents_per_colour) for _ in range(k))


def even_split(num_agents: int, num_colours: int) -> tuple[int, ...]:
    """``num_agents`` over ``num_colours`` as evenly as possible, larger groups first."""
    base, extra = divmod(num_agents, num_colours)
    return tuple(base + (c < extra) for c in range(num_colours))


def bps_reward(colours: chex.Array, pos: chex.Array, landmarks: chex.Array) -> chex.Array:
    """``colours[N]`` int, ``pos[N, 2]``, ``landmarks[C, 2]`` (landmark k has colour k) -> ``[N]``:
    minus the distance of each agent to the landmark of its colour."""
    return -jnp.linalg.norm(pos - landmarks[colours], axis=-1)


def make_bps(agents_per_colour: tuple[int, ...] = VARIANTS["15a3c"], time_limit: int = 0) -> Env:
    """BPS with ``agents_per_colour[c]`` agents of colour ``c``.

    obs ``[N, 4 + 2C + 2(N-1)]``: own velocity, own position, landmark positions relative to the
    agent (colour order), other agents' positions relative to the agent (index order); no
    colours. state ``[4N + 2C + NC]``: positions, velocities, landmarks, agent colours
    (one-hot: the central critic / mixer may know them). 5 actions, all available.
    ``spec.agent_types`` are the colours.
    """
    agents_per_colour = tuple(int(k) for k in agents_per_colour)
    if len(agents_per_colour) < 1 or min(agents_per_colour) < 1:
        raise ValueError(f"BPS needs at least one agent of each colour, got {agents_per_colour}")
    colours = colours_of(agents_per_colour)
    n, c = len(colours), len(agents_per_colour)
    spec = EnvSpec(
        name="bps", num_agents=n, obs_dim=4 + 2 * c + 2 * (n - 1), state_dim=4 * n + 2 * c + n * c,
        num_actions=NUM_ACTIONS, max_steps=time_limit if time_limit > 0 else DEFAULT_EPISODE_LENGTH,
        agent_types=colours, team_reward="mean", has_won=False,
    )
    colour_arr = jnp.asarray(colours, jnp.int32)
    colour_onehot = jax.nn.one_hot(colour_arr, c).reshape(-1)
    # others[i] = indices of the agents other than i, in index order
    others = jnp.asarray(np.array([[j for j in range(n) if j != i] for i in range(n)], np.int32).reshape(n, n - 1))
    moves = jnp.asarray(_MOVES)
    avail = jnp.ones((n, NUM_ACTIONS), jnp.bool_)

    def observe(st: BPSState):
        rel_land = st.landmarks[None, :, :] - st.pos[:, None, :]  # [N, C, 2]
        rel_other = st.pos[others] - st.pos[:, None, :]  # [N, N-1, 2]
        obs = jnp.concatenate([st.vel, st.pos, rel_land.reshape(n, -1), rel_other.reshape(n, -1)], axis=-1)
        state = jnp.concatenate([st.pos.reshape(-1), st.vel.reshape(-1), st.landmarks.reshape(-1), colour_onehot])
        return obs, state, avail

    def reset_raw(key):
        k_pos, k_land = jax.random.split(key)
        st = BPSState(
            pos=jax.random.uniform(k_pos, (n, 2), jnp.float32, -1.0, 1.0),
            vel=jnp.zeros((n, 2), jnp.float32),
            landmarks=jax.random.uniform(k_land, (c, 2), jnp.float32, -1.0, 1.0),
        )
        return (st, *observe(st))

    def step_raw(key, st: BPSState, actions):
        del key  # deterministic dynamics
        vel = st.vel * (1.0 - DAMPING) + moves[actions] * ACCEL * DT
        st = st._replace(pos=st.pos + vel * DT, vel=vel)
        reward = bps_reward(colour_arr, st.pos, st.landmarks)
        false = jnp.zeros((), jnp.bool_)
        return (st, *observe(st), reward, false, false, false)

    return make_env_from_raw(spec, reset_raw, step_raw)


def render_bps(state: BPSState, agents_per_colour: tuple[int, ...], ax) -> None:
    """Draw one BPS state on a matplotlib axis: landmarks as large squares, agents as dots,
    both in their colour (colours are hidden from the agents, shown here for the reader)."""
    palette = ["tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:pink"]
    colours = colours_of(agents_per_colour)
    pos, land = np.asarray(state.pos), np.asarray(state.landmarks)
    for k in range(land.shape[0]):
        ax.scatter(*land[k], s=400, marker="s", c=palette[k % len(palette)], alpha=0.4, edgecolors="k")
    ax.scatter(pos[:, 0], pos[:, 1], s=60, c=[palette[k % len(palette)] for k in colours], edgecolors="k")
    ax.set_xlim(-1.5, 1.5)
    ax.set_ylim(-1.5, 1.5)
    ax.set_aspect("equal")
    ax.set_title(f"BPS: {len(colours)} agents, {len(agents_per_colour)} colours")
