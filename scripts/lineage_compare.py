"""The lineage on equal footing: a 2015 run and a DDPM run on the same test digits, side by side.

  python scripts/lineage_compare.py --dpm2015 runs/lineage/dpm2015 --ddpm runs/lineage/ddpm \
      --out docs/runs/lineage --figure docs/figures/lineage_samples.png

Reads each run's ``results.json`` (``experiments.mnist`` and ``experiments.ddpm``), checks
that both bounded the same held-out images, and writes ``comparison.json`` (both upper
bounds on -log2 P(8-bit pixels) per dimension, their difference with its standard error,
and the per-pixel categorical baseline) and one figure with both runs' sample grids.

The 2015 number is a density bound on dequantised data turned into a codelength of the
8-bit data (-K/D - log2(scale/256)); DDPM's is a codelength of the 8-bit data directly
(discretised decoder). Both are upper bounds on the same -log2 P(x)/D, so they compare.
The difference's standard error treats the two runs' per-image errors as independent;
they are evaluated on the same images, where the per-image bounds correlate positively, so
this overstates it.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _load(workdir: Path, experiment: str) -> dict:
    path = workdir / "results.json"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run python -m experiments.{experiment} first.")
    results = json.loads(path.read_text())
    if results.get("experiment") != experiment:
        raise SystemExit(f"{path} holds a {results.get('experiment')!r} run, not {experiment!r}.")
    return results


def compare(old: dict, new: dict) -> dict:
    """The two bounds in bits/dim of the 8-bit data, the difference (2015 - DDPM) and its SE."""
    for key in ("num_test_examples", "test_set_size"):
        if old[key] != new[key]:
            raise SystemExit(f"the runs differ in {key}: {old[key]} and {new[key]}.")
    for key in ("data.source", "eval.num_test"):
        if old["config"][key] != new["config"][key]:
            raise SystemExit(
                f"the runs differ in {key}: {old['config'][key]} and {new['config'][key]}."
            )
    a, sa = old["nll_bits_per_dim_8bit"], old["nll_bits_per_dim_8bit_stderr"]
    b, sb = new["nll_bits_per_dim"], new["nll_bits_per_dim_stderr"]

    def run(r, nll, se, name):
        return {
            "model": name,
            "nll_bits_per_dim": nll,
            "nll_bits_per_dim_stderr": se,
            "train_steps": r["train_steps"],
            "batch_size": r["config"]["train.batch_size"],
            "num_parameters": r["num_parameters"],
            "command": r["command"],
        }

    return {
        "units": "bits per dimension of the 8-bit test digits; upper bounds on -log2 P(x) / D",
        "num_test_examples": old["num_test_examples"],
        "test_set_size": old["test_set_size"],
        "dpm2015": run(old, a, sa, "2015 multi-scale convolutional network (reference code)"),
        "ddpm": run(new, b, sb, "DDPM U-Net, epsilon prediction, L_simple"),
        "difference_2015_minus_ddpm": a - b,
        "difference_stderr": math.hypot(sa, sb),
        "difference_stderr_kind": "independent errors assumed (the same images: conservative)",
        "dpm2015_floor_bits_per_dim": old["nll_bits_per_dim_8bit_floor"],
        "pixel_categorical_bits_per_dim": old["pixel_categorical_nll_bits_per_dim_8bit"],
        "pixel_categorical_bits_per_dim_stderr": old[
            "pixel_categorical_nll_bits_per_dim_8bit_stderr"
        ],
    }


def figure(path: Path, grids: list[Path], titles: list[str]) -> None:
    """The runs' sample grids in one row, each under its title."""
    fig, axes = plt.subplots(1, len(grids), figsize=(6 * len(grids), 6.6))
    for ax, grid, title in zip(axes, grids, titles, strict=True):
        ax.imshow(plt.imread(grid), interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dpm2015", type=Path, required=True, help="an experiments.mnist run")
    parser.add_argument("--ddpm", type=Path, required=True, help="an experiments.ddpm run")
    parser.add_argument("--out", type=Path, required=True, help="folder for comparison.json")
    parser.add_argument("--figure", type=Path, required=True, help="the side-by-side figure")
    args = parser.parse_args(argv)
    old, new = _load(args.dpm2015, "mnist"), _load(args.ddpm, "ddpm")
    result = compare(old, new)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "comparison.json").write_text(json.dumps(result, indent=2) + "\n")
    grids = [
        workdir / next(f for f in r["figures"] if "_samples" in f)
        for workdir, r in ((args.dpm2015, old), (args.ddpm, new))
    ]
    titles = [
        f"2015 network, {old['train_steps']:,} steps: NLL <= {result['dpm2015']['nll_bits_per_dim']:.3f} "
        f"+- {result['dpm2015']['nll_bits_per_dim_stderr']:.3f} bits/dim",
        f"DDPM U-Net, {new['train_steps']:,} steps: NLL <= {result['ddpm']['nll_bits_per_dim']:.3f} "
        f"+- {result['ddpm']['nll_bits_per_dim_stderr']:.3f} bits/dim",
    ]
    figure(args.figure, grids, titles)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
