"""Blind-particle spread (BPS), the SePS / AdaPS / MADPS motivating task, as their code runs it.

The reference is the SePS authors' PettingZoo fork (semitable/PettingZoo, commit ce09c48 of
2021-06-02), MPE scenario ``large_spread`` (``pz-mpe-large-spread-v1`` .. ``v6``), which the
AdaPS and MADPS papers reuse. N agents and one landmark per colour, C colours. Agent ``i`` has
a fixed colour (the first ``n_0`` agents colour 0, the next ``n_1`` colour 1, ...) and is
rewarded for being near the landmark of its colour; no agent observes any colour nor any other
agent: a network shared by every agent without indication (FuPS) cannot tell which landmark to
go to, while one network per colour (or an identity signal) can.

As the reference:
- observation ``[4 + 2C]``: own velocity, own position, every landmark's position relative to the
  agent (landmark ``k`` has colour ``k``, fixed order); other agents are not observed (the
  scenario's lines for them are commented out);
- spawn: agents uniform in ``[-1, 1]^2`` at rest, landmarks uniform in ``[-3, 3]^2``;
- reward of agent ``i``: ``local_ratio * -|p_i - x_colour(i)|`` with the environment's
  ``local_ratio = 0.5`` (the scenario's global reward is 0 when not cooperative);
- MPE dynamics (``dt = 0.1``, damping 0.25, acceleration 5 per unit action, unit mass), no
  collisions (agents have ``collide = False``), five discrete actions in MPE's order;
- ``shuffle_obs`` (``v5``, ``v6``): every colour sees its observation vector in a fixed
  permutation of its own.
Episodes last 50 steps (the papers' time limit; truncation), there is no terminal state.

Differences kept: the shuffle's permutation per colour is drawn from numpy's generator seeded by
the colour, not Python's ``random.Random(colour)`` (a fixed permutation either way); the team
reward psjax reports is the mean over agents (``spec.team_reward``).
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
LOCAL_RATIO = 0.5  # the reference environment's weight of the agent's own (local) reward
AGENT_SPAWN, LANDMARK_SPAWN = 1.0, 3.0  # half-widths of the uniform spawn squares

# The papers' settings (the reference's large-spread v1 .. v4): agents per colour.
VARIANTS: dict[str, tuple[int, ...]] = {
    "15a3c": (5, 5, 5),
    "30a3c": (10, 10, 10),
    "30a5c": (6, 6, 6, 6, 6),
    "30a5c-uneven": (3, 3, 3, 12, 9),
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
    ``LOCAL_RATIO`` x minus the distance of each agent to the landmark of its colour."""
    return -LOCAL_RATIO * jnp.linalg.norm(pos - landmarks[colours], axis=-1)


def observation_permutations(num_colours: int, obs_dim: int) -> np.ndarray:
    """``int[C, D]``: the fixed permutation of the observation vector each colour sees under
    ``shuffle_obs`` (numpy's generator seeded by the colour)."""
    return np.stack([np.random.default_rng(c).permutation(obs_dim) for c in range(num_colours)])


def make_bps(agents_per_colour: tuple[int, ...] = VARIANTS["15a3c"], time_limit: int = 0,
             shuffle_obs: bool = False) -> Env:
    """BPS with ``agents_per_colour[c]`` agents of colour ``c``.

    obs ``[N, 4 + 2C]``: own velocity, own position, landmark positions relative to the agent
    (colour order), permuted per colour when ``shuffle_obs``; no colours, no other agents.
    state ``[4N + 2C + NC]``: positions, velocities, landmarks, agent colours (one-hot: the
    central critic / mixer may know them). 5 actions, all available. ``spec.agent_types`` are
    the colours.
    """
    agents_per_colour = tuple(int(k) for k in agents_per_colour)
    if len(agents_per_colour) < 1 or min(agents_per_colour) < 1:
        raise ValueError(f"BPS needs at least one agent of each colour, got {agents_per_colour}")
    colours = colours_of(agents_per_colour)
    n, c = len(colours), len(agents_per_colour)
    obs_dim = 4 + 2 * c
    spec = EnvSpec(
        name="bps", num_agents=n, obs_dim=obs_dim, state_dim=4 * n + 2 * c + n * c,
        num_actions=NUM_ACTIONS, max_steps=time_limit if time_limit > 0 else DEFAULT_EPISODE_LENGTH,
        agent_types=colours, team_reward="mean", has_won=False,
    )
    colour_arr = jnp.asarray(colours, jnp.int32)
    colour_onehot = jax.nn.one_hot(colour_arr, c).reshape(-1)
    permutation = jnp.asarray(observation_permutations(c, obs_dim)[np.asarray(colours)])  # [N, D]
    moves = jnp.asarray(_MOVES)
    avail = jnp.ones((n, NUM_ACTIONS), jnp.bool_)

    def observe(st: BPSState):
        rel_land = st.landmarks[None, :, :] - st.pos[:, None, :]  # [N, C, 2]
        obs = jnp.concatenate([st.vel, st.pos, rel_land.reshape(n, -1)], axis=-1)
        if shuffle_obs:
            obs = jnp.take_along_axis(obs, permutation, axis=-1)
        state = jnp.concatenate([st.pos.reshape(-1), st.vel.reshape(-1), st.landmarks.reshape(-1), colour_onehot])
        return obs, state, avail

    def reset_raw(key):
        k_pos, k_land = jax.random.split(key)
        st = BPSState(
            pos=jax.random.uniform(k_pos, (n, 2), jnp.float32, -AGENT_SPAWN, AGENT_SPAWN),
            vel=jnp.zeros((n, 2), jnp.float32),
            landmarks=jax.random.uniform(k_land, (c, 2), jnp.float32, -LANDMARK_SPAWN, LANDMARK_SPAWN),
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
    ax.set_xlim(-3.5, 3.5)
    ax.set_ylim(-3.5, 3.5)
    ax.set_aspect("equal")
    ax.set_title(f"BPS: {len(colours)} agents, {len(agents_per_colour)} colours")
