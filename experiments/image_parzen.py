"""Table 2's Parzen-window rows for an image run: the model's and a "perfect model"'s.

An estimate (Goodfellow et al. 2014, ``dpm_jax.parzen``), not a bound; MNIST's only number
in the paper.
"""

from __future__ import annotations

import jax
import numpy as np

from dpm_jax import parzen
from dpm_jax.data.batching import gather_images
from experiments import image_figures
from experiments.image_config import ImageConfig


def parzen_results(config: ImageConfig, params, scaling, train_source, test_source, key) -> dict:
    """Table 2's Parzen-window estimate (Goodfellow et al. 2014) in [0, 1] pixel units.

    ``eval.parzen_samples`` model samples; the bandwidth chosen on the last ``eval.parzen_validation``
    training images; the test set scored. The "perfect model" row uses as many training
    images as samples. Pixels are p/255 for data and clip(x, 0, 1) for samples.
    """
    count = config.eval.parzen_samples
    chunk = min(count, 500)
    sampler = image_figures.sampler(config, params, chunk)
    parts = [np.asarray(sampler(jax.random.fold_in(key, i))) for i in range(-(-count // chunk))]
    samples = np.clip(np.asarray(scaling.invert(np.concatenate(parts)[:count])), 0.0, 1.0)
    n_train = len(train_source)
    n_val = min(config.eval.parzen_validation, n_train // 2)
    validation = gather_images(train_source, np.arange(n_train - n_val, n_train)) / 255.0
    test = gather_images(test_source, np.arange(len(test_source))) / 255.0
    flat = lambda a: a.reshape(len(a), -1).astype(np.float32)  # noqa: E731
    model = parzen.parzen_estimate(flat(samples), flat(validation), flat(test))
    perfect_samples = gather_images(train_source, np.arange(min(count, n_train - n_val)))
    perfect = parzen.parzen_estimate(flat(perfect_samples / 255.0), flat(validation), flat(test))
    return {
        "parzen_log_likelihood_bits": model["log_likelihood_bits"],
        "parzen_log_likelihood_bits_stderr": model["stderr_bits"],
        "parzen_sigma": model["sigma"],
        "parzen_sigma_at_grid_edge": model["sigma_at_grid_edge"],
        "parzen_perfect_model_bits": perfect["log_likelihood_bits"],
        "parzen_perfect_model_bits_stderr": perfect["stderr_bits"],
        "parzen_kind": model["kind"] + f"; {count} samples, bandwidth from the last {n_val} "
        "training images (this run trained on them too), every test image scored",
    }
