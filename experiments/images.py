"""What the 8-bit image experiments share: config, loss, exact test bound, the run.

Not an experiment itself: ``experiments.mnist`` and ``experiments.cifar10`` set the
dataset and sizes and call :func:`run`; experiments with their own 8-bit data (dead
leaves, bark) also define ``load_split(config, split)`` and ``Config.image_shape``.
Pipeline (App. D.2, Sec. 3.2):

  uint8 pixels --dequantise (pixel + u) / 256--> x in [0, 1) --z = x*scale + shift--> z
  (unit variance over the training set) --Gaussian diffusion, T steps--> bound K

The scale and shift are one global pair computed exactly over the whole training set on
the first run and stored in ``WORKDIR/scaling.json``; every later use (resume,
``--eval_only``) reads them back. K is reported in the paper's unit, bits per pixel summed
over colours on z, and as a negative log-likelihood in bits per dimension of the 8-bit
data (the unit of DDPM and VDM).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dpm_jax import (
    conditioning,
    evaluation,
    gaussian,
    likelihood,
    optim,
    parzen,
    plotting,
    rundir,
    runner,
    schedules,
    sharding,
    train_state,
)
from dpm_jax.data import images
from dpm_jax.models import multiscale
from experiments import common

NETWORKS = ("reference_code", "paper")
COMPUTE_DTYPES = ("float32", "bfloat16")
SCALING_FILE = "scaling.json"


@dataclasses.dataclass(frozen=True)
class ImageConfig:
    """An image run. ``diffusion_steps`` is the paper's T; ``train_steps`` counts optimiser steps.

    Network sizes follow the released code's names (see ``dpm_jax.models.multiscale``);
    ``conv_layers = 0`` leaves the dense pathway alone (the paper's MNIST network),
    ``dense_hidden = 0`` the convolutional one. The optimiser is the released code's:
    RMSProp (decay 0.9), the learning rate multiplied by 0.1^(1/1000) every 500 steps
    down to ``min_learning_rate``; optional warmup and gradient clipping (``dpm_jax.optim``,
    off by default). ``ema_decay > 0`` evaluates and samples with an EMA of the parameters.
    """

    dataset: str = "mnist"
    data_dir: str = ""  # "" = TFDS's default ($TFDS_DATA_DIR or ~/tensorflow_datasets)
    diffusion_steps: int = 1000
    step1_beta: float = 1e-3
    network: str = "reference_code"
    readout: str = "reference_code"
    num_temporal_basis: int = 10
    conv_features: int = 20
    conv_layers: int = 4
    num_scales: int = 1
    dense_hidden: int = 500
    dense_output: int = 2
    dense_layers: int = 0  # 0 = as many as conv_layers (the released code's quirk)
    upper_hidden: int = 20
    upper_layers: int = 2
    compute_dtype: str = "float32"  # "bfloat16": network in bf16; parameters and bound in f32
    batch_size: int = 512
    learning_rate: float = 1e-3
    min_learning_rate: float = 1e-4
    grad_clip_norm: float = 0.0  # > 0: gradients clipped to this global norm
    warmup_steps: int = 0  # > 0: the learning rate ramps up linearly over these steps
    ema_decay: float = 0.0  # > 0: evaluate and sample with an EMA of the parameters
    train_steps: int = 500_000
    seed: int = 0
    num_test: int = 0  # 0 = every test example
    eval_batch_size: int = 200
    checkpoint_every: int = 5_000
    log_every: int = 500
    max_skipped_in_a_row: int = 20
    steps_per_call: int = 1  # > 1: that many steps per compiled call (lax.scan)
    num_samples: int = 36
    num_posterior_examples: int = 8
    parzen_samples: int = 0  # > 0: Parzen-window estimate (Table 2) from this many samples
    parzen_validation: int = 1_000

    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of one image; experiments with other data override it."""
        if self.dataset not in images.IMAGE_SHAPES:
            raise ValueError(
                f"dataset must be one of {sorted(images.IMAGE_SHAPES)}, got {self.dataset!r}."
            )
        return images.IMAGE_SHAPES[self.dataset]

    def __post_init__(self):
        height, width, _ = self.image_shape()
        if self.diffusion_steps < 2:
            raise ValueError(f"diffusion_steps (T) must be >= 2, got {self.diffusion_steps}.")
        if not 0.0 < self.step1_beta < 1.0:
            raise ValueError(f"step1_beta must lie in (0, 1), got {self.step1_beta}.")
        if self.network not in NETWORKS:
            raise ValueError(f"network must be one of {NETWORKS}, got {self.network!r}.")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(
                f"compute_dtype must be one of {COMPUTE_DTYPES}, got {self.compute_dtype!r}."
            )
        if self.readout not in gaussian.READOUTS:
            raise ValueError(f"readout must be one of {gaussian.READOUTS}, got {self.readout!r}.")
        common.require(
            self,
            ("num_scales", "upper_layers", "batch_size", "eval_batch_size", "checkpoint_every"),
            1,
        )
        common.require(
            self,
            ("log_every", "num_samples", "upper_hidden", "dense_output", "max_skipped_in_a_row"),
            1,
        )
        common.require(self, ("num_temporal_basis",), 2)
        common.require(self, ("num_posterior_examples", "parzen_validation"), 1)
        common.require(self, ("parzen_samples",), 0)
        common.require(self, ("conv_features",), 1)
        nonnegative = ("conv_layers", "dense_hidden", "dense_layers", "train_steps", "num_test")
        common.require(self, nonnegative, 0)
        common.require(self, ("learning_rate", "min_learning_rate"), 0, strict=True)
        common.require_training_keys(self)
        if self.conv_layers == 0 and (self.dense_hidden == 0 or self.dense_layers == 0):
            raise ValueError(
                "with conv_layers=0 the dense pathway is the whole network: set dense_hidden > 0 "
                "and dense_layers > 0."
            )
        images.check_image_size(height, width, self.num_scales)


MUTABLE_KEYS = (
    "data_dir",
    "compute_dtype",  # parameters stay float32: a run may resume in another compute dtype
    "train_steps",  # the learning-rate schedule depends on the step only
    "max_skipped_in_a_row",
    "steps_per_call",
    "checkpoint_every",
    "log_every",
    "num_test",
    "eval_batch_size",
    "num_samples",
    "num_posterior_examples",
    "parzen_samples",
    "parzen_validation",
)


def _mutable(module) -> tuple[str, ...]:
    return getattr(module, "MUTABLE_KEYS", MUTABLE_KEYS)


def image_shape(config: ImageConfig) -> tuple[int, int, int]:
    return config.image_shape()


def network(config: ImageConfig) -> multiscale.MultiScaleConvNet:
    """The reverse model of App. D.2 in the configured style and sizes."""
    build = {
        "reference_code": multiscale.reference_code_network,
        "paper": multiscale.paper_network,
    }[config.network]
    return build(
        config.diffusion_steps,
        num_temporal_basis=config.num_temporal_basis,
        conv_features=config.conv_features,
        conv_layers=config.conv_layers,
        num_scales=config.num_scales,
        dense_hidden=config.dense_hidden,
        dense_output=config.dense_output,
        dense_layers=config.dense_layers or None,
        upper_hidden=config.upper_hidden,
        upper_layers=config.upper_layers,
        dtype=jnp.dtype(config.compute_dtype),
    )


def schedule(config: ImageConfig) -> schedules.Schedule:
    """The released code's fixed schedule (beta_1 = 2 step1_beta, then about 1/(T - t + 1))."""
    return schedules.reference_code_schedule(config.diffusion_steps, config.step1_beta)


def init_params(config: ImageConfig, key: jax.Array) -> dict:
    dummy = jnp.zeros((1, *image_shape(config)), jnp.float32)
    return network(config).init(key, dummy, jnp.ones((1,), jnp.int32))["params"]


def reverse_fn_from_params(config: ImageConfig, params: dict, sched: schedules.Schedule):
    """``(x_t (N, H, W, C), t (N,)) -> Kernel``: the network's readout around the forward kernel."""
    model = network(config)

    def reverse_fn(x_t, t):
        z_mu, z_sigma = model.apply({"params": params}, x_t, t)
        beta_t = schedules.beta(sched, t)[:, None, None, None]
        return gaussian.readout(config.readout, x_t, z_mu, z_sigma, beta_t, config.diffusion_steps)

    return reverse_fn


def pixels_per_image(config: ImageConfig) -> int:
    height, width, _ = image_shape(config)
    return height * width


def loss_fn(config: ImageConfig, scaling: images.ImageScaling, params, batch, key):
    """-K in bits per pixel (summed over colours): one t per example (weight T - 1).

    ``batch`` holds uint8 pixels; dequantisation noise is fresh every step.
    """
    key_u, key_k = jax.random.split(key)
    x0 = images.preprocess(batch, key_u, scaling)
    sched = schedule(config)
    fn = reverse_fn_from_params(config, params, sched)
    k = gaussian.bound_estimate(sched, fn, x0, key_k) / pixels_per_image(config)
    return -jnp.mean(k), {"K_per_pixel_estimate": jnp.mean(k)}


def learning_rate(config: ImageConfig) -> optax.Schedule:
    """The released code's decay: x 0.1^(1/1000) every 500 steps, floored at min_learning_rate."""
    return optax.exponential_decay(
        config.learning_rate,
        transition_steps=500,
        decay_rate=math.exp(math.log(0.1) / 1000),
        staircase=True,
        end_value=config.min_learning_rate,
    )


def make_optimizer(config: ImageConfig) -> optax.GradientTransformation:
    """The released code's RMSProp (decay 0.9, no momentum) with :func:`learning_rate`;
    optional warmup and clipping (``dpm_jax.optim``)."""
    tx = optax.rmsprop(learning_rate(config), decay=0.9, eps=1e-10)
    return optim.with_warmup_and_clipping(
        tx, warmup_steps=config.warmup_steps, clip_norm=config.grad_clip_norm
    )


# ----------------------------------------------------------------------------------------------
# Data and scaling.


def load_split(config: ImageConfig, split: str):
    """TFDS split ``"train"`` or ``"test"`` of ``config.dataset`` (uint8 images)."""
    return images.load_image_source(config.dataset, split, config.data_dir or None)


def scaling_for_run(config: ImageConfig, workdir: Path, train_source, eval_only: bool):
    """The run's scaling: read from ``workdir/scaling.json``, else fitted and written there."""
    path = Path(workdir) / SCALING_FILE
    if path.exists():
        return images.ImageScaling(**json.loads(path.read_text()))
    if eval_only:
        raise FileNotFoundError(
            f"{path} is missing: this run's data scaling is unknown. Train first (drop "
            "--eval_only), which writes it."
        )
    print(f"fitting the global scaling on {len(train_source):,} training images ...")
    scaling = images.fit_scaling(train_source)
    rundir.write_json_atomic(path, dataclasses.asdict(scaling))
    return scaling


# ----------------------------------------------------------------------------------------------
# Evaluation.


def exact_bound_fn(config: ImageConfig, params, scaling: images.ImageScaling):
    """Jitted ``(uint8 batch, key) -> (K bits per example, log2 N(z; 0, I) per example)``.

    The key draws the dequantisation noise and every forward sample x^(t).
    """
    sched = schedule(config)
    fn = reverse_fn_from_params(config, params, sched)

    @jax.jit
    def bound(pixels, key):
        key_u, key_k = jax.random.split(key)
        z = images.preprocess(pixels, key_u, scaling)
        return gaussian.bound_exact(sched, fn, z, key_k), likelihood.gaussian_null_log_likelihood(z)

    return bound


def evaluate(config: ImageConfig, params, scaling, test_source, key) -> dict:
    """Exact K over every test example (or the first ``num_test``), both units, with stderrs.

    Test image i is dequantised and noised with keys folded from i alone
    (``dpm_jax.evaluation``), so K depends neither on the batch size nor on the devices.
    """
    limit = len(test_source) if config.num_test == 0 else min(config.num_test, len(test_source))
    source = test_source if limit == len(test_source) else _Prefix(test_source, limit)
    k, null = evaluation.evaluate(
        evaluation.per_example_keys(exact_bound_fn(config, params, scaling)),
        source,
        key,
        batch_size=config.eval_batch_size,
        gather=images.gather_images,
        desc="exact K",
    )
    if not np.all(np.isfinite(k)):
        raise FloatingPointError(
            f"{np.sum(~np.isfinite(k))} test examples have a non-finite bound; the checkpoint "
            "is unusable for evaluation."
        )
    pixels = pixels_per_image(config)
    dims = pixels * image_shape(config)[2]
    k_pix, k_pix_se = likelihood.mean_and_stderr(k / pixels)
    kn, kn_se = likelihood.mean_and_stderr((k - null) / pixels)
    bpd, bpd_se = likelihood.mean_and_stderr(images.bits_per_dim_8bit(k, dims, scaling))
    return {
        "K": k_pix,
        "K_stderr": k_pix_se,
        "K_kind": "exact: all KL terms t = 2..T summed, one forward sample and one "
        "dequantisation per term and example; stderr over test examples",
        "L_null": float(np.mean(null / pixels)),
        "K_minus_L_null": kn,
        "K_minus_L_null_stderr": kn_se,
        "nll_bits_per_dim_8bit": bpd,
        "nll_bits_per_dim_8bit_stderr": bpd_se,
        "nll_bits_per_dim_8bit_kind": "upper bound on -log2 P(8-bit pixels) per dimension: "
        "-K/D - log2(scale/256) (uniform dequantisation plus the scaling's Jacobian)",
        "num_test_examples": int(limit),
        "test_set_size": int(len(test_source)),
    }


class _Prefix:
    """The first ``n`` examples of a source."""

    def __init__(self, source, n: int):
        self.source, self.n = source, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.source[i]

    def __getitems__(self, keys):
        if any(not 0 <= k < self.n for k in keys):
            raise IndexError(keys)
        getitems = getattr(self.source, "__getitems__", None)
        return getitems(keys) if getitems else [self.source[k] for k in keys]


def _sampler(config: ImageConfig, params, count: int):
    """Jitted ``key -> count`` model samples x^(0) in model units (N, H, W, C)."""
    sched = schedule(config)
    fn = reverse_fn_from_params(config, params, sched)
    shape = (count, *image_shape(config))
    return jax.jit(lambda k: gaussian.sample(sched, fn, k, shape))


def sample_grid(config: ImageConfig, params, scaling, key, path: Path) -> None:
    """App. Fig. 1: ``num_samples`` samples from the model, in [0, 1] pixel units."""
    z = _sampler(config, params, config.num_samples)(key)
    if jax.process_index() == 0:  # every process samples (global arrays), one writes
        plotting.image_grid(path, np.asarray(scaling.invert(z)), title=f"{config.dataset} samples")


def posterior_figure(config: ImageConfig, params, scaling, test_source, key, path: Path) -> None:
    """Figs. 3 and 5: denoising at SNR 1 and inpainting of a central square, on test images.

    Rows: holdout images; observed with unit-variance Gaussian noise (SNR 1 on unit-variance
    data); denoised by the paper's factor method (Fig. 3, approximate); denoised exactly
    (``conditioning.denoise_exact``); the central square (half the side) hidden; inpainted
    (Fig. 5). All shown in [0, 1] pixel units.
    """
    n = min(config.num_posterior_examples, len(test_source))
    pixels = images.gather_images(test_source, np.arange(n))
    keys = jax.random.split(key, 5)
    x0 = images.preprocess(pixels, keys[0], scaling)
    y = x0 + jax.random.normal(keys[1], x0.shape)
    sched = schedule(config)
    fn = reverse_fn_from_params(config, params, sched)
    height, width, _ = image_shape(config)
    rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
    hidden = (np.abs(rows - (height - 1) / 2) < height / 4) & (
        np.abs(cols - (width - 1) / 2) < width / 4
    )
    known = jnp.broadcast_to(jnp.asarray(~hidden)[None, :, :, None], x0.shape)
    paper = jax.jit(lambda k: conditioning.denoise(sched, fn, k, y, 1.0))(keys[2])
    exact = jax.jit(lambda k: conditioning.denoise_exact(sched, fn, k, y, 1.0))(keys[3])
    filled = jax.jit(lambda k: conditioning.inpaint(sched, fn, k, x0, known))(keys[4])
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
            ("inpainted (Fig. 5)", show(filled)),
        ],
        title=f"{config.dataset}: posterior sampling",
    )


def parzen_results(config: ImageConfig, params, scaling, train_source, test_source, key) -> dict:
    """Table 2's Parzen-window estimate (Goodfellow et al. 2014) in [0, 1] pixel units.

    ``parzen_samples`` model samples; the bandwidth chosen on the last ``parzen_validation``
    training images; the test set scored. The "perfect model" row uses as many training
    images as samples. Pixels are p/255 for data and clip(x, 0, 1) for samples.
    """
    count = config.parzen_samples
    chunk = min(count, 500)
    sampler = _sampler(config, params, chunk)
    parts = [np.asarray(sampler(jax.random.fold_in(key, i))) for i in range(-(-count // chunk))]
    samples = np.clip(np.asarray(scaling.invert(np.concatenate(parts)[:count])), 0.0, 1.0)
    n_train = len(train_source)
    n_val = min(config.parzen_validation, n_train // 2)
    validation = images.gather_images(train_source, np.arange(n_train - n_val, n_train)) / 255.0
    test = images.gather_images(test_source, np.arange(len(test_source))) / 255.0
    flat = lambda a: a.reshape(len(a), -1).astype(np.float32)  # noqa: E731
    model = parzen.parzen_estimate(flat(samples), flat(validation), flat(test))
    perfect_samples = images.gather_images(train_source, np.arange(min(count, n_train - n_val)))
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


# ----------------------------------------------------------------------------------------------
# The run.


#: A tiny grey-image configuration for CPU smoke runs (dead leaves, bark ``small`` presets).
SMALL_GREY = {
    "diffusion_steps": 20,
    "num_temporal_basis": 4,
    "conv_features": 8,
    "conv_layers": 2,
    "num_scales": 2,
    "upper_hidden": 8,
    "batch_size": 16,
    "train_steps": 100,
    "checkpoint_every": 50,
    "log_every": 25,
    "num_samples": 9,
}


def entry_points(module_name: str):
    """``(run, figures, report, main)`` of the experiment module ``module_name``.

    Each image experiment binds the shared :func:`run`, :func:`figures` and :func:`report`
    and ``common.main`` to itself with ``run, figures, report, main = entry_points(__name__)``.
    """

    def module():
        return sys.modules[module_name]

    def run_module(config: ImageConfig, workdir: Path, eval_only: bool = False) -> dict:
        return run(module(), config, workdir, eval_only)

    def figures_module(config: ImageConfig, workdir: Path) -> list[Path]:
        return figures(module(), config, workdir)

    def report_module(results: dict) -> str:
        return report(module(), results)

    def main(argv: list[str] | None = None) -> None:
        common.main(module(), argv)

    return run_module, figures_module, report_module, main


def _check_workdir(module, config: ImageConfig, workdir: Path) -> None:
    """Refuses a workdir of another experiment or an incompatible config (nothing written)."""
    rundir.check_run_compatible(
        workdir,
        module.EXPERIMENT,
        rundir.config_to_dict(config),
        _mutable(module),
        rundir.config_defaults(config),
    )


def _initial_state(config: ImageConfig, keys: dict) -> train_state.TrainState:
    return train_state.create_train_state(
        init_params(config, keys["init"]), make_optimizer(config), keys["train"]
    )


def train(
    module, config: ImageConfig, workdir: Path, train_source, scaling, eval_only: bool = False
) -> train_state.TrainState:
    """Trains on ``train_source`` (resuming from ``workdir``) or, with ``eval_only``, restores.

    Data parallel over every device of every process (``runner.train_or_restore``); each
    process loads only its rows of every batch.
    """
    keys = common.experiment_keys(config.seed)
    mesh = sharding.data_mesh()
    rows = sharding.process_batch_slice(config.batch_size, mesh)

    def batch_fn(step: int) -> np.ndarray:
        """This process's rows of the global batch of ``step`` (uint8, on the host)."""
        indices = images.train_batch_indices(
            len(train_source), config.batch_size, config.seed, step
        )
        return images.gather_images(train_source, indices[rows])

    return runner.train_or_restore(
        workdir=workdir,
        experiment=module.EXPERIMENT,
        config=config,
        mutable_keys=_mutable(module),
        state=_initial_state(config, keys),
        mesh=mesh,
        eval_only=eval_only,
        loss_fn=lambda params, batch, key: loss_fn(config, scaling, params, batch, key),
        tx=make_optimizer(config),
        batch_fn=batch_fn,
        **common.fit_settings(config),
    )


def run(module, config: ImageConfig, workdir: Path, eval_only: bool = False) -> dict:
    """Trains (resuming from ``workdir``), evaluates the exact test bound, writes results."""
    start_time = time.time()
    workdir = Path(workdir)
    _check_workdir(module, config, workdir)
    loader = getattr(module, "load_split", load_split)  # experiments with their own data
    train_source = loader(config, "train")
    test_source = loader(config, "test")
    scaling = scaling_for_run(config, workdir, train_source, eval_only)
    keys = common.experiment_keys(config.seed)
    state = train(module, config, workdir, train_source, scaling, eval_only)
    params = train_state.eval_params(state, config.ema_decay)
    results = evaluate(config, params, scaling, test_source, keys["eval"])
    figures = draw_figures(module, config, state, scaling, test_source, keys, workdir)
    if config.parzen_samples:
        results.update(
            parzen_results(config, params, scaling, train_source, test_source, keys["ceiling"])
        )
    results["scaling"] = dataclasses.asdict(scaling)
    results["num_parameters"] = int(sum(p.size for p in jax.tree.leaves(state.params)))
    return common.write_results(
        module,
        config,
        workdir,
        results,
        state=state,
        num_test=results["num_test_examples"],
        start_time=start_time,
        figures=figures,
    )


def figures(module, config: ImageConfig, workdir: Path) -> list[Path]:
    """Redraws the figures from the latest checkpoint in ``workdir`` (no training or evaluation)."""
    workdir = Path(workdir)
    _check_workdir(module, config, workdir)
    keys = common.experiment_keys(config.seed)
    mesh = sharding.data_mesh()
    state = runner.restore_run(workdir, _initial_state(config, keys), mesh, flag="--figures")
    scaling = scaling_for_run(config, workdir, None, eval_only=True)
    test_source = getattr(module, "load_split", load_split)(config, "test")
    return draw_figures(module, config, state, scaling, test_source, keys, workdir)


def draw_figures(module, config, state, scaling, test_source, keys, workdir: Path) -> list[Path]:
    """The sample grid (App. Fig. 1) and the posterior figure (Figs. 3, 5) of this checkpoint."""
    step = int(state.step)
    params = train_state.eval_params(state, config.ema_decay)
    grid = Path(workdir) / "figures" / f"{module.EXPERIMENT}_samples_step{step}.png"
    sample_grid(config, params, scaling, keys["figure"], grid)
    posterior = Path(workdir) / "figures" / f"{module.EXPERIMENT}_posterior_step{step}.png"
    key = jax.random.fold_in(keys["figure"], 1)
    posterior_figure(config, params, scaling, test_source, key, posterior)
    return [grid, posterior]


def report(module, results: dict) -> str:
    r = results
    paper = module.PAPER
    lines = [
        f"{r['experiment']}, T = {r['T']}, {r['train_steps']} training steps, "
        f"{r['num_test_examples']} of {r['test_set_size']} test images, "
        f"{r['num_parameters']:,} parameters",
        f"  K (exact test bound)   = {r['K']:.3f} +- {r['K_stderr']:.3f} {module.UNITS}"
        f"   [paper: {paper.get('K', 'n/a')}]",
        f"  K - L_null             = {r['K_minus_L_null']:.3f} +- "
        f"{r['K_minus_L_null_stderr']:.3f}   [paper: {paper.get('K_minus_L_null', 'n/a')}]",
        f"  NLL, 8-bit scale       = {r['nll_bits_per_dim_8bit']:.3f} +- "
        f"{r['nll_bits_per_dim_8bit_stderr']:.3f} bits/dim (upper bound)",
    ]
    if "parzen_log_likelihood_bits" in r:
        lines += [
            f"  Parzen estimate        = {r['parzen_log_likelihood_bits']:.1f} +- "
            f"{r['parzen_log_likelihood_bits_stderr']:.1f} bits per image (sigma "
            f"{r['parzen_sigma']:.3f})   [paper: {paper.get('parzen_log_likelihood_bits', 'n/a')}]",
            f"  Parzen, perfect model  = {r['parzen_perfect_model_bits']:.1f} +- "
            f"{r['parzen_perfect_model_bits_stderr']:.1f} bits per image (training images)",
        ]
    lines.append(f"  wall time {r['wall_seconds']:.0f} s; figures: {', '.join(r['figures'])}")
    return "\n".join(lines)
