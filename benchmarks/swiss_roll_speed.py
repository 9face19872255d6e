"""Swiss roll speed: train-step rate (both objectives) and exact-bound evaluation rate.

  python benchmarks/swiss_roll_speed.py [--steps 2000] [--eval_examples 100000]

Prints the machine, then each figure; compare ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import time

import jax

from dpm_jax import train_state
from experiments import common
from experiments import config as cfg
from experiments import swiss_roll as sr


def _time(fn, repeats: int) -> float:
    """Seconds per call after one warm-up (compile) call; results are blocked on."""
    jax.block_until_ready(fn())
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def train_steps_per_second(config: sr.Config, steps: int) -> float:
    keys = common.experiment_keys(config.seed)
    tx = sr.make_optimizer(config)
    state = train_state.create_train_state(sr.init_params(config, keys["init"]), tx, keys["train"])
    step_fn = train_state.make_train_step(functools.partial(sr.loss_fn, config), tx)
    batch = sr._data(config).sample(keys["train_data"], config.train.batch_size)
    state, _ = step_fn(state, batch)  # compile
    jax.block_until_ready(state)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step_fn(state, batch)
    jax.block_until_ready(metrics)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval_examples", type=int, default=100_000)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} cpus={os.cpu_count()} "
        f"jax={jax.__version__} devices={[d.device_kind for d in jax.devices()]}"
    )
    base = sr.Config()
    for objective in sr.OBJECTIVES:
        config = cfg.replace(base, {"train.objective": objective})
        rate = train_steps_per_second(config, args.steps)
        print(
            f"train step, objective={objective}, batch {config.train.batch_size}: {rate:,.0f} "
            f"steps/s ({rate * config.train.batch_size:,.0f} examples/s)"
        )
    keys = common.experiment_keys(base.seed)
    params = sr.init_params(base, keys["init"])
    x = sr._data(base).sample(keys["test_data"], args.eval_examples)
    fn = sr.exact_bound_fn(base, params)
    seconds = _time(lambda: fn(x, keys["eval"]), repeats=3)
    print(
        f"exact bound (T = {base.diffusion.steps}, all t): "
        f"{args.eval_examples / seconds:,.0f} examples/s, "
        f"{args.eval_examples * (base.diffusion.steps - 1) / seconds:,.0f} KL terms/s"
    )


if __name__ == "__main__":
    main()
