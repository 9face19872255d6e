"""The likelihood ladder of trained runs: K, K_M and the probability-flow ODE beside the truth.

  python -m experiments.ladder --workdir runs/ladder/swiss_roll \\
      --run runs/swiss_roll --run runs/ddpm_swiss_roll_t1000 --num_test 1000

For each ``--run`` (a finished run of ``swiss_roll``, ``ddpm_swiss_roll`` or
``binary_heartbeat``: its config.json and latest checkpoint) and the first ``--num_test`` of
that run's own test points, one row each:

* K, the single-trajectory bound every run reports (all KL terms summed, one forward sample
  per term; ``gaussian.bound_exact`` / ``binomial.bound_exact``);
* K_M for each ``--m`` (default 1, 10, 100, 1000): the importance-weighted bound
  (``dpm_jax.importance``), a lower bound on log p_model(x0) in expectation that rises with M;
* the probability-flow ODE's log p of the continuous-time model (``dpm_jax.ode_likelihood``,
  exact divergence for these low-dimensional data), for epsilon-models only;
* the truth, where the data's density is known (Swiss roll, Gaussian mixture, heartbeat).

Every value is a mean over the test points in bits per example with its standard error; the
gap to the truth and the fraction of K's gap each closes are paired over the same points.
Writes ``ladder.json`` (all numbers, their kinds, the seconds each took, the command), its
tables as ``ladder.md`` and ``figures/ladder.png`` (K_M against M, the truth as a line) to
``--workdir``. Digit runs (``ddpm``, ``mnist``) have no truth; their rows add the 8-bit NLL
in bits/dim, and the ODE there is uniformly dequantised with a Hutchinson divergence.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from dpm_jax import (
    binomial,
    discretized,
    gaussian,
    importance,
    likelihood,
    ode_likelihood,
    parameterisation,
    plotting,
    rundir,
    runner,
    schedules,
    sharding,
    train_state,
)
from dpm_jax.data import Heartbeat, preprocess
from dpm_jax.data.batching import gather_images
from experiments import (
    binary_heartbeat,
    common,
    ddpm,
    ddpm_swiss_roll,
    image_model,
    images,
    mnist,
    swiss_roll,
)
from experiments import config as cfg

DEFAULT_M = (1, 10, 100, 1000)


@dataclasses.dataclass(frozen=True)
class LadderModel:
    """What the ladder needs of a trained run.

    ``kind``: "gaussian" (``reverse_fn`` gives kernels) or "binomial" (rates, with ``pi``);
    ``test_x`` (N, D) the run's first N test points; ``truth`` log2 p(x) per point or None;
    ``eps_fn`` the epsilon output for the ODE, or None with ``no_ode`` saying why. Digit
    runs add ``bins`` (DDPM's discretised decoder), ``pixels`` and ``nll_bits_per_dim``
    (bits per example -> the 8-bit NLL in bits/dim); ``max_rows``: trajectories at once.
    """

    label: str
    experiment: str
    schedule: schedules.Schedule
    reverse_fn: object
    test_x: np.ndarray
    units: str
    train_steps: int
    kind: str = "gaussian"
    truth: np.ndarray | None = None
    truth_kind: str = ""
    pi: float = 0.0
    eps_fn: object = None
    no_ode: str = ""
    bins: discretized.PixelBins | None = None
    pixels: np.ndarray | None = None  # uint8 digits, for the ODE's dequantisation
    nll_bits_per_dim: Callable[[np.ndarray], np.ndarray] | None = None
    max_rows: int = 1 << 17


def _restore(module, config, run_dir: Path, data):
    """(eval parameters, the run's keys, step) from the latest checkpoint of ``run_dir``."""
    state, keys = common.train_module_on_generator(module, config, run_dir, True, data)
    return train_state.eval_params(state, config.train.ema_decay), keys, int(state.step)


def load_model(run_dir: Path, num_test: int) -> LadderModel:
    """The trained model of ``run_dir`` and its first ``num_test`` test points."""
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: --run must be the workdir of a finished run "
            "(python -m experiments.swiss_roll / ddpm_swiss_roll / binary_heartbeat)."
        )
    saved = json.loads(path.read_text())
    name = saved.get("experiment")
    modules = {
        "swiss_roll": swiss_roll,
        "ddpm_swiss_roll": ddpm_swiss_roll,
        "binary_heartbeat": binary_heartbeat,
        "ddpm": ddpm,
        "mnist": mnist,
    }
    if name not in modules:
        raise ValueError(
            f"{run_dir} is a run of {name!r}; the ladder reads runs of {sorted(modules)}."
        )
    module = modules[name]
    experiment = module.experiment
    config = cfg.from_json(experiment.config_class(), saved["config"])
    if name in ("ddpm", "mnist"):
        return _load_digits(module.experiment, config, run_dir, num_test)
    _check_num_test(num_test, config.eval.num_test)
    if name == "binary_heartbeat":
        data = Heartbeat()
        params, keys, step = _restore(module, config, run_dir, data)
        schedule = schedules.binomial_schedule(config.diffusion.steps)
        test_x = np.asarray(data.sample(keys["test_data"], config.eval.num_test))[:num_test]
        return LadderModel(
            label=f"2015 MLP, T = {schedule.num_steps}",
            experiment=name,
            kind="binomial",
            schedule=schedule,
            reverse_fn=module.reverse_fn_from_params(config, params, schedule),
            test_x=test_x,
            truth=np.full(num_test, data.true_log_likelihood),
            truth_kind="exact: log2(1/5), every valid sequence",
            units=experiment.units,
            train_steps=step,
            pi=config.diffusion.pi,
            no_ode="binary data: the probability-flow ODE is for Gaussian diffusion",
        )
    data = swiss_roll.dataset(config)
    params, keys, step = _restore(module, config, run_dir, data)
    test_x = np.asarray(data.sample(keys["test_data"], config.eval.num_test))[:num_test]
    truth = data.log_density(test_x)
    common_fields = {
        "experiment": name,
        "test_x": test_x,
        "truth": truth,
        "truth_kind": f"exact density of the {swiss_roll.data_title(config)}",
        "units": experiment.units,
        "train_steps": step,
    }
    if name == "swiss_roll":
        schedule = swiss_roll.schedule_from_params(config, params)
        return LadderModel(
            label=f"2015 RBF, T = {schedule.num_steps}",
            schedule=schedule,
            reverse_fn=swiss_roll.reverse_fn_from_params(config, params, schedule),
            no_ode="the 2015 readout predicts a mean and a variance, not epsilon",
            **common_fields,
        )
    schedule = ddpm_swiss_roll.schedule(config)
    return LadderModel(
        label=f"DDPM eps-MLP, T = {schedule.num_steps}",
        schedule=schedule,
        reverse_fn=ddpm_swiss_roll.reverse_fn(config, params, schedule),
        eps_fn=ddpm_swiss_roll.eps_fn(config, params),
        **common_fields,
    )


def _check_num_test(num_test: int, available: int) -> None:
    if num_test > available:
        raise ValueError(
            f"--num_test {num_test} exceeds the {available} test examples the run evaluates "
            "(its eval.num_test)."
        )


def _load_digits(experiment, config, run_dir: Path, num_test: int) -> LadderModel:
    """A DDPM U-Net (``ddpm``) or 2015 (``mnist``) run on 8-bit images: its first
    ``num_test`` test images, at most ``eval.num_test`` (the images its own bound used)."""
    keys = common.experiment_keys(config.seed)
    test_source = experiment.load_split(config, "test")
    _check_num_test(num_test, config.eval.num_test or len(test_source))
    pixels = gather_images(test_source, np.arange(num_test))
    height, width, channels = config.image_shape()
    dims = height * width * channels
    mesh = sharding.data_mesh()
    if experiment.name == "ddpm":
        state = runner.restore_run(run_dir, ddpm._initial_state(config, keys), mesh)
        params = train_state.eval_params(state, config.train.ema_decay)
        schedule = ddpm.schedule(config)
        return LadderModel(
            label=f"DDPM U-Net, T = {schedule.num_steps}",
            experiment=experiment.name,
            schedule=schedule,
            reverse_fn=ddpm.reverse_fn(config, params, schedule),
            test_x=np.asarray(ddpm.to_model(pixels)),
            units="bits per image: log2 P of the 8-bit digit (discretised decoder)",
            train_steps=int(state.step),
            eps_fn=parameterisation.eps_model(
                config.diffusion.parameterisation(), ddpm.model_fn(config, params)
            ),
            bins=ddpm.BINS,
            pixels=pixels,
            nll_bits_per_dim=lambda bits: -bits / dims,
            max_rows=64,
        )
    state = runner.restore_run(run_dir, images._initial_state(config, keys), mesh)
    params = train_state.eval_params(state, config.train.ema_decay)
    scaling = images.scaling_for_run(config, run_dir, None, eval_only=True)
    schedule = image_model.schedule(config)
    z = preprocess(pixels, jax.random.fold_in(keys["eval"], 7), scaling)  # one u per digit
    return LadderModel(
        label=f"2015 network, T = {schedule.num_steps}",
        experiment=experiment.name,
        schedule=schedule,
        reverse_fn=image_model.reverse_fn_from_params(config, params, schedule),
        test_x=np.asarray(z),
        units="bits per image: log2 p of the dequantised digit scaled to unit variance",
        train_steps=int(state.step),
        no_ode="the 2015 readout predicts a mean and a variance, not epsilon",
        nll_bits_per_dim=lambda bits: likelihood.bits_per_dim_8bit(bits, dims, scaling),
        max_rows=64,
    )


def _in_chunks(fn, x: np.ndarray, chunk: int, desc: str) -> np.ndarray:
    """``fn`` over ``x`` in chunks of ``chunk`` rows (the last padded, so one compile)."""
    out = []
    for start in tqdm(range(0, len(x), chunk), desc=desc, leave=False):
        part = x[start : start + chunk]
        padded = np.concatenate([part, np.repeat(part[-1:], chunk - len(part), axis=0)])
        out.append(np.asarray(fn(jnp.asarray(padded), start))[: len(part)])
    return np.concatenate(out)


def single_trajectory_bound(model: LadderModel, key, chunk: int, draws: int) -> np.ndarray:
    """K per example, bits: all T - 1 KL terms, one forward sample per term, averaged over
    ``draws`` independent draws (as the runs report it; less Monte Carlo noise, same mean)."""
    if model.kind == "binomial":
        bound = jax.jit(
            lambda x, k: binomial.bound_exact(model.schedule, model.reverse_fn, x, model.pi, k)
        )
    else:
        bound = jax.jit(
            lambda x, k: gaussian.bound_exact(
                model.schedule, model.reverse_fn, x, k, bins=model.bins
            )
        )

    def averaged(x, start):
        keys = jax.random.split(jax.random.fold_in(key, start), draws)
        return np.mean([np.asarray(bound(x, k)) for k in keys], axis=0)

    return _in_chunks(averaged, model.test_x, chunk, "K")


def importance_bound(model: LadderModel, m: int, key, max_rows: int) -> np.ndarray:
    """K_M per example, bits, with ``m`` trajectories each; at most ``max_rows`` trajectories
    at once."""
    if model.kind == "binomial":
        log_w = jax.jit(
            lambda x, k: importance.binomial_log_weights(
                model.schedule, model.reverse_fn, x, model.pi, k, m
            )
        )
    else:
        log_w = jax.jit(
            lambda x, k: importance.log_weights(
                model.schedule, model.reverse_fn, x, k, m, bins=model.bins
            )
        )
    chunk = max(1, min(len(model.test_x), max_rows // m))
    return _in_chunks(
        lambda x, start: importance.bits_from_log_weights(log_w(x, jax.random.fold_in(key, start))),
        model.test_x,
        chunk,
        f"K_{m}",
    )


def ode_bound(model: LadderModel, key, chunk: int, rtol: float, atol: float) -> np.ndarray:
    """log2 p per example of the probability-flow ODE, bits: of the point, with the exact
    divergence, for low-dimensional data; for digits, -D times the uniformly dequantised
    bits/dim with one Rademacher probe (``ode_likelihood.dequantized_bits_per_dim``), a lower
    bound on log2 P of the 8-bit digit in expectation."""
    if model.pixels is None:
        solve = jax.jit(
            lambda x, k: likelihood.nats_to_bits(
                ode_likelihood.ode_log_likelihood(
                    model.schedule, model.eps_fn, x, rtol=rtol, atol=atol
                )
            )
        )
        data = model.test_x
    else:
        dims = math.prod(model.pixels.shape[1:])
        solve = jax.jit(
            lambda p, k: (
                -dims
                * ode_likelihood.dequantized_bits_per_dim(
                    model.schedule, model.eps_fn, p, k, num_probes=1, rtol=rtol, atol=atol
                )
            )
        )
        data = model.pixels
    return _in_chunks(lambda x, start: solve(x, jax.random.fold_in(key, start)), data, chunk, "ODE")


def gap_fields(values: np.ndarray, k: np.ndarray, truth: np.ndarray | None) -> dict:
    """The gap truth - value and the fraction of K's gap the value closes, (value - K) /
    (truth - K), paired over the examples; the fraction's standard error by the delta method."""
    if truth is None:
        return {}
    gap, gap_se = likelihood.mean_and_stderr(truth - values)
    a, b = values - k, truth - k
    fraction = float(a.mean() / b.mean())
    n = len(a)
    var = np.var(a, ddof=1) - 2 * fraction * np.cov(a, b)[0, 1] + fraction**2 * np.var(b, ddof=1)
    return {
        "gap_truth_minus": gap,
        "gap_truth_minus_stderr": gap_se,
        "fraction_of_K_gap_closed": fraction,
        "fraction_of_K_gap_closed_stderr": float(math.sqrt(max(var, 0.0) / n) / abs(b.mean())),
    }


def _row(model: LadderModel, name: str, kind: str, values, seconds: float, k) -> dict:
    mean, se = likelihood.mean_and_stderr(values)
    row = {"name": name, "kind": kind, "mean": mean, "stderr": se, "seconds": seconds}
    if model.nll_bits_per_dim is not None:
        nll = np.asarray(model.nll_bits_per_dim(values), np.float64)
        row["nll_bits_per_dim_8bit"], row["nll_bits_per_dim_8bit_stderr"] = (
            likelihood.mean_and_stderr(nll)
        )
        diff = nll - np.asarray(model.nll_bits_per_dim(k), np.float64)
        row["nll_minus_K_nll"], row["nll_minus_K_nll_stderr"] = likelihood.mean_and_stderr(diff)
    return {**row, **gap_fields(values, k, model.truth)}


def ladder(
    model: LadderModel,
    key,
    ms,
    *,
    max_rows: int | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    k_draws: int = 10,
) -> dict:
    """The ladder of one model: rows K, K_M for each M, the ODE (or why not), the truth.
    ``max_rows``: trajectories computed at once (memory), by default the model's."""
    max_rows = max_rows or model.max_rows
    chunk = min(len(model.test_x), max_rows)
    start = time.time()
    k = single_trajectory_bound(model, jax.random.fold_in(key, 0), chunk, k_draws)
    kind = f"lower bound: all KL terms summed, one forward sample per term, mean of {k_draws} draws"
    rows = [_row(model, "K", kind, k, time.time() - start, k)]
    for m in ms:
        start = time.time()
        values = importance_bound(model, m, jax.random.fold_in(key, m), max_rows)
        kind = f"lower bound in expectation: importance-weighted, {m} trajectories per example"
        rows.append(_row(model, f"K_{m}", kind, values, time.time() - start, k))
    if model.eps_fn is not None:
        start = time.time()
        # A tag no M reaches, so the ODE's dequantisation and probes are independent of K_M's.
        values = ode_bound(model, jax.random.fold_in(key, 0xFFFFFFFF), chunk, rtol, atol)
        divergence = (
            "exact divergence"
            if model.pixels is None
            else ("uniform dequantisation, Hutchinson divergence with one Rademacher probe")
        )
        kind = (
            f"log p of the continuous-time probability-flow ODE ({divergence}; Tsit5, rtol "
            f"{rtol:g}, atol {atol:g} per example): another model than the discrete chain, "
            "not a bound on it"
        )
        rows.append(_row(model, "ODE", kind, values, time.time() - start, k))
    if model.truth is not None:
        rows.append(_row(model, "truth", model.truth_kind, model.truth, 0.0, k))
    return {
        "model": model.label,
        "experiment": model.experiment,
        "T": model.schedule.num_steps,
        "train_steps": model.train_steps,
        "units": model.units,
        "num_test_examples": len(model.test_x),
        "ode": "computed" if model.eps_fn is not None else f"not applicable: {model.no_ode}",
        "rows": rows,
    }


def table(result: dict) -> str:
    """One model's ladder as Markdown; digit runs add the 8-bit NLL in bits/dim."""
    digits = "nll_bits_per_dim_8bit" in result["rows"][0]
    head = "| estimate | mean ± SE | gap truth − estimate | share of K's gap closed | seconds |"
    rule = "|---|---|---|---|---|"
    if digits:
        head = "| estimate | mean ± SE | NLL, bits/dim (8-bit) | NLL − K's NLL | seconds |"
    lines = [
        f"{result['model']} ({result['train_steps']:,} training steps), "
        f"{result['num_test_examples']} test examples, {result['units']}",
        "",
        head,
        rule,
    ]

    def pm(row, key, scale=1.0, digits_=3):
        if key not in row:
            return ""
        se = row["stderr" if key == "mean" else key + "_stderr"]
        return f"{scale * row[key]:.{digits_}f} ± {scale * se:.{digits_}f}"

    for row in result["rows"]:
        if digits:
            middle = [pm(row, "nll_bits_per_dim_8bit"), pm(row, "nll_minus_K_nll")]
        else:
            closed = row["name"] not in ("K", "truth")
            middle = [
                pm(row, "gap_truth_minus"),
                pm(row, "fraction_of_K_gap_closed", 100, 1) + " %" if closed else "",
            ]
        cells = [row["name"], pm(row, "mean"), *middle, f"{row['seconds']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if result["ode"] != "computed":
        lines += ["", f"ODE: {result['ode']}."]
    return "\n".join(lines)


def figure(results: list[dict], path: Path, title: str) -> Path:
    """K_M against M for every model, with K, the ODE value and the truth as lines."""
    curves = []
    for r in results:
        rows = {row["name"]: row for row in r["rows"]}
        ms = [int(n[2:]) for n in rows if n.startswith("K_")]
        curves.append(
            plotting.LadderCurve(
                label=r["model"],
                m=ms,
                mean=[rows[f"K_{m}"]["mean"] for m in ms],
                stderr=[rows[f"K_{m}"]["stderr"] for m in ms],
                k=rows["K"]["mean"],
                ode=rows["ODE"]["mean"] if "ODE" in rows else None,
                gap=[rows[f"K_{m}"].get("gap_truth_minus") for m in ms]
                if "truth" in rows
                else None,
                gap_stderr=[rows[f"K_{m}"].get("gap_truth_minus_stderr") for m in ms]
                if "truth" in rows
                else None,
            )
        )
    truths = {
        next((row["mean"] for row in r["rows"] if row["name"] == "truth"), None) for r in results
    }
    # One truth line only where every run has the same test points (the same truth).
    truth = truths.pop() if len(truths) == 1 else None
    plotting.ladder_figure(path, curves, truth, units=results[0]["units"], title=title)
    return path


def _parse(argv):
    parser = argparse.ArgumentParser(
        prog="python -m experiments.ladder", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--workdir", required=True, help="where ladder.json and the figure go")
    parser.add_argument("--run", action="append", help="a finished run's workdir (repeatable)")
    parser.add_argument(
        "--redraw",
        action="store_true",
        help="only rewrite ladder.md and the figure from --workdir's ladder.json",
    )
    parser.add_argument(
        "--num_test", type=int, default=1000, help="first N test points of each run"
    )
    parser.add_argument(
        "--m", default=",".join(map(str, DEFAULT_M)), help="comma-separated M of K_M"
    )
    parser.add_argument(
        "--max_rows",
        type=int,
        default=None,
        help="trajectories computed at once (memory; default 131072 for 2-D and heartbeat "
        "data, 64 for digits)",
    )
    parser.add_argument("--rtol", type=float, default=1e-5, help="ODE solver relative tolerance")
    parser.add_argument("--atol", type=float, default=1e-5, help="ODE solver absolute tolerance")
    parser.add_argument(
        "--k_draws", type=int, default=10, help="independent draws averaged in K's estimate"
    )
    parser.add_argument("--seed", type=int, default=0, help="the ladder's PRNG seed")
    parser.add_argument("--title", default="", help="the figure's title")
    args = parser.parse_args(argv)
    if not args.run and not args.redraw:
        parser.error("give at least one --run (a finished run's workdir), or --redraw")
    try:
        ms = tuple(int(m) for m in args.m.split(","))
    except ValueError:
        parser.error(f"--m must be comma-separated integers, got {args.m!r}")
    if min(ms) < 1:
        parser.error(f"every M must be >= 1 (num_samples of K_M), got {args.m}")
    if args.k_draws < 1:
        parser.error(f"--k_draws must be >= 1, got {args.k_draws}")
    if args.num_test < 2:
        parser.error(f"--num_test must be >= 2 (standard errors need two), got {args.num_test}")
    if not (args.rtol > 0 and args.atol > 0):
        parser.error(f"the solver tolerances must be positive, got {args.rtol}, {args.atol}")
    return args, ms


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args, ms = _parse(argv)
    workdir = Path(args.workdir)
    if args.redraw:
        path = workdir / "ladder.json"
        if not path.exists():
            common.fail(f"{path} does not exist: run the ladder first (--run ...).")
        out = json.loads(path.read_text())
        title = args.title or out.get("title", "The likelihood ladder")
        fig = figure(out["models"], workdir / out["figure"], title)
        (workdir / "ladder.md").write_text(tables(out))
        print(f"wrote {workdir / 'ladder.md'} and {fig}")
        return
    key = jax.random.key(args.seed)
    results = []
    try:
        for i, run in enumerate(args.run):
            model = load_model(Path(run), args.num_test)
            result = ladder(
                model,
                jax.random.fold_in(key, i),
                ms,
                max_rows=args.max_rows,
                rtol=args.rtol,
                atol=args.atol,
                k_draws=args.k_draws,
            )
            result["run"] = run
            results.append(result)
            print(table(result), end="\n\n", flush=True)
    except (FileNotFoundError, ValueError) as e:
        common.fail(str(e))
    workdir.mkdir(parents=True, exist_ok=True)
    title = args.title or "The likelihood ladder"
    fig = figure(results, workdir / "figures" / "ladder.png", title)
    out = {
        "command": shlex.join(["python", "-m", "experiments.ladder", *argv]),
        "hardware": common.hardware(),
        "seconds_kind": "wall seconds of each estimate on this hardware, compilation included",
        "models": results,
        "figure": str(fig.relative_to(workdir)),
        "title": title,
    }
    rundir.write_json_atomic(workdir / "ladder.json", out)
    (workdir / "ladder.md").write_text(tables(out))
    print(f"wrote {workdir / 'ladder.json'}, ladder.md and {fig}")


def tables(ladder_json: dict) -> str:
    """Every model's table of a ladder.json, as docs/likelihood_ladder.md shows them."""
    return "\n\n".join(table(m) for m in ladder_json["models"]) + "\n"


if __name__ == "__main__":
    main()
