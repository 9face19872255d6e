"""Flax Linen reverse models: (x_t, t) in, per-element readout coefficients out."""

from dpm_jax.models.multiscale import (
    PAPER_STYLE,
    REFERENCE_CIFAR10_SIZES,
    REFERENCE_CODE_STYLE,
    REFERENCE_MNIST_SIZES,
    MultiScaleConv,
    MultiScaleConvNet,
    paper_network,
    reference_code_network,
    reference_leaky_relu,
)
from dpm_jax.models.temporal import bump_basis, temporal_readout
from dpm_jax.models.toy import EpsilonMLP, HeartbeatMLP, NormalizedRBFNetwork
from dpm_jax.models.unet import UNet, UNetConfig

__all__ = [
    "PAPER_STYLE",
    "REFERENCE_CIFAR10_SIZES",
    "REFERENCE_CODE_STYLE",
    "REFERENCE_MNIST_SIZES",
    "EpsilonMLP",
    "HeartbeatMLP",
    "MultiScaleConv",
    "MultiScaleConvNet",
    "NormalizedRBFNetwork",
    "UNet",
    "UNetConfig",
    "bump_basis",
    "paper_network",
    "reference_code_network",
    "reference_leaky_relu",
    "temporal_readout",
]
