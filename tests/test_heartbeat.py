"""Heartbeat data, model and the experiment's command line end to end (small preset)."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def test_mlp_readout_through_bumps_is_the_weighted_sum_of_per_bump_readouts():
    from dpm_jax.models.temporal import bump_basis

    steps, basis = 40, 5
    model = HeartbeatMLP(num_steps=steps, num_hidden=6, readout_basis=basis)
    x = jax.random.bernoulli(jax.random.PRNGKey(1), 0.3, (3, 20)).astype(jnp.float32)
    t = jnp.array([1, 17, 40])
    params = model.init(jax.random.PRNGKey(0), x, t)["params"]
    assert params["readout_kernel"].shape == (basis, 6, 20)
    keys = jax.random.split(jax.random.PRNGKey(2), 2)
    params = {
        **params,
        "readout_kernel": jax.random.normal(keys[0], (basis, 6, 20)),
        "readout_bias": jax.random.normal(keys[1], (basis, 20)),
    }
    out = model.apply({"params": params}, x, t)
    # The same network with a free readout per step whose weights are the bump mixture.
    g = bump_basis(steps, basis, relative_width=1.0)  # (T, J)
    per_step = {
        **params,
        "readout_kernel": jnp.einsum("tj,jhd->thd", g, params["readout_kernel"]),
        "readout_bias": g @ params["readout_bias"],
    }
    expected = HeartbeatMLP(num_steps=steps, num_hidden=6).apply({"params": per_step}, x, t)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    # Equal readouts for every bump give a readout that does not depend on t.
    flat = {
        **params,
        "readout_kernel": jnp.broadcast_to(params["readout_kernel"][:1], (basis, 6, 20)),
        "readout_bias": jnp.broadcast_to(params["readout_bias"][:1], (basis, 20)),
    }
    x3 = jnp.broadcast_to(x[:1], (3, 20))
    out = model.apply({"params": flat}, x3, t)
    np.testing.assert_allclose(out[0], out[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[0], out[2], rtol=1e-5, atol=1e-5)


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


@pytest.mark.slow
def test_default_run_meets_its_acceptance(tmp_path):
    """The default run (about 25 minutes on 2 cores): K >= the paper's -2.414, never above the truth."""
    r = hb.run(hb.Config(), tmp_path / "run")
    assert r["K"] >= hb.PAPER["K"]
    assert r["K"] <= r["true_log_likelihood"] + 2 * r["K_stderr"]
