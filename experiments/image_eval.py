"""The image experiments' evaluation: the exact test bound in both units.

K is reported in the paper's unit, bits per pixel summed over colours on the scaled data z,
and as a negative log-likelihood in bits per dimension of the 8-bit data (the unit of DDPM
and VDM; ``likelihood.bits_per_dim_8bit``).
"""

from __future__ import annotations

import jax
import numpy as np

from dpm_jax import baselines, evaluation, gaussian, likelihood, terms
from dpm_jax.data.batching import gather_images
from dpm_jax.data.scaling import ImageScaling, preprocess
from experiments import common, image_model
from experiments.image_config import ImageConfig


def exact_bound_fn(config: ImageConfig, params, scaling: ImageScaling):
    """Jitted ``(uint8 batch, key) -> ({"K", *terms.TERM_NAMES}, log2 N(z; 0, I))``, bits
    per example.

    The key draws the dequantisation noise and every forward sample x^(t).
    """
    sched = image_model.schedule(config)
    fn = image_model.reverse_fn_from_params(config, params, sched)

    @jax.jit
    def bound(pixels, key):
        key_u, key_k = jax.random.split(key)
        z = preprocess(pixels, key_u, scaling)
        bound = terms.in_bits(gaussian.bound_terms(sched, fn, z, key_k))
        return bound, likelihood.gaussian_null_log_likelihood(z)

    return bound


def evaluate(config: ImageConfig, params, scaling, test_source, key) -> dict:
    """Exact K over every test example (or the first ``eval.num_test``), both units, with stderrs.

    Test image i is dequantised and noised with keys folded from i alone
    (``dpm_jax.evaluation``), so K depends neither on the batch size nor on the devices.
    """
    samples = config.eval.forward_samples
    (values, null), limit = over_test_images(
        exact_bound_fn(config, params, scaling), config.eval, test_source, key, "exact K"
    )
    k = values["K"]
    if not np.all(np.isfinite(k)):
        raise FloatingPointError(
            f"{np.sum(~np.isfinite(k))} test examples have a non-finite bound; the checkpoint "
            "is unusable for evaluation."
        )
    pixels = image_model.pixels_per_image(config)
    dims = pixels * config.image_shape()[2]
    k_pix, k_pix_se = likelihood.mean_and_stderr(k / pixels)
    kn, kn_se = likelihood.mean_and_stderr((k - null) / pixels)
    bpd, bpd_se = likelihood.mean_and_stderr(likelihood.bits_per_dim_8bit(k, dims, scaling))
    null_bpd, null_bpd_se = likelihood.mean_and_stderr(
        likelihood.bits_per_dim_8bit(null, dims, scaling)
    )
    # L_T >= 0 and every KL term >= 0, so K <= -L_0: Eq. 44's fixed first step caps K
    # whatever the network learns (its variance beta_1 sets the finest resolution).
    ceiling = -values["decoder_L_0"]
    cap, cap_se = likelihood.mean_and_stderr(ceiling / pixels)
    floor, floor_se = likelihood.mean_and_stderr(
        likelihood.bits_per_dim_8bit(ceiling, dims, scaling)
    )
    return {
        "K": k_pix,
        "K_stderr": k_pix_se,
        "K_kind": common.exact_kind(samples, "dequantisation and forward sample x^(t)"),
        "forward_samples": samples,
        "bound_terms": common.bound_terms_results(
            values, "bits per pixel (the paper's unit, colours summed)", per=pixels
        ),
        "L_null": float(np.mean(null / pixels)),
        "K_minus_L_null": kn,
        "K_minus_L_null_stderr": kn_se,
        "nll_bits_per_dim_8bit": bpd,
        "nll_bits_per_dim_8bit_stderr": bpd_se,
        "nll_bits_per_dim_8bit_kind": "upper bound on -log2 P(8-bit pixels) per dimension: "
        "-K/D - log2(scale/256) (uniform dequantisation plus the scaling's Jacobian)",
        "L_null_nll_bits_per_dim_8bit": null_bpd,
        "L_null_nll_bits_per_dim_8bit_stderr": null_bpd_se,
        "L_null_nll_bits_per_dim_8bit_kind": "the isotropic Gaussian N(0, I) on the same "
        "dequantised, scaled test images, in the same unit: an upper bound like the model's",
        "K_ceiling": cap,
        "K_ceiling_stderr": cap_se,
        "K_ceiling_kind": "-L_0, the largest K any reverse network can reach with this schedule "
        "(L_T and the KL terms are >= 0; L_0 is Eq. 44's fixed first step, closed form)",
        "nll_bits_per_dim_8bit_floor": floor,
        "nll_bits_per_dim_8bit_floor_stderr": floor_se,
        "num_test_examples": int(limit),
        "test_set_size": int(len(test_source)),
    }


def over_test_images(bound_fn, eval_config, test_source, key, desc: str, gather=gather_images):
    """``bound_fn(batch, key)`` over the first ``eval_config.num_test`` test images (0:
    all), averaged over ``eval_config.forward_samples`` draws, with per-image keys
    (``dpm_jax.evaluation``): (its outputs as float64 (n,) arrays, n). A batch is what
    ``gather(source, indices)`` returns: uint8 images by default."""
    num_test = eval_config.num_test
    limit = len(test_source) if num_test == 0 else min(num_test, len(test_source))
    source = test_source if limit == len(test_source) else Subset(test_source, range(limit))
    values = evaluation.evaluate(
        evaluation.averaged_over_draws(
            evaluation.per_example_keys(bound_fn), eval_config.forward_samples
        ),
        source,
        key,
        batch_size=eval_config.batch_size,
        gather=gather,
        desc=desc,
    )
    return values, limit


class Subset:
    """The examples of ``source`` at ``indices`` (a prefix, or any selection), in that order."""

    def __init__(self, source, indices):
        self.source, self.indices = source, [int(i) for i in indices]

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.source[self.indices[i]]

    def __getitems__(self, keys):
        if any(not 0 <= k < len(self) for k in keys):
            raise IndexError(keys)
        chosen = [self.indices[k] for k in keys]
        getitems = getattr(self.source, "__getitems__", None)
        return getitems(chosen) if getitems else [self.source[k] for k in chosen]


def pixel_categorical_results(train_source, test_source, num_test: int) -> dict:
    """The independent per-pixel 256-way categorical model fitted to every training image
    (add-one smoothing; ``dpm_jax.baselines``): its exact NLL of the first ``num_test``
    test images, bits per dimension of the 8-bit data, with its standard error."""
    train = gather_images(train_source, np.arange(len(train_source)))
    test = gather_images(test_source, np.arange(num_test))
    nll = baselines.pixel_categorical_nll_bits_per_dim(baselines.fit_pixel_categorical(train), test)
    mean, se = likelihood.mean_and_stderr(nll)
    return {
        "pixel_categorical_nll_bits_per_dim_8bit": mean,
        "pixel_categorical_nll_bits_per_dim_8bit_stderr": se,
        "pixel_categorical_kind": "exact -log2 P per dimension under independent per-pixel "
        f"256-way categoricals fitted to the {len(train_source)} training images (add-one "
        "smoothing): the floor any image model must beat",
    }
