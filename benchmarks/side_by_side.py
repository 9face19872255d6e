"""dpm_jax against its PyTorch peers, side by side in one run on this machine.

  python benchmarks/side_by_side.py                      # all, about 10 minutes on 2 CPU cores
  python benchmarks/side_by_side.py --models mnist --rounds 3
  python benchmarks/side_by_side.py --write              # also docs/runs/performance/ + docs

Peers (the ``bench`` extra: ``pip install -e .[bench]``, torch 2.13.0 CPU and diffusers):

* mnist, cifar10: the 2015 model at the released code's sizes (T = 1000, float32) against
  ``shared/bench/torch_peer.py`` (the same network, loss and RMSProp step in PyTorch);
* unet: DDPM's CIFAR-10 U-Net (35.7M parameters) against diffusers' ``UNet2DModel`` in
  the same configuration (``benchmarks/torch_unet_peer.py``: same batch, same L_simple,
  Adam, clipping and EMA).

Every measurement is its own subprocess (so its peak resident memory is its own), and the
two sides alternate A/B/A/B for ``--rounds`` rounds so both see the same machine. A train
figure is the median step time over the timed steps after one warm-up step; each side's
best round is compared. Also measured, for dpm_jax: compile times of the train step, exact
bound and sampler; exact-bound images/s (all T - 1 KL terms); the sampler's time per step
against one network evaluation of the same batch (a shortened chain, the per-step cost does
not depend on T); peak RSS of each; and the machine's peak (a 4096^2 float32 matmul).
Train FLOP/s: for the 2015 model 2 FLOPs per multiply-add of its convolutions and matmuls,
times 3 for forward and backward (``image_speed.analytic_train_flops``); for the U-Net
XLA's cost analysis of the whole compiled step (elementwise work, Adam and EMA included)
plus ``dpm_jax.onednn.flops`` of its oneDNN convolutions, which that analysis cannot see.

``--write`` saves ``docs/runs/performance/side_by_side.json`` and rewrites the block of
``docs/performance.md`` between the ``side-by-side`` markers (:func:`render`).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import runpy
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER_2015 = ROOT.parent / "shared" / "bench" / "torch_peer.py"
PEER_UNET = ROOT / "benchmarks" / "torch_unet_peer.py"
RESULTS = ROOT / "docs" / "runs" / "performance" / "side_by_side.json"
DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- side-by-side:begin -->", "<!-- side-by-side:end -->"
# The project and its other benchmarks (image_speed, conv_kernels) import lazily: a peer's
# subprocess must not load jax into its measured memory.
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

TRAIN_STEPS = {"mnist": 10, "cifar10": 3, "unet": 2}
UNET_BATCH = 32


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median_seconds(fn, count: int, warmup: bool = True) -> float:
    """Median seconds of ``fn()`` (blocking) over ``count`` calls, after one warm-up call."""
    if warmup:
        fn()
    times = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ----------------------------------------------------------------------------------------------
# Workers (one per subprocess).


def _fns_2015(name: str):
    import jax.numpy as jnp
    from image_speed import MODELS, ModelFns

    config = MODELS[name].PRESETS["default"]
    return config, ModelFns(config, jnp.float32)


def _unet(batch: int):
    from experiments import config as cfg
    from experiments import ddpm, ddpm_config

    config = cfg.replace(ddpm_config.PRESETS["cifar10"], {"train.batch_size": batch})
    return config, ddpm


def unet_train_step(batch: int):
    """``(config, loss, tx, params, step)``: the DDPM CIFAR-10 U-Net's loss ``(params,
    batch, key)``, optimiser, parameters and jitted train step, compiled as
    ``experiments.ddpm`` compiles it."""
    import jax

    from dpm_jax import train_state, xla_options

    config, ddpm = _unet(batch)
    loss = functools.partial(ddpm.loss_fn, config)
    tx = ddpm.make_optimizer(config)
    params = jax.jit(lambda k: ddpm.init_params(config, k))(jax.random.key(0))
    step = train_state.make_train_step(
        loss,
        tx,
        ema_decay=config.train.ema_decay,
        compiler_options=xla_options.eigen_cpu_kernels(),
    )
    return config, loss, tx, params, step


def worker_train(name: str, steps: int) -> dict:
    import jax
    import jax.numpy as jnp

    from dpm_jax import train_state

    if name == "unet":
        config, _, tx, params, step = unet_train_step(UNET_BATCH)
    else:
        config, fns = _fns_2015(name)
        import image_speed

        from experiments import image_model

        tx = image_model.make_optimizer(config)
        params = image_speed.quick_params(config)
        step = train_state.make_train_step(fns.loss, tx)
    image = config.image_shape()
    batch_size = config.train.batch_size
    key_data = jnp.array(jax.random.key_data(jax.random.key(2)))
    state = train_state.create_train_state(params, tx, key_data)
    batch = jax.random.randint(jax.random.key(1), (batch_size, *image), 0, 256).astype(jnp.uint8)
    start = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    if name == "unet":  # no loops: XLA's cost analysis counts every FLOP but oneDNN's
        import image_speed

        from dpm_jax import onednn

        flops = image_speed.flops_of(compiled)
        if onednn.available() and jax.default_backend() == "cpu":  # lowered to oneDNN
            flops += onednn.flops(step.trace(state, batch).jaxpr)
    else:
        flops = image_speed.analytic_train_flops(config)
    box = {"state": state}

    def one():
        box["state"], metrics = compiled(box["state"], batch)
        jax.block_until_ready(metrics["loss"])

    seconds = median_seconds(one, steps)
    return {
        "batch": batch_size,
        "compile_s": compile_s,
        "images_per_s": batch_size / seconds,
        "flops_per_step": flops,
        "flops_per_s": flops / seconds,
        "peak_rss_mib": peak_rss_mib(),
    }


def worker_bound(name: str, count: int) -> dict:
    import jax

    _, fns = _fns_2015(name)
    import image_speed

    params = image_speed.quick_params(fns.config)
    pixels = image_speed.pixels_batch(fns.config, count)
    key = jax.random.key(3)
    start = time.perf_counter()
    compiled = jax.jit(fns.bound).lower(params, pixels, key).compile()
    compile_s = time.perf_counter() - start
    # compiled ahead: one timed call (999 network evaluations) needs no warm-up
    seconds = median_seconds(
        lambda: jax.block_until_ready(compiled(params, pixels, key)), 1, warmup=False
    )
    return {
        "images": count,
        "T": fns.config.diffusion.steps,
        "compile_s": compile_s,
        "images_per_s": count / seconds,
        "peak_rss_mib": peak_rss_mib(),
    }


def worker_sample(name: str, count: int, chain: int) -> dict:
    """Seconds per step of a ``chain``-step ancestral sampler and of one network evaluation."""
    import jax
    import jax.numpy as jnp

    from dpm_jax import gaussian
    from experiments import config as cfg

    if name == "unet":
        config, ddpm = _unet(UNET_BATCH)
        config = cfg.replace(config, {"diffusion.steps": chain})
        params = jax.jit(lambda k: ddpm.init_params(config, k))(jax.random.key(0))
        sched = ddpm.schedule(config)

        def sample(params, key):
            fn = ddpm.reverse_fn(config, params, sched, clip=True)
            return gaussian.sample(sched, fn, key, (count, *config.image_shape()))

        def forward(params, x, t):
            return ddpm.model_fn(config, params)(x, t)
    else:
        import image_speed

        config, _ = _fns_2015(name)
        config = cfg.replace(config, {"diffusion.steps": chain})
        fns = image_speed.ModelFns(config, jnp.float32)
        params = image_speed.quick_params(config)
        sample = functools.partial(fns.sample, count=count)
        forward = fns.forward
    key = jax.random.key(4)
    start = time.perf_counter()
    sampler = jax.jit(sample).lower(params, key).compile()
    compile_s = time.perf_counter() - start
    x = jax.random.normal(key, (count, *config.image_shape()))
    t = jnp.full((count,), chain // 2, jnp.int32)
    network = jax.jit(forward).lower(params, x, t).compile()
    per_step = median_seconds(lambda: jax.block_until_ready(sampler(params, key)), 2) / chain
    per_eval = median_seconds(lambda: jax.block_until_ready(network(params, x, t)), 10)
    return {
        "images": count,
        "chain": chain,
        "compile_s": compile_s,
        "step_s": per_step,
        "network_eval_s": per_eval,
        "step_over_eval": per_step / per_eval,
        "peak_rss_mib": peak_rss_mib(),
    }


def worker_peak() -> dict:
    import jax

    n = 4096
    a = jax.random.normal(jax.random.key(0), (n, n))
    matmul = jax.jit(lambda a: a @ a).lower(a).compile()
    seconds = median_seconds(lambda: jax.block_until_ready(matmul(a)), 10)
    return {"matmul_flops_per_s": 2 * n**3 / seconds}


def worker_peer(script: str, args: list[str]) -> None:
    """Run a peer script as __main__, then print its peak RSS (MiB) on its own line."""
    sys.argv = [script, *args]
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        print(f"PEAK_RSS_MIB {peak_rss_mib():.1f}", flush=True)


# ----------------------------------------------------------------------------------------------
# The driver.


def run_worker(argv: list[str], timeout: float = 1800) -> dict:
    """Run this script (or a peer) in a subprocess and parse its ``RESULT`` line."""
    cmd = [sys.executable, __file__, *argv]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    lines = out.stdout.splitlines()
    results = [json.loads(x[len("RESULT ") :]) for x in lines if x.startswith("RESULT ")]
    if out.returncode != 0 or not results:
        raise RuntimeError(
            f"{' '.join(argv)} failed (exit {out.returncode}):\n{out.stdout[-2000:]}\n"
            f"{out.stderr[-3000:]}"
        )
    result = results[-1]
    for line in lines:
        if line.startswith("PEAK_RSS_MIB "):
            result["peak_rss_mib"] = float(line.split()[1])
    return result


def peer_args(name: str, steps: int) -> list[str]:
    if name == "unet":
        return [
            "--worker",
            "peer",
            str(PEER_UNET),
            "--batch",
            str(UNET_BATCH),
            "--steps",
            str(steps),
        ]
    return ["--worker", "peer", str(PEER_2015), "--config", name, "--steps", str(steps), "--no-fwd"]


def peer_images_per_s(result: dict) -> float:
    return float(result["train_img_per_s"])


def measure(models: list[str], rounds: int) -> dict:
    import jax

    report = {
        "machine": {
            "platform": platform.machine(),
            "cpus": os.cpu_count(),
            "backend": jax.default_backend(),
            "jax": jax.__version__,
            "python": platform.python_version(),
        },
        "rounds": rounds,
        "models": {},
    }
    print(f"machine: {report['machine']}", flush=True)
    report["peak"] = run_worker(["--worker", "peak"])
    print(f"peak: {report['peak']['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s matmul", flush=True)
    for name in models:
        steps = TRAIN_STEPS[name]
        ours, theirs = [], []
        for r in range(rounds):
            order = ("jax", "peer") if r % 2 == 0 else ("peer", "jax")
            for side in order:
                if side == "jax":
                    ours.append(
                        run_worker(["--worker", "train", "--model", name, "--steps", str(steps)])
                    )
                    print(
                        f"{name} round {r}: dpm_jax {ours[-1]['images_per_s']:.1f} images/s",
                        flush=True,
                    )
                else:
                    theirs.append(run_worker(peer_args(name, steps)))
                    print(
                        f"{name} round {r}: peer {peer_images_per_s(theirs[-1]):.1f} images/s",
                        flush=True,
                    )
        best_ours = max(ours, key=lambda x: x["images_per_s"])
        best_theirs = max(theirs, key=peer_images_per_s)
        entry = {
            "train": best_ours,
            "train_rounds": [x["images_per_s"] for x in ours],
            "peer": best_theirs,
            "peer_rounds": [peer_images_per_s(x) for x in theirs],
            "ratio": best_ours["images_per_s"] / peer_images_per_s(best_theirs),
            "peak_fraction": best_ours["flops_per_s"] / report["peak"]["matmul_flops_per_s"],
        }
        if name != "unet":
            images = {"mnist": 16, "cifar10": 4}[name]
            entry["bound"] = run_worker(
                ["--worker", "bound", "--model", name, "--count", str(images)]
            )
        count = 8 if name == "unet" else 16
        chain = 10 if name == "unet" else 50
        entry["sample"] = run_worker(
            ["--worker", "sample", "--model", name, "--count", str(count), "--chain", str(chain)]
        )
        report["models"][name] = entry
        print(f"{name}: ratio {entry['ratio']:.3f}", flush=True)
    return report


LABELS = {
    "mnist": "MNIST, 2015 model (1,762,928 parameters)",
    "cifar10": "CIFAR-10, 2015 model (13,385,280 parameters)",
    "unet": "CIFAR-10, DDPM U-Net (35,746,307 parameters)",
}
PEERS = {"mnist": "torch_peer.py", "cifar10": "torch_peer.py", "unet": "diffusers UNet2DModel"}


def render(report: dict) -> str:
    """The markdown block of ``docs/performance.md`` for a saved report."""
    m = report["machine"]
    peak = report["peak"]["matmul_flops_per_s"]
    lines = [
        f"Measured by `python benchmarks/side_by_side.py --write` on {m['cpus']} "
        f"{m['platform']} CPU cores (backend {m['backend']}, jax {m['jax']}), float32, "
        f"{report['rounds']} alternated rounds, best round of each side; measured peak "
        f"{peak / 1e9:.0f} GFLOP/s (4096^2 matmul). Evidence: "
        "`docs/runs/performance/side_by_side.json`.",
        "",
        "| train step | batch | dpm_jax images/s | peer | peer images/s | ratio | "
        "dpm_jax fraction of peak | dpm_jax peak RSS | peer peak RSS |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in report["models"].items():
        t, p = e["train"], e["peer"]
        lines.append(
            f"| {LABELS[name]} | {t['batch']} | {t['images_per_s']:,.1f} | {PEERS[name]} | "
            f"{peer_images_per_s(p):,.1f} | **{e['ratio']:.3f}x** | {e['peak_fraction']:.0%} | "
            f"{t['peak_rss_mib']:,.0f} MiB | {p['peak_rss_mib']:,.0f} MiB |"
        )
    lines += [
        "",
        "| dpm_jax | compile: train step | exact bound: images/s (T - 1 terms) | compile: "
        "bound | sampler per step / one network evaluation | compile: sampler | peak RSS: "
        "train, bound, sampler |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, e in report["models"].items():
        b, s = e.get("bound"), e["sample"]
        bound = f"{b['images_per_s']:.2f} ({b['images']} images, T = {b['T']})" if b else "not run"
        bound_c = f"{b['compile_s']:.1f} s" if b else ""
        rss = [e["train"]["peak_rss_mib"], b["peak_rss_mib"] if b else None, s["peak_rss_mib"]]
        lines.append(
            f"| {LABELS[name]} | {e['train']['compile_s']:.1f} s | {bound} | {bound_c} | "
            f"{s['step_over_eval']:.3f} ({s['step_s'] * 1e3:.1f} ms / "
            f"{s['network_eval_s'] * 1e3:.1f} ms, {s['images']} images) | "
            f"{s['compile_s']:.1f} s | "
            + ", ".join("-" if r is None else f"{r:,.0f}" for r in rss)
            + " MiB |"
        )
    rounds = "; ".join(
        f"{name}: dpm_jax {', '.join(f'{x:,.1f}' for x in e['train_rounds'])}, peer "
        f"{', '.join(f'{x:,.1f}' for x in e['peer_rounds'])}"
        for name, e in report["models"].items()
    )
    lines += ["", f"Every round's images/s: {rounds}."]
    return "\n".join(lines)


def write(report: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    from conv_kernels import rewrite_block

    rewrite_block(DOC, BEGIN, END, render(report))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mnist,cifar10,unet")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="save the JSON and the docs block")
    parser.add_argument("--worker", choices=["train", "bound", "sample", "peak", "peer"])
    parser.add_argument("--model", default="mnist")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--chain", type=int, default=50)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["--worker", "peer"]:  # the peer's own arguments follow its path
        worker_peer(argv[2], argv[3:])
        return
    args = parser.parse_args(argv)
    if args.worker:
        run = {
            "train": lambda: worker_train(args.model, args.steps),
            "bound": lambda: worker_bound(args.model, args.count),
            "sample": lambda: worker_sample(args.model, args.count, args.chain),
            "peak": worker_peak,
        }[args.worker]
        print("RESULT " + json.dumps(run()), flush=True)
        return
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in TRAIN_STEPS:
            parser.error(f"unknown model {m!r}; choose from {sorted(TRAIN_STEPS)}")
    if not PEER_2015.exists() and {"mnist", "cifar10"} & set(models):
        parser.error(f"the 2015 peer {PEER_2015} is missing (it lives in shared/bench).")
    start = time.perf_counter()
    report = measure(models, args.rounds)
    report["seconds"] = time.perf_counter() - start
    print(render(report))
    if args.write:
        write(report)
        print(f"wrote {RESULTS.relative_to(ROOT)} and the block of {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
