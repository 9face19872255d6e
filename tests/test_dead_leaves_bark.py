"""Dead-leaves generator and UIUC bark loader: determinism, distributions, layouts, errors."""

import math

import numpy as np
import pytest
from PIL import Image

from dpm_jax.data import bark
from dpm_jax.data import dead_leaves as dl

SMALL = dl.DeadLeavesConfig(image_size=16, r_min=1.0, r_max=16.0, alpha=3.0)


def _ks(sample, cdf) -> float:
    """Kolmogorov-Smirnov distance between a sample and a CDF."""
    x = np.sort(sample)
    f = cdf(x)
    n = len(x)
    return float(max(np.max(np.arange(1, n + 1) / n - f), np.max(f - np.arange(n) / n)))


def _ks2(a, b) -> float:
    """Two-sample Kolmogorov-Smirnov distance."""
    grid = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    fb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


# --------------------------------------------------------------------------------------------
# Dead leaves


def test_generate_shape_range_and_determinism():
    a = dl.generate(SMALL, seed=3, num_images=5)
    assert a.shape == (5, 16, 16, 1) and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 1.0
    np.testing.assert_array_equal(a, dl.generate(SMALL, seed=3, num_images=5))
    # Image i depends only on (seed, stream, i): a shorter run is a prefix.
    np.testing.assert_array_equal(a[:2], dl.generate(SMALL, seed=3, num_images=2))
    b = dl.generate(SMALL, seed=4, num_images=5)
    assert not np.array_equal(a, b)
    assert all(not np.array_equal(a[i], a[j]) for i in range(5) for j in range(i))
    # Piecewise constant: far fewer distinct grey levels than pixels, but more than one.
    assert 1 < len(np.unique(a[0])) < 16 * 16


def test_default_config_and_train_test_split():
    config = dl.DeadLeavesConfig()
    assert (config.image_size, config.r_min, config.r_max, config.alpha) == (32, 1.0, 32.0, 3.0)
    train, test = dl.train_test(SMALL, num_train=4, num_test=3, seed=0)
    assert train.shape == (4, 16, 16, 1) and test.shape == (3, 16, 16, 1)
    np.testing.assert_array_equal(train, dl.generate(SMALL, 0, 4, stream=dl.TRAIN_STREAM))
    np.testing.assert_array_equal(test, dl.generate(SMALL, 0, 3, stream=dl.TEST_STREAM))
    assert not any(np.array_equal(t, s) for t in train for s in test)
    # The test set does not depend on the size of the training set.
    np.testing.assert_array_equal(dl.train_test(SMALL, 9, 3, seed=0)[1], test)


def test_images_are_fully_covered_by_the_frontmost_disk():
    rng_seed = 11
    image, index = dl.render(SMALL, np.random.default_rng(rng_seed))
    assert index.min() >= 0  # no background: every pixel shows a disk
    disks = dl.sample_touching_disks(SMALL, np.random.default_rng(rng_seed), index.max() + 1)
    rows, cols = np.mgrid[0:16, 0:16]
    inside = (cols[None] + 0.5 - disks.x[:, None, None]) ** 2 + (
        rows[None] + 0.5 - disks.y[:, None, None]
    ) ** 2 <= disks.r[:, None, None] ** 2  # (disks, H, W)
    np.testing.assert_array_equal(index, np.argmax(inside, axis=0))  # first covering disk
    np.testing.assert_array_equal(image, disks.grey[index].astype(np.float32))


def test_result_does_not_depend_on_draw_batching():
    a = dl.render(SMALL, np.random.default_rng(5))
    b = dl.render(SMALL, np.random.default_rng(5), _chunk=3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize(
    ("r_min", "r_max", "alpha"), [(1.0, 32.0, 3.0), (0.5, 8.0, 1.0), (2.0, 10.0, -1.5)]
)
def test_sample_radii_follow_the_power_law(r_min, r_max, alpha):
    n = 20_000
    r = dl.sample_radii(np.random.default_rng(0), n, r_min, r_max, alpha)
    assert r.shape == (n,) and r.min() >= r_min and r.max() <= r_max
    a = 1.0 - alpha  # analytic CDF of r^-alpha, written out independently of the module

    def cdf(x):
        if alpha == 1.0:
            return np.log(x / r_min) / math.log(r_max / r_min)
        return (x**a - r_min**a) / (r_max**a - r_min**a)

    assert _ks(r, cdf) < 1.63 / math.sqrt(n)  # the 1% critical value


def test_sample_radii_log_log_slope():
    r = dl.sample_radii(np.random.default_rng(1), 200_000, 1.0, 32.0, 3.0)
    edges = np.geomspace(1.0, 32.0, 11)
    density = np.histogram(r, edges)[0] / np.diff(edges)
    centres = np.sqrt(edges[:-1] * edges[1:])
    slope = np.polyfit(np.log(centres), np.log(density), 1)[0]
    assert abs(slope + 3.0) < 0.1


def test_touching_disks_match_rejection_sampling():
    """Against the plain construction: uniform centres on a big square, keep disks that touch."""
    n = 20_000
    disks = dl.sample_touching_disks(SMALL, np.random.default_rng(2), n)
    s = SMALL.image_size
    gap_x = np.maximum(np.maximum(-disks.x, disks.x - s), 0)
    gap_y = np.maximum(np.maximum(-disks.y, disks.y - s), 0)
    assert np.all(gap_x**2 + gap_y**2 <= disks.r**2 + 1e-9)  # every disk touches the image
    assert 0 <= disks.grey.min() and disks.grey.max() < 1

    rng = np.random.default_rng(3)
    m = 400_000
    r = dl.sample_radii(rng, m, SMALL.r_min, SMALL.r_max, SMALL.alpha)
    x, y = rng.uniform(-SMALL.r_max, s + SMALL.r_max, (2, m))
    gx, gy = np.maximum(np.maximum(-x, x - s), 0), np.maximum(np.maximum(-y, y - s), 0)
    keep = gx**2 + gy**2 <= r**2
    assert keep.sum() > 20_000
    crit = 1.63 * math.sqrt(1 / n + 1 / keep.sum())
    assert _ks2(disks.r, r[keep]) < crit
    assert _ks2(disks.x, x[keep]) < crit
    assert _ks2(disks.y, y[keep]) < crit
    assert _ks(disks.r, lambda v: dl.touching_radius_cdf(v, SMALL)) < 1.63 / math.sqrt(n)

    def region(px, py):  # 0..8: below / inside / above the image, per coordinate
        return 3 * np.digitize(px, [0, s]) + np.digitize(py, [0, s])

    p_got = np.bincount(region(disks.x, disks.y), minlength=9) / n
    p_ref = np.bincount(region(x[keep], y[keep]), minlength=9) / keep.sum()
    tol = 4 * np.sqrt(p_ref * (1 - p_ref) * (1 / n + 1 / keep.sum())) + 1e-3
    assert np.all(np.abs(p_got - p_ref) < tol), (p_got, p_ref)
    assert p_ref[[0, 2, 6, 8]].min() > 0.002  # the corner regions are really tested


def _same_leaf_probability(config, d):
    """Matheron: P(two points at distance d lie in the same leaf) = E g / (2 E|disk| - E g)."""
    log_r = np.linspace(math.log(config.r_min), math.log(config.r_max), 20_001)
    r = np.exp(log_r)
    w = r ** (1.0 - config.alpha)  # density of log r
    w /= np.trapezoid(w, log_r)
    overlap = 2 * r**2 * np.arccos(np.clip(d / (2 * r), 0, 1)) - d / 2 * np.sqrt(
        np.maximum(4 * r**2 - d**2, 0)
    )
    e_overlap = np.trapezoid(w * overlap, log_r)
    e_area = np.trapezoid(w * math.pi * r**2, log_r)
    return e_overlap / (2 * e_area - e_overlap)


def test_occlusion_statistics_match_theory_at_the_edges_and_inside():
    """Stationary dead leaves: neighbours share a leaf with the same probability everywhere."""
    index = np.stack([dl.render(SMALL, np.random.default_rng([7, i]))[1] for i in range(600)])
    expected = _same_leaf_probability(SMALL, 1.0)
    edge = np.concatenate(
        [
            (index[:, 0, :-1] == index[:, 0, 1:]).ravel(),
            (index[:, -1, :-1] == index[:, -1, 1:]).ravel(),
            (index[:, :-1, 0] == index[:, 1:, 0]).ravel(),
            (index[:, :-1, -1] == index[:, 1:, -1]).ravel(),
        ]
    )
    inner = (index[:, 6:10, :-1] == index[:, 6:10, 1:]).ravel()
    assert abs(edge.mean() - expected) < 0.025
    assert abs(inner.mean() - expected) < 0.025


def test_dead_leaves_config_errors():
    with pytest.raises(ValueError, match="0 < r_min < r_max"):
        dl.DeadLeavesConfig(r_min=4.0, r_max=2.0)
    with pytest.raises(ValueError, match="0 < r_min < r_max"):
        dl.DeadLeavesConfig(r_min=0.0)
    with pytest.raises(ValueError, match="image_size must be a positive integer"):
        dl.DeadLeavesConfig(image_size=0)
    with pytest.raises(ValueError, match="alpha must be finite"):
        dl.DeadLeavesConfig(alpha=float("nan"))
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        dl.generate(SMALL, seed=-1, num_images=1)
    tiny = dl.DeadLeavesConfig(image_size=8, r_min=0.01, r_max=0.02, max_disks=500)
    with pytest.raises(RuntimeError, match="raise r_min"):
        dl.render(tiny, np.random.default_rng(0))


# --------------------------------------------------------------------------------------------
# Bark


def _texture(seed, height=20, width=30):
    return np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)


def _write_subfolders(root, per_class=3, ext="png"):
    images = {}
    for c, cls in enumerate(bark.BARK_CLASSES):
        (root / cls).mkdir(parents=True)
        for k in range(1, per_class + 1):
            pixels = _texture(10 * c + k)
            Image.fromarray(pixels).save(root / cls / f"{cls}_{k}.{ext}")
            images[(cls, k)] = pixels
    return images


def test_load_bark_subfolders_and_natural_order(tmp_path):
    images = {}
    for cls in bark.BARK_CLASSES:
        (tmp_path / cls).mkdir()
        for k in (1, 2, 10):  # natural order: 1, 2, 10 (not 1, 10, 2)
            images[(cls, k)] = _texture(k + 100 * int(cls[1:]))
            Image.fromarray(images[(cls, k)]).save(tmp_path / cls / f"{cls}_{k}.png")
    (tmp_path / "T01" / "notes.txt").write_text("not an image")
    loaded = bark.load_bark_images(tmp_path)
    expected = [images[(c, k)] for c in bark.BARK_CLASSES for k in (1, 2, 10)]
    assert len(loaded) == len(expected)
    for got, want in zip(loaded, expected, strict=True):
        assert got.dtype == np.float32 and got.shape == (20, 30)
        np.testing.assert_allclose(got, want / 255.0, atol=1e-6)
    raw = bark.load_bark_images(tmp_path, classes=("T02",), as_uint8=True)
    assert raw[0].dtype == np.uint8
    np.testing.assert_array_equal(raw[2], images[("T02", 10)])


def test_load_bark_flat_files_in_many_formats(tmp_path):
    formats = ["jpg", "png", "pgm", "bmp", "tif"]
    for c, cls in enumerate(bark.BARK_CLASSES):
        for k, ext in enumerate(formats):
            Image.fromarray(_texture(c * 10 + k)).save(tmp_path / f"{cls}_{k:02d}.{ext}")
    Image.fromarray(_texture(99)).save(tmp_path / "T011_01.png")  # another class, not T01
    rgb = np.stack([_texture(1), _texture(2), _texture(3)], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "t04_99.png")  # colour, lower-case id
    files = bark.find_bark_files(tmp_path)
    assert [p.name for p in files["T01"]] == [f"T01_{k:02d}.{e}" for k, e in enumerate(formats)]
    assert files["T04"][-1].name == "t04_99.png"
    loaded = bark.load_bark_images(tmp_path)
    assert len(loaded) == 4 * len(formats) + 1
    assert all(im.shape == (20, 30) and 0 <= im.min() and im.max() <= 1 for im in loaded)
    np.testing.assert_allclose(loaded[1], _texture(1) / 255.0, atol=1e-6)  # T01_01.png
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_allclose(loaded[-1], grey / 255.0, atol=1e-6)


def test_bark_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*UIUC Texture Database"):
        bark.load_bark_images(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no images.*it is empty.*UIUC Texture Database"):
        bark.load_bark_images(empty)
    partial = tmp_path / "partial"
    partial.mkdir()
    for cls in ("T01", "T02", "T03"):
        Image.fromarray(_texture(0)).save(partial / f"{cls}_1.png")
    with pytest.raises(ValueError, match="none for class\\(es\\) T04"):
        bark.load_bark_images(partial)


def test_image_smaller_than_patch_is_named(tmp_path):
    _write_subfolders(tmp_path, per_class=2)
    Image.fromarray(_texture(5, height=10, width=12)).save(tmp_path / "T03" / "T03_3.png")
    with pytest.raises(ValueError, match=r"T03_3\.png.* is 12x10 pixels.*16x16 patch"):
        bark.load_bark_images(tmp_path, patch_size=16)
    assert len(bark.load_bark_images(tmp_path, patch_size=10)) == 9
    with pytest.raises(ValueError, match="image 1 is 12x10 pixels"):
        bark.grid_patches([_texture(0), _texture(1, 10, 12)], 16)
    with pytest.raises(ValueError, match="image 0 is 12x10 pixels"):
        bark.random_patches([_texture(1, 10, 12)], 16, 3, rng=0)


def test_bark_split_holds_out_the_last_images_of_each_class(tmp_path):
    images = _write_subfolders(tmp_path, per_class=3)
    train, test = bark.load_bark_split(tmp_path, num_test_per_class=1, as_uint8=True)
    assert len(train) == 8 and len(test) == 4
    for got, cls in zip(test, bark.BARK_CLASSES, strict=True):
        np.testing.assert_array_equal(got, images[(cls, 3)])
    train_set = {im.tobytes() for im in train}
    assert not any(im.tobytes() in train_set for im in test)
    with pytest.raises(ValueError, match="too few to hold out 3"):
        bark.load_bark_split(tmp_path, num_test_per_class=3)


def test_grid_patches_tile_the_image_deterministically():
    image = np.arange(12 * 20, dtype=np.float32).reshape(12, 20) / 240.0
    patches = bark.grid_patches([image], 4)
    assert patches.shape == (3 * 5, 4, 4, 1) and patches.dtype == np.float32
    tiled = patches[..., 0].reshape(3, 5, 4, 4).transpose(0, 2, 1, 3).reshape(12, 20)
    np.testing.assert_array_equal(tiled, image)  # row-major, no overlap, full cover
    np.testing.assert_array_equal(patches, bark.grid_patches([image], 4))
    # A remainder strip is left out; a stride gives overlapping patches.
    assert bark.grid_patches([image[:11, :19]], 4).shape[0] == 2 * 4
    assert bark.grid_positions(12, 20, 8, stride=4) == [
        (r, c) for r in (0, 4) for c in (0, 4, 8, 12)
    ]
    batch = np.stack([image, image + 1])[..., None]  # (N, H, W, 1) batches work too
    assert bark.grid_patches(batch, 4).shape == (30, 4, 4, 1)


def test_random_patches_are_inside_the_images():
    images = [np.arange(h * w).reshape(h, w) for h, w in [(9, 13), (20, 7), (5, 5)]]
    patches = bark.random_patches(images, 5, 300, rng=np.random.default_rng(0))
    assert patches.shape == (300, 5, 5, 1)
    np.testing.assert_array_equal(patches, bark.random_patches(images, 5, 300, rng=0))
    seen = set()
    for patch in patches[..., 0]:
        # Values are unique within each image; find the image and corner of the patch.
        matches = []
        for k, image in enumerate(images):
            hit = np.argwhere(image == patch[0, 0])
            for top, left in hit:
                window = image[top : top + 5, left : left + 5]
                if window.shape == (5, 5) and np.array_equal(window, patch):
                    matches.append((k, top, left))
        assert matches, "patch not found inside any image"
        seen.update(m[0] for m in matches)
    assert seen == {0, 1, 2}
    dead = dl.generate(SMALL, seed=0, num_images=2)
    assert bark.random_patches(dead, 8, 4, rng=1).shape == (4, 8, 8, 1)
