"""Data parallelism (dpm_jax.sharding, train_state.make_train_step(mesh=...)) and mixed precision.

Multi-device checks run a script in a subprocess with 8 faked CPU devices
(``--xla_force_host_platform_device_count=8``); the multi-host check starts two CPU
processes joined by ``jax.distributed.initialize`` on localhost (gloo collectives).
Scripts print one ``RESULT {json}`` line.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpm_jax import gaussian, parameterisation, rundir, sharding, train_state
from dpm_jax.data import ImageScaling, preprocess
from experiments import cifar10, image_model, mnist
from experiments import config as cfg

ROOT = Path(__file__).resolve().parents[1]


def _env(num_devices: int | None = None) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(name, None)
    if num_devices is not None:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
    return env


def _result(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no RESULT line in the script's output:\n{stdout[-3000:]}"
    return json.loads(lines[-1][len("RESULT ") :])


# ----------------------------------------------------------------------------------------------
# 8 devices, one process.

EIGHT_DEVICES = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    from dpm_jax import sharding, train_state
    from dpm_jax.data import ImageScaling
    from experiments import config as cfg, image_eval, image_model, mnist

    out = {"devices": jax.device_count()}
    config = cfg.replace(mnist.PRESETS["small"], {"diffusion.steps": 8, "train.batch_size": 16})
    scaling = ImageScaling(scale=3.0, shift=-1.3)
    mesh = sharding.data_mesh()
    tx = image_model.make_optimizer(config)
    # Random parameters of the right shapes (the orthogonal init's QR is slow to compile).
    shapes = jax.eval_shape(lambda k: image_model.init_params(config, k), jax.random.key(1))
    gen = np.random.default_rng(1)
    params = jax.tree.map(
        lambda s: (gen.normal(size=s.shape) / np.sqrt(s.shape[-2] if s.ndim > 1 else 50))
        .astype(np.float32),
        shapes,
    )
    rng = np.asarray(jax.random.key_data(jax.random.key(3)))
    pixels = np.asarray(jax.random.randint(jax.random.key(2), (2, 16, 28, 28, 1), 0, 256), np.uint8)
    loss = lambda p, b, k: image_model.loss_fn(config, scaling, p, b, k)

    def fresh_state():  # the step donates the state: new buffers for every run
        return train_state.create_train_state(jax.tree.map(jnp.asarray, params), tx, jnp.asarray(rng))

    def run(step_fn, state, place):
        losses, norms = [], []
        for batch in pixels:
            state, metrics = step_fn(state, place(batch))
            losses.append(float(metrics["loss"]))
            norms.append(float(metrics["grad_norm"]))
        return state, losses, norms

    s1, l1, n1 = run(train_state.make_train_step(loss, tx), fresh_state(), jnp.asarray)
    s8, l8, n8 = run(
        train_state.make_train_step(loss, tx, mesh=mesh),
        sharding.replicate(fresh_state(), mesh),
        lambda b: sharding.shard_batch(b, mesh),
    )
    diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
                         s1.params, s8.params)
    out["train"] = {
        "loss_1": l1, "loss_8": l8, "grad_norm_1": n1, "grad_norm_8": n8,
        "max_param_diff": max(jax.tree.leaves(diffs)),
        "params_replicated": all(x.sharding.is_fully_replicated for x in jax.tree.leaves(s8)),
        "state_devices": len(s8.params["upper_0"]["kernel"].sharding.device_set),
        "step": int(s8.step),
    }

    bound = image_eval.exact_bound_fn(config, s1.params, scaling)
    key = jax.random.key(4)
    (k1, null1), (k8, null8) = bound(jnp.asarray(pixels[0]), key), bound(sharding.shard_batch(pixels[0], mesh), key)
    k1, k8 = k1["K"], k8["K"]
    out["bound"] = {
        "k1": np.asarray(k1).tolist(), "k8": np.asarray(k8).tolist(),
        "null1": np.asarray(null1).tolist(), "null8": np.asarray(null8).tolist(),
        "k8_devices": len(k8.sharding.device_set),
    }

    try:
        sharding.shard_batch(pixels[0][:13], mesh)
        out["error"] = None
    except ValueError as e:
        out["error"] = str(e)
    ids = np.arange(13)
    (padded_ids, padded_pixels), num_valid = sharding.pad_to_multiple((ids, pixels[0][:13]), 8)
    per_example = jax.jit(lambda x: jnp.sum(x.astype(jnp.float32), axis=(1, 2, 3)))
    values = np.asarray(per_example(sharding.shard_batch(padded_pixels, mesh)))
    mask = sharding.valid_mask(len(padded_ids), num_valid)
    out["pad"] = {
        "padded": len(padded_ids), "num_valid": num_valid, "ids": padded_ids[mask].tolist(),
        "masked_sum": float(values[mask].sum()),
        "direct_sum": float(np.asarray(per_example(jnp.asarray(pixels[0][:13]))).sum()),
    }

    from dpm_jax import evaluation
    from experiments import common, swiss_roll

    toy = swiss_roll.PRESETS["small"]
    toy_keys = common.experiment_keys(toy.seed)
    toy_fn = evaluation.per_example_keys(
        swiss_roll.exact_bound_fn(toy, swiss_roll.init_params(toy, toy_keys["init"]))
    )
    toy_x = np.asarray(swiss_roll.dataset(toy).sample(toy_keys["test_data"], 37))
    out["toy_k"] = {
        str(b): evaluation.evaluate(toy_fn, toy_x, toy_keys["eval"], batch_size=b)["K"].tolist()
        for b in (7, 16)  # 16 splits over the 8 devices, 7 does not
    }
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def eight_devices() -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", EIGHT_DEVICES],
        cwd=ROOT,
        env=_env(8),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = _result(proc.stdout)
    assert out["devices"] == 8
    return out


def test_train_step_on_8_devices_matches_one_device(eight_devices):
    r = eight_devices["train"]
    np.testing.assert_allclose(r["loss_8"], r["loss_1"], rtol=1e-5)
    np.testing.assert_allclose(r["grad_norm_8"], r["grad_norm_1"], rtol=1e-5)
    assert r["max_param_diff"] < 1e-6  # RMSProp steps are ~1e-3 here
    assert r["params_replicated"] and r["state_devices"] == 8
    assert r["step"] == 2


def test_exact_bound_on_8_devices_matches_one_device(eight_devices):
    r = eight_devices["bound"]
    assert r["k8_devices"] == 8  # the batch really was split
    np.testing.assert_allclose(r["k8"], r["k1"], rtol=1e-5)
    np.testing.assert_allclose(r["null8"], r["null1"], rtol=1e-6)


def test_evaluated_bound_is_the_same_on_1_and_8_devices_and_any_batch_size(eight_devices):
    """Example i's key is folded from i alone: K depends on neither the batch nor the devices."""
    from dpm_jax import evaluation
    from experiments import common, swiss_roll

    toy = swiss_roll.PRESETS["small"]
    keys = common.experiment_keys(toy.seed)
    fn = evaluation.per_example_keys(
        swiss_roll.exact_bound_fn(toy, swiss_roll.init_params(toy, keys["init"]))
    )
    x = np.asarray(swiss_roll.dataset(toy).sample(keys["test_data"], 37))
    one_device = evaluation.evaluate(fn, x, keys["eval"], batch_size=16)["K"]
    assert one_device.shape == (37,) and np.all(np.isfinite(one_device))
    for batch_size, k in eight_devices["toy_k"].items():
        np.testing.assert_allclose(k, one_device, rtol=1e-6, atol=1e-6, err_msg=batch_size)


def test_indivisible_batch_error_and_padding_counts_each_example_once(eight_devices):
    message = eight_devices["error"]
    assert message is not None
    for part in ("13 examples", "8 devices", "divisible by 8", "pad_to_multiple"):
        assert part in message, message
    r = eight_devices["pad"]
    assert r["padded"] == 16 and r["num_valid"] == 13
    assert r["ids"] == list(range(13))
    assert r["masked_sum"] == r["direct_sum"]


# ----------------------------------------------------------------------------------------------
# Two processes (multi-host on one machine).

TWO_PROCESSES = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import jax
    port, pid, outdir = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    jax.config.update("jax_num_cpu_devices", 2)  # 2 local CPU devices per process
    import jax.numpy as jnp, numpy as np, optax
    from dpm_jax import sharding, train_state

    initialized = sharding.initialize_distributed(f"localhost:{port}", 2, pid)
    mesh = sharding.data_mesh()
    GLOBAL_BATCH = 16
    rows = sharding.process_batch_slice(GLOBAL_BATCH, mesh)

    def loss_fn(params, batch, key):
        x, y = batch[:, :3], batch[:, 3]
        pred = jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"]
        pred = pred + 0.01 * jax.random.normal(key, y.shape)
        return jnp.mean((pred - y) ** 2), {}

    def init():
        k1, k2 = jax.random.split(jax.random.key(0))
        return {"w1": jax.random.normal(k1, (3, 8)), "b1": jnp.zeros(8),
                "w2": jax.random.normal(k2, (8,))}

    data = np.asarray(jax.random.normal(jax.random.key(1), (3, GLOBAL_BATCH, 4)))
    tx = optax.adam(1e-2)
    rng = jax.random.key_data(jax.random.key(2))
    state = sharding.replicate(train_state.create_train_state(init(), tx, rng), mesh)
    step = train_state.make_train_step(loss_fn, tx, mesh=mesh)
    losses = []
    for batch in data:  # each process loads only its rows of the global batch
        state, metrics = step(state, sharding.host_batch_to_global(batch[rows], mesh))
        losses.append(float(metrics["loss"]))

    ref = train_state.create_train_state(init(), tx, rng)  # one device, the whole batch
    ref_step = train_state.make_train_step(loss_fn, tx)
    ref_losses = []
    for batch in data:
        ref, metrics = ref_step(ref, jnp.asarray(batch))
        ref_losses.append(float(metrics["loss"]))

    if sharding.is_main_process():
        (outdir / f"written_by_{jax.process_index()}").write_text("ok")
    print("RESULT " + json.dumps({
        "initialized": initialized, "process_index": jax.process_index(),
        "process_count": jax.process_count(), "devices": jax.device_count(),
        "local_devices": jax.local_device_count(), "rows": [rows.start, rows.stop],
        "main": sharding.is_main_process(), "step": int(state.step),
        "losses": losses, "ref_losses": ref_losses,
        "params": {k: np.asarray(v).tolist() for k, v in state.params.items()},
        "ref_params": {k: np.asarray(v).tolist() for k, v in ref.params.items()},
    }))
    """
)


def _gloo_missing() -> str | None:
    try:
        from jax._src.lib import _jax
    except ImportError as e:  # pragma: no cover - layout of other jax versions
        return f"cannot inspect jaxlib for CPU collectives: {e}"
    if not hasattr(_jax, "make_gloo_tcp_collectives"):  # pragma: no cover
        return "this jaxlib has no gloo CPU collectives (make_gloo_tcp_collectives)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run_two_processes(script: str, directory: Path, timeout: int) -> list[dict]:
    """Runs ``script PORT PID DIRECTORY`` as processes 0 and 1; their RESULT dicts in order."""
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(port), str(pid), str(directory)],
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid in range(2)
    ]
    outputs = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, stderr[-4000:]
            outputs.append(_result(stdout))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return outputs


@pytest.mark.skipif(_gloo_missing() is not None, reason=str(_gloo_missing()))
def test_two_processes_train_to_identical_parameters(tmp_path):
    outputs = _run_two_processes(TWO_PROCESSES, tmp_path, timeout=180)
    first, second = outputs
    for pid, r in enumerate(outputs):
        assert r["initialized"] and r["process_index"] == pid and r["process_count"] == 2
        assert r["devices"] == 4 and r["local_devices"] == 2
        assert r["rows"] == [8 * pid, 8 * pid + 8]
        assert r["main"] == (pid == 0)
        assert r["step"] == 3
        np.testing.assert_allclose(r["losses"], r["ref_losses"], rtol=1e-5)
        for name, value in r["params"].items():
            np.testing.assert_allclose(value, r["ref_params"][name], rtol=1e-5, atol=1e-6)
    assert first["params"] == second["params"]  # bit-identical across processes
    assert first["losses"] == second["losses"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["written_by_0"]


# ----------------------------------------------------------------------------------------------
# In this process (one device).


def test_single_process_helpers(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE", raising=False)
    assert sharding.initialize_distributed() is False  # one process: nothing to do
    assert sharding.initialize_distributed(num_processes=1) is False
    with pytest.raises(ValueError, match="num_processes, process_id missing"):
        sharding.initialize_distributed(coordinator_address="localhost:1234")
    assert sharding.is_main_process()
    mesh = sharding.data_mesh()
    assert mesh.axis_names == ("data",) and mesh.size == jax.device_count()
    assert sharding.process_batch_slice(12, mesh) == slice(0, 12)
    batch = {"x": np.arange(12.0).reshape(6, 2), "y": np.arange(6)}
    placed = sharding.host_batch_to_global(batch, mesh)
    np.testing.assert_array_equal(placed["x"], batch["x"])
    (padded, num_valid) = sharding.pad_to_multiple(np.arange(5), 4)
    assert num_valid == 5 and padded.tolist() == [0, 1, 2, 3, 4, 0, 0, 0]
    padded, num_valid = sharding.pad_to_multiple(np.arange(8), 4)
    assert num_valid == 8 and len(padded) == 8
    with pytest.raises(ValueError, match="disagree"):
        sharding.shard_batch({"a": np.zeros(2), "b": np.zeros(3)}, mesh)


def _quick_params(config, seed: int = 0) -> dict:
    """Random parameters of the network's shapes, scaled 1/sqrt(fan-in).

    Cheaper than ``init_params``, whose orthogonal initialiser's QR takes seconds to compile.
    """
    shapes = jax.eval_shape(lambda k: image_model.init_params(config, k), jax.random.key(0))
    gen = np.random.default_rng(seed)

    def draw(s):
        scale = 1.0 / np.sqrt(s.shape[-2] if s.ndim > 1 else 50)
        return jnp.asarray(gen.normal(size=s.shape) * scale, jnp.float32)

    return jax.tree.map(draw, shapes)


def _loss_with_network(config, scaling, model):
    """``experiments.image_model.loss_fn`` with another network (here a bfloat16 one)."""
    sched = image_model.schedule(config)
    pixels = image_model.pixels_per_image(config)
    param = parameterisation.from_readout(config.model.readout)

    def loss(params, batch, key):
        key_u, key_k = jax.random.split(key)
        x0 = preprocess(batch, key_u, scaling)

        def model_fn(x_t, t):
            return model.apply({"params": params}, x_t, t)

        reverse_fn = parameterisation.make_reverse_fn(param, sched, model_fn)
        k = gaussian.bound_estimate(sched, reverse_fn, x0, key_k) / pixels
        return -jnp.mean(k), {}

    return loss


def test_bfloat16_network_outputs_float32_close_to_float32_and_trains():
    config = cfg.replace(mnist.PRESETS["small"], {"diffusion.steps": 8, "train.batch_size": 8})
    f32 = image_model.network(config)
    bf16 = f32.clone(dtype=jnp.bfloat16)
    params = _quick_params(config)
    x = jax.random.normal(jax.random.key(1), (4, 28, 28, 1))
    t = jnp.array([2, 3, 5, 8], jnp.int32)
    ref = jax.jit(f32.apply)({"params": params}, x, t)
    out = jax.jit(bf16.apply)({"params": params}, x, t)
    for a, b in zip(out, ref, strict=True):
        assert a.dtype == jnp.float32
        rel = float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
        assert rel < 0.05, rel
        assert rel > 0  # the computation really ran in bfloat16

    scaling = ImageScaling(scale=3.0, shift=-1.3)
    tx = image_model.make_optimizer(config)
    state = train_state.create_train_state(params, tx, jax.random.key_data(jax.random.key(2)))
    step = train_state.make_train_step(_loss_with_network(config, scaling, bf16), tx)
    pixels = jax.random.randint(jax.random.key(3), (8, 28, 28, 1), 0, 256).astype(jnp.uint8)
    state, metrics = step(state, pixels)
    assert np.isfinite(float(metrics["loss"])) and int(metrics["skipped_steps"]) == 0
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))


@pytest.mark.parametrize("module", [mnist, cifar10])
def test_bfloat16_keeps_full_size_parameters(module):
    config = module.PRESETS["default"]
    x = jnp.zeros((1, *config.image_shape()), jnp.float32)
    t = jnp.ones((1,), jnp.int32)
    shapes = {}
    for dtype in (jnp.float32, jnp.bfloat16):
        model = image_model.network(config).clone(dtype=dtype)
        tree = jax.eval_shape(model.init, jax.random.key(0), x, t)["params"]
        assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(tree))
        shapes[dtype] = jax.tree.map(lambda p: p.shape, tree)
    assert shapes[jnp.float32] == shapes[jnp.bfloat16]
    count = sum(int(np.prod(s)) for s in jax.tree.leaves(shapes[jnp.float32], is_leaf=_is_shape))
    assert count == {"mnist": 1_762_928, "cifar10": 13_385_280}[module.experiment.name]


def _is_shape(x) -> bool:
    return isinstance(x, tuple) and all(isinstance(i, int) for i in x)


EXPERIMENT_RUN = textwrap.dedent(
    """
    import json, sys
    import jax
    from experiments import config as cfg, dead_leaves
    config = cfg.replace(dead_leaves.PRESETS["small"], {
        "train.steps": 3, "train.checkpoint_every": 3, "train.log_every": 1,
        "train.batch_size": 16, "eval.num_samples": 2, "eval.num_posterior_examples": 2,
        "eval.batch_size": 8,
    })
    r = dead_leaves.experiment.run(config, sys.argv[1])
    print("RESULT " + json.dumps({"devices": jax.device_count(), "K": r["K"],
                                   "hardware": r["hardware"]}))
    """
)


def test_an_experiment_runs_unchanged_on_eight_devices(tmp_path):
    """The same command on 1 and 8 devices: same training (data parallel) and the same K."""
    out = {}
    for n in (1, 8):
        proc = subprocess.run(
            [sys.executable, "-c", EXPERIMENT_RUN, str(tmp_path / f"run{n}")],
            env=_env(n),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[n] = _result(proc.stdout)
    assert out[1]["devices"] == 1 and out[8]["devices"] == 8 and "8 x" in out[8]["hardware"]
    np.testing.assert_allclose(out[8]["K"], out[1]["K"], rtol=1e-4)


EXPERIMENT_TWO_PROCESSES = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_num_cpu_devices", 2)
    from dpm_jax import sharding
    port, pid, workdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    sharding.initialize_distributed(f"localhost:{port}", 2, pid)
    from experiments import config as cfg, dead_leaves
    config = cfg.replace(dead_leaves.PRESETS["small"], {
        "train.steps": 3, "train.checkpoint_every": 3, "train.log_every": 1,
        "train.batch_size": 16, "eval.num_samples": 2, "eval.num_posterior_examples": 2,
        "eval.batch_size": 8,
    })
    r = dead_leaves.experiment.run(config, workdir)
    print("RESULT " + json.dumps({"K": r["K"], "devices": jax.device_count()}))
    """
)


@pytest.mark.skipif(_gloo_missing() is not None, reason=str(_gloo_missing()))
def test_an_experiment_runs_on_two_processes_sharing_a_workdir(tmp_path):
    """Two hosts (processes) train and evaluate one run together: same K on both, one writer."""
    workdir = tmp_path / "run"
    outputs = _run_two_processes(EXPERIMENT_TWO_PROCESSES, workdir, timeout=300)
    assert outputs[0]["devices"] == 4 and outputs[0]["K"] == outputs[1]["K"]
    saved = json.loads((workdir / "results.json").read_text())
    assert saved["K"] == outputs[0]["K"] and saved["train_steps"] == 3
    lines = (workdir / rundir.METRICS_FILE).read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3]  # written once, not twice


# ----------------------------------------------------------------------------------------------
# The one runner on a mesh: a toy experiment on 2 devices, an image experiment with several
# steps per compiled call.

TOY = {"train.steps": 30, "train.checkpoint_every": 30, "train.log_every": 10}
IMAGE = {"train.steps": 4, "train.checkpoint_every": 4, "train.log_every": 2}
IMAGE_SCALING = {"scale": 3.0, "shift": -1.5}

TRAIN_ON_TWO_DEVICES = textwrap.dedent(
    f"""
    import json, sys
    from pathlib import Path
    import jax
    from dpm_jax.data import ImageScaling
    from experiments import common, dead_leaves
    from experiments import config as cfg
    from experiments import images as image_exp
    from experiments import swiss_roll as sr

    workdir = Path(sys.argv[1])
    toy = cfg.replace(sr.PRESETS["small"], {TOY!r})
    state, _ = common.train_on_generator(
        sr.experiment, toy, workdir / "toy", False, sr.dataset(toy),
        init_params=sr.init_params, make_optimizer=sr.make_optimizer, loss_fn=sr.loss_fn,
    )
    config = cfg.replace(dead_leaves.PRESETS["small"], {{"train.steps_per_call": 2, **{IMAGE!r}}})
    experiment = dead_leaves.experiment
    image_state = image_exp.train(
        experiment, config, workdir / "image", experiment.load_split(config, "train"),
        ImageScaling(**{IMAGE_SCALING!r}),
    )
    print("RESULT " + json.dumps({{
        "devices": jax.device_count(),
        "toy_devices": len(jax.tree.leaves(state.params)[0].sharding.device_set),
        "image_step": int(image_state.step),
    }}))
    """
)


def _restored_params(workdir: Path, template) -> list[np.ndarray]:
    from dpm_jax import checkpoints

    state = checkpoints.restore_latest(checkpoints.checkpoint_manager(workdir), template)
    return [np.asarray(x) for x in jax.tree.leaves(state.params)]


def test_toy_and_image_experiments_train_through_the_runner_on_two_devices(tmp_path):
    """A toy experiment on 2 devices, and an image one on 2 devices with 2 steps per call,
    train the models they train on 1 device with one step per call."""
    from dpm_jax import train_state
    from experiments import common, dead_leaves
    from experiments import images as image_exp
    from experiments import swiss_roll as sr

    proc = subprocess.run(
        [sys.executable, "-c", TRAIN_ON_TWO_DEVICES, str(tmp_path / "two")],
        env=_env(2),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = _result(proc.stdout)
    assert out["devices"] == 2 and out["toy_devices"] == 2 and out["image_step"] == 4

    toy = cfg.replace(sr.PRESETS["small"], TOY)
    common.train_on_generator(
        sr.experiment,
        toy,
        tmp_path / "toy",
        False,
        sr.dataset(toy),
        init_params=sr.init_params,
        make_optimizer=sr.make_optimizer,
        loss_fn=sr.loss_fn,
    )
    keys = common.experiment_keys(toy.seed)
    template = train_state.create_train_state(
        sr.init_params(toy, keys["init"]), sr.make_optimizer(toy), keys["train"]
    )
    for a, b in zip(
        _restored_params(tmp_path / "toy", template),
        _restored_params(tmp_path / "two" / "toy", template),
        strict=True,
    ):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)

    config = cfg.replace(dead_leaves.PRESETS["small"], IMAGE)
    scaling = ImageScaling(**IMAGE_SCALING)
    experiment = dead_leaves.experiment
    image_exp.train(
        experiment, config, tmp_path / "image", experiment.load_split(config, "train"), scaling
    )
    keys = common.experiment_keys(config.seed)
    template = train_state.create_train_state(
        image_model.init_params(config, keys["init"]),
        image_model.make_optimizer(config),
        keys["train"],
    )
    for a, b in zip(
        _restored_params(tmp_path / "image", template),
        _restored_params(tmp_path / "two" / "image", template),
        strict=True,
    ):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    lines = (tmp_path / "two" / "image" / rundir.METRICS_FILE).read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [2, 4]
