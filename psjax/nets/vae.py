"""The identity VAE of SePS (Christianos et al. 2021), also used by AdaPS.

The encoder sees only the agent's identity (one-hot index) and outputs a Gaussian over a
latent ``z``; the decoder predicts the agent's next observation and reward from ``z``, the
observation and the action. Agents whose transitions and rewards are alike end up with nearby
encoder means, which k-means then groups.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


class IdentityVAE(nn.Module):
    """``one-hot id[..., N] -> 64 -> (mu, logvar)[..., Z]``; ``[z, o, one-hot a] -> 64 -> 64 -> [o', r]`` (or
    whichever of the two ``out`` counts: ``obs_dim + 1`` by default)."""

    num_agents: int
    obs_dim: int
    num_actions: int
    latent: int = 10
    hidden: int = 64
    out: int = 0  # width of the reconstruction; 0 = obs_dim + 1 (next observation and reward)

    def setup(self):
        self.enc_hidden = nn.Dense(self.hidden)
        self.enc_mu = nn.Dense(self.latent)
        self.enc_logvar = nn.Dense(self.latent)
        self.dec = [nn.Dense(self.hidden), nn.Dense(self.hidden), nn.Dense(self.out or self.obs_dim + 1)]

    def encode(self, agent: chex.Array) -> tuple[chex.Array, chex.Array]:
        """``agent int[...] -> (mu, logvar)``, each ``[..., Z]``."""
        h = nn.relu(self.enc_hidden(jax.nn.one_hot(agent, self.num_agents)))
        return self.enc_mu(h), self.enc_logvar(h)

    def decode(self, z: chex.Array, obs: chex.Array, action: chex.Array) -> chex.Array:
        """``z[..., Z], obs[..., D], action int[...] -> [..., out]`` (next observation and / or reward)."""
        x = jnp.concatenate([z, obs, jax.nn.one_hot(action, self.num_actions)], -1)
        x = nn.relu(self.dec[0](x))
        x = nn.relu(self.dec[1](x))
        return self.dec[2](x)

    def __call__(self, key, agent, obs, action):
        """Reparameterised sample: returns ``(prediction[..., D + 1], mu, logvar)``."""
        mu, logvar = self.encode(agent)
        z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape)
        return self.decode(z, obs, action), mu, logvar


def vae_loss(prediction, target, mu, logvar, weight, kl_coef):
    """Summed squared error over the predicted features plus ``kl_coef`` x KL(q(z|id) || N(0, I)),
    both per sample, averaged over the samples with weight 1 (weight 0: padding).

    Shapes: prediction / target ``[B, D + 1]``, mu / logvar ``[B, Z]``, weight ``[B]``.
    """
    chex.assert_equal_shape([prediction, target])
    recon = ((prediction - target) ** 2).sum(-1)
    kl = -0.5 * (1.0 + logvar - mu**2 - jnp.exp(logvar)).sum(-1)
    per_sample = recon + kl_coef * kl
    return (weight * per_sample).sum() / jnp.maximum(weight.sum(), 1.0)


class PolicyVAE(nn.Module):
    """The conditional VAE of MAPD (seed 003): ``[pi(.|o), o] -> 32 -> (mu, logvar)[Z]``;
    ``[z, o] -> 32 -> 32 -> pi(.|o)`` (the action probabilities are reconstructed)."""

    num_actions: int
    latent: int = 10
    hidden: int = 32

    def setup(self):
        self.enc_hidden = nn.Dense(self.hidden)
        self.enc_out = nn.Dense(2 * self.latent)
        self.dec = [nn.Dense(self.hidden), nn.Dense(self.hidden), nn.Dense(self.num_actions)]

    def encode(self, probs: chex.Array, obs: chex.Array) -> tuple[chex.Array, chex.Array]:
        """``probs[..., A], obs[..., D] -> (mu, logvar)``, each ``[..., Z]``."""
        out = self.enc_out(nn.relu(self.enc_hidden(jnp.concatenate([probs, obs], -1))))
        return out[..., : self.latent], out[..., self.latent :]

    def decode(self, z: chex.Array, obs: chex.Array) -> chex.Array:
        """``z[..., Z], obs[..., D] -> [..., A]`` reconstructed action probabilities."""
        x = nn.relu(self.dec[0](jnp.concatenate([z, obs], -1)))
        return self.dec[2](nn.relu(self.dec[1](x)))

    def __call__(self, key, probs, obs):
        """Reparameterised sample: returns ``(reconstruction[..., A], mu, logvar)``."""
        mu, logvar = self.encode(probs, obs)
        z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape)
        return self.decode(z, obs), mu, logvar


def fit_minibatch_epochs(loss_fn, params, lr: float, total: int, batch: int, epochs: int, key: chex.PRNGKey):
    """Adam over ``epochs`` shuffled passes of ``total // batch`` minibatches of row indices.

    ``loss_fn(params, idx[batch], key) -> scalar`` reads its own minibatch from the indices (so the
    data can stay where it is, e.g. inside a ``run_if`` loop). Returns (params, mean loss per epoch
    ``[epochs]``). Shared by the identity VAE (SePS / AdaPS) and MAPD's policy VAE.
    """
    steps = max(total // batch, 1)
    opt = optax.adam(lr)

    def sgd_step(carry, inputs):
        params, opt_state = carry
        idx, k = inputs
        loss, grads = jax.value_and_grad(loss_fn)(params, idx, k)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    def epoch(carry, k):
        k_perm, k_steps = jax.random.split(k)
        idx = jax.random.permutation(k_perm, total)[: steps * batch].reshape(steps, batch)
        carry, losses = jax.lax.scan(sgd_step, carry, (idx, jax.random.split(k_steps, steps)))
        return carry, losses.mean()

    (params, _), losses = jax.lax.scan(epoch, (params, opt.init(params)), jax.random.split(key, epochs))
    return params, losses
