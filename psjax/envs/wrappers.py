"""Observation / action-space wrappers: agent indication and padding of heterogeneous spaces.

Agent indication (FuPS+id) appends a fixed per-agent code to every observation.
Padding (Terry et al. 3.2-3.3) lets agents with different observation sizes and action
counts share one network: observations are zero-padded to the largest size, the action
head has the largest action count, and actions beyond an agent's own space are unavailable.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import chex
import jax.numpy as jnp
import numpy as np

from psjax.envs.base import Env, RawReset, RawStep, reported_return

AGENT_ID_KINDS = ("none", "onehot", "binary")


def agent_id_features(num_agents: int, kind: str) -> np.ndarray:
    """Per-agent indication codes ``[N, K]`` float32.

    ``onehot``: K = N, row i is e_i. ``binary``: K = max(1, ceil(log2 N)), row i is the
    binary code of i, most significant bit first (agent 2 of 4 -> [1, 0]). ``none``: K = 0.
    """
    if kind == "none":
        return np.zeros((num_agents, 0), np.float32)
    if kind == "onehot":
        return np.eye(num_agents, dtype=np.float32)
    if kind == "binary":
        bits = max(1, (num_agents - 1).bit_length())  # == ceil(log2 N), exact in integers
        idx = np.arange(num_agents)[:, None]
        shifts = np.arange(bits - 1, -1, -1)[None, :]
        return ((idx >> shifts) & 1).astype(np.float32)
    raise ValueError(f"unknown agent indication {kind!r}; allowed: {', '.join(AGENT_ID_KINDS)}")


def map_timesteps(env: Env, spec, fn) -> Env:
    """``env`` with ``fn(ts) -> ts`` applied to every TimeStep that ``reset`` and ``step`` return."""

    def reset(key):
        state, ts = env.reset(key)
        return state, fn(ts)

    def step(key, state, actions):
        state, ts = env.step(key, state, actions)
        return state, fn(ts)

    return Env(spec=spec, reset=reset, step=step)


def map_observations(ts, fn):
    """``ts`` with ``fn(obs[N, D]) -> [N, D']`` applied to ``obs`` and ``final_obs`` alike (every observation
    wrapper must change both, or the bootstrap after a time limit reads an unwrapped observation)."""
    return ts._replace(obs=fn(ts.obs), final_obs=fn(ts.final_obs))


def with_team_return(env: Env, convention: str) -> Env:
    """Report ``episode_return`` as the ``convention`` ("sum" or "mean") over agents of their rewards. Only the
    reported figure changes (the learners' team reward stays ``spec.team_reward``): sum = N x mean exactly, since the
    running return is the per-step team reward summed over the episode."""
    if convention not in ("sum", "mean"):
        raise ValueError(f"team return convention {convention!r}; allowed: 'sum', 'mean'")
    current = reported_return(env.spec)
    spec = env.spec._replace(team_return=convention)
    n = env.spec.num_agents
    scale = 1.0 if convention == current else (float(n) if convention == "sum" else 1.0 / n)
    if scale == 1.0:
        return env._replace(spec=spec)
    return map_timesteps(env, spec, lambda ts: ts._replace(episode_return=ts.episode_return * scale))


def with_agent_id(env: Env, kind: str) -> Env:
    """Append agent indication codes to ``obs``: ``[N, D] -> [N, D + K]``; spec.obs_dim follows."""
    codes = agent_id_features(env.spec.num_agents, kind)
    if codes.shape[1] == 0:
        return env
    spec = env.spec._replace(obs_dim=env.spec.obs_dim + codes.shape[1])

    def add(obs):
        return jnp.concatenate([obs, jnp.asarray(codes, obs.dtype)], axis=-1)

    return map_timesteps(env, spec, lambda ts: map_observations(ts, add))


class Padding(NamedTuple):
    """Per-agent observation sizes and action counts of a heterogeneous environment."""

    obs_sizes: tuple[int, ...]
    action_counts: tuple[int, ...]

    @property
    def obs_dim(self) -> int:
        return max(self.obs_sizes)

    @property
    def num_actions(self) -> int:
        return max(self.action_counts)

    def pad_obs(self, obs: Sequence[chex.Array]) -> chex.Array:
        """Per-agent observations ``[D_i]`` -> zero-padded ``[N, max D_i]`` float32."""
        rows = []
        for o, size in zip(obs, self.obs_sizes, strict=True):
            chex.assert_shape(o, (size,))
            rows.append(jnp.pad(jnp.asarray(o, jnp.float32), (0, self.obs_dim - size)))
        return jnp.stack(rows)

    def own_actions(self) -> np.ndarray:
        """``[N, max A_i]`` bool: True where the action lies inside the agent's own space."""
        return np.arange(self.num_actions)[None, :] < np.asarray(self.action_counts)[:, None]

    def pad_avail(self, avail: Sequence[chex.Array] | None) -> chex.Array:
        """Per-agent availability ``[A_i]`` (or None = all available) -> ``[N, max A_i]`` bool,
        False beyond each agent's own action count."""
        if avail is None:
            return jnp.asarray(self.own_actions())
        rows = []
        for m, count in zip(avail, self.action_counts, strict=True):
            chex.assert_shape(m, (count,))
            rows.append(jnp.pad(jnp.asarray(m).astype(jnp.bool_), (0, self.num_actions - count)))
        return jnp.stack(rows)

    def clip_actions(self, actions: chex.Array) -> chex.Array:
        """``[N]`` actions clipped into each agent's own range. Padded actions are masked, so only a
        policy that ignores ``avail_actions`` sends them; clipping keeps the env's indexing in bounds."""
        return jnp.minimum(actions, jnp.asarray(self.action_counts, actions.dtype) - 1)


HetReset = Callable[[chex.PRNGKey], tuple[Any, Sequence[chex.Array], chex.Array, Sequence[chex.Array] | None]]
HetStep = Callable[[chex.PRNGKey, Any, chex.Array], tuple[Any, ...]]


def pad_raw(padding: Padding, reset_het: HetReset, step_het: HetStep) -> tuple[RawReset, RawStep]:
    """Turn heterogeneous raw functions into the stacked raw form of ``make_env_from_raw``.

    ``reset_het(key) -> (env_state, [obs_i [D_i]], state[S], [avail_i [A_i]] or None)``
    ``step_het(key, env_state, actions[N]) -> (env_state, [obs_i], state, [avail_i] or None,
    reward[N], terminated, truncated, won)``; the actions it receives are clipped per agent.
    Build the spec with ``obs_dim=padding.obs_dim`` and ``num_actions=padding.num_actions``.
    """

    def reset_raw(key):
        env_state, obs, state, avail = reset_het(key)
        return env_state, padding.pad_obs(obs), state, padding.pad_avail(avail)

    def step_raw(key, env_state, actions):
        env_state, obs, state, avail, *rest = step_het(key, env_state, padding.clip_actions(actions))
        return (env_state, padding.pad_obs(obs), state, padding.pad_avail(avail), *rest)

    return reset_raw, step_raw


# ------------------------------------------------------------------ image agent indication

IMAGE_INDICATION_KINDS = ("none", "identity", "geometric", "binary", "inversion", "inversion_replacement")


def indication_channels(channels: int, num_agents: int, kind: str) -> int:
    """Channel count after ``image_indication`` of a ``channels``-channel image."""
    extra = {
        "none": 0, "identity": 0, "geometric": 1, "inversion": channels, "inversion_replacement": 0,
        "binary": agent_id_features(num_agents, "binary").shape[1] if kind == "binary" else 0,
    }
    if kind not in extra:
        raise ValueError(f"unknown image indication {kind!r}; allowed: {', '.join(IMAGE_INDICATION_KINDS)}")
    return channels + extra[kind]


def image_indication(img: chex.Array, kind: str) -> chex.Array:
    """Agent indication on channels-last images (Terry et al. 4.2): ``img[N, H, W, C]`` in [0, 1]
    -> ``[N, H, W, C']``, ``C'`` = ``indication_channels(C, N, kind)``.

    The two-kind methods (geometric, inversion, inversion with replacement) split the agents by
    index parity, ``g_i = i mod 2``: the paper's two agent types.
    ``identity`` / ``none``: unchanged (the control). ``geometric``: one extra channel, the
    checkerboard ``(x + y + g_i) mod 2`` (the odd agents' board is the even agents' shifted by one
    pixel). ``binary``: ``ceil(log2 N)`` extra channels, channel k constantly bit k of ``i`` (most
    significant first). ``inversion``: C extra channels, ``1 - img`` for odd agents and a copy of
    ``img`` for even ones. ``inversion_replacement``: the same channels replace the image.
    """
    n, h, w, c = img.shape
    odd = (jnp.arange(n) % 2).astype(img.dtype)[:, None, None, None]  # [N, 1, 1, 1]
    if kind in ("none", "identity"):
        return img
    if kind == "geometric":
        board = (jnp.arange(h)[:, None] + jnp.arange(w)[None, :]) % 2  # [H, W]
        chan = (board[None, :, :, None] + odd) % 2
        return jnp.concatenate([img, chan.astype(img.dtype)], axis=-1)
    if kind == "binary":
        bits = jnp.asarray(agent_id_features(n, "binary"), img.dtype)  # [N, K]
        chans = jnp.broadcast_to(bits[:, None, None, :], (n, h, w, bits.shape[1]))
        return jnp.concatenate([img, chans], axis=-1)
    inverted = odd * (1.0 - img) + (1.0 - odd) * img
    if kind == "inversion":
        return jnp.concatenate([img, inverted], axis=-1)
    if kind == "inversion_replacement":
        return inverted
    raise ValueError(f"unknown image indication {kind!r}; allowed: {', '.join(IMAGE_INDICATION_KINDS)}")


def with_image_indication(env: Env, kind: str) -> Env:
    """Apply ``image_indication`` to the image part of ``obs`` (the first ``prod(spec.obs_shape)``
    features of each row; anything after it, such as appended agent ids, is kept after the new
    image). ``spec.obs_shape`` and ``spec.obs_dim`` follow."""
    if kind in ("none", "identity"):
        return env
    if len(env.spec.obs_shape) != 3:
        raise ValueError(f"image indication {kind!r} needs image observations (spec.obs_shape = (H, W, C)), "
                         f"got obs_shape={env.spec.obs_shape}")
    n = env.spec.num_agents
    h, w, c = env.spec.obs_shape
    size = h * w * c
    c2 = indication_channels(c, n, kind)
    spec = env.spec._replace(obs_shape=(h, w, c2), obs_dim=env.spec.obs_dim - size + h * w * c2)

    def change(obs):
        img = obs[:, :size].reshape(n, h, w, c)
        new = image_indication(img, kind).reshape(n, -1)
        return jnp.concatenate([new, obs[:, size:]], axis=-1)

    return map_timesteps(env, spec, lambda ts: map_observations(ts, change))
