"""Small reverse models for toy data (App. D.1; DDPM's epsilon-network for 2-D data)."""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from dpm_jax.models.temporal import bump_basis, step_rows
from dpm_jax.models.unet import timestep_embedding


class NormalizedRBFNetwork(nn.Module):
    """The Swiss roll reverse model (App. D.1.1): a normalised radial-basis-function network.

    One hidden layer of ``num_hidden`` normalised Gaussian bumps,
    h_k(x) = softmax_k(-|x - c_k|^2 / (2 w_k^2)), shared across time and by
    both outputs; a separate linear readout per time step t = 1..T maps h to
    (z_mu, z_Sigma), each of the data's dimension. The diffusion readout
    (Eqs. 64-65, including the sigmoid on Sigma) is applied by the caller.

    Call: ``apply(params, x_t, t)`` with x_t (N, D) and t (N,) ints in 1..T;
    returns (z_mu, z_sigma), each (N, D).
    """

    num_steps: int
    num_hidden: int = 16
    init_width: float = 0.5

    @nn.compact
    def __call__(self, x_t: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        chex.assert_rank(x_t, 2)
        chex.assert_shape(t, (x_t.shape[0],))
        dim = x_t.shape[-1]
        centers = self.param("centers", nn.initializers.normal(1.0), (self.num_hidden, dim))
        log_widths = self.param(
            "log_widths",
            nn.initializers.constant(jnp.log(self.init_width)),
            (self.num_hidden,),
        )
        sq_dist = jnp.sum(jnp.square(x_t[:, None, :] - centers[None]), axis=-1)  # (N, H)
        hidden = jax.nn.softmax(-0.5 * sq_dist * jnp.exp(-2.0 * log_widths), axis=-1)
        # Per-step readouts, zero-initialised: the reverse kernel starts at the forward one.
        kernel = self.param(
            "readout_kernel", nn.initializers.zeros, (self.num_steps, self.num_hidden, 2 * dim)
        )
        bias = self.param("readout_bias", nn.initializers.zeros, (self.num_steps, 2 * dim))
        out = jnp.einsum("nh,nho->no", hidden, step_rows(kernel, t)) + step_rows(bias, t)
        return out[:, :dim], out[:, dim:]


class HeartbeatMLP(nn.Module):
    """The binary heartbeat reverse model (App. D.1.2): an MLP with sigmoid units.

    ``num_layers`` hidden layers of ``num_hidden`` sigmoid units shared across
    time, then a linear readout for each time step t = 1..T giving one logit
    perturbation per bit (the caller turns it into Bernoulli rates).

    ``readout_basis = 0``: every step's readout is free (App. D.1.2 as written).
    ``readout_basis = J > 0``: step t's readout weights are sum_j g_j(t) W_j over
    J normalised Gaussian bumps in time with the width of Eq. 63 (the device the
    paper uses for its image models, Eqs. 62-63), so neighbouring steps share
    what they learn.

    Call: ``apply(params, x_t, t)`` with x_t (N, D) and t (N,) ints in 1..T; returns (N, D).
    """

    num_steps: int
    num_hidden: int = 50
    num_layers: int = 3
    readout_basis: int = 0

    @nn.compact
    def __call__(self, x_t: jax.Array, t: jax.Array) -> jax.Array:
        chex.assert_rank(x_t, 2)
        chex.assert_shape(t, (x_t.shape[0],))
        dim = x_t.shape[-1]
        h = x_t
        for _ in range(self.num_layers):
            h = jax.nn.sigmoid(nn.Dense(self.num_hidden)(h))
        rows = self.readout_basis or self.num_steps
        kernel = self.param("readout_kernel", nn.initializers.zeros, (rows, self.num_hidden, dim))
        bias = self.param("readout_bias", nn.initializers.zeros, (rows, dim))
        if not self.readout_basis:
            return jnp.einsum("nh,nhd->nd", h, step_rows(kernel, t)) + step_rows(bias, t)
        g = step_rows(bump_basis(self.num_steps, self.readout_basis, relative_width=1.0), t)
        per_bump = jnp.einsum("nh,jhd->njd", h, kernel) + bias  # (N, J, D)
        return jnp.einsum("nj,njd->nd", g, per_bump)


class EpsilonMLP(nn.Module):
    """A DDPM-style epsilon-network for low-dimensional data: an MLP conditioned on t.

    t enters as DDPM's sinusoidal embedding (``unet.timestep_embedding``) through a two-layer
    swish MLP, added to each hidden layer (as the U-Net adds it to each residual block);
    ``num_layers`` swish layers of ``num_hidden`` units; a zero-initialised linear output,
    so training starts from eps_hat = 0.

    Call: ``apply(params, x_t, t)`` with x_t (N, D) and t (N,) ints; returns eps_hat (N, D).
    """

    num_hidden: int = 128
    num_layers: int = 3
    embedding_dim: int = 64

    @nn.compact
    def __call__(self, x_t: jax.Array, t: jax.Array) -> jax.Array:
        chex.assert_rank(x_t, 2)
        chex.assert_shape(t, (x_t.shape[0],))
        emb = timestep_embedding(t, self.embedding_dim)
        emb = nn.Dense(self.num_hidden)(jax.nn.swish(nn.Dense(self.num_hidden)(emb)))
        h = x_t
        for _ in range(self.num_layers):
            h = jax.nn.swish(nn.Dense(self.num_hidden)(h) + emb)
        return nn.Dense(x_t.shape[-1], kernel_init=nn.initializers.zeros)(h)
