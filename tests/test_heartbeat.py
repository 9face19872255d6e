"""Heartbeat data, model and the experiment's command line end to end (small preset)."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np

from dpm_jax.data import Heartbeat
from dpm_jax.models import HeartbeatMLP
from experiments import binary_heartbeat as hb


def test_heartbeat_sequences():
    data = Heartbeat()
    seqs = data.sequences()
    assert seqs.shape == (5, 20)
    assert np.all(seqs.sum(1) == 4)
    assert len({tuple(s) for s in seqs}) == 5
    np.testing.assert_allclose(data.true_log_likelihood, -math.log2(5))
    np.testing.assert_allclose(data.mean_rate, 0.2)
    x = np.asarray(data.sample(jax.random.PRNGKey(0), 5000))
    assert data.is_valid(x).all()
    counts = np.bincount(np.argmax(x, axis=1), minlength=5)
    assert counts.min() > 900  # phases uniform over the first five bins
    flipped = x[:3].copy()
    flipped[:, 7] = 1 - flipped[:, 7]
    assert not data.is_valid(flipped).any()


def test_mlp_shapes_and_per_step_readout():
    model = HeartbeatMLP(num_steps=7)
    x = jnp.zeros((4, 20))
    params = model.init(jax.random.PRNGKey(0), x, jnp.ones((4,), jnp.int32))["params"]
    assert params["readout_kernel"].shape == (7, 50, 20)
    out = model.apply({"params": params}, x, jnp.array([1, 2, 3, 7]))
    assert out.shape == (4, 20)


def test_small_preset_end_to_end(tmp_path):
    workdir = tmp_path / "run"
    hb.main(["--workdir", str(workdir), "--preset", "small"])
    r = json.loads((workdir / "results.json").read_text())
    for key in (
        "experiment",
        "K",
        "K_stderr",
        "K_minus_L_null",
        "L_null",
        "true_log_likelihood",
        "units",
        "num_test_examples",
        "T",
        "train_steps",
        "wall_seconds",
        "K_schedule_ceiling",
        "valid_sample_fraction",
    ):
        assert key in r, key
    assert r["experiment"] == "binary_heartbeat" and r["T"] == 50
    # Valid bounds: neither the model nor the ceiling exceeds the truth.
    assert r["K"] <= r["true_log_likelihood"] + 2 * r["K_stderr"]
    assert r["K_schedule_ceiling"] <= r["true_log_likelihood"] + 2 * r["K_schedule_ceiling_stderr"]
    assert (workdir / r["figures"][0]).exists()
