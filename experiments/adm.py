"""Improved DDPM and ADM (Nichol & Dhariwal 2021; Dhariwal & Nichol 2021) on 8-bit images.

  python -m experiments.adm --workdir runs/adm/hybrid                    # L_hybrid, learned range
  python -m experiments.adm --workdir runs/adm/simple --preset simple    # L_simple, beta_t
  python -m experiments.adm --workdir runs/adm/cfg --preset cfg          # classes, label dropout
  python -m experiments.adm --workdir runs/adm/upsampler --preset upsampler  # 4x4 -> 8x8

The ADM U-Net (``dpm_jax.models.adm_unet``) on the offline digits by default. Pixels p become
x = p / 127.5 - 1 as in DDPM, and the bound is DDPM's codelength of the 8-bit data: L_T, every
KL term t = 2..T and the discretised decoder, in bits per dimension, exact over every test
image (one forward sample per term). A class-conditional model's bound is of p(x | y) at the
true label; an upsampler's of p(x | the low-resolution image). Sample quality, respaced and
DDIM sampling and guidance are measured by ``experiments.adm_quality``. Config:
``experiments.adm_config``.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dpm_jax import (
    chain,
    ddim,
    gaussian,
    guidance,
    likelihood,
    objectives,
    parameterisation,
    plotting,
    prng,
    runner,
    schedules,
    sharding,
    terms,
    train_state,
    xla_options,
)
from dpm_jax.data.batching import gather_labelled, train_batch_indices
from dpm_jax.models import adm_unet
from experiments import common, ddpm, image_eval, images
from experiments.adm_config import MUTABLE_KEYS, PRESETS, ADMConfig

DESCRIPTION = __doc__.splitlines()[0]
UNITS = "bits per dimension of the 8-bit data (discretised decoder; a codelength)"
PAPER = {
    "nll_bits_per_dim": 2.94,
    "nll_bits_per_dim_kind": "improved DDPM Table 2, CIFAR-10 test set, L_hybrid, cosine "
    "schedule, T = 4000 (a different data set: not comparable with the digits)",
    "source": "Nichol & Dhariwal 2021, Table 2; Dhariwal & Nichol 2021, Table 11",
}
BINS = ddpm.BINS
to_model, to_unit = ddpm.to_model, ddpm.to_unit


def schedule(config: ADMConfig) -> schedules.Schedule:
    """The forward schedule: improved DDPM's cosine (Eq. 17) or DDPM's linear."""
    d = config.diffusion
    if d.schedule == "cosine":
        return schedules.cosine_schedule(d.steps)
    return schedules.linear_schedule(d.steps, d.beta_start, d.beta_end)


def network(config: ADMConfig) -> adm_unet.ADMUNet:
    return adm_unet.ADMUNet(config.network_config())


def downsample(x: jax.Array) -> jax.Array:
    """The low-resolution input of an upsampler: x (N, H, W, C) area-averaged to (N, H/2,
    W/2, C), model units."""
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def init_params(config: ADMConfig, key: jax.Array) -> dict:
    x = jnp.zeros((1, *config.image_shape()), jnp.float32)
    kwargs = {}
    if config.model.class_cond:
        kwargs["y"] = jnp.zeros((1,), jnp.int32)
    if config.model.upsample:
        kwargs["low_res"] = downsample(x)
    return network(config).init(key, x, jnp.ones((1,), jnp.int32), **kwargs)["params"]


def model_fn(config: ADMConfig, params, y=None, low_res=None, dropout_key=None):
    """``(x_t, t) -> output``: eps, or (eps, v) for the learned-range variance; ``y`` (N,)
    labels (the null class ``config.model.null_class`` for the unconditional model of a
    label-dropout run), ``low_res`` (N, H/2, W/2, C) for an upsampler."""
    model = network(config)
    learned = config.diffusion.variance == "learned_range"
    if config.model.class_cond and y is None:
        raise ValueError("this model is class-conditional: pass y (labels, shape (N,)).")
    if config.model.upsample and low_res is None:
        raise ValueError("this model is an upsampler: pass low_res, the half-size images.")
    kwargs = {"y": y, "low_res": low_res}
    if dropout_key is not None:
        kwargs.update(train=True, rngs={"dropout": prng.bulk_key(dropout_key)})

    def fn(x_t, t):
        out = model.apply({"params": params}, x_t, t, **kwargs)
        return tuple(jnp.split(out, 2, axis=-1)) if learned else out

    return fn


def conditioning(config: ADMConfig, batch: dict, key: jax.Array | None = None) -> dict:
    """The model's ``y`` and ``low_res`` for a batch {"image", "label"}; with ``key`` (training)
    each label becomes the null class with probability ``model.label_dropout``."""
    cond = {"y": None, "low_res": None}
    if config.model.class_cond:
        y = jnp.asarray(batch["label"], jnp.int32)
        if key is not None and config.model.label_dropout:
            drop = jax.random.bernoulli(key, config.model.label_dropout, y.shape)
            y = jnp.where(drop, config.model.null_class, y)
        cond["y"] = y
    if config.model.upsample:
        cond["low_res"] = downsample(to_model(batch["image"]))
    return cond


def loss_fn(config: ADMConfig, params, batch: dict, key):
    """L_simple (DDPM Eq. 14) or L_hybrid (improved DDPM Eq. 16, bits/dim), batch mean."""
    key_loss, key_dropout, key_labels = jax.random.split(key, 3)
    x0 = to_model(batch["image"])
    sched = schedule(config)
    model = model_fn(
        config, params, **conditioning(config, batch, key_labels), dropout_key=key_dropout
    )
    d = config.diffusion
    if d.loss == "simple":
        mse = jnp.mean(objectives.l_simple(sched, model, x0, key_loss))
        return mse, {"l_simple": mse}
    loss = objectives.hybrid_loss(
        sched, d.parameterisation(), model, x0, key_loss, lam=d.hybrid_lambda, bins=BINS
    )
    return jnp.mean(loss), {"l_hybrid": jnp.mean(loss)}


def check_labelled(config: ADMConfig, source) -> None:
    """Refuses unlabelled data for a class-conditional model."""
    if config.model.class_cond and len(source) and "label" not in source[0]:
        raise ValueError(
            f"model.class_cond needs labelled images; data.source={config.data.source} gives "
            "none (use data.source=digits_8x8 or mnist_5k, TFDS, a .npz with labels, or a "
            "folder with one sub-folder per class)."
        )


def exact_bound_fn(config: ADMConfig, params):
    """Jitted ``(batch, key) -> {"K", *terms.TERM_NAMES}`` in bits per image: L_T, every KL
    term t = 2..T at one forward sample each, the discretised decoder; conditioned on the
    batch's labels (class-conditional) or its low-resolution images (upsampler)."""
    sched = schedule(config)
    param = config.diffusion.parameterisation()

    @jax.jit
    def bound(batch, key):
        fn = parameterisation.make_reverse_fn(
            param, sched, model_fn(config, params, **conditioning(config, batch))
        )
        return terms.in_bits(
            gaussian.bound_terms(sched, fn, to_model(batch["image"]), key, bins=BINS)
        )

    return bound


def bound_of(config: ADMConfig) -> tuple[str, str]:
    """(the distribution whose negative log2-likelihood the bound bounds, in words)."""
    if config.model.upsample:
        return "p(x | x at half size)", "the upsampler's conditional codelength"
    if config.model.class_cond:
        return "p(x | y)", "a class-conditional codelength at the true label y"
    return "p(x)", "the 8-bit images' codelength"


def evaluate(config: ADMConfig, params, test_source, key) -> dict:
    """The exact bound over the test images in bits/dim and its terms."""
    values, limit = image_eval.over_test_images(
        exact_bound_fn(config, params),
        config.eval,
        test_source,
        key,
        "exact bound",
        gather_labelled,
    )
    k = values["K"]
    if not np.all(np.isfinite(k)):
        raise FloatingPointError(
            f"{np.sum(~np.isfinite(k))} test images have a non-finite bound; the checkpoint is "
            "unusable for evaluation."
        )
    dims = int(np.prod(config.image_shape()))
    bpd, bpd_se = likelihood.mean_and_stderr(-k / dims)
    of, words = bound_of(config)
    return {
        "nll_bits_per_dim": bpd,
        "nll_bits_per_dim_stderr": bpd_se,
        "nll_bits_per_dim_kind": common.exact_kind(config.eval.forward_samples)
        + f"; -log2 {of} ({words}) is at most this, per dimension",
        "bound_of": of,
        "bound_terms": common.bound_terms_results(values, "bits per dimension", per=dims),
        "num_test_examples": int(limit),
        "test_set_size": int(len(test_source)),
    }


def generate(
    config: ADMConfig,
    model,
    key: jax.Array,
    num: int,
    *,
    method: str = "ancestral",
    num_steps: int | None = None,
    timesteps=None,
    eta: float = 0.0,
    grad_fn=None,
    guidance_scale: float = 0.0,
) -> jax.Array:
    """``num`` samples (model units, (num, H, W, C)) of ``model(x_t, t)``.

    ``method``: ``"ancestral"`` (the model's kernel) or ``"ddim"`` (``eta``), both with
    x0_hat clipped to [-1, 1] as the released codes sample, over all T steps, ``num_steps``
    evenly strided ones (improved DDPM Sec. 4), or the user's ``timesteps`` (strictly
    decreasing in 1..T, the order the chain visits them). Classifier guidance:
    ``grad_fn(x, t_original)`` = grad_x log p(y | x, t) and its scale (ADM Algorithm 1 for
    ancestral, 2 for DDIM). Classifier-free guidance is a ``model`` that mixes
    (``experiments.adm_quality.cfg_model``)."""
    sched = schedule(config)
    param = config.diffusion.parameterisation()
    if timesteps is not None:
        kept = chain.timesteps_to_kept(timesteps, sched.num_steps)
    else:
        kept = chain.uniform_timesteps(sched.num_steps, num_steps or sched.num_steps)
    sub, timestep_map = chain.respace(sched, kept)
    shape = (num, *config.image_shape())

    def original_t(t):
        return timestep_map[t - 1]

    if method == "ddim":
        eps_fn = parameterisation.eps_model(param, model)
        if grad_fn is not None:
            # Algorithm 2 on the respaced chain: abar of the respaced step t, the
            # classifier at the original step.
            guided = guidance.classifier_guided_eps(
                sub,
                lambda x, t: eps_fn(x, original_t(t)),
                lambda x, t: grad_fn(x, original_t(t)),
                guidance_scale,
            )
            return ddim.sample(sub, guided, key, shape, eta=eta, clip_x0=(-1.0, 1.0))
        return ddim.sample(
            sub, eps_fn, key, shape, eta=eta, timestep_map=timestep_map, clip_x0=(-1.0, 1.0)
        )
    if method != "ancestral":
        raise ValueError(f"method must be 'ancestral' or 'ddim', got {method!r}.")
    fn = parameterisation.make_reverse_fn(param, sub, model, timestep_map, clip_x0=(-1.0, 1.0))
    if grad_fn is not None:
        fn = guidance.classifier_guided_reverse_fn(
            fn, lambda x, t: grad_fn(x, original_t(t)), guidance_scale
        )
    return gaussian.sample(sub, fn, key, shape, final="model_mean")


def sample_figures(config: ADMConfig, params, test_source, key, outdir: Path, name: str):
    """The sample grid (EMA parameters, 1000-step ancestral): one row per class for a
    class-conditional model; for an upsampler, rows of low-resolution test images, their
    upsampled samples and the real images."""
    n = config.eval.num_samples
    path = outdir / "figures" / f"{name}_samples.png"
    if config.model.upsample:
        batch = gather_labelled(test_source, np.arange(min(n, len(test_source))))
        cond = conditioning(config, batch)  # the half-size images (and labels, if any)
        low = cond["low_res"]
        model = model_fn(config, params, **cond)
        x = jax.jit(lambda k: generate(config, model, k, len(low)))(key)
        up = jax.image.resize(low, x.shape, "nearest")
        rows = [
            ("low-resolution input", to_unit(up)),
            ("upsampled sample", to_unit(x)),
            ("real image", to_unit(to_model(batch["image"]))),
        ]
        if jax.process_index() == 0:
            plotting.image_rows(path, rows, title=f"{name}: 2x upsampling (ADM-U), test images")
        return [path]
    y = None
    if config.model.class_cond:
        y = jnp.arange(n, dtype=jnp.int32) % 10
    model = model_fn(config, params, y=y)
    x = jax.jit(lambda k: generate(config, model, k, n))(key)
    title = f"{name} samples (EMA, {config.diffusion.steps}-step ancestral)"
    if jax.process_index() == 0 and y is None:
        plotting.image_grid(path, to_unit(x), title=title)
    elif jax.process_index() == 0:
        rows = [(f"class {c}", to_unit(x[c::10])) for c in range(min(n, 10))]
        plotting.image_rows(path, rows, title=title + ", one class per row")
    return [path]


def _initial_state(config: ADMConfig, keys: dict) -> train_state.TrainState:
    return train_state.create_train_state(
        init_params(config, keys["init"]), ddpm.make_optimizer(config), keys["train"]
    )


class ADMExperiment(common.Experiment):
    """Improved DDPM / ADM on 8-bit images (``python -m experiments.adm``)."""

    name = "adm"
    description = DESCRIPTION
    units = UNITS
    paper = PAPER
    config_class = ADMConfig
    presets = PRESETS
    mutable_keys = MUTABLE_KEYS
    legacy_keys: dict = {}

    def load_split(self, config: ADMConfig, split: str):
        return images.load_data_split(config.data, split, config.image_shape())

    def run(self, config: ADMConfig, workdir: Path, eval_only: bool = False) -> dict:
        start_time = time.time()
        workdir = Path(workdir)
        common.check_workdir(self, config, workdir)
        train_source = self.load_split(config, "train")
        test_source = self.load_split(config, "test")
        check_labelled(config, train_source)
        keys = common.experiment_keys(config.seed)
        state = self.train(config, workdir, train_source, eval_only)
        params = train_state.eval_params(state, config.train.ema_decay)
        results = evaluate(config, params, test_source, keys["eval"])
        out = common.output_dir(workdir, eval_only)
        figures = sample_figures(config, params, test_source, keys["figure"], out, self.name)
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

    def figures(self, config: ADMConfig, workdir: Path) -> list[Path]:
        """Redraws the sample figure from the latest checkpoint (no training, no bound)."""
        workdir = Path(workdir)
        common.check_workdir(self, config, workdir)
        keys = common.experiment_keys(config.seed)
        state = restore(config, workdir, flag="--figures")
        params = train_state.eval_params(state, config.train.ema_decay)
        test_source = self.load_split(config, "test")
        return sample_figures(config, params, test_source, keys["figure"], workdir, self.name)

    def train(self, config: ADMConfig, workdir: Path, train_source, eval_only: bool):
        """Data-parallel training through the one runner (labels travel with the images)."""
        keys = common.experiment_keys(config.seed)
        mesh = sharding.data_mesh()
        batch_size = config.train.batch_size
        rows = sharding.process_batch_slice(batch_size, mesh)

        def batch_fn(step: int) -> dict:
            indices = train_batch_indices(len(train_source), batch_size, config.seed, step)
            batch = gather_labelled(train_source, indices[rows])
            if config.data.random_flip:
                batch["image"] = ddpm.flip_batch(batch["image"], config.seed, step, rows)
            return batch

        return common.train_or_restore(
            self,
            config,
            workdir,
            eval_only,
            state=_initial_state(config, keys),
            mesh=mesh,
            loss_fn=lambda params, batch, key: loss_fn(config, params, batch, key),
            tx=ddpm.make_optimizer(config),
            batch_fn=batch_fn,
            compiler_options=xla_options.eigen_cpu_kernels(),
        )

    def report(self, results: dict) -> str:
        r = results
        t = r["bound_terms"]
        return "\n".join(
            [
                f"adm, T = {r['T']}, {r['train_steps']} training steps, "
                f"{r['num_test_examples']} of {r['test_set_size']} test images, "
                f"{r['num_parameters']:,} parameters",
                f"  NLL (exact bound)      = {r['nll_bits_per_dim']:.3f} +- "
                f"{r['nll_bits_per_dim_stderr']:.3f} bits/dim (8-bit)",
                f"  terms (bits/dim)       = L_T {t['prior_L_T']:.2e}, KL t=2..T "
                f"{t['kl_sum_t2_to_T']:.3f}, decoder L_0 {t['decoder_L_0']:.3f}",
                f"  wall time {r['wall_seconds']:.0f} s; figures: {', '.join(r['figures'])}",
            ]
        )


def restore(config: ADMConfig, workdir: Path, flag: str = "--eval_only") -> train_state.TrainState:
    """The latest checkpoint of a finished or interrupted run in ``workdir``."""
    keys = common.experiment_keys(config.seed)
    return runner.restore_run(
        Path(workdir), _initial_state(config, keys), sharding.data_mesh(), flag=flag
    )


experiment = ADMExperiment()


def main(argv: list[str] | None = None) -> None:
    experiment.main(argv)


if __name__ == "__main__":
    main()
