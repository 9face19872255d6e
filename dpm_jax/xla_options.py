"""XLA compiler options chosen per compiled function (``jax.jit(..., compiler_options=...)``).

Options set here apply to one jitted function only: no process-wide ``XLA_FLAGS``, no
global state. :func:`eigen_cpu_kernels` is the one in use: on CPU it runs convolutions and
dots on XLA's own (Eigen) kernels instead of YNNPACK, keeping YNNPACK's reductions, which
made the DDPM CIFAR-10 U-Net's train step faster on a 2-core x86 CPU (0.72x to 0.84x of
the diffusers peer, ``docs/performance.md``); the 2015 models' chunked convolutions
(``dpm_jax.models.conv``) are tuned for YNNPACK and keep the defaults.
"""

from __future__ import annotations

import functools
import os

import jax

# Of jaxlib 0.10's default YNNPACK fusions (individual dots and convolutions, reductions)
# only the reductions: convolutions and dots fall back to XLA's Eigen kernels.
_YNN_FUSIONS = "xla_cpu_experimental_ynn_fusion_type"
EIGEN_CPU_KERNELS = {_YNN_FUSIONS: "LIBRARY_FUSION_TYPE_REDUCE"}


def eigen_cpu_kernels(backend: str | None = None) -> dict[str, str] | None:
    """Compiler options that move XLA:CPU's convolutions and dots from YNNPACK to Eigen, or None.

    None (compile with the defaults) where they do not apply: off CPU (``backend``, default
    ``jax.default_backend()``), when ``XLA_FLAGS`` already chooses the YNNPACK fusions (the
    user's choice wins), or when this jaxlib does not know the option (older or newer
    versions; checked once by compiling a 3x3 convolution with it).
    """
    if (backend or jax.default_backend()) != "cpu" or _YNN_FUSIONS in os.environ.get(
        "XLA_FLAGS", ""
    ):
        return None
    return dict(EIGEN_CPU_KERNELS) if _accepted(tuple(EIGEN_CPU_KERNELS.items())) else None


@functools.cache
def _accepted(options: tuple[tuple[str, str], ...]) -> bool:
    """Whether this jaxlib's CPU compiler accepts ``options`` (compiles a small convolution)."""
    on_cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
    x = jax.ShapeDtypeStruct((1, 4, 4, 2), jax.numpy.float32, sharding=on_cpu)
    w = jax.ShapeDtypeStruct((3, 3, 2, 2), jax.numpy.float32, sharding=on_cpu)
    conv = functools.partial(
        jax.lax.conv_general_dilated,
        window_strides=(1, 1),
        padding="SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    try:
        jax.jit(conv).lower(x, w).compile(dict(options))
    except (jax.errors.JaxRuntimeError, ValueError, TypeError):
        return False
    return True
