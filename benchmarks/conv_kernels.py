"""One 3x3 convolution at a time: XLA (two kernel libraries) and dpm_jax's chunked CPU
convolution against PyTorch.

  python benchmarks/conv_kernels.py            # needs the bench extra (torch)
  python benchmarks/conv_kernels.py --write    # also docs/runs/performance/ + docs

For the convolutions of the benchmarked networks (the 2015 model's 20 and 100 channels, the
DDPM U-Net's 128 to 512) it prints GFLOP/s of the forward pass and of forward plus
backward (input and kernel gradient; 3x the forward FLOPs), for XLA's
``conv_general_dilated`` with its default kernels (YNNPACK) and on Eigen
(``dpm_jax.xla_options.eigen_cpu_kernels``, as the U-Nets' train steps compile),
``dpm_jax.models.conv.cpu_conv3x3`` and ``torch.nn.Conv2d`` (NCHW, as the peers use it),
interleaved shape by shape in one process. It says what limits a network whose time is
in its convolutions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "runs" / "performance" / "conv_kernels.json"
DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- conv-kernels:begin -->", "<!-- conv-kernels:end -->"

# (batch, height = width, C_in, C_out, where it occurs)
SHAPES = [
    (512, 28, 20, 20, "2015 MNIST"),
    (200, 32, 100, 100, "2015 CIFAR-10"),
    (32, 32, 128, 128, "U-Net 32x32"),
    (32, 16, 256, 256, "U-Net 16x16"),
    (32, 8, 256, 256, "U-Net 8x8"),
    (32, 4, 256, 256, "U-Net 4x4"),
    (32, 16, 512, 256, "U-Net up, 16x16"),
]


def best_seconds(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure_shape(batch: int, size: int, c_in: int, c_out: int) -> dict:
    """GFLOP/s of one shape: forward and forward + backward, XLA, dpm_jax, torch."""
    import jax
    import jax.numpy as jnp
    import torch

    from dpm_jax import xla_options
    from dpm_jax.models import conv

    flop = 2.0 * batch * size * size * c_in * c_out * 9
    x = jax.random.normal(jax.random.key(0), (batch, size, size, c_in))
    w = jax.random.normal(jax.random.key(1), (3, 3, c_in, c_out)) / 30
    row = {}
    eigen = xla_options.eigen_cpu_kernels()
    if eigen is None:
        raise SystemExit("this jaxlib has no option for XLA:CPU's Eigen convolutions.")
    variants = (
        ("xla", conv.reference_conv3x3, None),
        ("xla_eigen", conv.reference_conv3x3, eigen),
        ("dpm_jax", conv.cpu_conv3x3, None),
    )
    for name, fn, options in variants:
        fwd = jax.jit(fn, compiler_options=options)
        both = jax.jit(
            jax.grad(lambda x, w, fn=fn: jnp.sum(fn(x, w) ** 2), argnums=(0, 1)),
            compiler_options=options,
        )
        fwd_s = best_seconds(lambda fwd=fwd: jax.block_until_ready(fwd(x, w)))
        both_s = best_seconds(lambda both=both: jax.block_until_ready(both(x, w)))
        row[f"{name}_fwd"] = flop / fwd_s / 1e9
        row[f"{name}_fwd_bwd"] = 3 * flop / both_s / 1e9
    xt = torch.randn(batch, c_in, size, size)
    layer = torch.nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    with torch.no_grad():
        row["torch_fwd"] = flop / best_seconds(lambda: layer(xt)) / 1e9
    xg = xt.clone().requires_grad_(True)

    def torch_both():
        y = layer(xg)
        (y * y).sum().backward()

    row["torch_fwd_bwd"] = 3 * flop / best_seconds(torch_both) / 1e9
    return row


def render(report: dict) -> str:
    """The markdown block of ``docs/performance.md`` for a saved report."""
    m = report["machine"]
    lines = [
        f"Measured by `python benchmarks/conv_kernels.py --write` (jax {m['jax']}, torch "
        f"{m['torch']}, {m['threads']} threads), float32, GFLOP/s (forward + backward counts "
        "3x the forward FLOPs); evidence `docs/runs/performance/conv_kernels.json`.",
        "",
        "| convolution | batch, size, channels | forward: XLA (YNNPACK) | XLA (Eigen) | "
        "dpm_jax | PyTorch | forward + backward: XLA (YNNPACK) | XLA (Eigen) | dpm_jax | "
        "PyTorch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    columns = ("xla", "xla_eigen", "dpm_jax", "torch")
    for r in report["rows"]:
        n, size, c_in, c_out = r["shape"]
        fwd = " | ".join(f"{r[c + '_fwd']:.0f}" for c in columns)
        both = " | ".join(f"{r[c + '_fwd_bwd']:.0f}" for c in columns)
        lines.append(f"| {r['where']} | {n}, {size}x{size}, {c_in} -> {c_out} | {fwd} | {both} |")
    return "\n".join(lines)


def rewrite_block(path: Path, begin: str, end: str, text: str) -> None:
    """Replace what lies between the ``begin`` and ``end`` markers of a file by ``text``."""
    doc = path.read_text()
    if begin not in doc or end not in doc:
        raise ValueError(f"{path} has no {begin} ... {end} block to rewrite.")
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def write_doc(report: dict) -> None:
    rewrite_block(DOC, BEGIN, END, render(report))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    import jax
    import torch

    rows = []
    for batch, size, c_in, c_out, where in SHAPES:
        row = {"shape": [batch, size, c_in, c_out], "where": where}
        row.update(measure_shape(batch, size, c_in, c_out))
        rows.append(row)
        print(
            f"{where:16s} N={batch:3d} {size:2d}x{size:<2d} {c_in:3d}->{c_out:3d}  GFLOP/s fwd: "
            f"xla {row['xla_fwd']:4.0f} xla_eigen {row['xla_eigen_fwd']:4.0f} dpm_jax "
            f"{row['dpm_jax_fwd']:4.0f} torch {row['torch_fwd']:4.0f} | fwd+bwd: xla "
            f"{row['xla_fwd_bwd']:4.0f} xla_eigen {row['xla_eigen_fwd_bwd']:4.0f} dpm_jax "
            f"{row['dpm_jax_fwd_bwd']:4.0f} torch {row['torch_fwd_bwd']:4.0f}",
            flush=True,
        )
    if args.write:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "jax": jax.__version__,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }
        report = {"machine": meta, "rows": rows}
        OUT.write_text(json.dumps(report, indent=2) + "\n")
        write_doc(report)
        print(f"wrote {OUT.relative_to(ROOT)} and the block of {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
