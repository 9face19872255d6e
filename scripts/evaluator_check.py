"""How much of a reported K is Monte Carlo noise of the evaluator, not the model.

  python scripts/evaluator_check.py --experiment swiss_roll --workdir runs/swiss_roll
  python scripts/evaluator_check.py --experiment binary_heartbeat --workdir runs/binary_heartbeat

Loads the finished default run in ``--workdir`` and computes, on the same test examples,
the exact bound K (bits per example) of the same parameters with

* the evaluator before the redesign (2db83cf's ``training.evaluate_per_example``): batches
  of the old ``eval_batch_size`` (Swiss roll 10,000, heartbeat 1,000), batch i drawn with
  ``fold_in(eval_key, i)``, one forward sample per term: what gave the committed numbers
  before the redesign (Swiss roll -1.449, heartbeat -2.401); and the same evaluator with
  ``--draws`` other keys, whose mean and spread show its Monte Carlo distribution for this
  one model;
* today's evaluator (per-example keys, ``eval.forward_samples`` draws averaged).

Every K is exact in t (all KL terms summed); what varies is the forward sample x^(t) per
term and example. Writes a JSON summary to ``--out`` (default WORKDIR/evaluator_check.json).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np

from dpm_jax import binomial, checkpoints, gaussian, likelihood, schedules, train_state
from experiments import binary_heartbeat as hb
from experiments import common
from experiments import swiss_roll as sr

#: The old evaluator's batch size of each experiment's default config (2db83cf).
OLD_BATCH = {"swiss_roll": 10_000, "binary_heartbeat": 1_000}


def _setup(experiment: str, workdir: Path):
    """(config, params, test_x, bound(x, key) -> K per example, new evaluator's K)."""
    module = {"swiss_roll": sr, "binary_heartbeat": hb}[experiment]
    config = module.Config()  # the default run
    keys = common.experiment_keys(config.seed)
    template = train_state.create_train_state(
        module.init_params(config, keys["init"]), module.make_optimizer(config), keys["train"]
    )
    state = checkpoints.restore_latest(checkpoints.checkpoint_manager(workdir), template)
    if state is None or int(state.step) != config.train.steps:
        raise SystemExit(f"{workdir} holds no finished default {experiment} run.")
    params = train_state.eval_params(state, config.train.ema_decay)
    if experiment == "swiss_roll":
        test_x = np.asarray(sr.dataset(config).sample(keys["test_data"], config.eval.num_test))
        schedule = sr.schedule_from_params(config, params)
        fn = sr.reverse_fn_from_params(config, params, schedule)
        bound = jax.jit(lambda x, k: gaussian.bound_exact(schedule, fn, x, k))
        new = sr.evaluate(config, sr.exact_bound_fn(config, params), test_x, keys["eval"])
    else:
        test_x = np.asarray(hb.Heartbeat().sample(keys["test_data"], config.eval.num_test))
        schedule = schedules.binomial_schedule(config.diffusion.steps)
        fn = hb.reverse_fn_from_params(config, params, schedule)
        pi = config.diffusion.pi
        bound = jax.jit(lambda x, k: binomial.bound_exact(schedule, fn, x, pi, k))
        new = hb._exact(config, schedule, fn, test_x, keys["eval"], "exact K")
        new = dict(zip(("K", "K_stderr"), likelihood.mean_and_stderr(new["K"]), strict=True))
    return config, keys, state, test_x, bound, new


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", choices=sorted(OLD_BATCH), required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    config, keys, state, test_x, bound, new = _setup(args.experiment, args.workdir)
    batch = OLD_BATCH[args.experiment]

    def old_evaluator(key) -> tuple[float, float]:
        values = [
            np.asarray(bound(jax.numpy.asarray(test_x[s : s + batch]), jax.random.fold_in(key, i)))
            for i, s in enumerate(range(0, len(test_x), batch))
        ]
        return likelihood.mean_and_stderr(np.concatenate(values).astype(np.float64))

    original = old_evaluator(keys["eval"])
    others = [
        old_evaluator(jax.random.fold_in(keys["eval"], 1000 + j))[0] for j in range(args.draws)
    ]
    summary = {
        "experiment": args.experiment,
        "units": {"swiss_roll": sr.UNITS, "binary_heartbeat": hb.UNITS}[args.experiment],
        "kind": "exact K (all KL terms summed); Monte Carlo over forward samples x^(t)",
        "train_steps": int(state.step),
        "num_test": len(test_x),
        "old_evaluator_original_key": {"K": original[0], "K_stderr": original[1]},
        "old_evaluator_other_keys": {
            "draws": args.draws,
            "K_values": others,
            "mean": float(np.mean(others)),
            "std_between_keys": float(np.std(others, ddof=1)),
            "stderr_of_mean": float(np.std(others, ddof=1) / np.sqrt(args.draws)),
        },
        "new_evaluator": {
            "forward_samples": config.eval.forward_samples,
            "K": float(new["K"]),
            "K_stderr": float(new["K_stderr"]),
        },
        "command": f"python scripts/evaluator_check.py --experiment {args.experiment} "
        f"--workdir {args.workdir} --draws {args.draws}",
    }
    text = json.dumps(summary, indent=2)
    print(text)
    out = args.out or args.workdir / "evaluator_check.json"
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
