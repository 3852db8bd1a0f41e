"""The one environment interface every psjax environment is seen through.

Arrays are agent-stacked: ``obs[N, D]``, ``avail_actions[N, A]``, ``reward[N]``.
``step`` auto-resets: on the step that ends an episode, ``terminated`` / ``truncated``
describe the episode that just ended, the episode statistics hold its totals, and
``obs`` / ``state`` / ``avail_actions`` already belong to the first step of the next one.
``final_obs`` / ``final_state`` / ``final_avail`` keep what the ended episode's last step
observed (before the reset), so that learners can bootstrap through a time limit; on every
other step they equal ``obs`` / ``state`` / ``avail_actions``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp


class EnvSpec(NamedTuple):
    """Static description of an environment (hashable; safe as a jit static)."""

    name: str
    num_agents: int
    obs_dim: int
    state_dim: int
    num_actions: int
    # the time limit: an episode is truncated only when it reaches it (replay items size their time-limit
    # slots by it, ``bootstrap.truncation_slots``); 0 = none
    max_steps: int
    agent_types: tuple[int, ...]  # per agent, e.g. SMAX unit type or speaker/listener
    # how the learners' team reward combines the agents' rewards (mixers' targets, BDPS): "mean" (reward repeated /
    # near-global) or "sum" (per-agent shares)
    team_reward: str
    has_won: bool  # whether ``won`` is meaningful: its win rate is then logged, plotted and comparable
    # (H, W, C) when each observation row starts with a channels-last image flattened in C order
    # (grid observations, for convolutional torsos); () for vector observations
    obs_shape: tuple[int, ...] = ()
    # the evaluation figure a comparison ranks by when none is asked for (``psjax.compare``'s metric=auto):
    # "won" (the win rate, where the task's papers report it: SMAX) or "return"
    headline: str = "return"
    # how the reported episode return (``TimeStep.episode_return``: evaluations, logs, comparisons) combines the
    # agents' rewards: "sum" or "mean"; "" = as ``team_reward`` (``reported_return``; ``with_team_return`` sets it)
    team_return: str = ""


class TimeStep(NamedTuple):
    """What the agents see after a reset or a step. Shapes per environment (no batch)."""

    obs: chex.Array  # [N, D] float32
    state: chex.Array  # [S] float32, global state for mixers / central critics
    avail_actions: chex.Array  # [N, A] bool
    reward: chex.Array  # [N] float32, reward of the step just taken
    terminated: chex.Array  # [] bool, the episode ended in a terminal state (no bootstrap)
    truncated: chex.Array  # [] bool, the episode hit the time limit (not terminal)
    episode_return: chex.Array  # [] float32, team return so far; at done: of the ended episode
    episode_length: chex.Array  # [] int32, steps so far; at done: of the ended episode
    won: chex.Array  # [] bool, at done: whether the ended episode was won (False if no win condition)
    # What the step observed before any automatic reset: on a done step the ended episode's last
    # observation (the bootstrap input after a truncation); otherwise equal to obs / state / avail_actions.
    final_obs: chex.Array  # [N, D] float32
    final_state: chex.Array  # [S] float32
    final_avail: chex.Array  # [N, A] bool

    @property
    def done(self) -> chex.Array:
        return jnp.logical_or(self.terminated, self.truncated)


class Env(NamedTuple):
    """A functional environment: ``reset(key) -> (state, ts)``,
    ``step(key, state, actions[N]) -> (state, ts)``.

    ``state`` is an opaque pytree; both functions are pure and jittable.
    """

    spec: EnvSpec
    reset: Callable[[chex.PRNGKey], tuple[Any, TimeStep]]
    step: Callable[[chex.PRNGKey, Any, chex.Array], tuple[Any, TimeStep]]


def team_reward(spec: EnvSpec, reward: chex.Array) -> chex.Array:
    """Reduce per-agent rewards ``[..., N]`` to the team reward ``[...]``."""
    return reward.sum(-1) if spec.team_reward == "sum" else reward.mean(-1)


def reported_return(spec: EnvSpec) -> str:
    """The reported episode return's convention: "sum" or "mean" over agents."""
    return spec.team_return or spec.team_reward


class AutoResetState(NamedTuple):
    """Wrapper state of :func:`make_env_from_raw`: the raw env state plus running episode stats."""

    env_state: Any  # the raw environment's own state pytree
    episode_return: chex.Array  # [] float32, team return of the running episode
    episode_length: chex.Array  # [] int32, steps taken in the running episode


RawReset = Callable[[chex.PRNGKey], tuple[Any, chex.Array, chex.Array, chex.Array]]
RawStep = Callable[
    [chex.PRNGKey, Any, chex.Array],
    tuple[Any, chex.Array, chex.Array, chex.Array, chex.Array, chex.Array, chex.Array, chex.Array],
]


def select_tree(pred: chex.Array, on_true: Any, on_false: Any) -> Any:
    """Leaf-wise ``where(pred, on_true, on_false)`` over two pytrees of the same structure."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def strong_types(tree: Any) -> Any:
    """Drop JAX weak types from every non-key array leaf.

    A state leaf that is weakly typed after reset but strongly typed after a step (SMAX's
    heuristic enemy state does this) makes ``jit`` retrace on the second call and breaks
    ``lax.scan`` carries; pinning every leaf to a strong dtype keeps reset and step alike.
    """

    def fix(x):
        x = jnp.asarray(x)
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return x
        return jax.lax.convert_element_type(x, x.dtype)

    return jax.tree.map(fix, tree)


def make_env_from_raw(spec: EnvSpec, reset_raw: RawReset, step_raw: RawStep) -> Env:
    """Build an auto-resetting :class:`Env` with episode statistics from two raw functions.

    ``reset_raw(key) -> (env_state, obs[N, D], state[S], avail[N, A])``
    ``step_raw(key, env_state, actions[N]) -> (env_state, obs, state, avail, reward[N],
    terminated[], truncated[], won[])``

    Convention (``episode_length`` counts steps taken): after ``reset`` it is 0; after the
    k-th step of an episode it is k; on the step that ends an episode it is that episode's
    length, and the step after it reports 1. ``episode_return`` follows the same rule with
    the team reward (``team_reward(spec, reward)``), and ``won`` is only ever True on a done
    step. On a done step ``obs`` / ``state`` / ``avail_actions`` come from a fresh reset
    while ``reward`` / ``terminated`` / ``truncated`` / ``won`` / the statistics describe
    the step and episode that just ended, and ``final_obs`` / ``final_state`` / ``final_avail`` hold
    the ended episode's last observation (the raw step's output before the reset).

    ``spec.max_steps`` (when > 0) is enforced here as a time limit (truncation, never on a
    terminal step), so raw environments may leave time limits to this helper; a raw env's own
    ``truncated`` must come at that same limit, never earlier (``tests/test_time_limits.py``).
    """
    n, d, s, a = spec.num_agents, spec.obs_dim, spec.state_dim, spec.num_actions

    def _cast(obs, state, avail):
        obs = jnp.asarray(obs, jnp.float32)
        state = jnp.asarray(state, jnp.float32)
        avail = jnp.asarray(avail).astype(jnp.bool_)
        # Shape checks run at trace time only: they catch a spec that disagrees with its env.
        chex.assert_shape(obs, (n, d))
        chex.assert_shape(state, (s,))
        chex.assert_shape(avail, (n, a))
        return obs, state, avail

    def reset(key: chex.PRNGKey) -> tuple[AutoResetState, TimeStep]:
        env_state, obs, state, avail = reset_raw(key)
        env_state = strong_types(env_state)
        obs, state, avail = _cast(obs, state, avail)
        ret, length = jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32)
        false = jnp.zeros((), jnp.bool_)
        ts = TimeStep(
            obs=obs, state=state, avail_actions=avail, reward=jnp.zeros((n,), jnp.float32),
            terminated=false, truncated=false, episode_return=ret, episode_length=length, won=false,
            final_obs=obs, final_state=state, final_avail=avail,
        )
        return AutoResetState(env_state, ret, length), ts

    def step(
        key: chex.PRNGKey, wstate: AutoResetState, actions: chex.Array
    ) -> tuple[AutoResetState, TimeStep]:
        chex.assert_shape(actions, (n,))
        key_step, key_reset = jax.random.split(key)
        env_state, obs, state, avail, reward, terminated, truncated, won = step_raw(
            key_step, wstate.env_state, actions
        )
        env_state = strong_types(env_state)
        obs, state, avail = _cast(obs, state, avail)
        reward = jnp.asarray(reward, jnp.float32)
        chex.assert_shape(reward, (n,))
        ep_return = wstate.episode_return + team_reward(spec, reward)
        ep_length = wstate.episode_length + 1
        terminated = jnp.asarray(terminated, jnp.bool_)
        truncated = jnp.asarray(truncated, jnp.bool_)
        if spec.max_steps > 0:
            truncated = truncated | (ep_length >= spec.max_steps)
        # A terminal step is never also a truncation: no bootstrapping past a real terminal.
        truncated = truncated & ~terminated
        done = terminated | truncated
        won = jnp.asarray(won, jnp.bool_) & done

        # The reset is computed every step and selected on done: no Python branch on traced values
        # (under vmap a lax.cond would evaluate both sides anyway).
        r_env_state, r_obs, r_state, r_avail = reset_raw(key_reset)
        r_env_state = strong_types(r_env_state)
        r_obs, r_state, r_avail = _cast(r_obs, r_state, r_avail)
        env_state = select_tree(done, r_env_state, env_state)
        final = (obs, state, avail)
        obs, state, avail = select_tree(done, (r_obs, r_state, r_avail), final)

        new_wstate = AutoResetState(
            env_state,
            jnp.where(done, 0.0, ep_return).astype(jnp.float32),
            jnp.where(done, 0, ep_length).astype(jnp.int32),
        )
        ts = TimeStep(
            obs=obs, state=state, avail_actions=avail, reward=reward, terminated=terminated,
            truncated=truncated, episode_return=ep_return.astype(jnp.float32),
            episode_length=ep_length.astype(jnp.int32), won=won,
            final_obs=final[0], final_state=final[1], final_avail=final[2],
        )
        return new_wstate, ts

    return Env(spec=spec, reset=reset, step=step)
