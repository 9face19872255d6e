"""Parts of the U-Nets' train step, each against the formulation it replaced, side by side.

  python benchmarks/unet_parts.py

At the DDPM CIFAR-10 U-Net's first-level shape (32, 32, 32, 128) (N, H, W, C), float32,
compiled as the train step is (``xla_options.eigen_cpu_kernels``); best of 7 calls each:
* a dropout mask (rate 0.1) applied to x, from a threefry2x32 key (JAX's default) against a
  philox4x32 key from ``prng.bulk_key``;
* GroupNorm(32) and swish forward and backward: flax's ``nn.GroupNorm`` by autodiff against
  ``models.group_norm.GroupNorm(swish=True)``;
* 2x nearest-neighbour upsampling of (32, 16, 16, 256) forward and backward:
  ``jax.image.resize`` against ``unet.upsample_nearest``;
* convolutions forward and both gradients, XLA's ``conv_general_dilated`` against
  ``onednn.conv2d`` (``onednn.status()`` is printed; with oneDNN absent both are XLA's): 3x3
  at (32, 32, 32, 128) -> 128 channels, 3x3 stride 2 from there, 3x3 at (32, 16, 16, 256)
  -> 256, 3x3 from the skip concatenation (32, 32, 32, 384) -> 128, and a 1x1 layer at
  (32, 16, 16, 256) -> 256 (``x @ kernel`` against ``PixelDense``'s 1x1 convolution).
Prints milliseconds and the ratio of each pair.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402

from dpm_jax import onednn, prng, xla_options  # noqa: E402
from dpm_jax.models import group_norm, unet  # noqa: E402

SHAPE = (32, 32, 32, 128)


def best_ms(fn, *args, calls: int = 7) -> float:
    """Best wall time of ``calls`` calls of ``fn`` compiled as the train step is, in ms."""
    compiled = jax.jit(fn).lower(*args).compile(xla_options.eigen_cpu_kernels())
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def dropout(x, key):
    return nn.Dropout(0.1, deterministic=False).apply({}, x, rngs={"dropout": key})


def norm_fwd_bwd(module, act):
    def run(params, x, g):
        y, vjp = jax.vjp(lambda p, x: act(module.apply(p, x)), params, x)
        return y, vjp(g)

    return run


def upsample_fwd_bwd(fn):
    def run(x, g):
        y, vjp = jax.vjp(fn, x)
        return y, vjp(g)

    return run


def conv_fwd_bwd(conv, strides):
    def run(x, w, g):
        y, vjp = jax.vjp(lambda x, w: conv(x, w, strides), x, w)
        return y, vjp(g)

    return run


def xla_conv(x, w, strides):
    if w.shape[:2] == (1, 1):
        return x @ w[0, 0]
    dims = ("NHWC", "HWIO", "NHWC")
    return jax.lax.conv_general_dilated(x, w, strides, "SAME", dimension_numbers=dims)


def oned_conv(x, w, strides):
    return onednn.conv2d(x, w, strides, "SAME")


def conv_rows() -> list:
    rows = []
    keys = iter(jax.random.split(jax.random.key(5), 15))
    for shape, out, k, s in [
        ((32, 32, 32, 128), 128, 3, 1),
        ((32, 32, 32, 128), 128, 3, 2),
        ((32, 16, 16, 256), 256, 3, 1),
        ((32, 32, 32, 384), 128, 3, 1),
        ((32, 16, 16, 256), 256, 1, 1),
    ]:
        x = jax.random.normal(next(keys), shape)
        w = jax.random.normal(next(keys), (k, k, shape[3], out)) * 0.05
        g = jax.random.normal(next(keys), (shape[0], shape[1] // s, shape[2] // s, out))
        name = f"{k}x{k}/{s} conv fwd+bwd {shape[1]}x{shape[2]}x{shape[3]}->{out}, XLA vs oneDNN"
        rows.append(
            (
                name,
                best_ms(conv_fwd_bwd(xla_conv, (s, s)), x, w, g),
                best_ms(conv_fwd_bwd(oned_conv, (s, s)), x, w, g),
            )
        )
    return rows


def main() -> None:
    x = jax.random.normal(jax.random.key(0), SHAPE)
    g = jax.random.normal(jax.random.key(1), SHAPE)
    key = jax.random.key(2)
    rows = [
        (
            "dropout mask, threefry2x32 vs philox4x32",
            best_ms(dropout, x, key),
            best_ms(dropout, x, prng.bulk_key(key)),
        )
    ]
    flax_gn, ours = nn.GroupNorm(32), group_norm.GroupNorm(32, swish=True)
    params = flax_gn.init(key, x)
    rows.append(
        (
            "GroupNorm + swish fwd+bwd, flax autodiff vs group_norm",
            best_ms(norm_fwd_bwd(flax_gn, nn.swish), params, x, g),
            best_ms(norm_fwd_bwd(ours, lambda y: y), params, x, g),
        )
    )
    small = jax.random.normal(jax.random.key(3), (32, 16, 16, 256))
    big_g = jax.random.normal(jax.random.key(4), (32, 32, 32, 256))

    def resize(h):
        return jax.image.resize(h, (32, 32, 32, 256), "nearest")

    rows.append(
        (
            "2x upsample fwd+bwd, image.resize vs upsample_nearest",
            best_ms(upsample_fwd_bwd(resize), small, big_g),
            best_ms(upsample_fwd_bwd(unet.upsample_nearest), small, big_g),
        )
    )
    rows += conv_rows()
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, best of 7 calls")
    print(f"dpm_jax.onednn: {onednn.status()}")
    for name, before, after in rows:
        print(f"{name:60s} {before:7.1f} ms vs {after:6.1f} ms  ({before / after:.2f}x)")


if __name__ == "__main__":
    main()
