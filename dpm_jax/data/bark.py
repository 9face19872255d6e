"""Bark textures T01-T04 of the UIUC Texture Database (Lazebnik, Schmid & Ponce 2005), Fig. 5.

Nothing is downloaded: get the "UIUC Texture Database" of the Ponce group (search for
'UIUC texture database Lazebnik'; classes T01-T04 are the bark classes), unpack it and pass
the folder to ``load_bark_images`` / ``load_bark_split``.

Accepted layouts of ``folder`` (class ids match case-insensitively):

* class subfolders: ``folder/T01/<any name>.jpg``, ``folder/T02/...``: every image file
  directly inside ``folder/T01`` belongs to T01;
* flat files: ``folder/T01_01.jpg``, ``folder/T01-2.png``, ...: the file name starts with
  the class id, not followed by a digit (so ``T011.jpg`` is not T01).

If ``folder/T01`` is a directory it is used for T01 and flat T01 files are ignored.
Extensions: .jpg .jpeg .png .pgm .ppm .bmp .tif .tiff (read with PIL). Within a class the
files are in natural name order (``T01_2`` before ``T01_10``).

Pixels. Images are converted to grey levels with PIL (``convert("L")``, ITU-R 601 luma for
colour; 16-bit grey is reduced to 8 bits), then returned as uint8 (H, W), or as float32
pixel / 255 in [0, 1] (the default).

Split. ``load_bark_split`` holds out the last ``num_test_per_class`` images (default 4, a
90 / 10 split of the 40 images per UIUC class) of each class, in the order above, for test;
test patches therefore never come from training images. The paper's image size, patch size,
number of images and split are unpublished (the paper does not give them);
this split is the project's choice.

Patches. Training uses ``random_patches`` (random images and positions, seeded); evaluation
uses ``grid_patches``, a fixed non-overlapping grid (or any stride) over every image. Both
accept any list of 2-D (H, W) or 3-D (H, W, C) arrays or an (N, H, W, C) batch, so they also
cut dead-leaves images, and they return (num, p, p, C) with the input's dtype.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: The UIUC texture classes used by the paper (bark).
BARK_CLASSES: tuple[str, ...] = ("T01", "T02", "T03", "T04")
#: Image file extensions read (lower case; matched case-insensitively).
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".pgm",
    ".ppm",
    ".bmp",
    ".tif",
    ".tiff",
)
#: Images per class held out for test by ``load_bark_split``.
NUM_TEST_PER_CLASS = 4

_WHERE_TO_GET = (
    "Download the UIUC Texture Database (Lazebnik, Schmid & Ponce 2005, from the Ponce "
    "group; search for 'UIUC texture database Lazebnik'), unpack classes T01-T04 (bark) "
    "into one folder, either as subfolders folder/T01/*.jpg or as flat files "
    "folder/T01_01.jpg, and point the experiment's data folder at it."
)


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def _check_classes(classes) -> tuple[str, ...]:
    if isinstance(classes, str):
        classes = (classes,)
    classes = tuple(classes)
    if not classes or not all(isinstance(c, str) and c for c in classes):
        raise ValueError(f"classes must be non-empty class ids such as 'T01', got {classes!r}.")
    if len({c.lower() for c in classes}) != len(classes):
        raise ValueError(f"classes repeat an id: {classes!r}.")
    return classes


def find_bark_files(
    folder: str | os.PathLike, classes: Sequence[str] = BARK_CLASSES
) -> dict[str, list[Path]]:
    """Image files of each class, {class id: paths in natural name order}.

    Raises:
      FileNotFoundError: ``folder`` does not exist or is not a directory.
      ValueError: some of ``classes`` have no image in ``folder`` (the message lists what
        was found and says where to get the data).
    """
    classes = _check_classes(classes)
    root = Path(folder).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"bark image folder {str(root)!r} does not exist. {_WHERE_TO_GET}")
    if not root.is_dir():
        raise FileNotFoundError(f"bark image folder {str(root)!r} is not a directory.")
    entries = sorted(root.iterdir(), key=_natural_key)
    subdirs = {p.name.lower(): p for p in entries if p.is_dir()}
    flat = [p for p in entries if _is_image(p)]
    found: dict[str, list[Path]] = {}
    for cls in classes:
        key = cls.lower()
        if key in subdirs:
            files = [p for p in sorted(subdirs[key].iterdir(), key=_natural_key) if _is_image(p)]
        else:
            pattern = re.compile(re.escape(key) + r"(?!\d)")
            files = [p for p in flat if pattern.match(p.name.lower())]
        found[cls] = files
    missing = [c for c in classes if not found[c]]
    if missing:
        shown = ", ".join(p.name + ("/" if p.is_dir() else "") for p in entries[:10])
        more = f" and {len(entries) - 10} more" if len(entries) > 10 else ""
        contents = f"it holds {shown}{more}" if entries else "it is empty"
        what = "no images" if len(missing) == len(classes) else "no images of some classes"
        raise ValueError(
            f"{what} in bark folder {str(root)!r}: none for class(es) {', '.join(missing)} "
            f"(looked for {root}/<class>/*.<ext> and {root}/<class>*.<ext>, ext one of "
            f"{' '.join(IMAGE_EXTENSIONS)}; {contents}). {_WHERE_TO_GET}"
        )
    return found


def load_grey(path: str | os.PathLike, as_uint8: bool = False) -> np.ndarray:
    """One image as grey levels (H, W): uint8, or float32 pixel / 255 in [0, 1] (default)."""
    from PIL import Image  # deferred: only bark needs PIL

    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.mode.startswith("I;16"):  # 16-bit grey: keep the top 8 bits, rounded
                wide = np.asarray(im, dtype=np.float64)
                pixels = np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
            else:
                pixels = np.asarray(im.convert("L"), dtype=np.uint8)
    except OSError as err:  # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"cannot read image {str(path)!r}: {err}") from err
    return pixels if as_uint8 else pixels.astype(np.float32) / np.float32(255.0)


def _check_patch_size(value, name: str = "patch_size") -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer (pixels), got {value!r}.")
    return int(value)


def _check_image_fits(shape, patch_size: int, what: str) -> None:
    height, width = shape[:2]
    if height < patch_size or width < patch_size:
        raise ValueError(
            f"{what} is {width}x{height} pixels (width x height), smaller than the "
            f"{patch_size}x{patch_size} patch size; remove it or use a smaller patch_size."
        )


def _load_files(files: Sequence[Path], patch_size, as_uint8: bool) -> list[np.ndarray]:
    images = []
    for path in files:
        image = load_grey(path, as_uint8=as_uint8)
        if patch_size is not None:
            _check_image_fits(image.shape, patch_size, f"image {str(path)!r}")
        images.append(image)
    return images


def load_bark_images(
    folder: str | os.PathLike,
    classes: Sequence[str] = BARK_CLASSES,
    patch_size: int | None = None,
    as_uint8: bool = False,
) -> list[np.ndarray]:
    """All images of ``classes``, class by class in natural file order, as grey (H, W) arrays.

    Args:
      folder: the image folder (layouts in the module docstring).
      classes: UIUC class ids, default the bark classes T01-T04.
      patch_size: if given, every image must be at least this many pixels high and wide;
        a smaller one raises ValueError naming the file and its size.
      as_uint8: return uint8 pixels instead of float32 pixel / 255 in [0, 1].
    """
    patch_size = None if patch_size is None else _check_patch_size(patch_size)
    files = find_bark_files(folder, classes)
    return _load_files([p for c in files for p in files[c]], patch_size, as_uint8)


def split_bark_files(
    files: dict[str, list[Path]], num_test_per_class: int = NUM_TEST_PER_CLASS
) -> tuple[list[Path], list[Path]]:
    """(train, test) file lists: the last ``num_test_per_class`` files of each class are test."""
    n = num_test_per_class
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"num_test_per_class must be a non-negative integer, got {n!r}.")
    train, test = [], []
    for cls, paths in files.items():
        if len(paths) <= n:
            raise ValueError(
                f"class {cls} has {len(paths)} image(s), too few to hold out {n} for test and "
                "keep one for training; lower num_test_per_class or add images."
            )
        cut = len(paths) - int(n)
        train += paths[:cut]
        test += paths[cut:]
    return train, test


def load_bark_split(
    folder: str | os.PathLike,
    classes: Sequence[str] = BARK_CLASSES,
    num_test_per_class: int = NUM_TEST_PER_CLASS,
    patch_size: int | None = None,
    as_uint8: bool = False,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(train images, test images): per class, the last ``num_test_per_class`` are test.

    Deterministic (natural file-name order), at the image level, so no test patch comes
    from a training image. Other arguments as in ``load_bark_images``.
    """
    patch_size = None if patch_size is None else _check_patch_size(patch_size)
    train, test = split_bark_files(find_bark_files(folder, classes), num_test_per_class)
    return _load_files(train, patch_size, as_uint8), _load_files(test, patch_size, as_uint8)


# --------------------------------------------------------------------------------------------
# Patches


def _as_image_list(images) -> list[np.ndarray]:
    """Images as a list of (H, W, C) arrays (a channel axis is added to 2-D images)."""
    if isinstance(images, np.ndarray):
        if images.ndim == 2:
            raise ValueError(
                "images is a single 2-D array; pass a list [image] or a batch (N, H, W, C)."
            )
        if images.ndim not in (3, 4):
            raise ValueError(
                f"images must be a batch (N, H, W, C) or (N, H, W), got shape {images.shape}."
            )
    out = []
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3:
            raise ValueError(f"image {i} must be (H, W) or (H, W, C), got shape {image.shape}.")
        out.append(image)
    if not out:
        raise ValueError("no images to cut patches from.")
    if len({im.shape[2] for im in out}) > 1 or len({im.dtype for im in out}) > 1:
        raise ValueError("images differ in number of channels or dtype.")
    return out


def random_patches(images, patch_size: int, num: int, rng) -> np.ndarray:
    """``num`` random patches, (num, p, p, C), the images' dtype (C = 1 for 2-D images).

    Each patch picks an image uniformly (not weighted by area), then a top-left corner
    uniformly among all positions with the patch inside that image (rows 0..H-p, columns
    0..W-p). ``rng`` is a ``np.random.Generator`` or an integer seed.
    """
    p = _check_patch_size(patch_size)
    if isinstance(num, bool) or not isinstance(num, int | np.integer) or num < 0:
        raise ValueError(f"num must be a non-negative integer, got {num!r}.")
    images = _as_image_list(images)
    for i, image in enumerate(images):
        _check_image_fits(image.shape, p, f"image {i}")
    rng = np.random.default_rng(rng)
    which = rng.integers(0, len(images), size=int(num))
    out = np.empty((int(num), p, p, images[0].shape[2]), images[0].dtype)
    heights = np.array([im.shape[0] for im in images])
    widths = np.array([im.shape[1] for im in images])
    tops = rng.integers(0, heights[which] - p + 1)
    lefts = rng.integers(0, widths[which] - p + 1)
    for n, (k, top, left) in enumerate(zip(which, tops, lefts, strict=True)):
        out[n] = images[k][top : top + p, left : left + p]
    return out


def grid_positions(height: int, width: int, patch_size: int, stride: int | None = None):
    """Top-left corners (row, col) of the grid, row-major; patches never cross the border.

    Rows are 0, stride, 2 stride, ... while row + patch_size <= height (columns likewise),
    so a remainder strip at the bottom / right is left out. ``stride`` defaults to
    ``patch_size`` (non-overlapping tiles).
    """
    p = _check_patch_size(patch_size)
    stride = p if stride is None else _check_patch_size(stride, "stride")
    rows = range(0, height - p + 1, stride)
    cols = range(0, width - p + 1, stride)
    return [(r, c) for r in rows for c in cols]


def grid_patches(images, patch_size: int, stride: int | None = None) -> np.ndarray:
    """Deterministic patches (M, p, p, C): each image in order, its grid row-major.

    The grid is ``grid_positions(H, W, patch_size, stride)``; with the default stride (=
    patch_size) the patches tile each image without overlap, leaving out the last
    H mod p rows and W mod p columns.
    """
    p = _check_patch_size(patch_size)
    images = _as_image_list(images)
    out = []
    for i, image in enumerate(images):
        _check_image_fits(image.shape, p, f"image {i}")
        for r, c in grid_positions(image.shape[0], image.shape[1], p, stride):
            out.append(image[r : r + p, c : c + p])
    return np.stack(out)
