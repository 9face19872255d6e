"""experiments.ladder end to end on tiny runs: rows, units, the ODE only for epsilon-models,
the figure, and clear errors for bad settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dpm_jax.data import Heartbeat
from experiments import (
    binary_heartbeat,
    common,
    ddpm,
    ddpm_swiss_roll,
    images,
    ladder,
    mnist,
    swiss_roll,
)
from experiments import config as cfg

TINY_2D = {"train.steps": 60, "train.checkpoint_every": 60, "eval.num_test": 40}


def _train(module, config, workdir):
    """Trains and checkpoints a run (config.json and checkpoints: what the ladder reads),
    without the experiment's own evaluation."""
    data = Heartbeat() if module is binary_heartbeat else swiss_roll.dataset(config)
    common.train_module_on_generator(module, config, workdir, False, data)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ladder_runs")
    mixture = {**TINY_2D, "data.name": "gaussian_mixture"}
    rbf = {**mixture, "diffusion.steps": 10}
    _train(swiss_roll, cfg.replace(swiss_roll.PRESETS["small"], rbf), root / "rbf")
    eps = {**mixture, "diffusion.steps": 25}
    _train(ddpm_swiss_roll, cfg.replace(ddpm_swiss_roll.PRESETS["small"], eps), root / "eps")
    heartbeat = {
        "diffusion.steps": 10,
        "train.steps": 20,
        "train.checkpoint_every": 20,
        "eval.num_test": 30,
    }
    _train(
        binary_heartbeat,
        cfg.replace(binary_heartbeat.PRESETS["small"], heartbeat),
        root / "heartbeat",
    )
    return root


def test_the_ladder_of_each_kind_of_run(runs, tmp_path, capsys):
    out = tmp_path / "ladder"
    ladder.main(
        [
            *("--workdir", str(out), "--num_test", "24", "--m", "1,8", "--k_draws", "2"),
            *("--run", str(runs / "rbf"), "--run", str(runs / "eps")),
            *("--run", str(runs / "heartbeat")),
        ]
    )
    result = json.loads((out / "ladder.json").read_text())
    assert (out / result["figure"]).exists()
    assert result["command"].startswith("python -m experiments.ladder --workdir")
    rbf, eps, heart = result["models"]
    assert [r["name"] for r in rbf["rows"]] == ["K", "K_1", "K_8", "truth"]
    assert "not applicable" in rbf["ode"] and "mean and a variance" in rbf["ode"]
    assert [r["name"] for r in eps["rows"]] == ["K", "K_1", "K_8", "ODE", "truth"]
    assert [r["name"] for r in heart["rows"]] == ["K", "K_1", "K_8", "truth"]
    assert "binary data" in heart["ode"]
    for model in (rbf, eps, heart):
        rows = {r["name"]: r for r in model["rows"]}
        assert model["num_test_examples"] == 24
        assert all(np.isfinite(r["mean"]) and r["stderr"] >= 0 for r in model["rows"])
        # Both estimate E[K]; the importance-weighted one with more draws rises above it.
        se = np.hypot(rows["K"]["stderr"], rows["K_1"]["stderr"])
        assert abs(rows["K"]["mean"] - rows["K_1"]["mean"]) < 4 * se + 0.05
        se = np.hypot(rows["K_8"]["stderr"], rows["K_1"]["stderr"])
        assert rows["K_8"]["mean"] > rows["K_1"]["mean"] - 3 * se
        assert rows["truth"]["gap_truth_minus"] == 0.0
    # The same points for both mixture models: the same truth.
    assert rbf["rows"][-1]["mean"] == eps["rows"][-1]["mean"]
    assert heart["rows"][-1]["mean"] == pytest.approx(-np.log2(5))
    printed = capsys.readouterr().out
    assert "| K_8 |" in printed and "share of K's gap closed" in printed


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["--m", "0,10"], "every M must be >= 1"),
        (["--m", "ten"], "comma-separated integers"),
        (["--rtol", "0"], "tolerances must be positive"),
        (["--num_test", "1"], "--num_test must be >= 2"),
    ],
)
def test_bad_settings_are_refused(tmp_path, capsys, args, phrase):
    with pytest.raises(SystemExit):
        ladder.main(["--workdir", str(tmp_path), "--run", str(tmp_path), *args])
    assert phrase in capsys.readouterr().err


def test_a_run_the_ladder_cannot_read_is_refused(runs, tmp_path, capsys):
    with pytest.raises(SystemExit):
        ladder.main(["--workdir", str(tmp_path), "--run", str(tmp_path / "missing")])
    assert "must be the workdir of a finished run" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"experiment": "dead_leaves", "config": {}}))
    with pytest.raises(SystemExit):
        ladder.main(["--workdir", str(tmp_path), "--run", str(other)])
    assert "the ladder reads runs of" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ladder.main(["--workdir", str(tmp_path), "--run", str(runs / "eps"), "--num_test", "1000"])
    assert "exceeds the 40 test examples the run evaluates" in capsys.readouterr().err


@pytest.mark.slow
def test_the_ladder_of_digit_runs_reports_8bit_bits_per_dim(tmp_path):
    """A DDPM U-Net and a 2015 image run on the 8x8 digits: K, K_M in bits per digit and as
    the 8-bit NLL; the ODE (dequantised, Hutchinson) only for the U-Net."""
    eps_config = cfg.replace(ddpm.PRESETS["small"], {"train.steps": 2, "train.warmup_steps": 1})
    ddpm.experiment.train(
        eps_config, tmp_path / "unet", ddpm.experiment.load_split(eps_config, "train"), False
    )
    config_2015 = cfg.replace(
        mnist.PRESETS["small"],
        {"data.source": "digits_8x8", "diffusion.steps": 20, "train.steps": 2},
    )
    train_source = mnist.experiment.load_split(config_2015, "train")
    scaling = images.scaling_for_run(config_2015, tmp_path / "rbf", train_source, False)
    images.train(mnist.experiment, config_2015, tmp_path / "rbf", train_source, scaling)
    out = tmp_path / "ladder"
    ladder.main(
        [
            *("--workdir", str(out), "--num_test", "3", "--m", "1,4", "--k_draws", "1"),
            *("--run", str(tmp_path / "unet"), "--run", str(tmp_path / "rbf")),
        ]
    )
    unet, net2015 = json.loads((out / "ladder.json").read_text())["models"]
    assert [r["name"] for r in unet["rows"]] == ["K", "K_1", "K_4", "ODE"]
    assert [r["name"] for r in net2015["rows"]] == ["K", "K_1", "K_4"]
    for model in (unet, net2015):
        for row in model["rows"]:
            # A codelength of 8-bit data: positive, and -K/D of the same row's bits.
            assert row["nll_bits_per_dim_8bit"] > 0
        rows = {r["name"]: r for r in model["rows"]}
        assert rows["K_4"]["nll_minus_K_nll"] < rows["K_1"]["nll_minus_K_nll"] + 0.5
    k = unet["rows"][0]
    assert k["nll_bits_per_dim_8bit"] == pytest.approx(-k["mean"] / 64, rel=1e-6)


DOCUMENTED = sorted(
    (Path(__file__).resolve().parents[1] / "docs/runs/ladder").glob("*/ladder.json")
)


@pytest.mark.parametrize("path", DOCUMENTED, ids=lambda p: p.parent.name)
def test_documented_ladders_are_shown_verbatim_and_none_is_above_the_truth(path):
    """docs/likelihood_ladder.md shows each committed ladder's tables as ladder.md renders
    them, and no committed estimate lies above the truth beyond 2 paired standard errors."""
    page = (path.parents[4] / "docs/likelihood_ladder.md").read_text()
    result = json.loads(path.read_text())
    for model in result["models"]:
        assert ladder.table(model) in page, f"{path}: {model['model']} table not in the page"
        for row in model["rows"]:
            if "gap_truth_minus" in row and row["name"] != "truth":
                assert row["gap_truth_minus"] > -2 * row["gap_truth_minus_stderr"], row
    assert result["command"] in page


def test_chunks_with_padding_equal_one_pass():
    x = np.arange(14.0).reshape(7, 2)
    starts = []

    def fn(batch, start):
        starts.append(start)
        return batch.sum(axis=1) * 2

    np.testing.assert_array_equal(ladder._in_chunks(fn, x, 3, "test"), x.sum(axis=1) * 2)
    assert starts == [0, 3, 6]


def test_gap_fields_match_a_bootstrap():
    rng = np.random.default_rng(0)
    k = rng.normal(-2.0, 1.0, 2000)
    truth = k + rng.normal(0.6, 0.3, 2000)
    value = k + 0.5 * (truth - k) + rng.normal(0.0, 0.1, 2000)
    fields = ladder.gap_fields(value, k, truth)
    assert fields["gap_truth_minus"] == pytest.approx(np.mean(truth - value))
    resamples = rng.integers(0, 2000, (2000, 2000))
    fractions = [(value[i] - k[i]).mean() / (truth[i] - k[i]).mean() for i in resamples]
    assert fields["fraction_of_K_gap_closed"] == pytest.approx(0.5, abs=0.02)
    assert fields["fraction_of_K_gap_closed_stderr"] == pytest.approx(np.std(fractions), rel=0.15)
