"""Flax Linen reverse models: (x_t, t) in, per-element readout coefficients out."""

from dpm_jax.models.toy import NormalizedRBFNetwork

__all__ = ["NormalizedRBFNetwork"]
