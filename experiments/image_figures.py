"""The image experiments' figures: the sample grid (App. Fig. 1) and posterior sampling
(denoising, Fig. 3; inpainting, Fig. 5) on test images, in [0, 1] pixel units."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dpm_jax import conditioning, gaussian, plotting, rundir, train_state
from dpm_jax.data.batching import gather_images
from dpm_jax.data.scaling import preprocess
from experiments import image_inpainting, image_model
from experiments.image_config import ImageConfig


def sampler(config: ImageConfig, params, count: int):
    """Jitted ``key -> count`` model samples x^(0) in model units (N, H, W, C)."""
    sched = image_model.schedule(config)
    fn = image_model.reverse_fn_from_params(config, params, sched)
    shape = (count, *config.image_shape())
    return jax.jit(lambda k: gaussian.sample(sched, fn, k, shape))


def sample_grid(config: ImageConfig, params, scaling, key, path: Path, name: str) -> None:
    """App. Fig. 1: ``eval.num_samples`` samples from the model, in [0, 1] pixel units."""
    z = sampler(config, params, config.eval.num_samples)(key)
    if jax.process_index() == 0:  # every process samples (global arrays), one writes
        plotting.image_grid(path, np.asarray(scaling.invert(z)), title=f"{name} samples")


def posterior_figure(
    config: ImageConfig, params, scaling, test_source, key, path: Path, name: str
) -> None:
    """Figs. 3 and 5: denoising at SNR 1 and inpainting of a central square, on test images.

    Rows: holdout images; observed with unit-variance Gaussian noise (SNR 1 on unit-variance
    data); denoised by the paper's factor method (Fig. 3, approximate); denoised exactly
    (``conditioning.denoise_exact``); the central square (half the side) hidden; inpainted by
    clamping the known pixels (Fig. 5) and by re-noising them to each step's level
    (``conditioning.inpaint(method="renoise")``). All shown in [0, 1] pixel units.
    """
    n = min(config.eval.num_posterior_examples, len(test_source))
    pixels = gather_images(test_source, np.arange(n))
    keys = jax.random.split(key, 5)
    x0 = preprocess(pixels, keys[0], scaling)
    y = x0 + jax.random.normal(keys[1], x0.shape)
    sched = image_model.schedule(config)
    fn = image_model.reverse_fn_from_params(config, params, sched)
    known = image_inpainting.known_mask(config, x0.shape)
    paper = jax.jit(lambda k: conditioning.denoise(sched, fn, k, y, 1.0))(keys[2])
    exact = jax.jit(lambda k: conditioning.denoise_exact(sched, fn, k, y, 1.0))(keys[3])
    filled = jax.jit(lambda k: conditioning.inpaint(sched, fn, k, x0, known))(keys[4])
    renoised = jax.jit(lambda k: conditioning.inpaint(sched, fn, k, x0, known, method="renoise"))(
        jax.random.fold_in(key, 5)
    )
    show = lambda z: np.asarray(scaling.invert(z))  # noqa: E731
    if jax.process_index() != 0:  # every process samples (global arrays), one writes
        return
    plotting.image_rows(
        path,
        [
            ("holdout", show(x0)),
            ("observed, SNR 1", show(y)),
            ("denoised, paper's factor method (Fig. 3)", show(paper)),
            ("denoised, exact (start at the matched noise level)", show(exact)),
            ("central square hidden", show(jnp.where(known, x0, scaling.apply(0.5)))),
            ("inpainted, known pixels clamped (Fig. 5)", show(filled)),
            ("inpainted, known pixels re-noised", show(renoised)),
        ],
        title=f"{name}: posterior sampling",
    )


def draw_figures(name: str, config, state, scaling, test_source, keys, workdir: Path) -> list[Path]:
    """The sample grid (App. Fig. 1) and the posterior figure (Figs. 3, 5) of this checkpoint
    of experiment ``name``."""
    step = int(state.step)
    params = train_state.eval_params(state, config.train.ema_decay)
    grid = Path(workdir) / "figures" / f"{name}_samples_step{step}.png"
    sample_grid(config, params, scaling, keys["figure"], grid, name)
    posterior = Path(workdir) / "figures" / f"{name}_posterior_step{step}.png"
    key = jax.random.fold_in(keys["figure"], 1)
    posterior_figure(config, params, scaling, test_source, key, posterior, name)
    return [grid, posterior]


def learning_curve_figure(name: str, workdir: Path, results: dict, scaling, outdir: Path):
    """``outdir/figures/<name>_learning_curve.png``: the training bound estimate per pixel
    (``workdir``'s ``metrics.jsonl``) against the held-out exact K, the schedule's ceiling and
    the baselines, all in bits per pixel on the scaled data; the per-pixel categorical's NLL
    is converted as K = -(NLL + log2(scale/256)). Returns ``[path]``, or ``[]`` when the run
    logged no metrics."""
    path = Path(outdir) / "figures" / f"{name}_learning_curve.png"
    metrics = Path(workdir) / rundir.METRICS_FILE
    records = (
        [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    )
    records = [r for r in records if "K_per_pixel_estimate" in r]
    if not records or jax.process_index() != 0:
        return []
    shift = math.log2(scaling.scale / 256)
    levels = {"held-out K (exact)": results["K"]}
    if "K_ceiling" in results:
        levels["ceiling -L_0 (fixed first step)"] = results["K_ceiling"]
    if "pixel_categorical_nll_bits_per_dim_8bit" in results:
        levels["per-pixel categorical, as K"] = -(
            results["pixel_categorical_nll_bits_per_dim_8bit"] + shift
        )
    levels["L_null (N(0, I))"] = results["L_null"]
    plotting.learning_curve(
        path,
        np.array([r["step"] for r in records]),
        np.array([r["K_per_pixel_estimate"] for r in records]),
        levels,
        ylabel="K, bits per pixel (scaled data; higher is better)",
        title=f"{name}: training bound estimate vs held-out K and baselines",
    )
    return [path]
