"""Parzen-window log-likelihood estimate (Goodfellow et al. 2014), the protocol of Table 2 (MNIST).

The paper's MNIST numbers (Table 2: diffusion 317 ± 2.7 bits, "perfect model" 349 ± 3.3 bits)
come from the Parzen-window code released with Goodfellow et al. 2014 (``parzen_ll.py``):

1. draw M model samples s_1..s_M (that code: 10,000);
2. the density estimate is an isotropic Gaussian mixture centred on the samples,
   p_sigma(x) = (1/M) sum_m N(x; s_m, sigma^2 I);
3. choose sigma by grid search: the sigma with the highest mean log p_sigma on a validation set
   (that code: the first 1,000 images of MNIST train[50000:60000], grid
   ``np.logspace(-1, 0, 10)`` for pixels in [0, 1]);
4. report the mean of log p_sigma(x) over the test set and its standard error.

The "perfect model" row applies the same code with *training images* as the samples.

What the number is (and is not): an **estimate**, not a bound. It is biased (for finite M it
is biased low in expectation, and sigma is tuned on validation data), and in high dimension it
is known to be unreliable: it can rank models in the opposite order to their true
log-likelihoods, and a model that memorises its training set scores well (Theis, van den Oord
& Bethge 2015, "A note on the evaluation of generative models"). Do not compare it with the
log-likelihood bounds K of Table 1.

Units: per-example log-likelihoods in nats are natural logs of a density over the whole
D-dimensional image, i.e. nats (or bits) *per image*, summed over pixels. The value depends on
the data scale (densities on [0, 1] pixels differ from densities on [0, 255] pixels by
D log 255); use the data scale that the sigma grid was chosen for.

Implementation: the N x M squared distances are ``||x||^2 + ||s||^2 - 2 x.s`` (a matmul at
``Precision.HIGHEST``, after centring both sets on the sample mean to reduce float32
cancellation, clamped at 0). They are streamed over (data_chunk x sample_chunk) blocks with a
running (online) logsumexp, so memory is O(K x data_chunk x sample_chunk) for K bandwidths at
once, never O(N x M) or O(N x M x D). The last chunk of each set is zero-padded and padded
samples are masked with -inf, so every example and every sample counts exactly once.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from dpm_jax.likelihood import mean_and_stderr, nats_to_bits

#: sigma grid of Goodfellow et al.'s ``parzen_ll.py`` defaults (``--sigma_start -1
#: --sigma_end 0 --cross_val 10``): 10 values log-spaced from 0.1 to 1, for pixels in [0, 1].
DEFAULT_SIGMAS = np.logspace(-1.0, 0.0, 10)

#: Default block sizes: a 1000 x 1000 float32 block of distances is 4 MB (per bandwidth).
DEFAULT_SAMPLE_CHUNK = 1000
DEFAULT_DATA_CHUNK = 1000

KIND = (
    "Parzen-window log-likelihood ESTIMATE (Goodfellow et al. 2014 protocol; Table 2 MNIST): "
    "a Gaussian kernel density on model samples with sigma chosen on a validation set. "
    "Not a bound; biased; known to be unreliable in high dimension (Theis et al. 2015). "
    "Units: nats / bits per image (summed over all dimensions)."
)

_DTYPES = {"float32": jnp.float32, "float64": jnp.float64}


# ----------------------------------------------------------------------------- core (jit)


@functools.partial(jax.jit, static_argnames=("sample_chunk", "data_chunk"))
def _parzen_core(samples, data, sigmas, *, sample_chunk, data_chunk):
    """log p_sigma(x_n) for every sigma in ``sigmas``: shape (K, N), nats. No input checks."""
    m_total, dim = samples.shape
    n_total = data.shape[0]
    dtype = samples.dtype

    # Distances are translation invariant; centring shrinks ||x||^2 and ||s||^2 and hence the
    # cancellation in ||x||^2 + ||s||^2 - 2 x.s.
    centre = jnp.mean(samples, axis=0)
    s = samples - centre
    x = data - centre

    n_s = -(-m_total // sample_chunk)
    n_d = -(-n_total // data_chunk)
    s = jnp.pad(s, ((0, n_s * sample_chunk - m_total), (0, 0))).reshape(n_s, sample_chunk, dim)
    s_valid = (jnp.arange(n_s * sample_chunk) < m_total).reshape(n_s, sample_chunk)
    s_sq = jnp.sum(s * s, axis=-1)  # (n_s, sample_chunk)
    x = jnp.pad(x, ((0, n_d * data_chunk - n_total), (0, 0))).reshape(n_d, data_chunk, dim)

    sigmas = sigmas.astype(dtype)
    inv_two_var = 0.5 / jnp.square(sigmas)  # (K,)
    k = sigmas.shape[0]

    def one_data_chunk(xc):  # (data_chunk, dim) -> (K, data_chunk)
        x_sq = jnp.sum(xc * xc, axis=-1)  # (data_chunk,)

        # Online log-sum-exp over sample blocks, kept in squared-distance units: the running
        # minimum d2 (shared by every sigma) and, per sigma, sum_m exp(-(d2_m - min) / 2s^2).
        # Differences are taken on d2 before scaling, so the largest term is exactly 1 and
        # the sum never over- or underflows to a wrong value (scaling first and subtracting
        # the maximum logit lost everything to cancellation at tiny sigmas: +inf).
        def step(carry, block):
            run_min, run_sum = carry  # (data_chunk,), (K, data_chunk)
            sc, sc_sq, valid = block
            cross = jnp.dot(xc, sc.T, precision=jax.lax.Precision.HIGHEST)
            d2 = jnp.maximum(x_sq[:, None] + sc_sq[None, :] - 2.0 * cross, 0.0)
            d2 = jnp.where(valid[None, :], d2, jnp.inf)  # (dc, sc)
            new_min = jnp.minimum(run_min, jnp.min(d2, axis=-1))
            # exp(-(old min - new min) / 2s^2): 0 on the first block (old min = +inf).
            decay = jnp.where(jnp.isfinite(run_min), run_min - new_min, jnp.inf)
            gap = d2 - new_min[:, None]  # >= 0; +inf for padding
            run_sum = run_sum * jnp.exp(-decay[None, :] * inv_two_var[:, None]) + jnp.sum(
                jnp.exp(-gap[None, :, :] * inv_two_var[:, None, None]), axis=-1
            )
            return (new_min, run_sum), None

        init = (jnp.full((data_chunk,), jnp.inf, dtype), jnp.zeros((k, data_chunk), dtype))
        (run_min, run_sum), _ = jax.lax.scan(step, init, (s, s_sq, s_valid))
        return -run_min[None, :] * inv_two_var[:, None] + jnp.log(run_sum)

    lse = jax.lax.map(one_data_chunk, x)  # (n_d, K, data_chunk)
    lse = jnp.moveaxis(lse, 1, 0).reshape(k, n_d * data_chunk)[:, :n_total]
    log_norm = math.log(m_total) + 0.5 * dim * jnp.log(2.0 * math.pi * jnp.square(sigmas))
    return lse - log_norm[:, None]


# ----------------------------------------------------------------------------- input checks


def _as_matrix(name, a, dtype):
    a = jnp.asarray(a)
    if not (jnp.issubdtype(a.dtype, jnp.integer) or jnp.issubdtype(a.dtype, jnp.floating)):
        raise ValueError(f"{name} must be a real numeric array, got dtype {a.dtype}.")
    if a.ndim < 2:
        raise ValueError(
            f"{name} must have shape (count, D) or (count, *image_shape); got shape {a.shape}."
        )
    if a.shape[0] == 0 or math.prod(a.shape[1:]) == 0:
        raise ValueError(f"{name} is empty (shape {a.shape}); need at least one example of D >= 1.")
    a = a.astype(dtype)
    if not bool(jnp.all(jnp.isfinite(a))):
        bad = int(jnp.sum(~jnp.isfinite(a)))
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf).")
    return a


def _check_pair(samples, data, data_name, dtype):
    s = _as_matrix("samples", samples, dtype)
    x = _as_matrix(data_name, data, dtype)
    if s.shape[1:] != x.shape[1:]:
        raise ValueError(
            f"samples and {data_name} must have the same per-example shape; got "
            f"{s.shape[1:]} (samples) vs {x.shape[1:]} ({data_name})."
        )
    return s.reshape(s.shape[0], -1), x.reshape(x.shape[0], -1)


def _check_sigmas(sigmas, dtype):
    arr = np.asarray(sigmas, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"sigmas must be a non-empty 1-D sequence; got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"every sigma must be finite and > 0; got {arr.tolist()}.")
    return jnp.asarray(arr, dtype)


def _check_chunk(name, value):
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    return int(value)


def _resolve_dtype(dtype):
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}; got {dtype!r}.")
    return _DTYPES[dtype]


def _log_likelihoods(samples, data, sigmas, data_name, sample_chunk, data_chunk, dtype):
    """Checked (K, N) log-likelihoods in nats, computed under x64 when dtype == 'float64'."""
    sample_chunk = _check_chunk("sample_chunk", sample_chunk)
    data_chunk = _check_chunk("data_chunk", data_chunk)
    jdtype = _resolve_dtype(dtype)
    with jax.enable_x64(dtype == "float64"):
        s, x = _check_pair(samples, data, data_name, jdtype)
        sig = _check_sigmas(sigmas, jdtype)
        return _parzen_core(
            s,
            x,
            sig,
            sample_chunk=min(sample_chunk, s.shape[0]),
            data_chunk=min(data_chunk, x.shape[0]),
        )


# ----------------------------------------------------------------------------- public API


def parzen_log_likelihood(
    samples,
    data,
    sigma,
    *,
    sample_chunk: int = DEFAULT_SAMPLE_CHUNK,
    data_chunk: int = DEFAULT_DATA_CHUNK,
    dtype: str = "float32",
) -> jax.Array:
    """Per-example Parzen-window log-likelihood in nats, shape (N,).

    log p(x_n) = logsumexp_m(-||x_n - s_m||^2 / (2 sigma^2)) - log M - (D/2) log(2 pi sigma^2).

    Args:
      samples: (M, D) or (M, *shape) model samples (the kernel centres).
      data: (N, D) or (N, *shape) examples to score; same per-example shape as ``samples``.
      sigma: kernel standard deviation, > 0, in the data's units.
      sample_chunk, data_chunk: block sizes; memory is O(data_chunk x sample_chunk).
        They change only the blocking, not the result (up to float rounding).
      dtype: "float32" (default) or "float64" (runs under ``jax.enable_x64``).
    """
    sig = np.asarray(sigma, dtype=np.float64)
    if sig.ndim != 0:
        raise ValueError(f"sigma must be a scalar; got shape {sig.shape}.")
    return _log_likelihoods(samples, data, sig[None], "data", sample_chunk, data_chunk, dtype)[0]


def select_sigma(
    samples,
    validation,
    sigmas=DEFAULT_SIGMAS,
    *,
    sample_chunk: int = DEFAULT_SAMPLE_CHUNK,
    data_chunk: int = DEFAULT_DATA_CHUNK,
    dtype: str = "float32",
) -> tuple[float, np.ndarray]:
    """Grid search for the Parzen bandwidth: the sigma with the highest mean validation log-likelihood.

    All sigmas are evaluated in one pass over the distance blocks. Ties go to the first sigma.

    Returns:
      (best_sigma, mean_ll) where mean_ll[k] is the mean validation log-likelihood (nats per
      example) at sigmas[k], as a float64 NumPy array.
    """
    ll = _log_likelihoods(
        samples, validation, sigmas, "validation", sample_chunk, data_chunk, dtype
    )
    means = np.asarray(ll, dtype=np.float64).mean(axis=1)
    if np.any(np.isnan(means) | (means == np.inf)):  # a log-density is never +inf here
        raise FloatingPointError(f"Parzen log-likelihoods came out NaN or +inf: {means}.")
    if not np.any(np.isfinite(means)):
        raise FloatingPointError(
            "the validation log-likelihood is not finite for any sigma (every sigma too small "
            "for the distances in this data?); widen the sigma grid."
        )
    best = int(np.argmax(means))
    return float(np.asarray(sigmas, dtype=np.float64)[best]), means


def parzen_estimate(
    samples,
    validation,
    test,
    sigmas=DEFAULT_SIGMAS,
    *,
    sample_chunk: int = DEFAULT_SAMPLE_CHUNK,
    data_chunk: int = DEFAULT_DATA_CHUNK,
    dtype: str = "float32",
) -> dict:
    """The full Goodfellow et al. 2014 protocol: choose sigma on ``validation``, score ``test``.

    The standard error is over test examples with ddof = 1 (``likelihood.mean_and_stderr``);
    the original ``parzen_ll.py`` used ddof = 0, a relative difference of 1/(2 N).

    Returns a dict with: ``kind`` (what this number is), ``sigma``, ``log_likelihood_nats``,
    ``stderr_nats``, ``log_likelihood_bits``, ``stderr_bits`` (per image), ``units``,
    ``sigmas`` and ``validation_log_likelihood_nats`` (the validation curve),
    ``sigma_at_grid_edge`` (True if the best sigma is the first or last grid value, i.e. the
    grid may be too narrow), ``n_samples``, ``n_validation``, ``n_test``, ``dim``.
    """
    kw = dict(sample_chunk=sample_chunk, data_chunk=data_chunk, dtype=dtype)
    sigma, curve = select_sigma(samples, validation, sigmas, **kw)
    ll = _log_likelihoods(samples, test, [sigma], "test", sample_chunk, data_chunk, dtype)[0]
    mean, stderr = mean_and_stderr(ll)
    grid = np.asarray(sigmas, dtype=np.float64)
    best = int(np.argmax(grid == sigma))
    shape = np.shape(samples)
    return {
        "kind": KIND,
        "sigma": sigma,
        "log_likelihood_nats": mean,
        "stderr_nats": stderr,
        "log_likelihood_bits": float(nats_to_bits(mean)),
        "stderr_bits": float(nats_to_bits(stderr)),
        "units": "nats and bits per image (log-density of the whole example, summed over dims)",
        "sigmas": grid.tolist(),
        "validation_log_likelihood_nats": curve.tolist(),
        "sigma_at_grid_edge": grid.size > 1 and best in (0, grid.size - 1),
        "n_samples": int(shape[0]),
        "n_validation": int(np.shape(validation)[0]),
        "n_test": int(np.shape(test)[0]),
        "dim": int(math.prod(shape[1:])),
    }
