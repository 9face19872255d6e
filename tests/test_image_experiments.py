"""MNIST and CIFAR-10 experiments end to end on tfds mock data; full-size configs take a step."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from dpm_jax import train_state
from dpm_jax.data import ImageScaling, images
from experiments import cifar10, common, image_model, mnist
from experiments import config as cfg
from experiments import images as image_experiment


@pytest.fixture
def mock_tfds(monkeypatch):
    """tfds.testing.mock_data with random uint8 images, any split, no files."""
    original = images.load_image_source

    def load(name, split, data_dir=None):
        source = original(name, split, data_dir)
        inner = source.data_source
        # tfds 4.9.10's mock sets __getitems__ as a plain attribute (called without self);
        # route batched reads through the mocked __getitem__.
        inner.__getitems__ = lambda keys: [inner[k] for k in keys]
        return source

    monkeypatch.setattr(images, "load_image_source", load)
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        yield


@pytest.mark.parametrize("module", [mnist, cifar10], ids=["mnist", "cifar10"])
def test_small_preset_end_to_end(module, mock_tfds, tmp_path):
    config = cfg.replace(
        module.PRESETS["small"],
        {
            "train.steps": 6,
            "train.checkpoint_every": 3,
            "train.log_every": 3,
            "train.batch_size": 4,
            "eval.batch_size": 5,
            "eval.num_samples": 4,
            "diffusion.steps": 10,
        },
    )
    experiment = module.experiment
    results = experiment.run(config, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["experiment"] == experiment.name and saved["train_steps"] == 6
    assert saved["config"] == cfg.to_json(config)  # dotted keys
    assert saved["num_test_examples"] == 12 == saved["test_set_size"]  # padded batch, none lost
    for key in ("K", "K_stderr", "K_minus_L_null", "nll_bits_per_dim_8bit", "L_null"):
        assert np.isfinite(saved[key]), key
    assert (
        "bits per pixel" in saved["units"] and "upper bound" in saved["nll_bits_per_dim_8bit_kind"]
    )
    height, width, channels = images.IMAGE_SHAPES[experiment.name]
    # L_null is per pixel summed over colours: about -channels * 2.047 bits on unit-variance data.
    assert saved["L_null"] < 0
    # The two units describe the same bound.
    scaling = ImageScaling(**saved["scaling"])
    bpd = -saved["K"] * height * width / (height * width * channels) - np.log2(scaling.scale / 256)
    np.testing.assert_allclose(saved["nll_bits_per_dim_8bit"], bpd, rtol=1e-9)
    assert all((tmp_path / f).exists() for f in saved["figures"]) and len(saved["figures"]) == 3
    assert saved["figures"][-1].endswith("_learning_curve.png")
    # K <= -L_0, Eq. 44's fixed first step: about 0.5 log2(1 / (2 pi e beta_1)) per dimension.
    beta_1 = float(image_model.schedule(config).betas[0])
    cap = channels * 0.5 * np.log2(1 / (2 * np.pi * np.e * beta_1))
    assert saved["K"] < saved["K_ceiling"] and abs(saved["K_ceiling"] - cap) < 0.05
    inpainting = saved["inpainting"]
    assert inpainting["num_images"] == 12 and inpainting["hidden_dims_per_image"] == (
        height * width // 4 * channels
    )
    for method in ("clamp", "renoise"):
        m = inpainting[method]
        assert 0 < m["squared_error"] < 1 and m["squared_error_stderr"] > 0
        assert m["K_hidden"] < saved["K_ceiling"] and np.isfinite(m["nll_bits_per_dim_8bit"])
    assert (tmp_path / image_experiment.SCALING_FILE).exists()
    again = experiment.run(config, tmp_path, eval_only=True)  # same checkpoint, keys and scaling
    assert again["K"] == results["K"]


def test_mnist_parzen_rows_and_figures_only(mock_tfds, tmp_path, capsys):
    overrides = {
        "train.steps": 2,
        "train.checkpoint_every": 2,
        "train.log_every": 1,
        "train.batch_size": 4,
        "eval.batch_size": 12,
        "eval.num_samples": 4,
        "diffusion.steps": 5,
        "eval.parzen_samples": 6,
        "eval.parzen_validation": 4,
        "eval.num_posterior_examples": 3,
    }
    config = cfg.replace(mnist.PRESETS["small"], overrides)
    r = mnist.experiment.run(config, tmp_path)
    for key in ("parzen_log_likelihood_bits", "parzen_perfect_model_bits", "parzen_sigma"):
        assert np.isfinite(r[key]), key
    assert "estimate" in r["parzen_kind"].lower() and "6 samples" in r["parzen_kind"]
    report = mnist.experiment.report(r)
    assert "Parzen estimate" in report and "ceiling (schedule)" in report
    assert "inpainting, clamp" in report and "inpainting, renoise" in report
    for f in r["figures"]:
        (tmp_path / f).unlink()
    argv = ["--workdir", str(tmp_path), "--preset", "small", "--figures"] + [
        f"--config.{k}={overrides[k]}"
        for k in ("train.steps", "train.batch_size", "diffusion.steps", "eval.num_samples")
    ]
    mnist.main(argv)
    assert all((tmp_path / f).exists() for f in r["figures"])
    assert "wrote" in capsys.readouterr().out


def test_eval_only_without_a_run_says_what_to_do(mock_tfds, tmp_path):
    with pytest.raises(FileNotFoundError, match="Train first"):
        mnist.experiment.run(mnist.PRESETS["small"], tmp_path, eval_only=True)


def test_missing_dataset_exits_with_instructions(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        mnist.main(
            [
                "--workdir",
                str(tmp_path / "run"),
                "--preset",
                "small",
                f"--config.data.data_dir={tmp_path / 'empty'}",
            ]
        )
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "mnist" in err and "not prepared" in err and "array_record" in err


def test_image_size_must_divide_by_the_scales():
    with pytest.raises(ValueError, match="model.num_scales"):
        cfg.replace(mnist.PRESETS["default"], {"model.num_scales": 4})  # 28 % 8 != 0
    cfg.replace(mnist.PRESETS["default"], {"model.num_scales": 3})  # 28, 14, 7


def test_bad_config_values_are_refused():
    with pytest.raises(ValueError, match="model.network"):
        cfg.replace(mnist.PRESETS["default"], {"model.network": "resnet"})
    with pytest.raises(ValueError, match="dense pathway"):
        cfg.replace(mnist.PRESETS["default"], {"model.conv_layers": 0, "model.dense_layers": 0})
    with pytest.raises(ValueError, match="model.readout"):
        cfg.replace(mnist.PRESETS["default"], {"model.readout": "tanh"})
    from experiments import dead_leaves

    with pytest.raises(ValueError, match=r"data.num_train_images \(256\) must be >= train.batch"):
        cfg.replace(dead_leaves.PRESETS["small"], {"train.batch_size": 512})


@pytest.mark.parametrize(
    "module, preset, num_params",
    [
        (mnist, "default", 1_762_928),
        (cifar10, "default", 13_385_280),
        (mnist, "paper", None),
        (cifar10, "paper", 13_385_280 - 6 * 100 * (34 * 34 - 1)),
    ],
    ids=["mnist", "cifar10", "mnist-paper", "cifar10-paper"],
)
def test_full_size_configurations_compile_and_take_a_step(module, preset, num_params):
    config = cfg.replace(module.PRESETS[preset], {"train.batch_size": 2})
    keys = common.experiment_keys(0)
    params = image_model.init_params(config, keys["init"])
    count = sum(p.size for p in jax.tree.leaves(params))
    if num_params is not None:
        assert count == num_params
    tx = image_model.make_optimizer(config)
    state = train_state.create_train_state(params, tx, keys["train"])
    scaling = ImageScaling(scale=3.0, shift=-1.0)
    step = train_state.make_train_step(
        lambda p, b, k: image_model.loss_fn(config, scaling, p, b, k), tx
    )
    batch = jax.random.randint(
        keys["train_data"], (2, *images.IMAGE_SHAPES[module.experiment.name]), 0, 256
    ).astype(jnp.uint8)
    state, metrics = step(state, batch)
    assert int(state.step) == 1 and np.isfinite(float(metrics["loss"]))


def test_learning_rate_follows_the_released_schedule():
    schedule = image_model.learning_rate(mnist.PRESETS["default"])
    factor = np.exp(np.log(0.1) / 1000)  # x 0.1 per 1000 decays, one decay every 500 steps
    np.testing.assert_allclose(schedule(0), 1e-3)
    np.testing.assert_allclose(schedule(499), 1e-3)
    np.testing.assert_allclose(schedule(500), 1e-3 * factor, rtol=1e-6)
    np.testing.assert_allclose(schedule(500 * 500), 1e-3 * factor**500, rtol=1e-4)
    np.testing.assert_allclose(schedule(500 * 2000), 1e-4, rtol=1e-6)  # the floor


def test_dead_leaves_small_preset_end_to_end(tmp_path):
    from experiments import dead_leaves

    config = cfg.replace(
        dead_leaves.PRESETS["small"], {"train.steps": 4, "train.checkpoint_every": 2}
    )
    experiment = dead_leaves.experiment
    results = experiment.run(config, tmp_path)
    assert results["num_test_examples"] == config.data.num_test_images
    assert np.isfinite(results["K"]) and np.isfinite(results["nll_bits_per_dim_8bit"])
    assert results["num_parameters"] > 0 and (tmp_path / results["figures"][0]).exists()
    # The generated data are a function of the seed: the same test set on every call.
    a = experiment.load_split(config, "test")
    b = experiment.load_split(config, "test")
    np.testing.assert_array_equal(a.pixels, b.pixels)
    train = experiment.load_split(config, "train")
    assert not any(np.array_equal(t, x) for t in a.pixels[:5] for x in train.pixels)


def _bark_folder(root, size=20, per_class=6):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("T01", "T02", "T03", "T04"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{cls}_{i:02d}.png")
    return root


def test_bark_small_preset_on_a_generated_folder(tmp_path):
    from experiments import bark

    folder = _bark_folder(tmp_path / "uiuc")
    config = cfg.replace(
        bark.PRESETS["small"],
        {
            "data.folder": str(folder),
            "train.steps": 4,
            "train.checkpoint_every": 2,
            "data.num_test_per_class": 1,
        },
    )
    r = bark.experiment.run(config, tmp_path / "run")
    # Test patches: a 2 x 2 grid of 8-pixel patches in each of the 4 held-out images.
    assert r["num_test_examples"] == 16 and np.isfinite(r["K"])
    assert r["T"] == 20 and len(r["figures"]) == 3  # samples, posterior, learning curve


def test_bark_without_a_folder_says_where_to_get_it(tmp_path, capsys):
    from experiments import bark

    with pytest.raises(SystemExit):
        bark.main(["--workdir", str(tmp_path / "run"), "--preset", "small"])
    assert "--config.data.folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bark.main(
            [
                "--workdir",
                str(tmp_path / "run"),
                "--preset",
                "small",
                f"--config.data.folder={tmp_path / 'nowhere'}",
            ]
        )
    assert "UIUC" in capsys.readouterr().err
    small = _bark_folder(tmp_path / "tiny", size=6, per_class=5)
    with pytest.raises(SystemExit):
        bark.main(
            [
                "--workdir",
                str(tmp_path / "run2"),
                "--preset",
                "small",
                f"--config.data.folder={small}",
            ]
        )
    assert "smaller than" in capsys.readouterr().err
