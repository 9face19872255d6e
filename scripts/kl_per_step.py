"""Where an ``experiments.adm`` run's exact bound loses its bits, step by step.

  python scripts/kl_per_step.py --run runs/adm/hybrid --num_test 32 --out kl_per_step.json

Each KL term L_(t-1), t = 2..T, of the bound in bits per dimension, averaged over the first
``num_test`` test images (one forward sample x^(t) per term and image,
``gaussian.kl_per_step``), summed over ranges of t, and the largest terms.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np

from dpm_jax import gaussian, parameterisation, rundir
from dpm_jax.data.batching import gather_labelled
from experiments import adm, adm_quality

RANGES = ((2, 2), (3, 10), (11, 100), (101, 500), (501, 990), (991, 999), (1000, 1000))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a finished experiments.adm run")
    parser.add_argument("--num_test", type=int, default=32, help="first test images used")
    parser.add_argument("--out", help="a JSON file for the numbers")
    args = parser.parse_args()
    config, params, _ = adm_quality.load_run(Path(args.run), "run")
    source = adm.experiment.load_split(config, "test")
    batch = gather_labelled(source, np.arange(min(args.num_test, len(source))))
    x0 = adm.to_model(batch["image"])
    sched = adm.schedule(config)
    fn = parameterisation.make_reverse_fn(
        config.diffusion.parameterisation(),
        sched,
        adm.model_fn(config, params, **adm.conditioning(config, batch)),
    )
    kl = jax.jit(lambda x, k: gaussian.kl_per_step(sched, fn, x, k))(x0, jax.random.key(0))
    bits = np.asarray(kl, np.float64) / (x0[0].size * np.log(2.0))  # index i: t = i + 2
    num_steps = sched.num_steps
    sums = {f"t={a}..{b}": float(bits[a - 2 : b - 1].sum()) for a, b in RANGES if b <= num_steps}
    top = np.argsort(bits)[::-1][:5]
    out = {
        "run": args.run,
        "num_test_examples": int(len(x0)),
        "units": "bits per dimension, mean over the test images (one forward sample each)",
        "kl_sum_t2_to_T": float(bits.sum()),
        "sums_by_t": sums,
        "largest_terms": {f"t={int(i) + 2}": float(bits[i]) for i in top},
        "betas_last_3": [float(b) for b in np.asarray(sched.betas[-3:])],
    }
    print(json.dumps(out, indent=2))
    if args.out:
        rundir.write_json_atomic(Path(args.out), out)


if __name__ == "__main__":
    main()
