"""The discretised Gaussian of DDPM's decoder (Ho et al. 2020, Sec. 3.3): exact bin probabilities.

  p(x0 | x1) = prod_i integral over [delta-(x0_i), delta+(x0_i)] of N(x; mu_i, sigma_i^2) dx,

with delta+-(x) = x +- half a bin, and the outermost bins extended to -inf and +inf, so the
probabilities of every value of a pixel sum to one and the bound is a codelength of the
discrete data (no dequantisation, no Jacobian). DDPM's code approximates the normal CDF by
a tanh; here it is the exact CDF, computed in log space on the side of the mean where it
is accurate (``jax.scipy.special.log_ndtr``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import log_ndtr


class PixelBins(NamedTuple):
    """Equal bins whose centres run from ``low`` to ``high`` in model units.

    8-bit data scaled to [-1, 1] as DDPM: ``PixelBins(-1.0, 1.0, 1 / 255)``; with a general
    affine scaling z = p * step + low for p = 0..255, half_width = step / 2.
    """

    low: float
    high: float
    half_width: float


def _log_mass(lo: jax.Array, hi: jax.Array) -> jax.Array:
    """log(Phi(hi) - Phi(lo)) for lo < hi (either may be infinite), accurate in both tails.

    Intervals lying mostly above zero are reflected (Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi)),
    so log_ndtr is always taken where it keeps its precision.
    """
    flip = lo + hi > 0
    a = jnp.where(flip, -hi, lo)
    b = jnp.where(flip, -lo, hi)
    log_b = log_ndtr(b)
    # a = -inf gives exp(-inf) = 0; the safe argument keeps gradients finite there.
    log_a = jnp.where(jnp.isneginf(a), -jnp.inf, log_ndtr(jnp.where(jnp.isneginf(a), 0.0, a)))
    return log_b + jnp.log1p(-jnp.exp(log_a - log_b))


def log_prob(x0: jax.Array, mean: jax.Array, var: jax.Array, bins: PixelBins) -> jax.Array:
    """log p(x0) elementwise, nats, for x0 on the bin centres of ``bins`` (any shape).

    Values within half a bin of ``low`` (``high``) take the whole lower (upper) tail.
    """
    std = jnp.sqrt(var)
    lo = (x0 - bins.half_width - mean) / std
    hi = (x0 + bins.half_width - mean) / std
    lo = jnp.where(x0 < bins.low + bins.half_width, -jnp.inf, lo)
    hi = jnp.where(x0 > bins.high - bins.half_width, jnp.inf, hi)
    return _log_mass(lo, hi)
