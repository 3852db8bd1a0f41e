"""BDPS's two selectors (seed 000): the GRU-VAE role selector and the GAT group selector.

* ``AdvantageVAE``: a GRU reads an agent's last T_U advantages; its last hidden state h_U feeds a
  Gaussian encoder over a k-dim latent (the role is the argmax of a sample); a linear decoder
  reconstructs the T_U advantages from the latent.
* ``GroupSelector``: one-hot role -> MLP -> GAT over the living agents (k heads, LeakyReLU scores,
  softmax over living agents only) -> GRU -> per-agent values of the m groups.
* ``Torso`` / ``QHead``: RecurrentNet split into its recurrent part and its output layer (same layers and
  initialisers), for the ``bdps_shared_torso`` option (one torso, per-role / per-group heads).
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from psjax.nets.agents import dense, image_torso
from psjax.nets.init import orthogonal

NEG_INF = -1e9
# The selectors' GRUs: LeCun-normal recurrent kernels. psjax's LAPACK-free orthogonal init is a scan per
# matrix, and six more of them (two GRUs) doubled the compile time of BDPS's init for auxiliary networks.
RECURRENT_INIT = nn.initializers.lecun_normal()


class AdvantageVAE(nn.Module):
    """``adv[..., T_U] -> (reconstruction[..., T_U], mu[..., k], logvar[..., k], h_U[..., H])``."""

    seq_len: int  # T_U
    num_roles: int  # k, the latent size
    hidden: int = 32  # GRU and MLP width; h_U has this size

    def setup(self):
        self.gru = nn.GRUCell(self.hidden, recurrent_kernel_init=RECURRENT_INIT)
        self.enc = nn.Dense(self.hidden)
        self.enc_mu = nn.Dense(self.num_roles)
        self.enc_logvar = nn.Dense(self.num_roles)
        self.dec = [nn.Dense(self.hidden), nn.Dense(self.seq_len)]

    def encode(self, adv: chex.Array):
        """``adv[..., T_U] -> (mu[..., k], logvar[..., k], h_U[..., H])``; T_U is small and static: unrolled."""
        h = jnp.zeros((*adv.shape[:-1], self.hidden), adv.dtype)
        for t in range(self.seq_len):
            h, _ = self.gru(h, adv[..., t : t + 1])
        x = nn.relu(self.enc(h))
        return self.enc_mu(x), jnp.clip(self.enc_logvar(x), -8.0, 8.0), h

    def decode(self, z: chex.Array) -> chex.Array:
        """``z[..., k] -> reconstructed advantages [..., T_U]``."""
        return self.dec[1](nn.relu(self.dec[0](z)))

    def __call__(self, key, adv):
        mu, logvar, h_u = self.encode(adv)
        z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape)
        return self.decode(z), mu, logvar, h_u


def gat_attention(wx: chex.Array, a_src: chex.Array, a_dst: chex.Array, alive: chex.Array) -> chex.Array:
    """GAT attention of every agent i over the living agents j, per head.

    ``e_hij = LeakyReLU(a_h^T [W_h x_i || W_h x_j])`` (split as ``a_src . W x_i + a_dst . W x_j``),
    ``alpha_hij = softmax_j`` over living j. Shapes: ``wx[..., N, heads, F]``, ``a_src / a_dst [heads, F]``,
    ``alive[..., N]`` bool -> ``alpha[..., heads, N_i, N_j]``. With no living agent the weights are uniform
    (nothing depends on them then).
    """
    s_i = jnp.einsum("...nhf,hf->...hn", wx, a_src)
    s_j = jnp.einsum("...nhf,hf->...hn", wx, a_dst)
    e = nn.leaky_relu(s_i[..., :, None] + s_j[..., None, :], negative_slope=0.2)  # [..., heads, N, N]
    e = jnp.where(alive[..., None, None, :], e, NEG_INF)
    return jax.nn.softmax(e, axis=-1)


class GroupSelector(nn.Module):
    """``(h[..., N, G], roles int[..., N], alive bool[..., N]) -> (h'[..., N, G], values[..., N, m])``.

    One step of the selector: run when groups are chosen (every T_V steps); ``h`` is its GRU state.
    The GAT has ``num_roles`` heads (as the paper) whose outputs (``gat_out // heads`` each) are concatenated.
    """

    num_roles: int  # k: one-hot input size and number of attention heads
    num_groups: int  # m
    embed: int = 64  # role-embedding MLP width
    gat_out: int = 128  # total GAT output width (split over the heads)
    hidden: int = 64  # GRU state

    def setup(self):
        heads = self.num_roles
        self.per_head = max(1, self.gat_out // heads)
        self.mlp = nn.Dense(self.embed)
        self.w = nn.Dense(heads * self.per_head, use_bias=False)
        self.a_src = self.param("a_src", nn.initializers.lecun_normal(), (heads, self.per_head))
        self.a_dst = self.param("a_dst", nn.initializers.lecun_normal(), (heads, self.per_head))
        self.gru = nn.GRUCell(self.hidden, recurrent_kernel_init=RECURRENT_INIT)
        self.head = nn.Dense(self.num_groups)

    def project(self, roles):
        """``roles int[..., N] -> W x [..., N, heads, F]``."""
        x = nn.relu(self.mlp(jax.nn.one_hot(roles, self.num_roles)))
        return self.w(x).reshape(*roles.shape, self.num_roles, self.per_head)

    def attention(self, roles, alive):
        """``alpha[..., heads, N, N]`` (for inspection and tests)."""
        return gat_attention(self.project(roles), self.a_src, self.a_dst, alive)

    def features(self, roles, alive):
        """The GAT's output ``x[..., N, heads * F]``: no recurrence, so a whole stored sequence at once."""
        wx = self.project(roles)
        alpha = gat_attention(wx, self.a_src, self.a_dst, alive)
        out = nn.elu(jnp.einsum("...hij,...jhf->...ihf", alpha, wx))  # [..., N, heads, F]
        return out.reshape(*out.shape[:-2], -1)

    def recur(self, h, x):
        """The selector's GRU: ``(h[..., N, G], x[..., N, heads * F]) -> h'``."""
        return self.gru(h, x)[0]

    def values(self, h):
        """``h[..., N, G] -> group values [..., N, m]``."""
        return self.head(h)

    def __call__(self, h, roles, alive):
        h = self.recur(h, self.features(roles, alive))
        return h, self.values(h)


class Torso(nn.Module):
    """``(h[..., H], obs[..., D]) -> h'[..., H]``: RecurrentNet's Dense -> ReLU -> GRU (same initialisers)."""

    hidden: int
    obs_shape: tuple[int, ...] = ()

    @nn.compact
    def __call__(self, h, obs):
        x = nn.relu(dense(self.hidden)(image_torso(obs, self.obs_shape)))
        return nn.GRUCell(self.hidden, recurrent_kernel_init=orthogonal(1.0))(h, x)[0]


class QHead(nn.Module):
    """``x[..., F] -> q[..., A]``: RecurrentNet's output layer."""

    num_actions: int

    @nn.compact
    def __call__(self, x):
        return dense(self.num_actions, 1.0)(x)
