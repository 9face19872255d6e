"""Binary heartbeat speed: train-step rate (free per-step readout vs bumps) and exact-bound rate.

  python benchmarks/heartbeat_speed.py [--steps 300] [--eval_examples 2000]

T = 2000 binomial steps per sequence. Prints the machine, then each figure; compare
ratios within one run, not absolute times across machines.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import time

import jax

from dpm_jax import binomial, schedules, train_state
from dpm_jax.data import Heartbeat
from experiments import binary_heartbeat as hb
from experiments import common
from experiments import config as cfg


def train_steps_per_second(config: hb.Config, steps: int) -> float:
    keys = common.experiment_keys(config.seed)
    tx = hb.make_optimizer(config)
    state = train_state.create_train_state(hb.init_params(config, keys["init"]), tx, keys["train"])
    step_fn = train_state.make_train_step(functools.partial(hb.loss_fn, config), tx)
    sample = jax.jit(lambda k: Heartbeat().sample(k, config.train.batch_size))
    state, _ = step_fn(state, sample(keys["train_data"]))  # compile
    jax.block_until_ready(state)
    start = time.perf_counter()
    for i in range(steps):
        state, metrics = step_fn(state, sample(jax.random.fold_in(keys["train_data"], i)))
    jax.block_until_ready(metrics)
    return steps / (time.perf_counter() - start)


def exact_bound_examples_per_second(config: hb.Config, examples: int) -> float:
    keys = common.experiment_keys(config.seed)
    params = hb.init_params(config, keys["init"])
    schedule = schedules.binomial_schedule(config.diffusion.steps)
    fn = hb.reverse_fn_from_params(config, params, schedule)
    bound = jax.jit(lambda x, k: binomial.bound_exact(schedule, fn, x, config.diffusion.pi, k))
    x = Heartbeat().sample(keys["test_data"], examples)
    jax.block_until_ready(bound(x, keys["eval"]))  # compile
    start = time.perf_counter()
    jax.block_until_ready(bound(x, keys["eval"]))
    return examples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval_examples", type=int, default=2000)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} cpus={os.cpu_count()} "
        f"jax={jax.__version__} devices={[d.device_kind for d in jax.devices()]}"
    )
    base = hb.Config()
    rates = {}
    for basis in (0, base.model.readout_basis):
        config = cfg.replace(base, {"model.readout_basis": basis})
        rates[basis] = train_steps_per_second(config, args.steps)
        label = "free per-step readout" if basis == 0 else f"readout through {basis} bumps"
        print(
            f"train step, batch {config.train.batch_size}, T = {config.diffusion.steps}, {label}: "
            f"{rates[basis]:,.1f} steps/s ({rates[basis] * config.train.batch_size:,.0f} sequences/s)"
        )
    print(f"ratio bumps / free: {rates[base.model.readout_basis] / rates[0]:.2f}")
    rate = exact_bound_examples_per_second(base, args.eval_examples)
    print(
        f"exact bound (T = {base.diffusion.steps}, all t): {rate:,.0f} sequences/s, "
        f"{rate * (base.diffusion.steps - 1):,.0f} KL terms/s"
    )


if __name__ == "__main__":
    main()
