"""One-step cooperative matrix games (climbing, penalty) for learning tests.

Two agents, three actions, every episode one step long. Each agent observes the constant
``[1.0]`` (agent indication, when wanted, is added by the wrapper); the global state is
``[1.0]``; both agents receive ``payoff[a0, a1]``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from psjax.envs.base import Env, EnvSpec, make_env_from_raw

PAYOFFS = {
    # Claus & Boutilier 1998: optimum (0, 0) = 11 sits between -30 penalties.
    "climbing": np.array([[11, -30, 0], [-30, 7, 6], [0, 0, 5]], np.float32),
    # Penalty game with k = -100: optima (0, 2) and (2, 0) = 10, miscoordination costs 100.
    "penalty": np.array([[-100, 0, 10], [0, 2, 0], [10, 0, -100]], np.float32),
}


def make_matrix(game: str = "climbing") -> Env:
    """The matrix game ``game``: obs ``[2, 1]``, state ``[1]``, avail ``[2, 3]`` all True."""
    if game not in PAYOFFS:
        raise ValueError(f"unknown matrix game {game!r}; allowed: {', '.join(PAYOFFS)}")
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
