"""How much of the Swiss roll's K is Monte Carlo noise of the evaluator, not the model.

  python scripts/swiss_roll_evaluator_check.py --workdir runs/swiss_roll [--draws 20]

Loads the trained run in ``--workdir`` (the default config) and computes, on the same
10,000 test points, the exact bound K (bits per point) of the same parameters with

* the evaluator before the redesign: one PRNG key for the whole test batch
  (``fold_in(eval_key, 0)``, what ``training.evaluate_per_example`` of 2db83cf did with
  batch 10,000), which gave the committed -1.449 before the redesign; and the same
  evaluator with ``--draws`` other keys, whose mean and spread show that evaluator's
  Monte Carlo distribution for this one model;
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

from dpm_jax import checkpoints, evaluation, gaussian, likelihood, train_state
from experiments import common
from experiments import swiss_roll as sr


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    config = sr.Config()  # the default run
    keys = common.experiment_keys(config.seed)
    template = train_state.create_train_state(
        sr.init_params(config, keys["init"]), sr.make_optimizer(config), keys["train"]
    )
    state = checkpoints.restore_latest(checkpoints.checkpoint_manager(args.workdir), template)
    if state is None or int(state.step) != config.train.steps:
        raise SystemExit(f"{args.workdir} holds no finished default Swiss roll run.")
    params = train_state.eval_params(state, config.train.ema_decay)
    test_x = np.asarray(sr._data(config).sample(keys["test_data"], config.eval.num_test))
    schedule = sr.schedule_from_params(config, params)
    reverse_fn = sr.reverse_fn_from_params(config, params, schedule)
    whole_batch = jax.jit(lambda x, k: gaussian.bound_exact(schedule, reverse_fn, x, k))
    x = jax.numpy.asarray(test_x)

    def old_evaluator(key) -> tuple[float, float]:
        return likelihood.mean_and_stderr(np.asarray(whole_batch(x, key), np.float64))

    original = old_evaluator(jax.random.fold_in(keys["eval"], 0))
    others = [
        old_evaluator(jax.random.fold_in(jax.random.fold_in(keys["eval"], 1000 + j), 0))[0]
        for j in range(args.draws)
    ]
    draws = config.eval.forward_samples
    new = evaluation.evaluate(
        evaluation.averaged_over_draws(
            evaluation.per_example_keys(sr.exact_bound_fn(config, params)), draws
        ),
        test_x,
        keys["eval"],
        batch_size=config.eval.batch_size,
        desc="exact K",
    )["K"]
    new_mean, new_se = likelihood.mean_and_stderr(new)
    summary = {
        "units": sr.UNITS,
        "kind": "exact K (all KL terms summed); Monte Carlo over forward samples x^(t)",
        "train_steps": int(state.step),
        "old_evaluator_original_key": {"K": original[0], "K_stderr": original[1]},
        "old_evaluator_other_keys": {
            "draws": args.draws,
            "K_values": others,
            "mean": float(np.mean(others)),
            "std_between_keys": float(np.std(others, ddof=1)),
            "stderr_of_mean": float(np.std(others, ddof=1) / np.sqrt(args.draws)),
        },
        "new_evaluator": {"forward_samples": draws, "K": new_mean, "K_stderr": new_se},
        "command": "python scripts/swiss_roll_evaluator_check.py --workdir "
        f"{args.workdir} --draws {args.draws}",
    }
    text = json.dumps(summary, indent=2)
    print(text)
    out = args.out or args.workdir / "evaluator_check.json"
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
