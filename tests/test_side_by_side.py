"""benchmarks/: the FLOP count of the 2015 model and the docs table of side_by_side.py (no timing)."""

import importlib.util
import json
import sys
from pathlib import Path

from experiments import cifar10, mnist

ROOT = Path(__file__).resolve().parents[1]


def _module(name: str = "side_by_side"):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_train_flops_count_every_multiply_add_of_the_released_code_networks():
    sbs = _module("image_speed")
    # MNIST, by hand: conv 28*28*9*(1*20 + 3*20*20); dense 784-500-500-500-1568;
    # per pixel (20 + 2) -> 20 -> 1*2*10. Two FLOPs a multiply-add, x3 for the backward.
    conv = 28 * 28 * 9 * (1 * 20 + 3 * 20 * 20)
    dense = 784 * 500 + 2 * 500 * 500 + 500 * 2 * 784
    upper = 28 * 28 * (22 * 20 + 20 * 20)
    assert (conv, dense, upper) == (8_608_320, 1_676_000, 658_560)
    assert sbs.analytic_train_flops(mnist.PRESETS["default"]) == 6 * 512 * (conv + dense + upper)
    # CIFAR-10: conv 32*32*9*(3*100 + 5*100*100); dense 3072-1000 x5 -1000-5120 (6 layers);
    # per pixel 105 -> 100 -> 100 -> 100 -> 60.
    conv = 32 * 32 * 9 * (3 * 100 + 5 * 100 * 100)
    dense = 3072 * 1000 + 4 * 1000 * 1000 + 1000 * 5 * 1024
    upper = 32 * 32 * (105 * 100 + 2 * 100 * 100 + 100 * 60)
    assert sbs.analytic_train_flops(cifar10.PRESETS["default"]) == 6 * 200 * (conv + dense + upper)


def test_performance_doc_shows_the_committed_side_by_side_run_verbatim():
    sbs = _module()
    report = json.loads(sbs.RESULTS.read_text())
    doc = sbs.DOC.read_text()
    block = doc.split(sbs.BEGIN, 1)[1].split(sbs.END, 1)[0].strip()
    assert block == sbs.render(report).strip()
    assert set(report["models"]) == {"mnist", "cifar10", "unet"}
    for entry in report["models"].values():
        ratio = entry["train"]["images_per_s"] / sbs.peer_images_per_s(entry["peer"])
        assert abs(entry["ratio"] - ratio) < 1e-12


def test_performance_doc_shows_the_committed_convolution_kernels_verbatim():
    ck = _module("conv_kernels")
    report = json.loads(ck.OUT.read_text())
    block = ck.DOC.read_text().split(ck.BEGIN, 1)[1].split(ck.END, 1)[0].strip()
    assert block == ck.render(report).strip()
