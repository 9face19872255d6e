"""What the 8-bit image experiments share: :class:`ImageExperiment`, training and the run.

Not an experiment itself: ``experiments.mnist``, ``experiments.cifar10``,
``experiments.dead_leaves`` and ``experiments.bark`` each define an :class:`ImageExperiment`
with their config (``experiments.image_config``); MNIST and CIFAR-10 read the source that
``data.source`` names (:func:`load_data_split`: TFDS, a .npz/.npy file, an image folder, or
MNIST's real digits shipped with pip packages); dead leaves and bark override
:meth:`ImageExperiment.load_split` with their own data. The parts: the config
(``image_config``), the model, loss and optimiser (``image_model``), the exact test bound
(``image_eval``), the figures (``image_figures``) and Table 2's Parzen rows
(``image_parzen``).

The scale and shift that give the dequantised data unit variance are one global pair
computed exactly over the whole training set on the first run and stored in
``WORKDIR/scaling.json``; every later use (resume, ``--eval_only``, ``--figures``) reads
them back.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jax
import numpy as np

from dpm_jax import rundir, runner, sharding, train_state
from dpm_jax.data import arrays, digits, images
from dpm_jax.data.batching import gather_images, train_batch_indices
from dpm_jax.data.scaling import ImageScaling, fit_scaling
from experiments import (
    common,
    image_eval,
    image_figures,
    image_inpainting,
    image_model,
    image_parzen,
)
from experiments.image_config import ImageConfig

SCALING_FILE = "scaling.json"


class ImageExperiment(common.Experiment):
    """An 8-bit image experiment: run, figures and report shared; data from TFDS unless a
    subclass overrides :meth:`load_split`."""

    def load_split(self, config: ImageConfig, split: str):
        """Split ``"train"`` or ``"test"`` as a source of uint8 images (``dpm_jax.data.images``);
        here from ``config.data.source`` (:func:`load_data_split`)."""
        return load_data_split(config.data, split, config.image_shape())

    def run(self, config: ImageConfig, workdir: Path, eval_only: bool = False) -> dict:
        """Trains (resuming from ``workdir``), evaluates the exact test bound, writes results."""
        start_time = time.time()
        workdir = Path(workdir)
        common.check_workdir(self, config, workdir)
        train_source = self.load_split(config, "train")
        test_source = self.load_split(config, "test")
        scaling = scaling_for_run(config, workdir, train_source, eval_only)
        keys = common.experiment_keys(config.seed)
        state = train(self, config, workdir, train_source, scaling, eval_only)
        params = train_state.eval_params(state, config.train.ema_decay)
        results = image_eval.evaluate(config, params, scaling, test_source, keys["eval"])
        results.update(
            image_eval.pixel_categorical_results(
                train_source, test_source, results["num_test_examples"]
            )
        )
        out = common.output_dir(workdir, eval_only)
        figures = image_figures.draw_figures(
            self.name, config, state, scaling, test_source, keys, out
        )
        if config.eval.inpainting_examples:
            results["inpainting"] = image_inpainting.inpainting_results(
                config, params, scaling, test_source, jax.random.fold_in(keys["eval"], 1)
            )
        if config.eval.parzen_samples:
            results.update(
                image_parzen.parzen_results(
                    config, params, scaling, train_source, test_source, keys["ceiling"]
                )
            )
        figures += image_figures.learning_curve_figure(self.name, workdir, results, scaling, out)
        results["scaling"] = dataclasses.asdict(scaling)
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

    def figures(self, config: ImageConfig, workdir: Path) -> list[Path]:
        """Redraws the figures from the latest checkpoint in ``workdir`` (no training or
        evaluation)."""
        workdir = Path(workdir)
        common.check_workdir(self, config, workdir)
        keys = common.experiment_keys(config.seed)
        mesh = sharding.data_mesh()
        state = runner.restore_run(workdir, _initial_state(config, keys), mesh, flag="--figures")
        scaling = scaling_for_run(config, workdir, None, eval_only=True)
        test_source = self.load_split(config, "test")
        figures = image_figures.draw_figures(
            self.name, config, state, scaling, test_source, keys, workdir
        )
        results_path = workdir / "results.json"
        if results_path.exists():  # the learning curve's levels come from the last evaluation
            results = json.loads(results_path.read_text())
            figures += image_figures.learning_curve_figure(
                self.name, workdir, results, scaling, workdir
            )
        return figures

    def report(self, results: dict) -> str:
        r = results
        paper = self.paper
        lines = [
            f"{r['experiment']}, T = {r['T']}, {r['train_steps']} training steps, "
            f"{r['num_test_examples']} of {r['test_set_size']} test images, "
            f"{r['num_parameters']:,} parameters",
            f"  K (exact test bound)   = {r['K']:.3f} +- {r['K_stderr']:.3f} {self.units}"
            f"   [paper: {paper.get('K', 'n/a')}]",
            f"  K - L_null             = {r['K_minus_L_null']:.3f} +- "
            f"{r['K_minus_L_null_stderr']:.3f}   [paper: {paper.get('K_minus_L_null', 'n/a')}]",
            f"  NLL, 8-bit scale       = {r['nll_bits_per_dim_8bit']:.3f} +- "
            f"{r['nll_bits_per_dim_8bit_stderr']:.3f} bits/dim (upper bound)",
            f"  baselines, same images = L_null {r['L_null_nll_bits_per_dim_8bit']:.3f} +- "
            f"{r['L_null_nll_bits_per_dim_8bit_stderr']:.3f} (upper bound), per-pixel "
            f"categorical {r['pixel_categorical_nll_bits_per_dim_8bit']:.3f} +- "
            f"{r['pixel_categorical_nll_bits_per_dim_8bit_stderr']:.3f} (exact) bits/dim",
        ]
        if "K_ceiling" in r:
            lines.append(
                f"  ceiling (schedule)     = K <= {r['K_ceiling']:.3f} {self.units}, NLL >= "
                f"{r['nll_bits_per_dim_8bit_floor']:.3f} bits/dim (Eq. 44's fixed first step)"
            )
        for method in ("clamp", "renoise"):
            m = r.get("inpainting", {}).get(method)
            if m:
                lines.append(
                    f"  inpainting, {method:<11}= squared error {m['squared_error']:.4f} +- "
                    f"{m['squared_error_stderr']:.4f} per hidden pixel; K_hidden "
                    f"{m['K_hidden']:.3f} +- {m['K_hidden_stderr']:.3f} bits/pixel "
                    f"({m['nll_bits_per_dim_8bit']:.3f} +- "
                    f"{m['nll_bits_per_dim_8bit_stderr']:.3f} bits/dim, 8-bit)"
                )
        if "parzen_log_likelihood_bits" in r:
            lines += [
                f"  Parzen estimate        = {r['parzen_log_likelihood_bits']:.1f} +- "
                f"{r['parzen_log_likelihood_bits_stderr']:.1f} bits per image (sigma "
                f"{r['parzen_sigma']:.3f})   "
                f"[paper: {paper.get('parzen_log_likelihood_bits', 'n/a')}]",
                f"  Parzen, perfect model  = {r['parzen_perfect_model_bits']:.1f} +- "
                f"{r['parzen_perfect_model_bits_stderr']:.1f} bits per image (training images)",
            ]
        lines.append(f"  wall time {r['wall_seconds']:.0f} s; figures: {', '.join(r['figures'])}")
        return "\n".join(lines)


def load_data_split(data, split: str, image_shape: tuple[int, int, int]):
    """Split ``"train"`` or ``"test"`` of MNIST's or CIFAR-10's ``data`` section by its
    ``source``: the TFDS dataset ``data.dataset`` (``images.load_image_source``), the file or
    folder ``data.path`` (``dpm_jax.data.arrays``, images of ``image_shape``), or a named
    digit set (``dpm_jax.data.digits``, ``data.path`` optionally a copy of its file)."""
    source, path = data.source, data.path
    if source == "tfds":
        if path:
            raise ValueError(
                f"data.path={path!r} is read only with data.source=npz or folder (or a copy of "
                "a digit file); add --config.data.source=npz (a .npz/.npy file) or "
                "--config.data.source=folder (an image folder), or drop data.path."
            )
        return images.load_image_source(data.dataset, split, data.data_dir or None)
    if source in digits.FILES:
        return digits.load_digits_split(source, split, path or None)
    if not path:
        kind = "a .npz or .npy file" if source == "npz" else "a folder of PNG/JPEG images"
        raise FileNotFoundError(
            f"data.source={source} reads {kind}: pass it as --config.data.path=PATH."
        )
    loader = {"npz": arrays.load_array_split, "folder": arrays.load_folder_split}[source]
    return loader(path, split, image_shape)


def scaling_for_run(config: ImageConfig, workdir: Path, train_source, eval_only: bool):
    """The run's scaling: read from ``workdir/scaling.json``, else fitted and written there."""
    path = Path(workdir) / SCALING_FILE
    if path.exists():
        return ImageScaling(**json.loads(path.read_text()))
    if eval_only:
        raise FileNotFoundError(
            f"{path} is missing: this run's data scaling is unknown. Train first (drop "
            "--eval_only), which writes it."
        )
    print(f"fitting the global scaling on {len(train_source):,} training images ...")
    scaling = fit_scaling(train_source)
    rundir.write_json_atomic(path, dataclasses.asdict(scaling))
    return scaling


def _initial_state(config: ImageConfig, keys: dict) -> train_state.TrainState:
    return train_state.create_train_state(
        image_model.init_params(config, keys["init"]),
        image_model.make_optimizer(config),
        keys["train"],
    )


def train(
    experiment: ImageExperiment,
    config: ImageConfig,
    workdir: Path,
    train_source,
    scaling: ImageScaling,
    eval_only: bool = False,
) -> train_state.TrainState:
    """Trains on ``train_source`` (resuming from ``workdir``) or, with ``eval_only``, restores.

    Data parallel over every device of every process (``runner.train_or_restore``); each
    process loads only its rows of every batch.
    """
    keys = common.experiment_keys(config.seed)

    def loss_fn(params, batch, key):
        return image_model.loss_fn(config, scaling, params, batch, key)

    return train_on_images(
        experiment,
        config,
        workdir,
        train_source,
        eval_only,
        state=_initial_state(config, keys),
        loss_fn=loss_fn,
        tx=image_model.make_optimizer(config),
    )


def train_on_images(
    experiment: common.Experiment,
    config,
    workdir: Path,
    train_source,
    eval_only: bool,
    *,
    state: train_state.TrainState,
    loss_fn,
    tx,
    augment=None,
    compiler_options: dict[str, str] | None = None,
) -> train_state.TrainState:
    """``runner.train_or_restore`` on batches of ``train_source``, data parallel over every
    device of every process; each process loads only its rows of every batch.

    Batch ``step`` holds the images ``train_batch_indices(..., config.seed, step)``, then
    ``augment(rows_of_batch, step, rows)`` where given (``rows``: this process's slice of
    the global batch), so a resumed run sees the same data. ``compiler_options``: XLA
    options for the train step's compilation (``runner.fit``).
    """
    mesh = sharding.data_mesh()
    batch_size = config.train.batch_size
    rows = sharding.process_batch_slice(batch_size, mesh)

    def batch_fn(step: int) -> np.ndarray:
        """This process's rows of the global batch of ``step`` (uint8, on the host)."""
        indices = train_batch_indices(len(train_source), batch_size, config.seed, step)
        batch = gather_images(train_source, indices[rows])
        return batch if augment is None else augment(batch, step, rows)

    return common.train_or_restore(
        experiment,
        config,
        workdir,
        eval_only,
        state=state,
        mesh=mesh,
        loss_fn=loss_fn,
        tx=tx,
        batch_fn=batch_fn,
        compiler_options=compiler_options,
    )
