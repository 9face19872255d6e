"""The reproduction report: built from results files only, missing runs shown as missing."""

import json
from pathlib import Path

import pytest

from experiments import report


def _write(run_dir, **results):
    run_dir.mkdir(parents=True)
    base = {"units": "bits", "T": 40, "train_steps": 100, "wall_seconds": 12.5}
    (run_dir / "results.json").write_text(json.dumps({**base, **results}))
    return run_dir


def test_report_from_fixture_runs(tmp_path):
    swiss = _write(
        tmp_path / "sr",
        experiment="swiss_roll",
        K=-1.4487,
        K_stderr=0.0201,
        K_minus_L_null=2.641,
        hardware="x86_64, 2 CPU cores",
        command="python -m experiments.swiss_roll --workdir runs/swiss_roll",
    )
    heart = _write(tmp_path / "hb", experiment="binary_heartbeat", K=-2.4013, K_stderr=0.003)
    out = tmp_path / "docs" / "reproduction.md"
    report.main([str(swiss), str(heart), "--output", str(out)])
    text = out.read_text()
    assert "| 1 | Swiss roll | 2.35" in text and "-1.449 ± 0.020" in text
    assert "`python -m experiments.swiss_roll --workdir runs/swiss_roll`" in text
    assert "-2.401 ± 0.003" in text and "x86_64, 2 CPU cores" in text
    # Rows without a run say so and carry no number of ours.
    for label in ("Bark", "Dead leaves", "CIFAR-10", "MNIST (Parzen window)"):
        line = next(x for x in text.splitlines() if f"| {label} |" in x)
        assert "not run" in line
    assert text.count("not run") == len(report.ROWS) - 2


def _line(text, label):
    return next(x for x in text.splitlines() if f"| {label} |" in x)


MNIST_5K = "MNIST, 5k real digits, offline (not the paper's protocol)"


def test_mnist_5k_run_fills_its_own_row_not_the_papers(tmp_path):
    digits = _write(
        tmp_path / "m5k",
        experiment="mnist",
        config={"data.source": "mnist_5k", "train.steps": 100},
        K=-1.23456,
        K_stderr=0.01234,
        nll_bits_per_dim_8bit=1.54321,
        nll_bits_per_dim_8bit_stderr=0.00456,
        L_null_nll_bits_per_dim_8bit=2.34567,
        L_null_nll_bits_per_dim_8bit_stderr=0.00111,
        pixel_categorical_nll_bits_per_dim_8bit=3.45678,
        pixel_categorical_nll_bits_per_dim_8bit_stderr=0.00222,
        parzen_log_likelihood_bits=123.4567,
        parzen_log_likelihood_bits_stderr=2.5,
        hardware="1 x NVIDIA H200 (gpu)",
        command="python -m experiments.mnist --workdir runs/mnist_5k --preset mnist_5k",
    )
    # A run on MNIST's own data (TFDS) fills the paper's Parzen row beside it.
    tfds = _write(
        tmp_path / "tfds",
        experiment="mnist",
        config={"data.source": "tfds"},
        K=-9.0,
        parzen_log_likelihood_bits=300.0,
        parzen_log_likelihood_bits_stderr=3.0,
    )
    out = tmp_path / "r.md"
    report.main([str(digits), str(tfds), "--output", str(out)])
    text = out.read_text()
    line = _line(text, MNIST_5K)
    for part in (
        "K -1.235 ± 0.012 bits/pixel",
        "NLL 1.543 ± 0.005 bits/dim",
        "L_null 2.346 ± 0.001 bits/dim",
        "per-pixel categorical 3.457 ± 0.002 bits/dim",
        "Parzen 123.457 ± 2.500 bits/image",
        "1 x NVIDIA H200 (gpu) | 12 s | 100 |",
        "`python -m experiments.mnist --workdir runs/mnist_5k --preset mnist_5k`",
    ):
        assert part in line, part
    parzen = _line(text, "MNIST (Parzen window)")
    assert "300.000 ± 3.000" in parzen and "123.457" not in parzen
    # Without the optional numbers the row leaves them out, and K and the NLL stay.
    bare = _write(tmp_path / "bare", experiment="mnist", config={"data.source": "mnist_5k"}, K=-1.0)
    report.main([str(bare), "--output", str(out)])
    line = _line(out.read_text(), MNIST_5K)
    assert "K -1.000 bits/pixel; NLL not in this run |" in line
    assert "Parzen" not in line and "categorical" not in line and "L_null" not in line
    assert "not run" in _line(out.read_text(), "MNIST (Parzen window)")


def test_run_kind():
    assert report.run_kind({"experiment": "mnist"}) == "mnist"
    assert report.run_kind({"experiment": "mnist", "config": {"data.source": "npz"}}) == "mnist"
    digits = {"data.source": "digits_8x8"}
    assert report.run_kind({"experiment": "mnist", "config": digits}) == "digits_8x8"
    other = {"experiment": "cifar10", "config": {"data.source": "mnist_5k"}}
    assert report.run_kind(other) == "cifar10"


def test_missing_and_malformed_results_name_the_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        report.main([str(tmp_path / "nothing_here")])
    assert "nothing_here/results.json" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.json").write_text("{not json")
    with pytest.raises(SystemExit):
        report.main([str(bad)])
    assert "bad/results.json: not valid JSON" in capsys.readouterr().err
    partial = _write(tmp_path / "partial", K=1.0)  # no "experiment"
    with pytest.raises(SystemExit):
        report.main([str(partial)])
    assert "missing keys ['experiment']" in capsys.readouterr().err


def test_a_second_run_of_the_same_experiment_is_refused(tmp_path, capsys):
    a = _write(tmp_path / "a", experiment="swiss_roll", K=1.0)
    b = _write(tmp_path / "b", experiment="swiss_roll", K=2.0)
    with pytest.raises(SystemExit):
        report.main([str(a), str(b), "--output", str(tmp_path / "r.md")])
    assert "second run" in capsys.readouterr().err


ROOT = Path(__file__).resolve().parents[1]


def test_committed_report_is_regenerated_from_the_committed_runs(tmp_path, monkeypatch):
    """docs/reproduction.md is exactly what `python -m experiments.report` writes from docs/runs."""
    monkeypatch.chdir(ROOT)
    runs = report.documented_runs()
    assert {r.name for r in runs} >= {"swiss_roll", "binary_heartbeat"}
    for run in runs:  # the evidence: results and the config of each documented run
        assert (run / "config.json").exists(), f"{run} has no config.json"
    out = tmp_path / "reproduction.md"
    report.main(["--output", str(out)])
    assert out.read_text() == (ROOT / "docs" / "reproduction.md").read_text()


def test_compared_runs_are_grouped_in_their_own_table(tmp_path):
    """A folder under docs/runs/ whose subfolders hold runs becomes one table, with the
    group's comparison.json difference under it; its runs fill no kind's row."""
    group = tmp_path / "lineage"
    for name, experiment, extra in [
        ("dpm2015", "mnist", {"nll_bits_per_dim_8bit": 4.6, "nll_bits_per_dim_8bit_stderr": 0.01}),
        ("ddpm", "ddpm", {"nll_bits_per_dim": 1.9, "nll_bits_per_dim_stderr": 0.02}),
    ]:
        (group / name).mkdir(parents=True)
        results = {
            "experiment": experiment,
            "units": "bits",
            "T": 1000,
            "train_steps": 10,
            "wall_seconds": 5.0,
            "num_test_examples": 250,
            "command": f"python -m experiments.{experiment} --workdir runs/{name}",
            **extra,
        }
        (group / name / "results.json").write_text(json.dumps(results))
    comparison = {
        "difference_2015_minus_ddpm": 2.7,
        "difference_stderr": 0.0224,
        "difference_stderr_kind": "independent",
        "num_test_examples": 250,
        "test_set_size": 1000,
        "pixel_categorical_bits_per_dim": 1.77,
        "pixel_categorical_bits_per_dim_stderr": 0.01,
    }
    (group / "comparison.json").write_text(json.dumps(comparison))
    groups = report.documented_groups(tmp_path)
    assert list(groups) == [str(group)] and len(groups[str(group)]) == 2
    members = [(str(d), report.load_results(d)) for d in groups[str(group)]]
    page = report.render({}, {str(group): members})
    assert "NLL ≤ 1.900 ± 0.020 bits/dim (8-bit)" in page
    assert "NLL ≤ 4.600 ± 0.010 bits/dim (8-bit)" in page
    assert "2015 network − DDPM U-Net: 2.700 ± 0.022 bits/dim" in page
    assert report.documented_runs(tmp_path) == []  # the group's runs are not rows of their own
