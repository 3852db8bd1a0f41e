"""Cooperative matrix games for learning tests: one-step climbing and penalty games, and
the two-step game of the QMIX paper (Rashid et al. 2018, Fig. 3), which QMIX solves and
VDN cannot: its optimum needs a non-additive value in the second state.

Two agents, three actions, every episode one step long. Each agent observes the constant
``[1.0]`` (agent indication, when wanted, is added by the wrapper); the global state is
``[1.0]``; both agents receive ``payoff[a0, a1]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from psjax.envs.base import Env, EnvSpec, make_env_from_raw

PAYOFFS = {
    # Claus & Boutilier 1998: optimum (0, 0) = 11 sits between -30 penalties.
    "climbing": np.array([[11, -30, 0], [-30, 7, 6], [0, 0, 5]], np.float32),
    # Penalty game with k = -100: optima (0, 2) and (2, 0) = 10, miscoordination costs 100.
    "penalty": np.array([[-100, 0, 10], [0, 2, 0], [10, 0, -100]], np.float32),
}


# Two-step game: agent 0's first action picks state 2A (all 7) or 2B (the matrix below).
TWO_STEP_2A = np.full((2, 2), 7.0, np.float32)
TWO_STEP_2B = np.array([[0, 1], [1, 8]], np.float32)
GAMES = (*PAYOFFS, "two_step")


def make_two_step() -> Env:
    """The two-step game: obs ``[2, 3]`` and state ``[3]`` one-hot of (start, 2A, 2B), 2 actions.

    Step 1 gives no reward and moves to 2A if agent 0 chose action 0, else to 2B; step 2
    pays the chosen state's matrix entry and ends the episode. Optimum: 2B then (1, 1) = 8.
    """
    spec = EnvSpec(name="matrix_two_step", num_agents=2, obs_dim=3, state_dim=3, num_actions=2, max_steps=2,
                   agent_types=(0, 0), team_reward="mean", has_won=False)
    avail = jnp.ones((2, 2), jnp.bool_)
    payoffs = jnp.stack([jnp.asarray(TWO_STEP_2A), jnp.asarray(TWO_STEP_2B)])

    def observe(cell):
        onehot = jax.nn.one_hot(cell, 3)
        return jnp.broadcast_to(onehot, (2, 3)), onehot

    def reset_raw(key):
        return (jnp.zeros((), jnp.int32), *observe(0), avail)

    def step_raw(key, cell, actions):
        second = cell > 0
        next_cell = jnp.where(second, 0, 1 + actions[0])
        r = jnp.where(second, payoffs[jnp.maximum(cell - 1, 0), actions[0], actions[1]], 0.0)
        false = jnp.zeros((), jnp.bool_)
        return (next_cell, *observe(next_cell), avail, jnp.full((2,), r), second, false, false)

    return make_env_from_raw(spec, reset_raw, step_raw)


def make_matrix(game: str = "climbing") -> Env:
    """The matrix game ``game``: obs ``[2, 1]``, state ``[1]``, avail ``[2, 3]`` all True."""
    if game == "two_step":
        return make_two_step()
    if game not in PAYOFFS:
        raise ValueError(f"unknown matrix game {game!r}; allowed: {', '.join(GAMES)}")
    payoff = jnp.asarray(PAYOFFS[game])
    spec = EnvSpec(
        name="matrix", num_agents=2, obs_dim=1, state_dim=1, num_actions=3, max_steps=1,
        agent_types=(0, 0), team_reward="mean", has_won=False,
    )
    obs, state, avail = jnp.ones((2, 1)), jnp.ones((1,)), jnp.ones((2, 3), jnp.bool_)

    def reset_raw(key):
        return jnp.zeros((), jnp.int32), obs, state, avail

    def step_raw(key, env_state, actions):
        r = payoff[actions[0], actions[1]]
        true, false = jnp.ones((), jnp.bool_), jnp.zeros((), jnp.bool_)
        return env_state, obs, state, avail, jnp.full((2,), r), true, false, false

    return make_env_from_raw(spec, reset_raw, step_raw)
