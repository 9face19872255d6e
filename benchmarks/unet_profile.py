"""Where the DDPM U-Net's train step spends its time: convolutions or the rest, both sides.

  python benchmarks/unet_profile.py            # needs the bench extra (torch, diffusers)
  python benchmarks/unet_profile.py --write    # also docs/runs/performance/unet_profile.json

In one process, batch 32, float32:
* dpm_jax: the train step as ``experiments.ddpm`` compiles it, and its convolutions alone:
  every convolution of the step's forward pass (``dpm_jax.onednn.conv2d``'s, 3x3 and 1x1,
  read from its jaxpr) with its shapes, forward and both gradients, one after another,
  compiled with the same options.
  "Rest" is the step's time minus that: an estimate, since XLA may overlap operations.
* the diffusers peer (``torch_unet_peer.py``'s step) under ``torch.profiler``: the time in
  ``aten::mkldnn_convolution`` and ``aten::convolution_backward`` (including the 1x1
  shortcut convolutions) and the rest of the step.
* both: the minor page faults and the system CPU seconds of one step (``getrusage``;
  medians), and for dpm_jax the size of the step's temporary buffer, which XLA:CPU maps
  fresh for every call.
Each side runs in its own subprocess (torch ran about 30 % slower beside a live XLA CPU
client). Medians of ``--steps`` timed steps after a warm-up step.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from side_by_side import median_seconds, unet_train_step  # noqa: E402

OUT = ROOT / "docs" / "runs" / "performance" / "unet_profile.json"
BATCH = 32


def kernel_costs(fn, steps: int) -> dict:
    """Median minor page faults and system CPU seconds of one call of ``fn`` (``getrusage``)."""
    import resource

    faults, system = [], []
    for _ in range(steps):
        before = resource.getrusage(resource.RUSAGE_SELF)
        fn()
        after = resource.getrusage(resource.RUSAGE_SELF)
        faults.append(after.ru_minflt - before.ru_minflt)
        system.append(after.ru_stime - before.ru_stime)
    return {
        "minor_page_faults_per_step": statistics.median(faults),
        "system_cpu_s_per_step": statistics.median(system),
    }


def _conv_equations(jaxpr) -> list:
    """Every convolution equation (``conv_general_dilated`` or ``dpm_jax.onednn``'s) of a
    (closed) jaxpr, sub-jaxprs included."""
    import jax
    from jax.extend.core import jaxprs_in_params

    from dpm_jax import onednn

    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive in (jax.lax.conv_general_dilated_p, onednn.conv_p):
            found.append(eqn)
        for sub in jaxprs_in_params(eqn.params):
            found.extend(_conv_equations(sub))
    return found


def measure_jax(steps: int) -> dict:
    import jax
    import jax.numpy as jnp

    from dpm_jax import train_state, xla_options

    config, loss, tx, params, step = unet_train_step(BATCH)
    options = xla_options.eigen_cpu_kernels()  # as unet_train_step compiles the step
    key_data = jnp.array(jax.random.key_data(jax.random.key(2)))
    batch = jax.random.randint(jax.random.key(1), (BATCH, *config.image_shape()), 0, 256).astype(
        jnp.uint8
    )
    convs = _conv_equations(jax.make_jaxpr(loss)(params, batch, jax.random.key(3)).jaxpr)
    box = {"state": train_state.create_train_state(params, tx, key_data)}
    compiled = step.lower(box["state"], batch).compile()  # once: timed, and its buffer size

    def one_step():
        box["state"], metrics = compiled(box["state"], batch)
        jax.block_until_ready(metrics["loss"])

    step_s = median_seconds(one_step, steps)
    costs = kernel_costs(one_step, steps)
    temp = compiled.memory_analysis().temp_size_in_bytes

    def fwd_and_grads(primitive, params):
        def run(x, w, g):
            y, vjp = jax.vjp(functools.partial(primitive.bind, **params), x, w)
            return (y, *vjp(g))  # y too, or XLA drops the forward convolution

        return jax.jit(run, compiler_options=options)

    # One call per convolution, each result freed before the next: one program holding
    # every output at once measured 5.8 s in one run and 8.2 s in the next (fresh memory).
    keys = iter(jax.random.split(jax.random.key(4), 3 * len(convs)))
    calls = [
        (
            fwd_and_grads(eqn.primitive, eqn.params),
            [
                jax.random.normal(next(keys), v.aval.shape, v.aval.dtype)
                for v in (*eqn.invars, eqn.outvars[0])
            ],
        )
        for eqn in convs
    ]

    def all_convs():
        for fn, args in calls:
            jax.block_until_ready(fn(*args))

    conv_s = median_seconds(all_convs, steps)
    return {
        "step_s": step_s,
        "convolutions_s": conv_s,
        "rest_s": step_s - conv_s,
        "convolutions": len(convs),
        "compiler_options": options,
        **costs,
        "temp_buffer_mib": temp / 2**20,
    }


def measure_torch(steps: int) -> dict:
    import torch
    from torch_unet_peer import make_train_step

    _, _, train_step = make_train_step(BATCH)
    step_s = median_seconds(train_step, steps)
    costs = kernel_costs(train_step, steps)
    conv_times = []
    for _ in range(steps):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            train_step()
        conv_times.append(
            sum(
                e.self_cpu_time_total
                for e in prof.key_averages()
                if e.key in ("aten::mkldnn_convolution", "aten::convolution_backward")
            )
            / 1e6
        )
    conv_s = statistics.median(conv_times)
    return {
        "step_s": step_s,
        "convolutions_s": conv_s,
        "rest_s": step_s - conv_s,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        **costs,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per side")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--side", choices=("dpm_jax", "diffusers"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:  # a worker: one side, one line of JSON
        measure = measure_jax if args.side == "dpm_jax" else measure_torch
        print("RESULT " + json.dumps(measure(args.steps)), flush=True)
        return
    import jax

    report = {"batch": BATCH, "jax": jax.__version__}
    for side in ("dpm_jax", "diffusers"):
        command = [sys.executable, __file__, "--side", side, "--steps", str(args.steps)]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        report[side] = json.loads(out.rsplit("RESULT ", 1)[1])
    for side in ("dpm_jax", "diffusers"):
        r = report[side]
        print(
            f"{side:9s} step {r['step_s']:.2f} s = convolutions {r['convolutions_s']:.2f} s "
            f"+ rest {r['rest_s']:.2f} s; per step {r['minor_page_faults_per_step']:,.0f} minor "
            f"page faults, {r['system_cpu_s_per_step']:.2f} s system CPU",
            flush=True,
        )
    if args.write:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
