"""The probability-flow ODE's log-likelihood of a run's test points under both error norms.

  python scripts/ode_norm_check.py --run runs/sr_lineage/ddpm_t1000 --num_test 500

The step controller's "rms" norm (diffrax's default) holds the whole batch to the tolerances
on average; "max" (``ode_likelihood.ode_log_likelihood``'s default) holds every example.
Prints both means, their difference and the largest per-point difference, in bits.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dpm_jax import likelihood, ode_likelihood
from experiments import ladder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a finished ddpm_swiss_roll run")
    parser.add_argument("--num_test", type=int, default=500)
    args = parser.parse_args()
    model = ladder.load_model(Path(args.run), args.num_test)
    if model.eps_fn is None or model.pixels is not None:
        raise SystemExit(f"error: {args.run} has no exact-divergence ODE ({model.no_ode}).")
    x = jnp.asarray(model.test_x)
    bits = {}
    for norm in ("rms", "max"):
        solve = jax.jit(
            lambda x, norm=norm: ode_likelihood.ode_log_likelihood(
                model.schedule, model.eps_fn, x, error_norm=norm
            )
        )
        bits[norm] = np.asarray(likelihood.nats_to_bits(solve(x)), np.float64)
        print(f"{norm}: mean log2 p = {bits[norm].mean():.6f} bits per point")
    diff = bits["max"] - bits["rms"]
    print(f"max - rms: mean {diff.mean():.2e} bits, largest per point {np.abs(diff).max():.2e}")


if __name__ == "__main__":
    main()
