"""The per-pixel categorical baseline against hand-computed probabilities."""

import math

import numpy as np
import pytest

from dpm_jax import baselines


def test_every_value_equally_often_gives_eight_bits_per_dim():
    # Image v has every pixel equal to v: each pixel sees each of the 256 values once, so
    # add-one smoothing gives P = 2 / 512 = 1/256 for every value: 8 bits per dimension.
    train = np.broadcast_to(np.arange(256, dtype=np.uint8)[:, None, None, None], (256, 3, 2, 1))
    log2p = baselines.fit_pixel_categorical(train)
    test = np.random.default_rng(0).integers(0, 256, (5, 3, 2, 1)).astype(np.uint8)
    np.testing.assert_allclose(baselines.pixel_categorical_nll_bits_per_dim(log2p, test), 8.0)


def test_probabilities_match_counting_by_hand_and_sum_to_one():
    train = np.array([[0, 5], [0, 5], [1, 5]], np.uint8)[:, :, None]  # (3, 2, 1)
    log2p = baselines.fit_pixel_categorical(train)
    np.testing.assert_allclose(np.exp2(log2p).sum(axis=1), 1.0, rtol=1e-12)
    p0, p1 = (2 + 1) / (3 + 256), (3 + 1) / (3 + 256)  # P(pixel0 = 0), P(pixel1 = 5)
    nll = baselines.pixel_categorical_nll_bits_per_dim(log2p, np.array([[[0], [5]]], np.uint8))
    np.testing.assert_allclose(nll, [-(math.log2(p0) + math.log2(p1)) / 2], rtol=1e-12)
    # Unseen values get the smoothing mass alone.
    nll = baselines.pixel_categorical_nll_bits_per_dim(log2p, np.array([[[7], [7]]], np.uint8))
    np.testing.assert_allclose(nll, [-math.log2(1 / 259)], rtol=1e-12)


def test_chunked_counting_equals_one_pass(monkeypatch):
    x = np.random.default_rng(1).integers(0, 256, (50, 4, 4, 1)).astype(np.uint8)
    whole = baselines.fit_pixel_categorical(x)
    monkeypatch.setattr(baselines, "_CHUNK", 7)
    np.testing.assert_array_equal(baselines.fit_pixel_categorical(x), whole)


@pytest.mark.parametrize(
    ("call", "error", "phrase"),
    [
        (lambda: baselines.fit_pixel_categorical(np.zeros((2, 4), np.float32)), TypeError, "uint8"),
        (lambda: baselines.fit_pixel_categorical(np.zeros((0, 4), np.uint8)), ValueError, "N >= 1"),
        (
            lambda: baselines.fit_pixel_categorical(np.zeros((2, 4), np.uint8), 0),
            ValueError,
            "smoothing",
        ),
        (
            lambda: baselines.pixel_categorical_nll_bits_per_dim(
                np.zeros((4, 256)), np.zeros((1, 5), np.uint8)
            ),
            ValueError,
            "same shape",
        ),
    ],
)
def test_bad_input(call, error, phrase):
    with pytest.raises(error, match=phrase):
        call()
