"""8-bit images from a NumPy file or an image folder, served as ``images.ArraySource``.

Beside the TFDS source (``dpm_jax.data.images``), two kinds of local files, read without
network and without pickle. Both give ``ArraySource`` objects (``{"image": uint8 (H, W, C),
"label": int}`` per example, ``"label"`` only when the file has labels), so batching,
dequantisation, scaling and evaluation are the TFDS source's.

Arrays (``load_array_split``): a ``.npz`` or ``.npy`` file, read with
``np.load(path, allow_pickle=False)``. Accepted layouts, nothing else:

* ``.npz`` with keys ``x_train`` and ``x_test`` (images) and optionally ``y_train`` and
  ``y_test`` (their labels), the layout of Keras' ``mnist.npz``: the two splits as stored,
  in file order;
* ``.npz`` with the key ``images`` and optionally ``labels``: one array, split by
  ``fixed_split``;
* ``.npy`` holding one array of images: split by ``fixed_split``, no labels.

Images are (N, H, W) (grey; a channel axis is added) or (N, H, W, C), dtype uint8 or any
integer dtype whose values all lie in 0..255 (converted to uint8); floats, booleans and
integers outside 0..255 are refused. Labels are 1-D integer arrays, one per image.

Folders (``load_folder_split``): PNG and JPEG files (``.png``, ``.jpg``, ``.jpeg``, any
case), read with PIL, all of one size. Layouts of ``folder``:

* image files directly in ``folder``: unlabelled;
* one sub-folder per class (``folder/<class>/*.png``): the label of an image is the index
  of its class folder in name order; files deeper down are ignored;
* ``folder/train/`` and ``folder/test/``, each in one of the two layouts above: the
  splits as given (labels from the class names of both, in name order).

Files are taken in natural name order (``img2`` before ``img10``); other files are ignored.
Grey images (PIL modes 1, L, LA) give one channel and colour images three (RGB; alpha is
dropped); with an expected shape, every image is converted to its channel count (colour to
grey by ITU-R 601 luma, grey to colour by repetition). 16-bit and float images are refused.

Split (``fixed_split``), for one array or a folder without ``train/`` and ``test/``: within
each class (all images, if unlabelled), in file order, every fifth image (the 5th, 10th,
...) is a test image and the others train; each split is then ordered round-robin over
the classes (first image of every class, then the second, ...), so any slice of it, such
as the last training images that choose a Parzen bandwidth, holds every class. A class of
N images gives N // 5 test images. Deterministic, without random numbers.

The module is longer than most (about 450 lines): the two file formats share the uint8,
label and split checks, and most of its lines are the errors that name the file and the fix.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import numpy as np

from dpm_jax.data.images import NUM_PIXEL_VALUES, ArraySource

#: Splits the loaders serve.
SPLITS = ("train", "test")
#: Every ``TEST_EVERY``-th image of each class (file order) is a test image (``fixed_split``).
TEST_EVERY = 5
#: The accepted key sets of a ``.npz`` file: {split: (images key, labels key)}.
NPZ_SPLIT_KEYS = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}
NPZ_SINGLE_KEYS = ("images", "labels")
#: Image file extensions a folder is searched for (lower case; matched case-insensitively).
FOLDER_EXTENSIONS = (".png", ".jpg", ".jpeg")
#: PIL modes read as grey (one channel) and as colour (three); others are refused.
GREY_MODES = ("1", "L", "LA")
COLOUR_MODES = ("P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")

_NPZ_LAYOUTS = (
    "accepted: a .npz with x_train and x_test (optionally y_train, y_test), a .npz with "
    "images (optionally labels), or a .npy of images"
)


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    return split


# --------------------------------------------------------------------------------------------
# The fixed split


def class_ranks(labels: np.ndarray) -> np.ndarray:
    """For each example, how many earlier examples (file order) have its label: 0, 1, ..."""
    labels = np.asarray(labels)
    ranks = np.zeros(len(labels), np.int64)
    for value in np.unique(labels):
        where = np.flatnonzero(labels == value)
        ranks[where] = np.arange(len(where))
    return ranks


def fixed_split(num_images: int, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices) of ``num_images`` images: the project's fixed split.

    Within each class (all images when ``labels`` is None), in file order, every
    ``TEST_EVERY``-th image (class ranks 4, 9, 14, ...) is test, the rest train. Each split
    is ordered round-robin over the classes: by class rank, then label. Without labels both
    keep file order.
    """
    if isinstance(num_images, bool) or not isinstance(num_images, int | np.integer):
        raise ValueError(f"num_images must be an integer, got {num_images!r}.")
    if labels is None:
        labels = np.zeros(int(num_images), np.int64)
    labels = np.asarray(labels)
    if labels.shape != (num_images,):
        raise ValueError(f"labels must have shape ({num_images},), got {labels.shape}.")
    ranks = class_ranks(labels)
    order = np.lexsort((labels, ranks))  # by rank, then label
    is_test = ranks[order] % TEST_EVERY == TEST_EVERY - 1
    return order[~is_test], order[is_test]


# --------------------------------------------------------------------------------------------
# Checks


def as_uint8_images(
    array, where: str, image_shape: tuple[int, int, int] | None = None
) -> np.ndarray:
    """``array`` as uint8 images (N, H, W, C), checked; ``where`` names it in errors.

    Accepts (N, H, W) (a channel axis is added) or (N, H, W, C), uint8 or any integer dtype
    with every value in 0..255. With ``image_shape`` the images must have that shape.
    """
    array = np.asarray(array)
    if array.ndim not in (3, 4):
        raise ValueError(
            f"{where}: images must be (N, H, W) or (N, H, W, C); got shape {array.shape}."
        )
    if len(array) == 0:
        raise ValueError(f"{where}: holds no images (shape {array.shape}).")
    dtype = array.dtype
    if dtype != np.uint8:
        if dtype == np.bool_ or not np.issubdtype(dtype, np.integer):
            raise ValueError(
                f"{where}: images have dtype {dtype}; expected uint8 pixels 0..255 (or an "
                "integer array with every value in 0..255). Floats in [0, 1] can be saved "
                "as np.round(x * 255).astype(np.uint8)."
            )
        lo, hi = int(array.min()), int(array.max())
        if lo < 0 or hi > NUM_PIXEL_VALUES - 1:
            raise ValueError(
                f"{where}: images of dtype {dtype} hold values in [{lo}, {hi}], outside the "
                "8-bit range 0..255; store 8-bit pixels (uint8)."
            )
        array = array.astype(np.uint8)
    if array.ndim == 3:
        array = array[..., None]
    if image_shape is not None and array.shape[1:] != tuple(image_shape):
        raise ValueError(
            f"{where}: images have shape {array.shape[1:]} (height, width, channels), but "
            f"{tuple(image_shape)} is expected (the experiment's images); convert or resize "
            "them to that shape, or use an experiment for images of this shape."
        )
    return np.ascontiguousarray(array)


def check_labels(labels, num_images: int, where: str) -> np.ndarray:
    """``labels`` as int64 (N,), checked: integers, one per image; ``where`` names them."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{where}: labels must be a 1-D array; got shape {labels.shape}.")
    if labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{where}: labels must be integers; got dtype {labels.dtype}.")
    if len(labels) != num_images:
        raise ValueError(
            f"{where}: {len(labels)} labels for {num_images} images; they must match one to "
            "one (label i belongs to image i)."
        )
    return labels.astype(np.int64)


def _check_not_empty(count: int, where: str) -> None:
    if count == 0:
        raise ValueError(
            f"{where} is empty: too few images for the fixed split (every {TEST_EVERY}th "
            f"image of each class is a test image), so give at least {TEST_EVERY} per class "
            "or separate train and test sets."
        )


# --------------------------------------------------------------------------------------------
# Arrays


def _existing_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist; check the path.")
    return path


def read_array_file(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """The raw arrays of a ``.npz``/``.npy`` file: {"train": ..., "test": ...} (a file with
    x_train and x_test) or {"all": ...} (one array), each (images, labels or None).

    Only the layouts in the module docstring are accepted; ``allow_pickle=False``.
    """
    path = _existing_file(path, "image array file")
    if path.is_dir():
        raise ValueError(
            f"{str(path)!r} is a folder, not a .npz or .npy file; for a folder of images use "
            "the folder source (data.source=folder)."
        )
    if path.suffix.lower() not in (".npz", ".npy"):
        raise ValueError(f"{str(path)!r} is not a .npz or .npy file ({_NPZ_LAYOUTS}).")
    unreadable = (ValueError, OSError, EOFError, zipfile.BadZipFile)
    how = (
        "save plain numeric arrays with np.save or np.savez (uint8 images, integer labels); "
        "they are read without pickle"
    )
    try:
        loaded = np.load(path, allow_pickle=False)
    except unreadable as err:  # not a NumPy file, or object arrays that only pickle could load
        raise ValueError(f"cannot read {str(path)!r} as NumPy arrays ({err}); {how}.") from err
    if isinstance(loaded, np.ndarray):
        return {"all": (loaded, None)}
    with loaded:
        try:
            keys = set(loaded.files)
            split_keys = {k for pair in NPZ_SPLIT_KEYS.values() for k in pair}
            if {"x_train", "x_test"} <= keys and keys <= split_keys:
                return {
                    split: (loaded[x], loaded[y] if y in keys else None)
                    for split, (x, y) in NPZ_SPLIT_KEYS.items()
                }
            images, labels = NPZ_SINGLE_KEYS
            if images in keys and keys <= set(NPZ_SINGLE_KEYS):
                return {"all": (loaded[images], loaded[labels] if labels in keys else None)}
        except unreadable as err:  # an object array or a damaged member inside the .npz
            raise ValueError(f"cannot read {str(path)!r} as NumPy arrays ({err}); {how}.") from err
    raise ValueError(f"{str(path)!r} holds the keys {sorted(keys)}; {_NPZ_LAYOUTS}.")


def load_array_split(
    path: str | os.PathLike, split: str, image_shape: tuple[int, int, int] | None = None
) -> ArraySource:
    """Split ``"train"`` or ``"test"`` of a ``.npz``/``.npy`` image file as an ArraySource.

    Layouts, checks and the split of a single array: the module docstring. Both splits are
    checked whichever is asked for, so a bad file fails at once. ``image_shape`` (height,
    width, channels), if given, is the shape every image must have.
    """
    check_split(split)
    parts = read_array_file(path)
    name = repr(str(Path(path).expanduser()))
    if "all" in parts:
        images, labels = parts["all"]
        key = "images" if Path(path).suffix.lower() == ".npz" else "the array"
        images = as_uint8_images(images, f"{name} ({key})", image_shape)
        if labels is not None:
            labels = check_labels(labels, len(images), f"{name} (labels)")
        train, test = fixed_split(len(images), labels)
        splits = {"train": train, "test": test}
        for s in SPLITS:  # both splits must be non-empty
            _check_not_empty(len(splits[s]), f"the {s} split of {name} ({len(images)} images)")
        keep = splits[split]
        return ArraySource(images[keep], None if labels is None else labels[keep])
    checked = {}
    for s, (x_key, y_key) in NPZ_SPLIT_KEYS.items():
        images, labels = parts[s]
        images = as_uint8_images(images, f"{name} ({x_key})", image_shape)
        if labels is not None:
            labels = check_labels(labels, len(images), f"{name} ({y_key} against {x_key})")
        checked[s] = (images, labels)
    return ArraySource(*checked[split])


# --------------------------------------------------------------------------------------------
# Folders


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _image_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FOLDER_EXTENSIONS]
    return sorted(files, key=_natural_key)


def _subfolders(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir()), key=_natural_key)


def _contents(folder: Path) -> str:
    entries = sorted(folder.iterdir(), key=_natural_key)
    if not entries:
        return "it is empty"
    shown = ", ".join(p.name + ("/" if p.is_dir() else "") for p in entries[:8])
    return f"it holds {shown}" + (f" and {len(entries) - 8} more" if len(entries) > 8 else "")


def find_folder_files(folder: Path) -> dict[str, list[Path]]:
    """The image files of one split folder: {"": files} (unlabelled) or {class name: files}.

    Raises ValueError for a folder with no images, one holding both images and class
    folders, or an empty class folder.
    """
    files, classes = _image_files(folder), _subfolders(folder)
    if files and classes:
        raise ValueError(
            f"image folder {str(folder)!r} holds both image files and sub-folders "
            f"({classes[0].name}/, ...); put every image in a class sub-folder, or none."
        )
    if files:
        return {"": files}
    found = {c.name: _image_files(c) for c in classes}
    empty = [name for name, paths in found.items() if not paths]
    if not found or len(empty) == len(found):
        raise ValueError(
            f"no images in folder {str(folder)!r} (looked for {' '.join(FOLDER_EXTENSIONS)} "
            f"files in it and in its class sub-folders; {_contents(folder)}). Point "
            "data.path at a folder of PNG or JPEG images."
        )
    if empty:
        raise ValueError(
            f"class folder(s) {', '.join(empty)} in {str(folder)!r} hold no "
            f"{'/'.join(FOLDER_EXTENSIONS)} images; remove them or add images."
        )
    return found


def _header(path: Path) -> tuple[tuple[int, int], str]:
    """(size (width, height), PIL mode) of an image file, from its header."""
    from PIL import Image  # deferred: only folders need PIL (installed with matplotlib)

    try:
        with Image.open(path) as image:
            size, mode = image.size, image.mode
    except OSError as err:  # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"cannot read image {str(path)!r}: {err}") from err
    if mode not in GREY_MODES + COLOUR_MODES:
        raise ValueError(
            f"image {str(path)!r} has PIL mode {mode!r} (16-bit or float pixels); save it as "
            "an 8-bit grey or colour PNG/JPEG."
        )
    return size, mode


def check_folder_images(paths: list[Path]) -> int:
    """Checks that image files share one size (from their headers); returns the channels
    they are read with by default: 1 if every one is grey (PIL modes 1, L, LA), else 3.

    Raises ValueError naming two files of different sizes, or an unreadable file.
    """
    sizes, grey = {}, True
    for path in paths:
        size, mode = _header(path)
        sizes.setdefault(size, path)
        grey = grey and mode in GREY_MODES
    if len(sizes) > 1:
        (size_a, a), (size_b, b) = list(sizes.items())[:2]
        raise ValueError(
            f"images differ in size: {str(a)!r} is {size_a[0]}x{size_a[1]} and {str(b)!r} is "
            f"{size_b[0]}x{size_b[1]} (width x height); resize them all to one size."
        )
    return 1 if grey else 3


def read_images(paths: list[Path], channels: int) -> np.ndarray:
    """uint8 images (N, H, W, C) of image files of one size, converted to ``channels``:
    1 (grey; colour by ITU-R 601 luma) or 3 (RGB; alpha dropped, grey repeated)."""
    from PIL import Image

    if channels not in (1, 3):
        raise ValueError(f"images can be read with 1 (grey) or 3 (RGB) channels, not {channels}.")
    mode = "L" if channels == 1 else "RGB"
    arrays = []
    for path in paths:
        try:
            with Image.open(path) as image:
                arrays.append(np.asarray(image.convert(mode), dtype=np.uint8))
        except OSError as err:
            raise ValueError(f"cannot read image {str(path)!r}: {err}") from err
    stacked = np.stack(arrays)
    return stacked[..., None] if channels == 1 else stacked


def _split_folders(root: Path) -> dict[str, Path] | None:
    """{"train": root/train, "test": root/test} for the explicit layout, else None."""
    has = {s: (root / s).is_dir() for s in SPLITS}
    if all(has.values()):
        return {s: root / s for s in SPLITS}
    if any(has.values()):
        present, missing = sorted(s for s in SPLITS if has[s]), [s for s in SPLITS if not has[s]]
        raise ValueError(
            f"image folder {str(root)!r} has {present[0]}/ but no {missing[0]}/ sub-folder; "
            "give both train/ and test/ (the splits), or neither (the fixed split)."
        )
    return None


def _labelled(found: dict[str, list[Path]], class_names: list[str]):
    """(files, labels or None) of one split folder's files, labels by ``class_names``."""
    if list(found) == [""]:
        return found[""], None
    files = [p for name in found for p in found[name]]
    labels = np.array([class_names.index(name) for name in found for _ in found[name]], np.int64)
    return files, labels


def load_folder_split(
    folder: str | os.PathLike, split: str, image_shape: tuple[int, int, int] | None = None
) -> ArraySource:
    """Split ``"train"`` or ``"test"`` of an image folder as an ArraySource.

    Layouts, channels and the split: the module docstring. ``image_shape`` (height, width,
    channels), if given, sets the channels and is the shape every image must have.
    """
    check_split(split)
    root = _existing_file(folder, "image folder")
    if not root.is_dir():
        raise FileNotFoundError(
            f"image folder {str(root)!r} is a file, not a folder; for a .npz or .npy file use "
            "the array source (data.source=npz)."
        )
    explicit = _split_folders(root)
    if explicit is not None:
        found = {s: find_folder_files(explicit[s]) for s in SPLITS}
        if (list(found["train"]) == [""]) != (list(found["test"]) == [""]):
            raise ValueError(
                f"in {str(root)!r} one of train/ and test/ has class sub-folders and the other "
                "not; use the same layout in both."
            )
        names = sorted({n for s in SPLITS for n in found[s]}, key=lambda n: _natural_key(Path(n)))
        every = [p for s in SPLITS for paths in found[s].values() for p in paths]
        files, labels = _labelled(found[split], names)
        if labels is None:
            order = np.arange(len(files))
        else:  # round-robin over the classes, as the fixed split orders them
            order = np.lexsort((labels, class_ranks(labels)))
        where = repr(str(explicit[split]))
    else:
        found = find_folder_files(root)
        files, labels = _labelled(found, list(found))
        every = files
        splits = dict(zip(SPLITS, fixed_split(len(files), labels), strict=True))
        for s in SPLITS:  # both splits must be non-empty
            where = f"the {s} split of image folder {str(root)!r} ({len(files)} images)"
            _check_not_empty(len(splits[s]), where)
        order = splits[split]
        where = f"the {split} split of image folder {str(root)!r}"
    default_channels = check_folder_images(every)
    channels = default_channels if image_shape is None else image_shape[2]
    images = as_uint8_images(read_images([files[i] for i in order], channels), where, image_shape)
    return ArraySource(images, None if labels is None else labels[order])
