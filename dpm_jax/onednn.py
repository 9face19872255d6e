"""2-D convolutions on oneDNN under XLA:CPU, with exact gradients of every order.

:func:`conv2d` equals ``lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=
("NHWC", "HWIO", "NHWC"))``. Lowered for CPU with oneDNN at hand, its forward pass, data
gradient and weight gradient are calls into oneDNN (``native/onednn_conv.cc``, an XLA FFI
handler built once with the system's C++ compiler and cached); everywhere else (GPU, TPU, no
oneDNN, dtypes other than float32) they lower to XLA's own convolutions. On this project's
2-core x86 CPU the DDPM U-Net's convolutions ran forward and backward 1.2 to 1.4x faster
than XLA's (``benchmarks/unet_parts.py``): XLA:CPU's kernel gradient transposes both its
operands, and its kernels are Eigen's.

The three passes are primitives of one trilinear form, B(x, w, y) = <conv(x, w), y>:
``conv(x, w) = dB/dy``, ``data(y, w) = dB/dx`` and ``weights(x, y) = dB/dw``. Each is bilinear
and the transpose of each is another of the three, so ``jax.grad``, ``jax.jvp`` /
``jax.linearize`` (the probability-flow ODE's divergence) and their compositions all stay on
oneDNN. ``jax.vmap`` folds a mapped axis into the batch when the kernel is not mapped; a
mapped kernel, and a mapped weight gradient (per-example gradients), run on XLA's
convolutions. On several CPU devices the custom calls have no partitioning rule, so XLA
gathers a sharded batch and every device computes the whole convolution: right, not fast
(GPU and TPU never call oneDNN).

oneDNN comes from the ``onednn`` extra (``pip install -e ".[onednn]"``: the wheels of its
OpenMP build and its headers); the handler is compiled with ``$CXX`` (default ``g++``) into
``$DPM_JAX_CACHE`` (default ``~/.cache/dpm_jax``). ``DPM_JAX_ONEDNN=0`` turns it off.
:func:`status` says whether it is in use and, if not, why.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import math
import os
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

_SOURCE = Path(__file__).parent / "native" / "onednn_conv.cc"
_TARGETS = ("DpmConvForward", "DpmConvBackwardData", "DpmConvBackwardWeights")
_DIMS = ("NHWC", "HWIO", "NHWC")
_log = logging.getLogger(__name__)


# --- building and loading the FFI handler ------------------------------------------------


def _cache_dir() -> Path:
    root = os.environ.get("DPM_JAX_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "dpm_jax"
    )
    return Path(root)


def _build(include: Path, lib: Path, compiler: str) -> Path:
    """Compile the handler (once per source, oneDNN, jaxlib and compiler) and return its path."""
    version = (include / "oneapi" / "dnnl" / "dnnl_version.h").read_bytes()
    where = "|".join([jax.__version__, jax.ffi.include_dir(), str(include), str(lib), compiler])
    digest = hashlib.sha256(_SOURCE.read_bytes() + version + where.encode()).hexdigest()[:16]
    target = _cache_dir() / f"onednn_conv-{digest}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        command = [
            compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-w",
            f"-I{include}", f"-I{jax.ffi.include_dir()}", str(_SOURCE),
            f"-L{lib}", "-ldnnl", f"-Wl,-rpath,{lib}", "-o", str(out),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode:
            raise RuntimeError(f"compiling {_SOURCE.name} failed:\n{done.stderr[-2000:]}")
        os.replace(out, target)  # atomic: parallel builders leave one whole file
    return target


@functools.cache
def _load() -> tuple[bool, str]:
    """(in use, why not): builds, loads and registers the handler once per process."""
    if os.environ.get("DPM_JAX_ONEDNN", "1") == "0":
        return False, "turned off by DPM_JAX_ONEDNN=0"
    prefix = Path(sysconfig.get_paths()["data"])
    include, lib = prefix / "include", prefix / "lib"
    if not (include / "oneapi" / "dnnl" / "dnnl.hpp").exists() or not any(lib.glob("libdnnl.so*")):
        return False, f'oneDNN is not installed under {prefix}: pip install -e ".[onednn]"'
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        return False, "no C++ compiler (set CXX or install g++) to build the oneDNN handler"
    try:
        handlers = ctypes.CDLL(str(_build(include, lib, compiler)))
        for name in _TARGETS:
            capsule = jax.ffi.pycapsule(getattr(handlers, name))
            jax.ffi.register_ffi_target(name, capsule, platform="cpu")
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        _log.warning("dpm_jax: XLA's convolutions in place of oneDNN's: %s", error)
        return False, str(error)
    return True, ""


def status() -> str:
    """ "oneDNN" when CPU convolutions run on oneDNN, otherwise why they run on XLA's."""
    used, why = _load()
    return "oneDNN" if used else f"XLA ({why})"


def available() -> bool:
    """Whether CPU lowerings of :func:`conv2d` call oneDNN (builds the handler on first use)."""
    return _load()[0]


# --- the three passes: XLA references ----------------------------------------------------


def _conv_ref(x, w, *, strides, padding):
    """y = conv(x, w): (N, H, W, C) x (KH, KW, C, O) -> (N, OH, OW, O)."""
    return jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_DIMS)


def _data_ref(y, w, *, strides, padding, x_shape):
    """dB/dx = conv's transpose in x applied to y: (N, OH, OW, O) -> x_shape."""
    x = jax.ShapeDtypeStruct(x_shape, y.dtype)
    (dx,) = jax.linear_transpose(lambda x: _conv_ref(x, w, strides=strides, padding=padding), x)(y)
    return dx


def _weights_ref(x, y, *, strides, padding, w_shape):
    """dB/dw = conv's transpose in w applied to y: -> w_shape (KH, KW, C, O)."""
    w = jax.ShapeDtypeStruct(w_shape, y.dtype)
    (dw,) = jax.linear_transpose(lambda w: _conv_ref(x, w, strides=strides, padding=padding), w)(y)
    return dw


# --- primitives --------------------------------------------------------------------------

conv_p = Primitive("dpm_onednn_conv")
data_p = Primitive("dpm_onednn_conv_data_grad")
weights_p = Primitive("dpm_onednn_conv_weights_grad")
_REFS = {conv_p: _conv_ref, data_p: _data_ref, weights_p: _weights_ref}


@functools.cache
def _jitted(prim, params: tuple):
    return jax.jit(functools.partial(prim.bind, **dict(params)))


def _impl(prim):
    return lambda a, b, **params: _jitted(prim, tuple(sorted(params.items())))(a, b)


def _out_shape(x_shape, w_shape, strides, padding):
    return (
        x_shape[0],
        *((x_shape[1 + i] + sum(padding[i]) - w_shape[i]) // strides[i] + 1 for i in range(2)),
        w_shape[3],
    )


conv_p.def_abstract_eval(
    lambda x, w, *, strides, padding: jax.core.ShapedArray(
        _out_shape(x.shape, w.shape, strides, padding), x.dtype
    )
)
data_p.def_abstract_eval(lambda y, w, *, x_shape, **_: jax.core.ShapedArray(x_shape, y.dtype))
weights_p.def_abstract_eval(lambda x, y, *, w_shape, **_: jax.core.ShapedArray(w_shape, x.dtype))
for _prim in _REFS:
    _prim.def_impl(_impl(_prim))


def _common(params):
    return {"strides": params["strides"], "padding": params["padding"]}


# Transposes (B(x, w, y) = <conv(x, w), y> = <x, data(y, w)> = <w, weights(x, y)>).
ad.defbilinear(
    conv_p,
    lambda ct, x, w, **p: data_p.bind(ct, w, x_shape=x.aval.shape, **p),
    lambda ct, x, w, **p: weights_p.bind(x, ct, w_shape=w.aval.shape, **p),
)
ad.defbilinear(
    data_p,
    lambda ct, y, w, **p: conv_p.bind(ct, w, **_common(p)),
    lambda ct, y, w, **p: weights_p.bind(ct, y, w_shape=w.aval.shape, **_common(p)),
)
ad.defbilinear(
    weights_p,
    lambda ct, x, y, **p: data_p.bind(y, ct, x_shape=x.aval.shape, **_common(p)),
    lambda ct, x, y, **p: conv_p.bind(x, ct, **_common(p)),
)


def _batching(prim):
    """A mapped axis folds into the batch when the kernel-like second operand of ``conv`` or
    ``data`` is not mapped; otherwise (and for ``weights``, which sums over the batch) the
    XLA reference is vmapped."""

    def rule(args, dims, **params):
        a, b = args
        da, db = dims
        if prim is not weights_p and db is None:
            a = jnp.moveaxis(a, da, 0)
            m, n = a.shape[:2]
            if prim is data_p:
                params = {**params, "x_shape": (m * n, *params["x_shape"][1:])}
            out = prim.bind(a.reshape(m * n, *a.shape[2:]), b, **params)
            return out.reshape(m, n, *out.shape[1:]), 0
        ref = functools.partial(_REFS[prim], **params)
        return jax.vmap(ref, in_axes=(da, db))(a, b), 0

    return rule


for _prim in _REFS:
    batching.primitive_batchers[_prim] = _batching(_prim)


def _cpu_lowering(prim, target):
    """oneDNN's pass for float32 operands when the handler is in use, else XLA's."""
    xla = mlir.lower_fun(_REFS[prim], multiple_results=False)
    call = jax.ffi.ffi_lowering(target)

    def rule(ctx, a, b, *, strides, padding, **shape):
        avals = (*ctx.avals_in, *ctx.avals_out)
        if any(aval.dtype != jnp.float32 or 0 in aval.shape for aval in avals) or not available():
            return xla(ctx, a, b, strides=strides, padding=padding, **shape)
        (top, bottom), (left, right) = padding
        ints = dict(stride_h=strides[0], stride_w=strides[1], pad_top=top, pad_bottom=bottom)
        ints.update(pad_left=left, pad_right=right)
        return call(ctx, a, b, **{k: np.int64(v) for k, v in ints.items()})

    return rule


for _prim, _target in zip(_REFS, _TARGETS, strict=True):
    mlir.register_lowering(_prim, mlir.lower_fun(_REFS[_prim], multiple_results=False))
    mlir.register_lowering(_prim, _cpu_lowering(_prim, _target), platform="cpu")


# --- the public function -----------------------------------------------------------------


def _explicit_padding(padding, spatial, window, strides):
    """((top, bottom), (left, right)) of "SAME", "VALID" or explicit pairs (XLA's rules)."""
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads(spatial, window, strides, padding)
    return tuple((int(lo), int(hi)) for lo, hi in padding)


def conv2d(x: jax.Array, w: jax.Array, strides=(1, 1), padding="SAME") -> jax.Array:
    """``lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=("NHWC", "HWIO",
    "NHWC"))``, on oneDNN where lowered for CPU (see the module docstring).

    x: (N, H, W, C); w: (KH, KW, C, O); strides: two ints; padding: "SAME", "VALID" or
    ((top, bottom), (left, right)). Returns (N, OH, OW, O) in the dtype of x and w. Other
    dtypes than float32, and negative padding, take ``lax.conv_general_dilated`` itself.
    """
    if x.ndim != 4 or w.ndim != 4 or x.shape[3] != w.shape[2]:
        raise ValueError(
            "conv2d takes x (N, H, W, C) and w (KH, KW, C, O) with the same C; got shapes "
            f"{x.shape} and {w.shape}."
        )
    strides = tuple(int(s) for s in strides)
    padding = _explicit_padding(padding, x.shape[1:3], w.shape[:2], strides)
    if x.dtype != jnp.float32 or w.dtype != jnp.float32 or min(min(p) for p in padding) < 0:
        return _conv_ref(x, w, strides=strides, padding=padding)  # negative padding crops
    return conv_p.bind(x, w, strides=strides, padding=padding)


def _taps(size: int, out: int, window: int, stride: int, low: int) -> int:
    """(output position, tap) pairs along one axis whose input lies inside, not in padding."""
    return sum(0 <= o * stride + k - low < size for o in range(out) for k in range(window))


def flops(jaxpr) -> float:
    """FLOPs of the :func:`conv2d` passes in a (closed) jaxpr, sub-jaxprs included (a loop's
    body once, as XLA's cost analysis counts it): 2 per
    multiply-add of each pass, taps on the padding not counted (as XLA's cost analysis counts
    a convolution). For throughput figures: that analysis does not see oneDNN's custom calls."""
    from jax.extend.core import jaxprs_in_params

    total = 0.0
    for eqn in getattr(jaxpr, "jaxpr", jaxpr).eqns:
        if eqn.primitive in _REFS:
            # the convolution's operands: (input, kernel, output) shapes of each pass
            shapes = [v.aval.shape for v in (*eqn.invars, *eqn.outvars)]
            x, w, y = {
                conv_p: (shapes[0], shapes[1], shapes[2]),
                data_p: (shapes[2], shapes[1], shapes[0]),
                weights_p: (shapes[0], shapes[2], shapes[1]),
            }[eqn.primitive]
            strides, padding = eqn.params["strides"], eqn.params["padding"]
            pairs = math.prod(
                _taps(x[1 + i], y[1 + i], w[i], strides[i], padding[i][0]) for i in range(2)
            )
            total += 2.0 * x[0] * pairs * x[3] * y[3]
        for sub in jaxprs_in_params(eqn.params):
            total += flops(sub)
    return total
