"""The image experiments' model: network, schedule, reverse kernel, loss and optimiser.

Pipeline (App. D.2, Sec. 3.2):

  uint8 pixels --dequantise (pixel + u) / 256--> x in [0, 1) --z = x*scale + shift--> z
  (unit variance over the training set) --Gaussian diffusion, T steps--> bound K

The network returns (z_mu, z_Sigma) per pixel; ``model.readout`` (the paper's Eqs. 64-65 or
the released code's variant, ``dpm_jax.parameterisation``) turns them into the reverse
kernel around the forward one.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from dpm_jax import gaussian, optim, parameterisation, schedules
from dpm_jax.data.scaling import ImageScaling, preprocess
from dpm_jax.models import multiscale
from experiments.image_config import ImageConfig


def network(config: ImageConfig) -> multiscale.MultiScaleConvNet:
    """The reverse model of App. D.2 in the configured style and sizes."""
    build = {
        "reference_code": multiscale.reference_code_network,
        "paper": multiscale.paper_network,
    }[config.model.network]
    model = config.model
    return build(
        config.diffusion.steps,
        num_temporal_basis=model.num_temporal_basis,
        conv_features=model.conv_features,
        conv_layers=model.conv_layers,
        num_scales=model.num_scales,
        dense_hidden=model.dense_hidden,
        dense_output=model.dense_output,
        dense_layers=model.dense_layers or None,
        upper_hidden=model.upper_hidden,
        upper_layers=model.upper_layers,
        dtype=jnp.dtype(model.compute_dtype),
    )


def schedule(config: ImageConfig) -> schedules.Schedule:
    """The released code's fixed schedule (beta_1 = 2 step1_beta, then about 1/(T - t + 1))."""
    return schedules.reference_code_schedule(config.diffusion.steps, config.diffusion.step1_beta)


def init_params(config: ImageConfig, key: jax.Array) -> dict:
    dummy = jnp.zeros((1, *config.image_shape()), jnp.float32)
    return network(config).init(key, dummy, jnp.ones((1,), jnp.int32))["params"]


def reverse_fn_from_params(config: ImageConfig, params: dict, sched: schedules.Schedule):
    """``(x_t (N, H, W, C), t (N,)) -> Kernel``: the network's (z_mu, z_Sigma) through the
    configured readout (``parameterisation.from_readout``)."""
    model = network(config)

    def model_fn(x_t, t):
        return model.apply({"params": params}, x_t, t)

    param = parameterisation.from_readout(config.model.readout)
    return parameterisation.make_reverse_fn(param, sched, model_fn)


def pixels_per_image(config: ImageConfig) -> int:
    height, width, _ = config.image_shape()
    return height * width


def loss_fn(config: ImageConfig, scaling: ImageScaling, params, batch, key):
    """-K in bits per pixel (summed over colours): one t per example (weight T - 1).

    ``batch`` holds uint8 pixels; dequantisation noise is fresh every step.
    """
    key_u, key_k = jax.random.split(key)
    x0 = preprocess(batch, key_u, scaling)
    sched = schedule(config)
    fn = reverse_fn_from_params(config, params, sched)
    k = gaussian.bound_estimate(sched, fn, x0, key_k) / pixels_per_image(config)
    return -jnp.mean(k), {"K_per_pixel_estimate": jnp.mean(k)}


def learning_rate(config: ImageConfig) -> optax.Schedule:
    """The released code's decay: x 0.1^(1/1000) every 500 steps, floored at min_learning_rate."""
    return optax.exponential_decay(
        config.train.learning_rate,
        transition_steps=500,
        decay_rate=math.exp(math.log(0.1) / 1000),
        staircase=True,
        end_value=config.train.min_learning_rate,
    )


def make_optimizer(config: ImageConfig) -> optax.GradientTransformation:
    """The released code's RMSProp (decay 0.9, no momentum) with :func:`learning_rate`;
    optional warmup and clipping (``dpm_jax.optim``)."""
    tx = optax.rmsprop(learning_rate(config), decay=0.9, eps=1e-10)
    return optim.with_warmup_and_clipping(
        tx, warmup_steps=config.train.warmup_steps, clip_norm=config.train.grad_clip_norm
    )
