"""The runner's parts: EMA in the train step, warmup and clipping, old checkpoints, the evaluator."""

import json
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dpm_jax import checkpoints, evaluation, optim, rundir, runner, sharding, train_state
from experiments import common
from experiments import config as cfg
from experiments import swiss_roll as sr

KEY = jax.random.PRNGKey(0)


def _quadratic(params, batch, key):
    """sum (w - batch)^2: gradient 2 (w - batch), NaN when the batch is."""
    return jnp.sum(jnp.square(params["w"] - batch)), {}


def _steps(step_fn, state, batches):
    """Runs ``step_fn`` over ``batches``; the parameters after each step (copied: the state
    is donated)."""
    history = []
    for batch in batches:
        state, _ = step_fn(state, jnp.asarray(batch, jnp.float32))
        history.append(np.asarray(state.params["w"]).copy())
    return state, history


# ----------------------------------------------------------------------------------------------
# EMA.


def test_ema_decay_zero_evaluates_exactly_the_trained_parameters():
    tx = optax.adam(0.1)
    state = train_state.create_train_state({"w": jnp.array([0.3, -1.7])}, tx, jax.random.PRNGKey(0))
    step = train_state.make_train_step(_quadratic, tx, ema_decay=0.0)
    state, _ = _steps(step, state, np.random.default_rng(0).normal(size=(5, 2)))
    evaluated = train_state.eval_params(state, 0.0)
    np.testing.assert_array_equal(np.asarray(evaluated["w"]), np.asarray(state.params["w"]))
    np.testing.assert_array_equal(np.asarray(state.ema_params["w"]), np.asarray(state.params["w"]))


def test_ema_matches_a_hand_computed_average_over_three_steps():
    decay = 0.9
    tx = optax.sgd(0.25)
    w0 = np.array([1.0, -2.0, 0.5], np.float32)
    state = train_state.create_train_state({"w": jnp.asarray(w0)}, tx, jax.random.PRNGKey(0))
    step = train_state.make_train_step(_quadratic, tx, ema_decay=decay)
    batches = np.array([[0.0, 1.0, 2.0], [3.0, -1.0, 0.0], [1.0, 1.0, 1.0]], np.float32)
    state, history = _steps(step, state, batches)
    ema = w0.astype(np.float64)
    for params in history:
        ema = decay * ema + (1 - decay) * params
    np.testing.assert_allclose(np.asarray(state.ema_params["w"]), ema, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(train_state.eval_params(state, decay)["w"]), ema, 1e-6)
    assert not np.allclose(ema, history[-1])  # the EMA really lags the parameters


def test_a_skipped_non_finite_step_leaves_parameters_and_ema_unchanged():
    tx = optax.sgd(0.25)
    state = train_state.create_train_state({"w": jnp.array([1.0, 2.0])}, tx, jax.random.PRNGKey(0))
    step = train_state.make_train_step(_quadratic, tx, ema_decay=0.5)
    state, _ = _steps(step, state, [[0.0, 0.0]])
    before = jax.tree.map(lambda x: np.asarray(x).copy(), (state.params, state.ema_params))
    state, _ = _steps(step, state, [[np.nan, 0.0]])
    assert int(state.skipped) == 1
    after = (state.params, state.ema_params)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_an_experiment_trains_the_ema_of_its_config_and_evaluates_it(tmp_path):
    config = cfg.replace(
        sr.PRESETS["small"],
        {
            "train.steps": 3,
            "train.checkpoint_every": 3,
            "train.log_every": 3,
            "train.ema_decay": 0.5,
        },
    )
    state, _ = common.train_on_generator(
        sr.experiment,
        config,
        tmp_path,
        False,
        sr.dataset(config),
        init_params=sr.init_params,
        make_optimizer=sr.make_optimizer,
        loss_fn=sr.loss_fn,
    )
    params, ema = jax.tree.leaves(state.params), jax.tree.leaves(state.ema_params)
    assert any(
        not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(params, ema, strict=True)
    )
    evaluated = jax.tree.leaves(train_state.eval_params(state, config.train.ema_decay))
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(evaluated, ema, strict=True)
    )


def test_ema_decay_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="ema_decay"):
        train_state.make_train_step(_quadratic, optax.sgd(0.1), ema_decay=1.0)
    with pytest.raises(ValueError, match="train.ema_decay"):
        cfg.replace(sr.PRESETS["small"], {"train.ema_decay": -0.1})


# ----------------------------------------------------------------------------------------------
# Warmup and clipping.


def test_defaults_leave_the_optimiser_unchanged():
    tx = optax.adam(0.1)
    assert optim.with_warmup_and_clipping(tx) is tx


def test_warmup_ramps_the_updates_linearly_and_clipping_bounds_the_gradient():
    tx = optim.with_warmup_and_clipping(optax.sgd(1.0), warmup_steps=4, clip_norm=1.0)
    params = {"w": jnp.zeros(2)}
    opt_state = tx.init(params)
    steps = []
    for grad in ([0.3, 0.4], [0.3, 0.4], [30.0, 40.0], [0.3, 0.4], [0.3, 0.4]):
        updates, opt_state = tx.update({"w": jnp.array(grad)}, opt_state, params)
        steps.append(np.asarray(updates["w"]))
    small = np.array([-0.3, -0.4])
    np.testing.assert_allclose(steps[0], small / 4, rtol=1e-6)
    np.testing.assert_allclose(steps[1], small * 2 / 4, rtol=1e-6)
    np.testing.assert_allclose(steps[2], np.array([-0.6, -0.8]) * 3 / 4, rtol=1e-6)  # norm 1
    np.testing.assert_allclose(steps[3], small, rtol=1e-6)
    np.testing.assert_allclose(steps[4], small, rtol=1e-6)


def test_every_experiment_has_the_keys_with_defaults_that_change_nothing():
    from experiments import binary_heartbeat as hb
    from experiments import mnist

    for config in (sr.Config(), hb.Config(), mnist.Config()):
        train = config.train
        assert (train.ema_decay, train.warmup_steps, train.grad_clip_norm) == (0.0, 0, 0.0)
        assert train.steps_per_call == 1
    # warmup_steps = 10 scales the swiss roll's first Adam update by 1/10.
    small = sr.PRESETS["small"]
    params = sr.init_params(small, KEY)
    grads = jax.tree.map(jnp.ones_like, params)
    updates = {}
    for warmup in (0, 10):
        tx = sr.make_optimizer(cfg.replace(small, {"train.warmup_steps": warmup}))
        updates[warmup], _ = tx.update(grads, tx.init(params), params)
    for plain, warm in zip(jax.tree.leaves(updates[0]), jax.tree.leaves(updates[10]), strict=True):
        np.testing.assert_allclose(np.asarray(warm), np.asarray(plain) / 10, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Runs and checkpoints written before the EMA existed.


@flax.struct.dataclass
class TrainStateWithoutEma:
    """The train state's layout before ``ema_params`` was added."""

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    skipped: jax.Array
    skipped_in_a_row: jax.Array


def _old_checkpoint(workdir, params, tx, step: int):
    zero = jnp.array(step, jnp.int32)
    old = TrainStateWithoutEma(
        step=zero,
        params=params,
        opt_state=tx.init(params),
        rng=KEY,
        skipped=jnp.array(0, jnp.int32),
        skipped_in_a_row=jnp.array(0, jnp.int32),
    )
    manager = checkpoints.checkpoint_manager(workdir)
    checkpoints.save(manager, step, old)
    manager.wait_until_finished()
    manager.close()


def test_a_checkpoint_without_ema_restores_with_the_ema_at_its_parameters(tmp_path):
    tx = optax.adam(0.1)
    saved = {"w": jnp.array([0.25, -4.0])}
    _old_checkpoint(tmp_path, saved, tx, step=3)
    template = train_state.create_train_state({"w": jnp.zeros(2)}, tx, jax.random.PRNGKey(7))
    restored = checkpoints.restore_latest(checkpoints.checkpoint_manager(tmp_path), template)
    assert int(restored.step) == 3
    np.testing.assert_array_equal(np.asarray(restored.params["w"]), np.asarray(saved["w"]))
    np.testing.assert_array_equal(np.asarray(restored.ema_params["w"]), np.asarray(saved["w"]))
    np.testing.assert_array_equal(np.asarray(restored.rng), np.asarray(KEY))
    # The runner resumes such a run and writes checkpoints of the new layout.
    state = runner.fit(
        workdir=tmp_path,
        state=template,
        loss_fn=lambda p, b, k: _quadratic(p, b[0], k),
        tx=tx,
        batch_fn=lambda step: np.zeros((1, 2), np.float32),
        mesh=sharding.data_mesh(jax.devices()[:1]),
        num_steps=5,
        checkpoint_every=5,
        log_every=1,
    )
    assert int(state.step) == 5
    lines = [json.loads(x) for x in (tmp_path / rundir.METRICS_FILE).read_text().splitlines()]
    assert [r["step"] for r in lines] == [4, 5]
    again = checkpoints.restore_latest(checkpoints.checkpoint_manager(tmp_path), template)
    np.testing.assert_array_equal(np.asarray(again.ema_params["w"]), np.asarray(state.params["w"]))


def test_a_saved_config_without_the_new_keys_resumes_at_their_defaults(tmp_path):
    config = sr.PRESETS["small"]
    saved = rundir.config_to_dict(config)
    for key in ("train.ema_decay", "train.warmup_steps"):
        del saved[key]
    name = sr.experiment.name
    rundir.save_run_config(tmp_path, name, saved)
    as_dict, defaults = rundir.config_to_dict(config), rundir.config_defaults(config)
    rundir.check_run_compatible(tmp_path, name, as_dict, sr.MUTABLE_KEYS, defaults)
    changed = rundir.config_to_dict(cfg.replace(config, {"train.ema_decay": 0.99}))
    with pytest.raises(RuntimeError, match="train.ema_decay: saved 0.0 vs requested 0.99"):
        rundir.check_run_compatible(tmp_path, name, changed, sr.MUTABLE_KEYS, defaults)


# ----------------------------------------------------------------------------------------------
# The evaluator.


def test_per_example_keys_give_each_example_its_own_randomness():
    def noisy(x, key):  # a batch function of one key
        return jnp.sum(x, axis=1) + jax.random.normal(key, (x.shape[0],))

    fn = evaluation.per_example_keys(noisy)
    x = jnp.ones((4, 3))
    keys = evaluation.example_keys(KEY, jnp.arange(4))
    out = np.asarray(fn(x, keys))
    alone = [float(noisy(x[i : i + 1], keys[i])[0]) for i in range(4)]
    np.testing.assert_allclose(out, alone, rtol=1e-6)
    assert len(set(np.round(out, 6))) == 4


def _swiss_roll_k(batch_size: int, num_examples: int = 37) -> np.ndarray:
    config = sr.PRESETS["small"]
    keys = common.experiment_keys(config.seed)
    params = sr.init_params(config, keys["init"])
    x = np.asarray(sr.dataset(config).sample(keys["test_data"], num_examples))
    fn = evaluation.per_example_keys(sr.exact_bound_fn(config, params))
    return evaluation.evaluate(fn, x, keys["eval"], batch_size=batch_size)["K"]


def test_exact_bound_does_not_depend_on_the_evaluation_batch_size():
    k7, k16, k37 = _swiss_roll_k(7), _swiss_roll_k(16), _swiss_roll_k(37)
    assert k7.shape == (37,) and np.all(np.isfinite(k7))
    np.testing.assert_allclose(k16, k7, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(k37, k7, rtol=1e-6, atol=1e-6)


def test_evaluate_returns_every_output_of_a_tuple_function():
    data = np.arange(10, dtype=np.float32).reshape(5, 2)
    fn = lambda x, keys: (x[:, 0], x[:, 1] * 2)  # noqa: E731
    a, b = evaluation.evaluate(fn, data, KEY, batch_size=3)
    np.testing.assert_array_equal(a, data[:, 0])
    np.testing.assert_array_equal(b, data[:, 1] * 2)
    with pytest.raises(ValueError, match="empty"):
        evaluation.evaluate(fn, data[:0], KEY, batch_size=3)


def test_averaging_over_draws_is_the_mean_of_draws_with_folded_keys():
    noisy = evaluation.per_example_keys(
        lambda x, key: {"a": x[:, 0] + jax.random.normal(key, (x.shape[0],)), "b": x[:, 1]}
    )
    x = jnp.arange(8.0).reshape(4, 2)
    keys = evaluation.example_keys(KEY, jnp.arange(4))
    assert evaluation.averaged_over_draws(noisy, 1) is noisy  # one draw: the same values
    out = evaluation.averaged_over_draws(noisy, 5)(x, keys)
    draws = [noisy(x, jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, m)) for m in range(5)]
    np.testing.assert_allclose(out["a"], np.mean([d["a"] for d in draws], axis=0), rtol=1e-6)
    np.testing.assert_array_equal(out["b"], x[:, 1])
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="num_draws"):
            evaluation.averaged_over_draws(noisy, bad)


def test_more_forward_samples_shrink_the_monte_carlo_variance_of_k():
    """Per-example K over M forward trajectories: its spread over examples' draws falls as 1/M.

    One test point evaluated as 400 "examples" (different keys): the variance of K between
    them is the Monte Carlo variance alone, which M = 8 divides by 8 (within sampling error).
    """
    config = sr.PRESETS["small"]
    keys = common.experiment_keys(config.seed)
    params = sr.init_params(config, keys["init"])
    fn = evaluation.per_example_keys(sr.exact_bound_fn(config, params))
    x = np.repeat(np.asarray(sr.dataset(config).sample(keys["test_data"], 1)), 400, axis=0)
    var = {
        m: np.var(
            evaluation.evaluate(
                evaluation.averaged_over_draws(fn, m), x, keys["eval"], batch_size=400
            )["K"]
        )
        for m in (1, 8)
    }
    # The ratio of two variances of 400 draws: 8 within a factor of about 1.5 (5 sigma).
    assert 8 / 1.5 < var[1] / var[8] < 8 * 1.5, var


def test_swiss_roll_results_carry_the_terms_of_k_and_the_forward_samples(tmp_path):
    config = cfg.replace(
        sr.PRESETS["small"],
        {"train.steps": 20, "train.checkpoint_every": 10, "eval.num_test": 50,
         "eval.forward_samples": 3, "eval.ceiling_examples": 20,
         "eval.ceiling_reference_size": 200, "eval.num_figure_samples": 50},
    )  # fmt: skip
    r = json.loads(json.dumps(sr.run(config, tmp_path)))
    terms = r["bound_terms"]
    assert r["forward_samples"] == 3 and "averaged over 3 independent" in r["K_kind"]
    total = terms["prior_L_T"] + terms["kl_sum_t2_to_T"] + terms["decoder_L_0"]
    np.testing.assert_allclose(-total, r["K"], rtol=1e-5, atol=1e-5)
    assert terms["prior_L_T"] >= 0 and terms["kl_sum_t2_to_T"] >= 0  # KLs
    assert terms["unit"] == sr.UNITS and all(
        terms[f"{n}_stderr"] >= 0 for n in ("prior_L_T", "kl_sum_t2_to_T", "decoder_L_0")
    )
