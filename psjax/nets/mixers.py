"""Value-decomposition mixers: ``Q_tot = mix(q[..., N], state[..., S]) -> [...]``."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class QMixer(nn.Module):
    """QMIX: a monotonic mixing network whose weights come from hypernetworks on the state.

    abs() on the hypernetwork outputs keeps dQ_tot/dq_i >= 0.
    """

    num_agents: int
    embed: int = 32
    hyper_hidden: int = 64
    init_scale: float = 1.0  # variance scale of the hypernetworks' output layers at init

    @nn.compact
    def __call__(self, q, state):
        out_init = nn.initializers.variance_scaling(self.init_scale, "fan_in", "truncated_normal")

        def hyper(out_dim, name):
            return nn.Sequential([
                nn.Dense(self.hyper_hidden, name=f"{name}_0"), nn.relu,
                nn.Dense(out_dim, kernel_init=out_init, name=f"{name}_1"),
            ])

        w1 = jnp.abs(hyper(self.num_agents * self.embed, "w1")(state))
        w1 = w1.reshape(*state.shape[:-1], self.num_agents, self.embed)
        b1 = nn.Dense(self.embed, name="b1")(state)
        hidden = nn.elu(jnp.einsum("...n,...ne->...e", q, w1) + b1)
        w2 = jnp.abs(hyper(self.embed, "w2")(state))
        b2 = hyper(1, "b2")(state)[..., 0]
        return jnp.sum(hidden * w2, axis=-1) + b2


class VDNMixer(nn.Module):
    """VDN: Q_tot = sum_i q_i (no parameters)."""

    @nn.compact
    def __call__(self, q, state):
        del state
        return q.sum(-1)
