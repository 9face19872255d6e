"""Image data: TFDS loading without TensorFlow, deterministic batches, scaling and units."""

import dataclasses
import json
import math
import os
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core import constants as tfds_constants

from dpm_jax.data import batching, images
from dpm_jax.data.batching import steps_per_epoch, train_batch, train_batch_indices, train_batches
from dpm_jax.data.images import DatasetNotPrepared, check_image_size, load_image_source
from dpm_jax.data.scaling import (
    ImageScaling,
    dequantize,
    fit_scaling,
    pixel_moments,
    preprocess,
)
from dpm_jax.likelihood import bits_per_dim_8bit


class FakeSource:
    """NumPy-backed data source: example i is {"image": images[i], "label": i}.

    Records every read so tests can check that batching reads only what it needs.
    """

    def __init__(self, pixels: np.ndarray, batched: bool = True):
        self.pixels = pixels
        self.reads: list[int] = []  # number of examples per read call
        if batched:
            self.__getitems__ = self._getitems

    def __len__(self):
        return len(self.pixels)

    def __getitem__(self, i):
        self.reads.append(1)
        return {"image": self.pixels[i], "label": i}

    def _getitems(self, keys):
        self.reads.append(len(keys))
        return [{"image": self.pixels[i], "label": i} for i in keys]


def indexed_source(n: int, shape=(2, 2, 1), batched: bool = True) -> FakeSource:
    """Example i has every pixel equal to i (n <= 256), so a batch reveals its indices."""
    pixels = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, *shape))
    return FakeSource(np.ascontiguousarray(pixels), batched)


def ids(batch: np.ndarray) -> np.ndarray:
    return batch[:, 0, 0, 0].astype(int)


# ------------------------------------------------------------------------------------------
# Loading through tfds.data_source


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_loader_serves_uint8_nhwc_under_tfds_mock_data(name, tmp_path):
    with tfds.testing.mock_data(num_examples=10, policy=tfds.testing.MockPolicy.USE_CODE):
        source = load_image_source(name, "train", data_dir=tmp_path)
        assert len(source) == 10
        image = source[3]["image"]
        assert image.dtype == np.uint8 and image.shape == images.IMAGE_SHAPES[name]
        # tfds 4.9.10's mock sets __getitems__ on a MagicMock as a plain attribute, so it is
        # called without `self` and raises TypeError; route batched reads through the mocked
        # __getitem__ (a real ArrayRecordDataSource has a working __getitems__).
        inner = source.data_source
        inner.__getitems__ = lambda keys: [inner[k] for k in keys]
        batch = train_batch(source, batch_size=4, seed=0, step=3)
        assert batch.shape == (4, *images.IMAGE_SHAPES[name]) and batch.dtype == np.uint8
        perm = train_batch_indices(10, 4, seed=0, step=3)
        np.testing.assert_array_equal(batch, np.stack([source[int(i)]["image"] for i in perm]))
    assert "tensorflow" not in sys.modules


class DpmJaxTinyImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A real, TF-free array_record dataset (tfds.features.Tensor needs no PNG encoding)."""

    VERSION = tfds.core.Version("1.0.0")  # name: "dpm_jax_tiny_images"

    def _info(self):
        image = tfds.features.Tensor(shape=(4, 4, 1), dtype=np.uint8)
        return tfds.core.DatasetInfo(
            builder=self, features=tfds.features.FeaturesDict({"image": image})
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(7), "test": self._generate_examples(3)}

    def _generate_examples(self, n):
        for i in range(n):
            yield i, {"image": np.full((4, 4, 1), i, np.uint8)}


@pytest.fixture
def tiny_dataset(tmp_path, monkeypatch):
    """Prepares DpmJaxTinyImages as array_record in tmp_path; the loader accepts its name."""
    DpmJaxTinyImages(data_dir=tmp_path, file_format="array_record").download_and_prepare()
    monkeypatch.setitem(images.IMAGE_SHAPES, DpmJaxTinyImages.name, (4, 4, 1))
    return tmp_path


def test_loader_reads_real_array_record_files_without_tensorflow(tiny_dataset):
    source = load_image_source(DpmJaxTinyImages.name, "train", data_dir=tiny_dataset)
    assert len(source) == 7
    batch = batching.gather_images(source, range(7))
    assert batch.dtype == np.uint8 and batch.shape == (7, 4, 4, 1)
    assert sorted(ids(batch)) == list(range(7))  # TFDS shuffles the order on disk
    assert len(load_image_source(DpmJaxTinyImages.name, "test[:2]", data_dir=tiny_dataset)) == 2
    assert "tensorflow" not in sys.modules


def test_unknown_split_is_not_reported_as_unprepared(tiny_dataset):
    with pytest.raises(ValueError, match="Unknown split") as info:
        load_image_source(DpmJaxTinyImages.name, "validation", data_dir=tiny_dataset)
    assert not isinstance(info.value, DatasetNotPrepared)


def test_dataset_prepared_only_as_tfrecord_is_reported(tiny_dataset):
    path = tiny_dataset / DpmJaxTinyImages.name / "1.0.0" / "dataset_info.json"
    info = json.loads(path.read_text())
    path.write_text(json.dumps({**info, "fileFormat": "tfrecord"}))
    with pytest.raises(DatasetNotPrepared, match="without random access"):
        load_image_source(DpmJaxTinyImages.name, "train", data_dir=tiny_dataset)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_missing_dataset_raises_dataset_not_prepared(name, tmp_path):
    with pytest.raises(DatasetNotPrepared) as info:
        load_image_source(name, "train", data_dir=tmp_path)
    message = str(info.value)
    assert f"'{name}'" in message and str(tmp_path) in message
    assert f"tfds build {name} --file_format=array_record" in message
    assert isinstance(info.value, RuntimeError)
    assert list(tmp_path.iterdir()) == []  # nothing downloaded or created


def test_missing_dataset_in_default_data_dir(tmp_path, monkeypatch):
    # TFDS reads $TFDS_DATA_DIR once, at import, into constants.DATA_DIR.
    monkeypatch.setattr(tfds_constants, "DATA_DIR", os.fspath(tmp_path))
    with pytest.raises(DatasetNotPrepared, match="'mnist' is not prepared") as info:
        load_image_source("mnist", "test")
    assert str(tmp_path) in str(info.value)


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="Unknown image dataset"):
        load_image_source("imagenet", "train")


# ------------------------------------------------------------------------------------------
# Batches


def test_train_batch_is_a_function_of_seed_and_step():
    source = indexed_source(10)
    a = train_batch(source, 3, seed=5, step=4)
    b = train_batch(source, 3, seed=5, step=4)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3, 2, 2, 1) and a.dtype == np.uint8
    assert not np.array_equal(ids(a), ids(train_batch(source, 3, seed=6, step=4)))


def test_resumed_stream_matches_uninterrupted_stream():
    source = indexed_source(10)
    full = list(train_batches(source, 3, seed=1, num_steps=12))
    resumed = list(train_batches(source, 3, seed=1, start_step=5, num_steps=7))
    for step in range(12):
        np.testing.assert_array_equal(full[step], train_batch(source, 3, 1, step))
    for got, want in zip(resumed, full[5:], strict=True):
        np.testing.assert_array_equal(got, want)


def test_each_epoch_is_a_fresh_permutation_without_repeats():
    n, batch = 12, 3
    source = indexed_source(n)
    per_epoch = steps_per_epoch(n, batch)
    assert per_epoch == 4
    seen = ids(np.concatenate(list(train_batches(source, batch, seed=0, num_steps=3 * per_epoch))))
    epochs = seen.reshape(3, n)
    for epoch in epochs:
        assert sorted(epoch) == list(range(n))  # every example exactly once
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])


def test_ragged_tail_is_dropped_and_reads_stay_batch_sized():
    source = indexed_source(10)  # 3 batches of 3 per epoch, one example left over
    seen = ids(np.concatenate(list(train_batches(source, 3, seed=2, num_steps=3))))
    assert len(set(seen)) == 9
    left_out = set(range(10)) - set(seen)
    assert left_out == {int(batching.epoch_permutation(10, 2, 0)[-1])}
    assert max(source.reads) == 3  # never more than one batch in memory


def test_batches_work_without_getitems():
    batched, single = indexed_source(10), indexed_source(10, batched=False)
    np.testing.assert_array_equal(train_batch(batched, 4, 0, 7), train_batch(single, 4, 0, 7))
    assert set(single.reads) == {1}


def test_batch_argument_errors():
    source = indexed_source(4)
    with pytest.raises(ValueError, match="exceeds"):
        train_batch(source, 5, 0, 0)
    with pytest.raises(ValueError, match="seed"):
        train_batch(source, 2, -1, 0)
    with pytest.raises(ValueError, match="step"):
        train_batch(source, 2, 0, -1)
    with pytest.raises(ValueError, match="uint8"):
        train_batch(FakeSource(np.zeros((4, 2, 2, 1), np.float32)), 2, 0, 0)


# ------------------------------------------------------------------------------------------
# Dequantisation and scaling


def random_pixels(n=40, shape=(3, 4, 2), seed=0) -> np.ndarray:
    """Skewed 8-bit values, so mean and variance are not those of a uniform."""
    rng = np.random.default_rng(seed)
    return (255 * rng.beta(0.7, 2.0, size=(n, *shape))).astype(np.uint8)


def test_dequantize_stays_in_the_pixel_cell():
    pixels = random_pixels()
    pixels[0] = 255
    x = np.asarray(dequantize(pixels, jax.random.PRNGKey(0)))
    assert x.dtype == np.float32 and x.shape == pixels.shape
    assert x.min() >= 0.0 and x.max() < 1.0
    np.testing.assert_array_equal(np.floor(x.astype(np.float64) * 256), pixels)
    assert not np.array_equal(x, np.asarray(dequantize(pixels, jax.random.PRNGKey(1))))
    jitted = jax.jit(dequantize)(pixels, jax.random.PRNGKey(0))  # no value checks under jit
    np.testing.assert_array_equal(np.asarray(jitted), x)


def test_dequantize_rejects_bad_pixels():
    good = random_pixels(2).astype(np.float32)
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="non-finite"):
        dequantize(np.where(good == good.max(), np.nan, good), key)
    with pytest.raises(ValueError, match="rank 4"):
        dequantize(good[0], key)
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        dequantize(good - good.min() - 1.0, key)
    with pytest.raises(ValueError, match="whole numbers"):
        dequantize(good + 0.5, key)
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        dequantize(good.astype(np.int32) + 255, key)
    with pytest.raises(ValueError, match="shape"):
        images.check_pixels(good, image_shape=(28, 28, 1))


def test_fit_scaling_matches_exact_formula_and_monte_carlo():
    pixels = random_pixels()
    source = FakeSource(pixels)
    scaling = fit_scaling(source, chunk_size=7)
    assert max(source.reads) <= 7  # streamed in chunks

    p = pixels.astype(np.float64)
    mean_x = (p.mean() + 0.5) / 256
    std_x = math.sqrt((p.var() + 1 / 12) / 256**2)
    assert scaling.scale == pytest.approx(1 / std_x, rel=1e-12)
    assert scaling.shift == pytest.approx(-mean_x / std_x, rel=1e-12)
    assert pixel_moments(source, chunk_size=1000) == pytest.approx((p.mean(), p.var()), rel=1e-14)
    assert fit_scaling(source, chunk_size=1000) == scaling

    draws = 100  # 100 x 960 pixels
    keys = jax.random.split(jax.random.PRNGKey(3), draws)
    x = np.stack([np.asarray(dequantize(pixels, k), np.float64) for k in keys])
    # Only u is random: the sample mean has standard error sqrt(1/12) / 256 / sqrt(count).
    stderr = math.sqrt(1 / 12) / 256 / math.sqrt(x.size)
    assert abs(x.mean() - mean_x) < 5 * stderr
    assert x.std() == pytest.approx(std_x, rel=2e-3)

    z = scaling.apply(x)
    assert abs(z.mean()) < 5 * stderr / std_x
    assert z.var() == pytest.approx(1.0, rel=4e-3)
    z_jax = np.asarray(preprocess(pixels, keys[0], scaling))
    np.testing.assert_allclose(z_jax, scaling.apply(x[0]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scaling.invert(z_jax), x[0], atol=1e-6)


def test_scaling_is_json_serialisable_and_validated():
    scaling = ImageScaling(scale=np.float32(3.5), shift=np.float64(-1.25))
    text = json.dumps(dataclasses.asdict(scaling))
    assert ImageScaling(**json.loads(text)) == scaling
    assert type(scaling.scale) is float
    with pytest.raises(ValueError, match="scale"):
        ImageScaling(scale=0.0, shift=0.0)
    with pytest.raises(ValueError, match="shift"):
        ImageScaling(scale=1.0, shift=float("nan"))


# ------------------------------------------------------------------------------------------
# Bits per dimension


def test_uniform_model_is_exactly_8_bits_per_dim():
    """Uniform on y in [0, 256)^D is uniform on z in [shift, shift + scale)^D: p_z = scale^-D."""
    num_dims = 28 * 28
    for scaling in [ImageScaling(3.7, -1.2), ImageScaling(256.0, 0.0), ImageScaling(0.01, 5.0)]:
        k = -num_dims * math.log2(scaling.scale)
        assert bits_per_dim_8bit(k, num_dims, scaling) == pytest.approx(8.0, abs=1e-12)


def test_gaussian_model_by_hand():
    # z = y - 128 (scale 256): a unit Gaussian in z is N(128, 1) in y; at y = 128 the density
    # is 1 / sqrt(2 pi), i.e. 0.5 log2(2 pi) bits.
    k = -0.5 * math.log2(2 * math.pi)
    assert bits_per_dim_8bit(k, 1, ImageScaling(256.0, -128.0)) == pytest.approx(
        0.5 * math.log2(2 * math.pi), abs=1e-12
    )
    # z = y / 2 - 64: N(0, 1) in z is N(128, 4) in y, whose density at 128 is half as large.
    assert bits_per_dim_8bit(k, 1, ImageScaling(128.0, -64.0)) == pytest.approx(
        0.5 * math.log2(2 * math.pi) + 1.0, abs=1e-12
    )


def test_gaussian_model_against_the_density_in_pixel_units():
    """K from a unit Gaussian on z equals, after conversion, -log2 N(y; mu_y, sigma_y^2) / D."""
    pixels = random_pixels(1, (4, 4, 3), seed=4)[0].astype(np.float64).reshape(-1)
    y = pixels + 0.5
    scaling = ImageScaling(scale=4.2, shift=-1.3)
    z = (y / 256) * scaling.scale + scaling.shift
    k = np.sum(-0.5 * z**2 - 0.5 * np.log(2 * np.pi)) / np.log(2)
    sigma_y = 256 / scaling.scale
    mu_y = -scaling.shift * sigma_y
    log_p_y = -0.5 * ((y - mu_y) / sigma_y) ** 2 - np.log(sigma_y * np.sqrt(2 * np.pi))
    want = -np.mean(log_p_y) / np.log(2)
    assert bits_per_dim_8bit(k, y.size, scaling) == pytest.approx(want, rel=1e-12)
    ks = np.array([k, k - y.size])  # one bit per dimension worse
    np.testing.assert_allclose(bits_per_dim_8bit(ks, y.size, scaling), [want, want + 1])


# ------------------------------------------------------------------------------------------
# Image size


def test_check_image_size():
    check_image_size(28, 28, 3)
    check_image_size(32, 32, 6)
    with pytest.raises(ValueError, match="divisible by 8.*num_scales <= 3"):
        check_image_size(28, 28, 4)
    with pytest.raises(ValueError, match="num_scales <= 1"):
        check_image_size(28, 27, 2)
    with pytest.raises(ValueError, match="num_scales"):
        check_image_size(28, 28, 0)
