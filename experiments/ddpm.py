"""DDPM (Ho, Jain, Abbeel 2020): the U-Net, L_simple, EMA, and the exact bits/dim bound.

  python -m experiments.ddpm --workdir runs/ddpm_cifar10 [--preset cifar10]   # accelerators
  python -m experiments.ddpm --workdir runs/ddpm_mnist_5k --preset mnist_5k   # offline digits

Pixels p in 0..255 become x = p / 127.5 - 1 (no dequantisation). The bound is DDPM's: the
prior term L_T, every KL term t = 2..T, and the discretised Gaussian decoder on the 256 bins
(``dpm_jax.discretized``), so it is a codelength of the 8-bit data in bits per dimension,
exact over every test image (one forward sample per term and image). Beside it, the same
number in the 2015 paper's unit (bits per pixel on the dequantised data scaled to unit
variance) and the two baselines every image run reports. Presets: ``cifar10`` (the paper's
run), ``mnist`` (TFDS), ``mnist_5k`` (the offline digits, a small U-Net sized for a CPU),
``small`` (scikit-learn's 8 x 8 digits, for tests). Config: ``experiments.ddpm_config``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dpm_jax import (
    discretized,
    gaussian,
    likelihood,
    objectives,
    optim,
    parameterisation,
    plotting,
    prng,
    rate_distortion,
    rundir,
    runner,
    schedules,
    sharding,
    terms,
    train_state,
    xla_options,
)
from dpm_jax.data.batching import gather_images
from dpm_jax.data.scaling import fit_scaling
from dpm_jax.models import unet
from experiments import common, image_eval, images
from experiments.ddpm_config import MUTABLE_KEYS, PRESETS, DDPMConfig

DESCRIPTION = __doc__.splitlines()[0]
UNITS = "bits per dimension of the 8-bit data (discretised decoder; a codelength)"
PAPER = {
    "nll_bits_per_dim": 3.70,
    "nll_bits_per_dim_kind": "DDPM Table 2, CIFAR-10 test set, L_simple (<= 3.75 train)",
    "source": "Ho et al. 2020, Table 1 and Table 2",
}
#: DDPM's 8-bit data in model units: bin centres -1, -1 + 2/255, ..., 1.
BINS = discretized.PixelBins(-1.0, 1.0, 1.0 / 255.0)


def to_model(pixels) -> jax.Array:
    """uint8 pixels -> x = p / 127.5 - 1 in [-1, 1] (DDPM's scaling; the bins' centres)."""
    return jnp.asarray(pixels, jnp.float32) / 127.5 - 1.0


def to_unit(x) -> np.ndarray:
    """Model units -> [0, 1] pixel units, clipped."""
    return np.clip((np.asarray(x) + 1.0) / 2.0, 0.0, 1.0)


def schedule(config: DDPMConfig) -> schedules.Schedule:
    d = config.diffusion
    return schedules.linear_schedule(d.steps, d.beta_start, d.beta_end)


def network(config: DDPMConfig) -> unet.UNet:
    return unet.UNet(config.model.unet())


def init_params(config: DDPMConfig, key: jax.Array) -> dict:
    dummy = jnp.zeros((1, *config.image_shape()), jnp.float32)
    return network(config).init(key, dummy, jnp.ones((1,), jnp.int32))["params"]


def model_fn(config: DDPMConfig, params, dropout_key: jax.Array | None = None):
    """``(x_t, t) -> output``: the U-Net, with dropout when ``dropout_key`` is given."""
    model = network(config)
    if dropout_key is None:
        return lambda x_t, t: model.apply({"params": params}, x_t, t)
    return lambda x_t, t: model.apply(
        {"params": params}, x_t, t, train=True, rngs={"dropout": prng.bulk_key(dropout_key)}
    )


def reverse_fn(
    config: DDPMConfig, params, sched, dropout_key=None, clip: bool = False
) -> gaussian.ReverseFn:
    """The model's reverse kernel; ``clip``: the predicted x0 clipped to the data's [-1, 1]
    (DDPM's sampler, ``clip_denoised``; the bound is evaluated without it)."""
    return parameterisation.make_reverse_fn(
        config.diffusion.parameterisation(),
        sched,
        model_fn(config, params, dropout_key),
        clip_x0=(-1.0, 1.0) if clip else None,
    )


def loss_fn(config: DDPMConfig, params, batch, key):
    """L_simple (DDPM Eq. 14, mean over elements) or the bound's one-t estimate in bits/dim."""
    key_loss, key_dropout = jax.random.split(key)
    x0 = to_model(batch)
    sched = schedule(config)
    if config.diffusion.loss == "simple":
        mse = objectives.l_simple(sched, model_fn(config, params, key_dropout), x0, key_loss)
        return jnp.mean(mse), {"l_simple": jnp.mean(mse)}
    fn = reverse_fn(config, params, sched, key_dropout)
    bits = gaussian.bound_estimate(sched, fn, x0, key_loss, bins=BINS) / x0[0].size
    return -jnp.mean(bits), {"bits_per_dim_estimate": -jnp.mean(bits)}


def make_optimizer(config: DDPMConfig) -> optax.GradientTransformation:
    """Adam at train.learning_rate with linear warmup and global-norm clipping (DDPM App. B)."""
    t = config.train
    return optim.with_warmup_and_clipping(
        optax.adam(t.learning_rate), warmup_steps=t.warmup_steps, clip_norm=t.grad_clip_norm
    )


def flip_batch(batch: np.ndarray, seed: int, step: int, rows: slice = slice(None)) -> np.ndarray:
    """Each image flipped left-right with probability 1/2, drawn from (seed, step) alone.

    ``batch`` holds the ``rows`` of the step's global batch (all of it by default): each
    image gets its own draw whichever process loads it."""
    size = len(batch) if rows.stop is None else rows.stop
    flips = (np.random.default_rng([seed, step, 1]).random(size) < 0.5)[rows]
    return np.where(flips[:, None, None, None], batch[:, :, ::-1], batch)


def _initial_state(config: DDPMConfig, keys: dict) -> train_state.TrainState:
    return train_state.create_train_state(
        init_params(config, keys["init"]), make_optimizer(config), keys["train"]
    )


def exact_bound_fn(config: DDPMConfig, params):
    """Jitted ``(uint8 batch, key) -> {"K", *terms.TERM_NAMES}``, bits per image: every KL
    term t = 2..T at one forward sample each, L_T and the discretised decoder."""
    sched = schedule(config)
    fn = reverse_fn(config, params, sched)

    @jax.jit
    def bound(pixels, key):
        return terms.in_bits(gaussian.bound_terms(sched, fn, to_model(pixels), key, bins=BINS))

    return bound


def evaluate(config: DDPMConfig, params, test_source, train_source, key) -> dict:
    """The exact bound over the test images in bits/dim, its terms, the 2015 unit, baselines."""
    values, limit = image_eval.over_test_images(
        exact_bound_fn(config, params), config.eval, test_source, key, "exact bound"
    )
    k = values["K"]
    if not np.all(np.isfinite(k)):
        raise FloatingPointError(
            f"{np.sum(~np.isfinite(k))} test images have a non-finite bound; the checkpoint is "
            "unusable for evaluation."
        )
    height, width, channels = config.image_shape()
    dims = height * width * channels
    bpd, bpd_se = likelihood.mean_and_stderr(-k / dims)
    # The 2015 unit: a discrete P(p) is the density P(p) (256 / scale)^D of the dequantised,
    # scaled data z (uniform within each bin), so K_z = log2 P - D log2(scale / 256).
    scale = fit_scaling(train_source).scale
    k_2015, k_2015_se = likelihood.mean_and_stderr(
        (k - dims * math.log2(scale / 256)) / (height * width)
    )
    results = {
        "nll_bits_per_dim": bpd,
        "nll_bits_per_dim_stderr": bpd_se,
        "nll_bits_per_dim_kind": common.exact_kind(config.eval.forward_samples)
        + "; -log2 P(8-bit pixels) per dimension is at most this (a codelength)",
        "bound_terms": common.bound_terms_results(values, "bits per dimension", per=dims),
        "K_2015_units": k_2015,
        "K_2015_units_stderr": k_2015_se,
        "K_2015_units_kind": "the same bound as a density of the dequantised data scaled to "
        f"unit variance (scale {scale:.4f} fitted on the training images), bits per pixel, "
        "colours summed: the 2015 experiments' K",
        "num_test_examples": int(limit),
        "test_set_size": int(len(test_source)),
    }
    results.update(image_eval.pixel_categorical_results(train_source, test_source, limit))
    return results


def rate_distortion_results(
    config: DDPMConfig, params, test_source, key, outdir: Path, name: str
) -> tuple[dict, Path]:
    """DDPM Fig. 5 on the first ``eval.rate_distortion_examples`` test images: the rate
    (bits/dim sent once x^(t) is received) and the RMSE of x0_hat(x^(t)) (clipped to [-1, 1]
    as DDPM's code does) on the 0..255 scale, for t = 1..T, as results, a figure and its
    numbers (``<figure>.json``)."""
    n = min(config.eval.rate_distortion_examples, len(test_source))
    x0 = to_model(gather_images(test_source, np.arange(n)))
    sched = schedule(config)
    param = config.diffusion.parameterisation()
    per_step = jax.jit(
        lambda x, k: rate_distortion.per_step(
            sched, param, model_fn(config, params), x, k, bins=BINS, clip_x0=(-1.0, 1.0)
        )
    )(x0, key)
    dims = x0[0].size
    to_bits_per_dim = 1.0 / (dims * math.log(2.0))
    prior = float(jnp.mean(gaussian.prior_term(sched, x0)))
    rate = rate_distortion.rate(prior, np.asarray(per_step.kl)) * to_bits_per_dim
    rmse = np.sqrt(np.asarray(per_step.squared_error, np.float64)) * 127.5
    path = outdir / "figures" / f"{name}_rate_distortion.png"
    if jax.process_index() == 0:
        plotting.rate_distortion_figure(
            path,
            rate,
            rmse,
            rate_unit="bits/dim",
            title=f"{name}: rate and distortion (DDPM Fig. 5), {n} test images",
        )
    results = {
        "rate_distortion": {
            "num_test_examples": int(n),
            "units": "rate: bits/dim received once x^(t) is (L_T + KL terms t+1..T); "
            "distortion: RMSE of the predicted x0, clipped to [-1, 1], on the 0..255 scale; "
            "index t - 1",
            "rate_bits_per_dim": [float(v) for v in rate],
            "distortion_rmse": [float(v) for v in rmse],
            "decoder_L_0_bits_per_dim": float(per_step.kl[0]) * to_bits_per_dim,
        }
    }
    if jax.process_index() == 0:  # the figure's numbers beside it (--figures rewrites both)
        rundir.write_json_atomic(path.with_suffix(".json"), results["rate_distortion"])
    return results, path


def sample_figures(config: DDPMConfig, params, key, outdir: Path, name: str) -> list[Path]:
    """The sample grid and the progressive-generation figure (DDPM Fig. 6: the predicted x0
    at 8 steps along each chain, T on the left), EMA parameters, with DDPM's sampler (the
    predicted x0 clipped to [-1, 1] at every step)."""
    sched = schedule(config)
    fn = reverse_fn(config, params, sched, clip=True)
    param = config.diffusion.parameterisation()
    shape = (config.eval.num_samples, *config.image_shape())
    key_grid, key_prog = jax.random.split(key)
    grid = jax.jit(lambda k: gaussian.sample(sched, fn, k, shape, final="model_mean"))(key_grid)
    n = config.eval.num_progressive
    _, trajectory = jax.jit(
        lambda k: gaussian.sample(
            sched, fn, k, (n, *config.image_shape()), final="model_mean", return_trajectory=True
        )
    )(key_prog)
    steps = np.unique(np.linspace(config.diffusion.steps, 1, 8).round().astype(int))[::-1]
    model = model_fn(config, params)
    rows = []
    for t in steps:
        x_t = trajectory[t]
        x0_hat = parameterisation.predict_x0(
            param, sched, x_t, t, model(x_t, jnp.full((n,), int(t), jnp.int32))
        )
        rows.append((f"t = {t}: predicted x0", to_unit(x0_hat)))  # clipped for display
    rows.append(("x0 (the sample)", to_unit(trajectory[0])))
    paths = [
        outdir / "figures" / f"{name}_samples.png",
        outdir / "figures" / f"{name}_progressive.png",
    ]
    if jax.process_index() == 0:
        plotting.image_grid(paths[0], to_unit(grid), title=f"{name} samples (EMA)")
        plotting.image_rows(paths[1], rows, title=f"{name}: progressive generation (Fig. 6)")
    return paths


class DDPMExperiment(common.Experiment):
    """DDPM on 8-bit images (``python -m experiments.ddpm``)."""

    name = "ddpm"
    description = DESCRIPTION
    units = UNITS
    paper = PAPER
    config_class = DDPMConfig
    presets = PRESETS
    mutable_keys = MUTABLE_KEYS
    legacy_keys: dict = {}  # no run of it predates sectioned configs

    def load_split(self, config: DDPMConfig, split: str):
        return images.load_data_split(config.data, split, config.image_shape())

    def run(self, config: DDPMConfig, workdir: Path, eval_only: bool = False) -> dict:
        start_time = time.time()
        workdir = Path(workdir)
        common.check_workdir(self, config, workdir)
        train_source = self.load_split(config, "train")
        test_source = self.load_split(config, "test")
        keys = common.experiment_keys(config.seed)
        state = self.train(config, workdir, train_source, eval_only)
        params = train_state.eval_params(state, config.train.ema_decay)
        results = evaluate(config, params, test_source, train_source, keys["eval"])
        out = common.output_dir(workdir, eval_only)
        rd, figures = self.draw_figures(config, params, test_source, keys, out)
        results.update(rd)
        results["num_parameters"] = int(sum(p.size for p in jax.tree.leaves(state.params)))
        return common.write_results(
            self,
            config,
            workdir,
            results,
            state=state,
            num_test=results["num_test_examples"],
            start_time=start_time,
            figures=figures,
            outdir=out,
        )

    def draw_figures(self, config: DDPMConfig, params, test_source, keys, out: Path):
        """The sample grid, the progressive figure and, where configured, the rate/distortion
        figure under ``out/figures``: (the rate/distortion results, the figures' paths)."""
        figures = sample_figures(config, params, keys["figure"], out, self.name)
        if not config.eval.rate_distortion_examples:
            return {}, figures
        rd, path = rate_distortion_results(
            config, params, test_source, jax.random.fold_in(keys["eval"], 1), out, self.name
        )
        return rd, [*figures, path]

    def figures(self, config: DDPMConfig, workdir: Path) -> list[Path]:
        """Redraws the figures from the latest checkpoint in ``workdir`` (no training, no bound)."""
        workdir = Path(workdir)
        common.check_workdir(self, config, workdir)
        keys = common.experiment_keys(config.seed)
        state = runner.restore_run(
            workdir, _initial_state(config, keys), sharding.data_mesh(), flag="--figures"
        )
        params = train_state.eval_params(state, config.train.ema_decay)
        _, figures = self.draw_figures(
            config, params, self.load_split(config, "test"), keys, workdir
        )
        return figures

    def train(self, config: DDPMConfig, workdir: Path, train_source, eval_only: bool):
        """Data-parallel training on ``train_source`` through the one runner, or a restore."""
        keys = common.experiment_keys(config.seed)

        def flips(batch, step, rows):
            return flip_batch(batch, config.seed, step, rows)

        return images.train_on_images(
            self,
            config,
            workdir,
            train_source,
            eval_only,
            state=_initial_state(config, keys),
            loss_fn=lambda params, batch, key: loss_fn(config, params, batch, key),
            tx=make_optimizer(config),
            augment=flips if config.data.random_flip else None,
            compiler_options=xla_options.eigen_cpu_kernels(),
        )

    def report(self, results: dict) -> str:
        r = results
        terms_ = r["bound_terms"]
        return "\n".join(
            [
                f"ddpm, T = {r['T']}, {r['train_steps']} training steps, "
                f"{r['num_test_examples']} of {r['test_set_size']} test images, "
                f"{r['num_parameters']:,} parameters",
                f"  NLL (exact bound)      = {r['nll_bits_per_dim']:.3f} +- "
                f"{r['nll_bits_per_dim_stderr']:.3f} bits/dim (8-bit; DDPM CIFAR-10: 3.70)",
                f"  terms (bits/dim)       = L_T {terms_['prior_L_T']:.2e}, KL t=2..T "
                f"{terms_['kl_sum_t2_to_T']:.3f}, decoder L_0 {terms_['decoder_L_0']:.3f}",
                f"  2015 unit              = K {r['K_2015_units']:.3f} +- "
                f"{r['K_2015_units_stderr']:.3f} bits per pixel (unit-variance dequantised data)",
                f"  per-pixel categorical  = {r['pixel_categorical_nll_bits_per_dim_8bit']:.3f} +- "
                f"{r['pixel_categorical_nll_bits_per_dim_8bit_stderr']:.3f} bits/dim (exact)",
                f"  wall time {r['wall_seconds']:.0f} s; figures: {', '.join(r['figures'])}",
            ]
        )


experiment = DDPMExperiment()


def main(argv: list[str] | None = None) -> None:
    experiment.main(argv)


if __name__ == "__main__":
    main()
