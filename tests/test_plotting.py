"""The image figures: every image at a readable size, each pixel a whole square of screen
pixels, at the place the layout gives it."""

import numpy as np
import pytest
from PIL import Image

from dpm_jax import plotting
from dpm_jax.plotting import GAP, LABEL_WIDTH, MARGIN, MAX_COLUMNS, ROW_GAP


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def _assert_drawn_at(png, x, y, image, zoom):
    """``image`` (values in [0, 1]) drawn with its top left at (x, y), zoom x zoom per pixel."""
    h, w, c = image.shape
    expected = np.kron(np.round(image * 255), np.ones((zoom, zoom, 1)))
    region = png[y : y + zoom * h, x : x + zoom * w]
    # Two levels of slack: the 256-entry colormap and the PNG both round.
    np.testing.assert_allclose(region, np.broadcast_to(expected, region.shape), atol=2)


def test_image_rows_are_readable_and_capped(tmp_path):
    rng = np.random.default_rng(0)
    labels = ["holdout", "denoised, exact (start at the matched noise level)"] + ["x"] * 5
    rows = [(label, rng.random((10, 16, 16, 1))) for label in labels]  # 10 > MAX_COLUMNS
    path = tmp_path / "rows.png"
    plotting.image_rows(path, rows)
    zoom = plotting.image_zoom(16, 16)
    assert zoom * 16 / plotting.IMAGE_DPI >= 0.8  # inches per image
    png = _png(path)
    step_x, step_y = zoom * 16 + GAP, zoom * 16 + ROW_GAP
    assert png.shape == (
        2 * MARGIN + 7 * step_y - ROW_GAP,
        2 * MARGIN + LABEL_WIDTH + 8 * step_x - GAP,
        3,
    )
    left = MARGIN + LABEL_WIDTH
    for r, c in ((0, 0), (1, 3), (6, MAX_COLUMNS - 1)):  # grey: one channel shown as R = G = B
        _assert_drawn_at(png, left + c * step_x, MARGIN + r * step_y, rows[r][1][c], zoom)


def test_image_grid_is_square_ish_and_pixel_exact(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.random((10, 28, 28, 3))
    path = tmp_path / "grid.png"
    plotting.image_grid(path, images)
    zoom = plotting.image_zoom(28, 28)
    assert zoom * 28 / plotting.IMAGE_DPI >= 0.8
    png = _png(path)
    step = zoom * 28 + GAP
    assert png.shape == (2 * MARGIN + 3 * step - GAP, 2 * MARGIN + 4 * step - GAP, 3)  # 4 x 3
    _assert_drawn_at(png, MARGIN, MARGIN, images[0], zoom)
    _assert_drawn_at(png, MARGIN + step, MARGIN + 2 * step, images[9], zoom)  # the last one
    assert (png[MARGIN + 2 * step :, MARGIN + 2 * step :] == 255).all()  # no 11th or 12th image


def test_image_figures_refuse_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match="1 or 3"):
        plotting.image_grid(tmp_path / "g.png", np.zeros((2, 8, 8, 2)))
    with pytest.raises(ValueError, match="N >= 1"):
        plotting.image_rows(tmp_path / "r.png", [("empty", np.zeros((0, 8, 8, 1)))])
    assert plotting.image_zoom(8, 8) == 12 and plotting.image_zoom(200, 100) == 1


def test_learning_curve_draws_and_refuses_mismatched_arrays(tmp_path):
    steps = np.arange(250, 5001, 250)
    plotting.learning_curve(
        tmp_path / "curve.png", steps, np.log(steps), {"held-out": 8.0}, ylabel="K"
    )
    assert _png(tmp_path / "curve.png").shape[:2] == (495, 825)  # 7.5 x 4.5 in at 110 dpi
    with pytest.raises(ValueError, match="equal 1-D arrays"):
        plotting.learning_curve(tmp_path / "bad.png", steps, steps[:-1], {}, ylabel="K")
