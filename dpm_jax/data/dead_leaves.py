"""Grey-scale dead-leaves images (Jeulin 1997; Lee, Mumford & Huang 2001), Sec. 3.2 / Table 2.

The model. Opaque disks ("leaves") fall one after another on the plane; each later disk
lies *under* the earlier ones (front-to-back order), and the image shows, at each point, the
first disk that covers it. Each disk has

* a radius r with density p(r) proportional to r^(-alpha) on [r_min, r_max] (pixels);
  alpha = 3 is the scale-invariant choice of Lee, Mumford & Huang 2001;
* a centre uniform in the plane (see "Exact window" below);
* a grey level uniform in [0, 1], independent of everything else.

Drawing front to back, a pixel's value is fixed by the first disk that covers it, so
drawing stops as soon as every pixel is covered: the result is *exact* (no background is
ever left and no truncation is made), unlike back-to-front painting, which must guess how
many disks are enough. Pixels are point-sampled at their centres: pixel (i, j) (row i,
column j) is the point (x, y) = (j + 0.5, i + 0.5) in pixel units, with the image square
[0, S] x [0, S]; there is no anti-aliasing.

Exact window. A stationary dead-leaves process in the whole plane, seen through the
S x S window, only involves the disks that touch the window, and these (in falling order)
are i.i.d. with radius density proportional to p(r) A(r), where
A(r) = S^2 + 4 S r + pi r^2 is the area of the window dilated by a disk of radius r, and
with centre uniform on that dilated window (the square, four S x r strips along the sides,
and four quarter disks at the corners). ``sample_touching_disks`` draws exactly these, so
centres do fall outside the image (up to r outside), the images are statistically
translation invariant with no edge effects, and no draw is wasted on disks that miss.

Seeds. Image i of ``generate(config, seed, n, stream)`` uses its own generator
``np.random.default_rng([seed, stream, i])``, so it does not depend on ``n`` (a longer run
is an extension of a shorter one) nor on any internal batching. ``train_test`` takes the
training images from stream 0 and the test images from stream 1: independent streams, so
the test set never overlaps the training set and does not change with ``num_train``.

Defaults (``DeadLeavesConfig()``): 32 x 32 images, r_min = 1 px, r_max = 32 px,
alpha = 3. These are *this project's choice*: the paper uses dead-leaves data "identical"
to Theis et al. 2012, whose generator parameters, image size, number of images and split
are unpublished (neither paper gives them). For larger images cut into
patches, ``dpm_jax.data.bark.random_patches`` and ``grid_patches`` accept these images too.

Speed (numpy, one CPU core shared with other work): about 1.4 ms per default 32 x 32
image (2000 images in 2.8-3.4 s), about 0.17 s per 256 x 256 image (r_max = 256). The
work per image is proportional to the number of pixel-disk overlaps, not to
(number of disks) x (number of pixels); about 320 disks cover a default image on average.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np

#: Columns of the uniform draws behind one disk (see ``sample_touching_disks``).
_NUM_UNIFORMS = 6
#: Below this |1 - exponent| the power law is treated as log-uniform (exponent 1).
_LOG_UNIFORM_TOL = 1e-9


@dataclasses.dataclass(frozen=True)
class DeadLeavesConfig:
    """Dead-leaves generator parameters (lengths in pixels).

    Attributes:
      image_size: side S of the square images, pixels.
      r_min, r_max: radius range of the disks, pixels, 0 < r_min < r_max.
      alpha: power-law exponent, p(r) proportional to r^(-alpha); 3 is scale invariant.
      max_disks: per-image safety limit on the number of disks drawn before the image is
        covered; reaching it raises (it only happens when r_min is far below a pixel).
    """

    image_size: int = 32
    r_min: float = 1.0
    r_max: float = 32.0
    alpha: float = 3.0
    max_disks: int = 2_000_000

    def __post_init__(self):
        size = self.image_size
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
            raise ValueError(f"image_size must be a positive integer (pixels), got {size!r}.")
        for name in ("r_min", "r_max", "alpha"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise ValueError(f"{name} must be a real number, got {value!r}.")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}.")
            object.__setattr__(self, name, float(value))
        object.__setattr__(self, "image_size", int(size))
        if not 0 < self.r_min < self.r_max:
            raise ValueError(
                f"need 0 < r_min < r_max (pixels); got r_min={self.r_min}, r_max={self.r_max}. "
                "For disks of one size use a narrow range such as (r, 1.0001 * r)."
            )
        m = self.max_disks
        if isinstance(m, bool) or not isinstance(m, int | np.integer) or m < 1:
            raise ValueError(f"max_disks must be a positive integer, got {m!r}.")


class Disks(NamedTuple):
    """Disks in falling (front-to-back) order; float64 arrays of shape (n,), pixel units.

    ``x`` is the column coordinate, ``y`` the row coordinate of the centre (pixel (i, j) is
    centred at (j + 0.5, i + 0.5)); ``grey`` is in [0, 1).
    """

    x: np.ndarray
    y: np.ndarray
    r: np.ndarray
    grey: np.ndarray


# --------------------------------------------------------------------------------------------
# Power laws


def _log_power_integral(exponent: float, r_min: float, r_max: float) -> float:
    """log of the integral of r^(-exponent) over [r_min, r_max], computed without overflow."""
    a = 1.0 - exponent
    log_ratio = math.log(r_max / r_min)
    if abs(a) < _LOG_UNIFORM_TOL:
        return math.log(log_ratio)
    c = a * log_ratio  # integral = r_min^a * expm1(c) / a, and expm1(c) / a > 0
    log_expm1 = c + math.log(-math.expm1(-c)) if c > 0 else math.log(-math.expm1(c))
    return a * math.log(r_min) + log_expm1 - math.log(abs(a))


def _power_law_icdf(u, r_min: float, r_max: float, exponent: float) -> np.ndarray:
    """Inverse CDF of the density proportional to r^(-exponent) on [r_min, r_max], at u."""
    u = np.asarray(u, dtype=np.float64)
    a = 1.0 - exponent
    log_ratio = math.log(r_max / r_min)
    if abs(a) < _LOG_UNIFORM_TOL:  # log-uniform
        t = u * log_ratio
    else:
        # r^a = r_min^a (1 + u expm1(c)), c = a log(r_max / r_min); t = log(r / r_min).
        c = a * log_ratio
        if c > 0:
            t = (c + np.log(u + (1.0 - u) * math.exp(-c))) / a
        else:
            t = np.log1p(u * math.expm1(c)) / a
    return np.clip(r_min * np.exp(t), r_min, r_max)


def power_law_cdf(r, r_min: float, r_max: float, alpha: float) -> np.ndarray:
    """CDF of p(r) proportional to r^(-alpha) on [r_min, r_max] (0 below, 1 above)."""
    r = np.clip(np.asarray(r, dtype=np.float64), r_min, r_max)
    a = 1.0 - alpha
    if abs(a) < _LOG_UNIFORM_TOL:
        return np.log(r / r_min) / math.log(r_max / r_min)
    return np.expm1(a * np.log(r / r_min)) / math.expm1(a * math.log(r_max / r_min))


def sample_radii(
    rng: np.random.Generator, n: int, r_min: float, r_max: float, alpha: float
) -> np.ndarray:
    """``n`` radii, float64, from p(r) proportional to r^(-alpha) on [r_min, r_max].

    Inverse CDF: r = F^-1(u), u = rng.random(n). For alpha != 1,
    F(r) = (r^(1 - alpha) - r_min^(1 - alpha)) / (r_max^(1 - alpha) - r_min^(1 - alpha));
    alpha = 1 is log-uniform. Any finite alpha is allowed (alpha <= 0 favours large disks).
    """
    DeadLeavesConfig(image_size=1, r_min=r_min, r_max=r_max, alpha=alpha)  # validates
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}.")
    return _power_law_icdf(rng.random(int(n)), float(r_min), float(r_max), float(alpha))


def _component_probs(config: DeadLeavesConfig) -> np.ndarray:
    """Mixture weights of p(r) A(r) = p(r) (S^2 + 4 S r + pi r^2), one per term."""
    s = config.image_size
    log_w = np.array(
        [
            2 * math.log(s) + _log_power_integral(config.alpha, config.r_min, config.r_max),
            math.log(4 * s) + _log_power_integral(config.alpha - 1, config.r_min, config.r_max),
            math.log(math.pi) + _log_power_integral(config.alpha - 2, config.r_min, config.r_max),
        ]
    )
    w = np.exp(log_w - log_w.max())
    return w / w.sum()


def touching_radius_cdf(r, config: DeadLeavesConfig) -> np.ndarray:
    """CDF of the radius of a disk that touches the image: density proportional to p(r) A(r)."""
    probs = _component_probs(config)
    return sum(
        p * power_law_cdf(r, config.r_min, config.r_max, config.alpha - k)
        for k, p in enumerate(probs)
    )


# --------------------------------------------------------------------------------------------
# Disks and images


def sample_touching_disks(config: DeadLeavesConfig, rng: np.random.Generator, n: int) -> Disks:
    """``n`` i.i.d. disks from the stationary process restricted to those touching the image.

    Reads ``rng.random((n, 6))``, one row per disk, so drawing 2n disks gives the same first
    n disks as drawing n: the images below do not depend on how draws are batched.
    Row (u0, ..., u5): u0 picks the term of p(r) A(r) (square, side strips, corners), u1 the
    radius (inverse CDF of that term), u2 and u3 the position within the term's region, u4
    which side or corner, u5 the grey level.
    """
    u = rng.random((int(n), _NUM_UNIFORMS))
    s = float(config.image_size)
    cum = np.cumsum(_component_probs(config))
    comp = np.searchsorted(cum[:-1], u[:, 0], side="right")  # 0, 1 or 2
    r = np.empty(len(u))
    for k in range(3):
        sel = comp == k
        r[sel] = _power_law_icdf(u[sel, 1], config.r_min, config.r_max, config.alpha - k)
    which = np.minimum((u[:, 4] * 4).astype(np.int64), 3)
    x, y = u[:, 2] * s, u[:, 3] * s  # term 0: the square itself
    # Term 1: a strip of width r outside one side; u2 runs along the side, u3 outwards.
    along, out = u[:, 2] * s, u[:, 3] * r
    strip_x = np.select([which == 0, which == 1, which == 2], [along, along, -out], s + out)
    strip_y = np.select([which == 0, which == 1, which == 2], [-out, s + out, along], along)
    # Term 2: a quarter disk of radius r outside one corner (uniform: radius r sqrt(u2)).
    rho, theta = r * np.sqrt(u[:, 2]), 0.5 * math.pi * u[:, 3]
    sign_x = np.where(which % 2 == 0, -1.0, 1.0)
    sign_y = np.where(which < 2, -1.0, 1.0)
    corner_x = np.where(sign_x > 0, s, 0.0) + sign_x * rho * np.cos(theta)
    corner_y = np.where(sign_y > 0, s, 0.0) + sign_y * rho * np.sin(theta)
    x = np.select([comp == 1, comp == 2], [strip_x, corner_x], x)
    y = np.select([comp == 1, comp == 2], [strip_y, corner_y], y)
    return Disks(x=x, y=y, r=r, grey=u[:, 5])


def _covered_pairs(disks: Disks, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(flat pixel index, disk index) of every pixel centre inside a disk, by disk order.

    Enumerates only each disk's bounding box (clipped to the image), so the cost is the
    number of overlaps, not disks x pixels.
    """
    x, y, r = disks.x, disks.y, disks.r
    # Columns j with centre j + 0.5 in [x - r, x + r] (rows likewise); exact test below.
    j0 = np.clip(np.ceil(x - r - 0.5), 0, size).astype(np.int64)
    j1 = np.clip(np.floor(x + r - 0.5), -1, size - 1).astype(np.int64)
    i0 = np.clip(np.ceil(y - r - 0.5), 0, size).astype(np.int64)
    i1 = np.clip(np.floor(y + r - 0.5), -1, size - 1).astype(np.int64)
    nx = np.maximum(j1 - j0 + 1, 0)
    ny = np.maximum(i1 - i0 + 1, 0)
    counts = nx * ny
    k = np.repeat(np.arange(len(x)), counts)
    local = np.arange(len(k)) - np.repeat(np.cumsum(counts) - counts, counts)
    jj = j0[k] + local % nx[k]
    ii = i0[k] + local // nx[k]
    inside = (jj + 0.5 - x[k]) ** 2 + (ii + 0.5 - y[k]) ** 2 <= r[k] ** 2
    return (ii * size + jj)[inside], k[inside]


def _initial_chunk(config: DeadLeavesConfig) -> int:
    """Disks to draw first: about log(pixels) / (chance that one disk covers a given pixel)."""
    cover = _component_probs(config)[2]  # E[pi r^2] / E[A(r)]
    return int(min(max(math.log(config.image_size**2 + 1) / cover, 16), 1 << 20))


def render(
    config: DeadLeavesConfig, rng: np.random.Generator, *, _chunk: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One image, drawing front to back until every pixel is covered.

    Returns:
      (image, index): image float32 (S, S), grey levels in [0, 1); index int64 (S, S), the
      falling-order number (0 = frontmost) of the disk seen at each pixel, all >= 0. The
      disks themselves are ``sample_touching_disks(config, rng_copy, index.max() + 1)``
      for a generator ``rng_copy`` in the state ``rng`` had on entry.

    Raises:
      RuntimeError: more than ``config.max_disks`` disks were needed (r_min far below one
        pixel); raise r_min.
    """
    size = config.image_size
    num_pixels = size * size
    index = np.full(num_pixels, -1, np.int64)
    image = np.zeros(num_pixels, np.float32)
    num_covered, drawn = 0, 0
    chunk = _initial_chunk(config) if _chunk is None else int(_chunk)
    while num_covered < num_pixels:
        if drawn >= config.max_disks:
            raise RuntimeError(
                f"dead leaves: {drawn} disks did not cover the {size}x{size} image "
                f"({num_pixels - num_covered} pixels left; max_disks={config.max_disks}). "
                f"r_min={config.r_min} px is too small for pixel-centre sampling: raise r_min "
                "(1 px is the default) or max_disks."
            )
        n = min(chunk, config.max_disks - drawn)
        disks = sample_touching_disks(config, rng, n)
        pix, k = _covered_pairs(disks, size)
        free = index[pix] < 0
        pix, k = pix[free], k[free]
        new_pix, first = np.unique(pix, return_index=True)  # first = frontmost new disk
        index[new_pix] = drawn + k[first]
        image[new_pix] = disks.grey[k[first]]
        num_covered += len(new_pix)
        drawn += n
        chunk *= 2
    return image.reshape(size, size), index.reshape(size, size)


def _check_seed(seed, name: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {seed!r}.")
    return int(seed)


def generate(config: DeadLeavesConfig, seed: int, num_images: int, stream: int = 0) -> np.ndarray:
    """``num_images`` dead-leaves images, float32 (N, S, S, 1) with values in [0, 1).

    Deterministic: image i is ``render(config, np.random.default_rng([seed, stream, i]))``,
    so it depends only on (config, seed, stream, i) and not on ``num_images``.
    """
    seed = _check_seed(seed)
    stream = _check_seed(stream, "stream")
    if isinstance(num_images, bool) or not isinstance(num_images, int | np.integer):
        raise ValueError(f"num_images must be a non-negative integer, got {num_images!r}.")
    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}.")
    size = config.image_size
    out = np.empty((int(num_images), size, size, 1), np.float32)
    for i in range(int(num_images)):
        out[i, :, :, 0] = render(config, np.random.default_rng([seed, stream, i]))[0]
    return out


#: ``generate`` streams of ``train_test``.
TRAIN_STREAM, TEST_STREAM = 0, 1


def train_test(
    config: DeadLeavesConfig, num_train: int, num_test: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) images, float32 (N, S, S, 1) each, from disjoint random streams.

    train = ``generate(config, seed, num_train, stream=0)`` and
    test = ``generate(config, seed, num_test, stream=1)``: the test set depends only on
    (config, seed, num_test), and no random stream is shared between the two sets.
    """
    return (
        generate(config, seed, num_train, stream=TRAIN_STREAM),
        generate(config, seed, num_test, stream=TEST_STREAM),
    )
