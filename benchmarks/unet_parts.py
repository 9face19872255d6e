"""Parts of the U-Nets' train step, each against the formulation it replaced, side by side.

  python benchmarks/unet_parts.py

At the DDPM CIFAR-10 U-Net's first-level shape (32, 32, 32, 128) (N, H, W, C), float32,
compiled as the train step is (``xla_options.eigen_cpu_kernels``); best of 7 calls each:
* a dropout mask (rate 0.1) applied to x, from a threefry2x32 key (JAX's default) against a
  philox4x32 key from ``prng.bulk_key``;
* GroupNorm(32) and swish forward and backward: flax's ``nn.GroupNorm`` by autodiff against
  ``models.group_norm.GroupNorm(swish=True)``;
* 2x nearest-neighbour upsampling of (32, 16, 16, 256) forward and backward:
  ``jax.image.resize`` against ``unet.upsample_nearest``.
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

from dpm_jax import prng, xla_options  # noqa: E402
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
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, best of 7 calls")
    for name, before, after in rows:
        print(f"{name:55s} {before:7.1f} ms vs {after:6.1f} ms  ({before / after:.1f}x)")


if __name__ == "__main__":
    main()
