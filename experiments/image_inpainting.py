"""Fig. 5's inpainting measured on held-out images, for each method of ``conditioning.inpaint``.

The central square (half of each side) of ``eval.inpainting_examples`` test images, spread
evenly over the test split, is hidden; each method fills it once per image, and its
conditional bound on the true hidden pixels (``dpm_jax.conditional_bound``) is evaluated:

* squared error per hidden pixel of the filled square against the held-out image, in [0, 1]
  pixel units (the image as dequantised for conditioning; the sample clipped to [0, 1]);
* the bound on log p_method(hidden | known) in bits per hidden pixel on the scaled data
  (the paper's unit) and as an NLL upper bound in bits per dimension of the 8-bit data.

Each image is evaluated with keys folded from its index alone (``dpm_jax.evaluation``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dpm_jax import conditional_bound, conditioning, evaluation, likelihood, terms
from dpm_jax.data.batching import gather_images
from dpm_jax.data.scaling import ImageScaling, preprocess
from experiments import image_eval, image_model
from experiments.image_config import ImageConfig


def central_square(height: int, width: int) -> np.ndarray:
    """Boolean (height, width): True on the central square of half each side (hidden)."""
    rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
    return (np.abs(rows - (height - 1) / 2) < height / 4) & (
        np.abs(cols - (width - 1) / 2) < width / 4
    )


def known_mask(config: ImageConfig, shape: tuple[int, ...]) -> jax.Array:
    """Boolean of ``shape`` (N, H, W, C): False (hidden) on the central square."""
    height, width, _ = config.image_shape()
    return jnp.broadcast_to(jnp.asarray(~central_square(height, width))[None, :, :, None], shape)


def measure_fn(config: ImageConfig, params, scaling: ImageScaling):
    """``(uint8 batch (N, H, W, C), key) -> {f"{method}_{quantity}": (N,)}`` for
    :func:`dpm_jax.evaluation.per_example_keys`: squared error summed over the hidden
    pixels ([0, 1] units) and the conditional bound K_hidden (bits per image)."""
    sched = image_model.schedule(config)
    fn = image_model.reverse_fn_from_params(config, params, sched)

    def measure(pixels, key):
        key_u, *method_keys = jax.random.split(key, 1 + len(conditioning.INPAINT_METHODS))
        z = preprocess(pixels, key_u, scaling)
        known = known_mask(config, z.shape)
        truth = scaling.invert(z)
        out = {}
        for method, k in zip(conditioning.INPAINT_METHODS, method_keys, strict=True):
            k_sample, k_bound = jax.random.split(k)
            filled = conditioning.inpaint(sched, fn, k_sample, z, known, method=method)
            error = jnp.square(jnp.clip(scaling.invert(filled), 0.0, 1.0) - truth)
            out[f"{method}_squared_error"] = jnp.sum(jnp.where(known, 0.0, error), axis=(1, 2, 3))
            bound = conditional_bound.inpainting_bound(sched, fn, k_bound, z, known, method=method)
            out[f"{method}_K_hidden"] = terms.to_bits(bound)
        return out

    return measure


def inpainting_results(config: ImageConfig, params, scaling, test_source, key) -> dict:
    """Both inpainting methods on ``eval.inpainting_examples`` test images, with stderrs over
    the images (``results.json``'s ``inpainting``)."""
    count = min(config.eval.inpainting_examples, len(test_source))
    indices = np.linspace(0, len(test_source) - 1, count).round().astype(int)
    values = evaluation.evaluate(
        evaluation.per_example_keys(measure_fn(config, params, scaling)),
        image_eval.Subset(test_source, indices),
        key,
        batch_size=config.eval.batch_size,
        gather=gather_images,
        desc="inpainting",
    )
    height, width, channels = config.image_shape()
    hidden = int(central_square(height, width).sum()) * channels
    out = {
        "num_images": count,
        "image_indices": "evenly spaced over the test split (numpy linspace, rounded)",
        "hidden_dims_per_image": hidden,
        "squared_error_unit": "per hidden pixel, [0, 1] pixel units; one fill per image",
        "K_hidden_unit": "bits per hidden pixel on the scaled data (the paper's unit); a lower "
        "bound on log2 p_method(hidden | known), one forward trajectory per image",
        "nll_bits_per_dim_8bit_unit": "upper bound on -log2 P_method(8-bit hidden pixels | "
        "known) per hidden dimension: -K_hidden - log2(scale/256)",
    }
    for method in conditioning.INPAINT_METHODS:
        error = values[f"{method}_squared_error"] / hidden
        k = values[f"{method}_K_hidden"]
        if not np.all(np.isfinite(k)):
            raise FloatingPointError(f"{method} inpainting: a non-finite conditional bound.")
        se, se_se = likelihood.mean_and_stderr(error)
        kh, kh_se = likelihood.mean_and_stderr(k / hidden)
        bpd, bpd_se = likelihood.mean_and_stderr(likelihood.bits_per_dim_8bit(k, hidden, scaling))
        out[method] = {
            "squared_error": se,
            "squared_error_stderr": se_se,
            "K_hidden": kh,
            "K_hidden_stderr": kh_se,
            "nll_bits_per_dim_8bit": bpd,
            "nll_bits_per_dim_8bit_stderr": bpd_se,
        }
    return out
