"""Image-model speed: train step, exact bound, sampling, compile times, device scaling.

  python benchmarks/image_speed.py                       # full-size MNIST and CIFAR-10
  python benchmarks/image_speed.py --models cifar10 --dtypes bfloat16 --steps 100
  python benchmarks/image_speed.py --quick               # tiny sizes: a CPU smoke run
  XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \\
      python benchmarks/image_speed.py --quick           # scaling line over 1, 2, 4, 8 devices
  python benchmarks/image_speed.py --compile_only        # full size, compile and FLOPs only

For each model (``experiments.<model>.PRESETS["default"]``: the released code's networks,
T = 1000) and network dtype (float32, bfloat16 = mixed precision with float32 parameters
and bound math) it prints

  * train step: images/s, and achieved FLOP/s (model FLOPs counted from the network's
    sizes, :func:`analytic_train_flops`, charged to both dtypes) as a fraction of this run's
    measured peak (the faster of a large matmul and a large 3x3 convolution, in the
    same dtype);
  * exact bound (all T - 1 KL terms, ``gaussian.bound_exact``): images/s;
  * ancestral sampling (T steps, ``gaussian.sample``): images/s;
  * compile times of the three.

FLOP/s of the bound and the sampler are estimated as (T - 1) network evaluations, each
costed by XLA's analysis of one compiled forward pass. Then a scaling line: train-step
images/s with the same per-device batch on 1, 2, 4, 8 devices (as many as exist), through
``train_state.make_train_step(..., mesh=...)``. Compare figures within one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpm_jax import gaussian, parameterisation, sharding, train_state  # noqa: E402
from dpm_jax.data import ImageScaling, preprocess  # noqa: E402
from experiments import cifar10, image_model, mnist  # noqa: E402
from experiments import config as cfg  # noqa: E402
from experiments.image_config import ImageConfig  # noqa: E402

MODELS = {"mnist": mnist, "cifar10": cifar10}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
SCALING = ImageScaling(scale=3.3, shift=-1.5)  # about MNIST's; speed is unaffected
QUICK = {
    "diffusion.steps": 10,
    "train.batch_size": 16,
    "eval.batch_size": 8,
    "eval.num_samples": 8,
}


# ----------------------------------------------------------------------------------------------
# The model's functions, with the network's dtype as a knob (params always an argument).


@dataclasses.dataclass(frozen=True)
class ModelFns:
    config: ImageConfig
    dtype: jnp.dtype

    def model(self):
        return image_model.network(self.config).clone(dtype=self.dtype)

    def _reverse_fn(self, params):
        config, model = self.config, self.model()

        def model_fn(x_t, t):
            return model.apply({"params": params}, x_t, t)

        param = parameterisation.from_readout(config.model.readout)
        return parameterisation.make_reverse_fn(param, image_model.schedule(config), model_fn)

    def loss(self, params, batch, key):
        """``experiments.image_model.loss_fn`` with this network dtype."""
        key_u, key_k = jax.random.split(key)
        x0 = preprocess(batch, key_u, SCALING)
        sched = image_model.schedule(self.config)
        k = gaussian.bound_estimate(sched, self._reverse_fn(params), x0, key_k)
        k = k / image_model.pixels_per_image(self.config)
        return -jnp.mean(k), {}

    def bound(self, params, pixels, key):
        """``experiments.image_eval.exact_bound_fn`` (K only), params as an argument."""
        key_u, key_k = jax.random.split(key)
        z = preprocess(pixels, key_u, SCALING)
        sched = image_model.schedule(self.config)
        return gaussian.bound_exact(sched, self._reverse_fn(params), z, key_k)

    def sample(self, params, key, count: int):
        sched = image_model.schedule(self.config)
        shape = (count, *self.config.image_shape())
        return gaussian.sample(sched, self._reverse_fn(params), key, shape)

    def forward(self, params, x, t):
        return self.model().apply({"params": params}, x, t)


def flops_of(compiled) -> float:
    """FLOPs of one call of a compiled function, from XLA's cost analysis (nan if absent)."""
    try:
        cost = compiled.cost_analysis()
    except NotImplementedError:
        return float("nan")
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", float("nan")))


def compile_timed(jitted, *args):
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - start


def time_calls(fn, repeats: int) -> float:
    """Seconds per call of ``fn()`` (which returns arrays), after one warm-up call."""
    jax.block_until_ready(fn())
    start = time.perf_counter()
    out = None
    for _ in range(repeats):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def train_key_data() -> jax.Array:
    """A fresh raw key buffer for a train state (the train step donates it)."""
    return jnp.array(jax.random.key_data(jax.random.key(2)))


def pixels_batch(config, count: int, seed: int = 0) -> jax.Array:
    shape = (count, *config.image_shape())
    return jax.random.randint(jax.random.key(seed), shape, 0, 256).astype(jnp.uint8)


def fmt_flops(x: float) -> str:
    if not np.isfinite(x):
        return "n/a"
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if x >= scale:
            return f"{x / scale:,.2f} {unit}"
    return f"{x:,.0f} "


# ----------------------------------------------------------------------------------------------
# Peak.


def measured_peak(dtype, quick: bool) -> dict:
    """FLOP/s of a large matmul and a large 3x3 convolution in ``dtype`` on device 0."""
    n = 512 if quick else 8192
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
    matmul = jax.jit(lambda a: a @ a)
    compiled, _ = compile_timed(matmul, a)
    mm = 2.0 * n**3 / time_calls(lambda: compiled(a), 3 if quick else 20)

    batch, size, ch = (8, 32, 64) if quick else (128, 64, 256)
    x = jax.random.normal(jax.random.key(1), (batch, size, size, ch), jnp.float32).astype(dtype)
    w = jax.random.normal(jax.random.key(2), (3, 3, ch, ch), jnp.float32).astype(dtype)
    conv = jax.jit(
        lambda x, w: jax.lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
    )
    compiled, _ = compile_timed(conv, x, w)
    cv = (
        2.0
        * batch
        * size
        * size
        * ch
        * ch
        * 9
        / time_calls(lambda: compiled(x, w), 3 if quick else 20)
    )
    return {"matmul": mm, "conv": cv, "peak": max(mm, cv)}


# ----------------------------------------------------------------------------------------------
# One model, one dtype.


def quick_params(config, seed: int = 0):
    """Random parameters of the network's shapes (fast; the orthogonal init's QR is slow on CPU)."""
    shapes = jax.eval_shape(lambda k: image_model.init_params(config, k), jax.random.key(0))
    gen = np.random.default_rng(seed)

    def draw(s):
        scale = 1.0 / np.sqrt(s.shape[-2] if s.ndim > 1 else 50)
        return jnp.asarray(gen.normal(size=s.shape) * scale, jnp.float32)

    return jax.tree.map(draw, shapes)


def init_params(config, quick: bool):
    if quick:
        return quick_params(config)
    return jax.jit(lambda k: image_model.init_params(config, k))(jax.random.key(0))


def analytic_train_flops(config) -> float:
    """2 x multiply-adds of the 2015 network's convolutions and matmuls, x3 (fwd + bwd), per step."""
    m = config.model
    height, width, colours = config.image_shape()
    pixels = height * width
    conv = sum(
        (pixels // 4**s) * 9 * (colours if i == 0 else m.conv_features) * m.conv_features
        for i in range(m.conv_layers)
        for s in range(m.num_scales)
    )
    depth = m.dense_layers or m.conv_layers  # 0: the conv depth (image_model.network)
    dense_out = m.dense_output if m.dense_hidden and depth else 0
    dense = 0
    if dense_out:
        dims = [colours * pixels] + [m.dense_hidden] * (depth - 1) + [dense_out * pixels]
        dense = sum(a * b for a, b in zip(dims[:-1], dims[1:], strict=True))
    conv_out = m.conv_features if m.conv_layers else 0
    upper = [conv_out + dense_out] + [m.upper_hidden] * (m.upper_layers - 1)
    upper = upper + [colours * 2 * m.num_temporal_basis]
    per_pixel = sum(a * b for a, b in zip(upper[:-1], upper[1:], strict=True))
    macs = conv + dense + pixels * per_pixel  # the last layer unfolded (1-3 % above folded)
    return 3 * 2 * macs * config.train.batch_size


def model_flops(config) -> tuple[float, float]:
    """(train-step FLOPs, forward FLOPs per image) of the network: :func:`analytic_train_flops`
    (XLA's cost analysis counts a loop's body once, and the CPU convolution loops over
    chunks). A bfloat16 program is charged the same."""
    train = analytic_train_flops(config)
    return train, train / (3 * config.train.batch_size)


def bench_model(name, config, dtype_name, args, peak) -> dict:
    fns = ModelFns(config, DTYPES[dtype_name])
    T = config.diffusion.steps
    tx = image_model.make_optimizer(config)
    key = jax.random.key(1)
    abstract_params = jax.eval_shape(lambda k: image_model.init_params(config, k), key)
    spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype)  # noqa: E731
    image = config.image_shape()

    # Compile the three programs (with abstract arguments: no parameters needed yet).
    step = train_state.make_train_step(fns.loss, tx)
    abstract_state = jax.eval_shape(
        lambda p: train_state.create_train_state(p, tx, train_key_data()), abstract_params
    )
    batch_spec = spec((config.train.batch_size, *image), jnp.uint8)
    step_c, step_compile = compile_timed(step, abstract_state, batch_spec)
    eval_spec = spec((config.eval.batch_size, *image), jnp.uint8)
    key_spec = jax.eval_shape(lambda: key)
    bound_c, bound_compile = compile_timed(jax.jit(fns.bound), abstract_params, eval_spec, key_spec)
    n_samples = config.eval.num_samples
    sampler = jax.jit(fns.sample, static_argnums=2)
    sample_c, sample_compile = compile_timed(sampler, abstract_params, key_spec, n_samples)
    step_flops, fwd_flops_per_image = model_flops(config)
    result = {
        "model": name,
        "dtype": dtype_name,
        "T": T,
        "batch": config.train.batch_size,
        "compile_s": {
            "train_step": step_compile,
            "exact_bound": bound_compile,
            "sampler": sample_compile,
        },
        "train_flops_per_step": step_flops,
        "forward_flops_per_image": fwd_flops_per_image,
    }
    if args.compile_only:
        return result

    params = init_params(config, args.quick)
    state = train_state.create_train_state(params, tx, train_key_data())  # donated
    batch = pixels_batch(config, config.train.batch_size)
    box = {"state": state}

    def one_step():
        box["state"], metrics = step_c(box["state"], batch)
        return metrics["loss"]

    seconds = time_calls(one_step, args.steps)
    result["train_images_per_s"] = config.train.batch_size / seconds
    result["train_flops_per_s"] = step_flops / seconds
    result["train_peak_fraction"] = result["train_flops_per_s"] / peak["peak"]

    params = box["state"].params
    pixels = pixels_batch(config, config.eval.batch_size, seed=1)
    seconds = time_calls(lambda: bound_c(params, pixels, key), 1)
    result["bound_images_per_s"] = config.eval.batch_size / seconds
    result["bound_flops_per_s"] = (T - 1) * fwd_flops_per_image * config.eval.batch_size / seconds
    seconds = time_calls(lambda: sample_c(params, key), 1)
    result["sample_images_per_s"] = n_samples / seconds
    result["sample_flops_per_s"] = (T - 1) * fwd_flops_per_image * n_samples / seconds
    return result


def print_result(r: dict, peak: dict) -> None:
    c = r["compile_s"]
    head = f"{r['model']:8s} {r['dtype']:8s} T={r['T']}"
    print(
        f"{head}  compile: train step {c['train_step']:.1f} s, exact bound "
        f"{c['exact_bound']:.1f} s, sampler {c['sampler']:.1f} s; train step "
        f"{fmt_flops(r['train_flops_per_step'])}FLOP (batch {r['batch']}), forward "
        f"{fmt_flops(r['forward_flops_per_image'])}FLOP per image"
    )
    if "train_images_per_s" not in r:
        return
    print(
        f"{'':8s} {'':8s} train {r['train_images_per_s']:>10,.0f} images/s  "
        f"{fmt_flops(r['train_flops_per_s'])}FLOP/s = {r['train_peak_fraction']:.1%} of peak "
        f"({fmt_flops(peak['peak'])}FLOP/s)"
    )
    for kind, label in (("bound", "exact bound"), ("sample", f"sample {r['T']} steps")):
        flops = r[f"{kind}_flops_per_s"]
        print(
            f"{'':8s} {'':8s} {label} {r[f'{kind}_images_per_s']:>10,.1f} images/s  "
            f"~{fmt_flops(flops)}FLOP/s = {flops / peak['peak']:.1%} of peak"
        )


# ----------------------------------------------------------------------------------------------
# Scaling over devices.


def scaling_line(name, config, dtype_name, args) -> None:
    fns = ModelFns(config, DTYPES[dtype_name])
    tx = image_model.make_optimizer(config)
    params = jax.tree.map(np.asarray, init_params(config, args.quick))
    counts = [n for n in (1, 2, 4, 8) if n <= jax.device_count()]
    per_device = config.train.batch_size
    rates = {}
    for n in counts:
        mesh = sharding.data_mesh(jax.devices()[:n])
        step = train_state.make_train_step(fns.loss, tx, mesh=mesh)
        state = train_state.create_train_state(
            jax.tree.map(jnp.asarray, params), tx, train_key_data()
        )
        box = {"state": sharding.replicate(state, mesh)}
        batch = sharding.shard_batch(np.asarray(pixels_batch(config, per_device * n)), mesh)

        def one_step(step=step, batch=batch, box=box):
            box["state"], metrics = step(box["state"], batch)
            return metrics["loss"]

        rates[n] = per_device * n / time_calls(one_step, args.steps)
    line = ", ".join(f"{n}: {rates[n]:,.0f} ({rates[n] / (n * rates[1]):.0%})" for n in counts)
    print(
        f"scaling {name} {dtype_name}, batch {per_device} per device, images/s (efficiency) "
        f"on devices {line}"
    )
    if jax.default_backend() == "cpu" and len(counts) > 1:
        print("  (CPU devices forced by XLA_FLAGS share the same cores: no real speed-up.)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CPU smoke run)")
    parser.add_argument("--models", default="mnist,cifar10", help="comma list of mnist,cifar10")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="network dtypes")
    parser.add_argument("--steps", type=int, default=0, help="timed train steps (0: 50, 3 quick)")
    parser.add_argument(
        "--compile_only", action="store_true", help="compile and cost only, run nothing"
    )
    parser.add_argument("--no_scaling", action="store_true", help="skip the device scaling line")
    args = parser.parse_args(argv)
    args.steps = args.steps or (3 if args.quick else 50)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    for m in models:
        if m not in MODELS:
            parser.error(f"unknown model {m!r}; choose from {sorted(MODELS)}")
    for d in dtypes:
        if d not in DTYPES:
            parser.error(f"unknown dtype {d!r}; choose from {sorted(DTYPES)}")

    start = time.perf_counter()
    devices = jax.devices()
    print(
        f"machine: {platform.machine()} cpus={os.cpu_count()} jax={jax.__version__} "
        f"backend={jax.default_backend()} devices={len(devices)} x "
        f"{sorted({d.device_kind for d in devices})} processes={jax.process_count()}"
    )
    print(f"default matmul precision: {jax.config.jax_default_matmul_precision or 'default'}")
    peaks = {}
    for d in dtypes:
        peaks[d] = measured_peak(DTYPES[d], args.quick) if not args.compile_only else {"peak": 1.0}
        if not args.compile_only:
            p = peaks[d]
            print(
                f"peak {d}: matmul {fmt_flops(p['matmul'])}FLOP/s, 3x3 conv "
                f"{fmt_flops(p['conv'])}FLOP/s"
            )
    for name in models:
        config = MODELS[name].PRESETS["small" if args.quick else "default"]
        if args.quick:
            config = cfg.replace(config, QUICK)
        for d in dtypes:
            print_result(bench_model(name, config, d, args, peaks[d]), peaks[d])
        if not args.compile_only and not args.no_scaling:
            scaling_line(name, config, dtypes[-1], args)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
