"""Flax Linen reverse models: (x_t, t) in, per-element readout coefficients out."""

from dpm_jax.models.toy import HeartbeatMLP, NormalizedRBFNetwork

__all__ = ["HeartbeatMLP", "NormalizedRBFNetwork"]
