"""Sample quality of improved DDPM / ADM runs on the digits: loss, sampling steps, guidance.

  python -m experiments.adm_quality --workdir runs/adm/quality \
      --simple runs/adm/simple --hybrid runs/adm/hybrid --cfg runs/adm/cfg

Reads finished ``experiments.adm`` runs and measures, each against the held-out test split:

* **hybrid versus L_simple**: the runs' exact bounds (bits/dim, from their results.json)
  beside the Fréchet distance of their 1000-step ancestral samples;
* **steps versus quality**: the Fréchet distance of 1000-step ancestral sampling and of
  250, 100, 50, 25 respaced ancestral and DDIM (eta = 0) steps, for both runs;
* **guidance** (ADM Fig. 4): the accuracy of an independent classifier on samples asked
  for class y = i mod 10, and their Fréchet distance, against the scale s, for classifier
  guidance (a noise-aware classifier trained here, on the hybrid run's schedule, guiding
  the unconditional hybrid model; ADM Algorithm 1) and for classifier-free guidance (the
  ``cfg`` run: eps_u + s (eps_c - eps_u)).

Features: the penultimate layer of a classifier trained here on the clean training digits
(``dpm_jax.models.feature_net``); its Fréchet distances compare models on these digits only,
not with published FIDs (InceptionV3 features; ``docs/reproduction.md`` says what to plug
in). The same classifier gives the accuracies. Samples are quantised to 8 bits like the
data. Every finished row is saved at once to ``quality.json``, so a stopped run resumes;
``--redraw`` rewrites the figures and ``quality.md`` from it.
"""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import sys
import time
from pathlib import Path

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from dpm_jax import gaussian, guidance, likelihood, plotting, rundir, sample_quality, train_state
from dpm_jax.data.batching import gather_labelled, train_batch_indices
from dpm_jax.models import adm_unet, feature_net
from experiments import adm, common
from experiments import config as cfg
from experiments.adm_config import ADMConfig

STEPS = (250, 100, 50, 25)
SCALES = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
NUM_CLASSES = 10
BOOTSTRAP = 50
#: The noise-aware classifier: the ADM encoder at the diffusion models' width.
NOISY_CLASSIFIER = adm_unet.ADMConfig(
    model_channels=32,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(4,),
    num_head_channels=32,
)


# ----------------------------------------------------------------------------------------------
# Runs and data.


def load_run(run_dir: Path, kind: str) -> tuple[ADMConfig, dict, dict]:
    """(config, EMA parameters, results.json) of a finished ``experiments.adm`` run."""
    run_dir = Path(run_dir)
    path = run_dir / "results.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: --{kind} must be the workdir of a finished run of "
            "python -m experiments.adm."
        )
    results = json.loads(path.read_text())
    if results.get("experiment") != "adm":
        raise ValueError(f"{run_dir} is a run of {results.get('experiment')!r}, not adm.")
    config = cfg.from_json(ADMConfig(), results["config"])
    state = adm.restore(config, run_dir)
    return config, train_state.eval_params(state, config.train.ema_decay), results


def labelled_split(config: ADMConfig, split: str) -> tuple[jax.Array, np.ndarray]:
    """(images in model units (N, H, W, C), labels (N,)) of the run's data split."""
    source = adm.experiment.load_split(config, split)
    batch = gather_labelled(source, np.arange(len(source)))
    return adm.to_model(batch["image"]), batch["label"]


def quantise(x: jax.Array) -> jax.Array:
    """Samples clipped to [-1, 1] and rounded to the 256 bin centres, as saved images are."""
    return jnp.round((jnp.clip(x, -1.0, 1.0) + 1.0) * 127.5) / 127.5 - 1.0


# ----------------------------------------------------------------------------------------------
# Classifiers.


def train_classifier(loss_fn, params, images, labels, *, steps: int, batch: int, key, desc: str):
    """Adam (1e-3, cosine decay) on ``loss_fn(params, x, y, key)`` over shuffled batches."""
    tx = optax.adam(optax.cosine_decay_schedule(1e-3, steps))
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, x, y, key):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y, key)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    bar = tqdm(range(steps), desc=desc, dynamic_ncols=True)
    for i in bar:
        idx = train_batch_indices(len(images), batch, 0, i)
        params, opt, loss = step(params, opt, images[idx], labels[idx], jax.random.fold_in(key, i))
        if i % 100 == 0:
            bar.set_postfix(loss=f"{float(loss):.4f}")
    return params


def _cached(path: Path, params, train):
    """The parameters stored at ``path``, else ``train()``'s, stored there."""
    if path.exists():
        return flax.serialization.from_bytes(params, path.read_bytes())
    params = train()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(flax.serialization.to_bytes(params))
    return params


def feature_classifier(workdir: Path, train_x, train_y, key, steps: int = 3000):
    """The feature network trained on the clean training digits (cached in ``workdir``)."""
    net = feature_net.FeatureClassifier(NUM_CLASSES)
    params = net.init(key, train_x[:1])["params"]

    def loss(p, x, y, _):
        logits, _ = net.apply({"params": p}, x)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    params = _cached(
        workdir / "classifiers" / "features.msgpack",
        params,
        lambda: train_classifier(
            loss, params, train_x, train_y, steps=steps, batch=128, key=key, desc="features"
        ),
    )
    apply = jax.jit(lambda x: net.apply({"params": params}, x))
    return apply


def noisy_classifier(workdir: Path, config: ADMConfig, train_x, train_y, key, steps: int = 4000):
    """ADM's noise-aware classifier on x_t, t ~ U{1..T} of ``config``'s schedule (cached)."""
    net = adm_unet.NoisyClassifier(NOISY_CLASSIFIER, NUM_CLASSES)
    sched = adm.schedule(config)
    params = net.init(key, train_x[:1], jnp.ones((1,), jnp.int32))["params"]

    def loss(p, x0, y, key):
        key_t, key_eps = jax.random.split(key)
        t = jax.random.randint(key_t, (x0.shape[0],), 1, sched.num_steps + 1)
        x_t = gaussian.q_sample(sched, x0, t, jax.random.normal(key_eps, x0.shape))
        logits = net.apply({"params": p}, x_t, t)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    params = _cached(
        workdir / "classifiers" / "noisy.msgpack",
        params,
        lambda: train_classifier(
            loss, params, train_x, train_y, steps=steps, batch=64, key=key, desc="noisy classifier"
        ),
    )
    return lambda x, t: net.apply({"params": params}, x, t), sched


# ----------------------------------------------------------------------------------------------
# Metrics.


def _fd_bootstrap_se(real: np.ndarray, fake: np.ndarray, key: int) -> float:
    """Standard deviation of the Fréchet distance over bootstrap resamples of the samples."""
    rng = np.random.default_rng(key)
    stats_real = sample_quality.feature_statistics(real)
    values = [
        sample_quality.frechet_distance(
            *stats_real,
            *sample_quality.feature_statistics(fake[rng.integers(0, len(fake), len(fake))]),
        )
        for _ in range(BOOTSTRAP)
    ]
    return float(np.std(values, ddof=1))


def quality(features_fn, real_features: np.ndarray, samples, labels=None) -> dict:
    """Fréchet distance (with its bootstrap SE), precision, recall and, given the labels the
    samples were asked for, the classifier's accuracy on them."""
    logits, fake = features_fn(samples)
    fake = np.asarray(fake, np.float64)
    precision, recall = sample_quality.precision_recall(real_features, fake)
    row = {
        "frechet_distance": sample_quality.frechet_distance_of_features(real_features, fake),
        "frechet_distance_bootstrap_se": _fd_bootstrap_se(real_features, fake, 0),
        "precision": precision,
        "recall": recall,
        "num_samples": int(len(fake)),
    }
    if labels is not None:
        hits = (np.argmax(np.asarray(logits), axis=1) == np.asarray(labels)).astype(np.float64)
        row["accuracy"], row["accuracy_stderr"] = likelihood.mean_and_stderr(hits)
    return row


# ----------------------------------------------------------------------------------------------
# The three studies.


def cfg_model(config: ADMConfig, params, y, scale: float):
    """Classifier-free guidance as a model: eps_u + s (eps_c - eps_u) in one batched call;
    the learned variance is the conditional model's."""
    scale = guidance.check_scale(scale)
    guidance.check_labels(y, NUM_CLASSES)
    null = jnp.full_like(y, config.model.null_class)
    both = adm.model_fn(config, params, y=jnp.concatenate([y, null]))
    learned = config.diffusion.variance == "learned_range"

    def fn(x, t):
        out = both(jnp.concatenate([x, x]), jnp.concatenate([t, t]))
        eps, v = out if learned else (out, None)
        eps_c, eps_u = jnp.split(eps, 2)
        eps = eps_u + scale * (eps_c - eps_u)
        return (eps, jnp.split(v, 2)[0]) if learned else eps

    return fn


class Study:
    """The rows of ``quality.json``, saved after each one."""

    def __init__(self, workdir: Path, command: str):
        self.path = workdir / "quality.json"
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.data.update(command=command, hardware=common.hardware())

    def row(self, section: str, name: str, compute) -> dict:
        rows = self.data.setdefault(section, {})
        if name not in rows:
            start = time.time()
            rows[name] = compute()
            rows[name]["seconds"] = time.time() - start
            rundir.write_json_atomic(self.path, self.data)
            print(f"{section} / {name}: {_short(rows[name])}", flush=True)
        return rows[name]


def _short(row: dict) -> str:
    keys = ("frechet_distance", "accuracy", "precision", "recall", "seconds")
    return ", ".join(f"{k} {row[k]:.3f}" for k in keys if k in row)


def run(args, command: str) -> dict:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    study = Study(workdir, command)
    key = jax.random.key(args.seed)
    runs = {}

    def loaded(name: str):  # each run when first needed, so a study can start before the last
        if name not in runs:
            runs[name] = load_run(Path(getattr(args, name)), name)
            if runs[name][0].data != loaded("hybrid")[0].data:
                raise ValueError(f"--{name} was trained on other data than --hybrid.")
        return runs[name]

    base_config = loaded("hybrid")[0]
    train_x, train_y = labelled_split(base_config, "train")
    test_x, test_y = labelled_split(base_config, "test")
    features_fn = feature_classifier(
        workdir, train_x, train_y, jax.random.fold_in(key, 1), args.classifier_steps
    )
    test_logits, real = features_fn(test_x)
    real = np.asarray(real, np.float64)
    study.data["feature_classifier"] = {
        "test_accuracy": float(np.mean(np.argmax(np.asarray(test_logits), 1) == test_y)),
        "num_test": int(len(test_y)),
        "num_features": int(real.shape[1]),
    }
    study.row("reference", "training images", lambda: quality(features_fn, real, train_x, train_y))
    n = args.num_samples
    asked = jnp.arange(n, dtype=jnp.int32) % NUM_CLASSES

    def sampled(config, model, k, **kwargs):
        return quantise(jax.jit(lambda k: adm.generate(config, model, k, n, **kwargs))(k))

    def measured(samples_fn, section, name, labels=None):
        def compute():
            samples = samples_fn()
            save_samples(workdir, section, name, samples)
            return quality(features_fn, real, samples, labels)

        return compute

    for i, name in enumerate(("simple", "hybrid")):
        config, params, results = loaded(name)
        model = adm.model_fn(config, params)
        study.data.setdefault("bits_per_dim", {})[name] = {
            "nll_bits_per_dim": results["nll_bits_per_dim"],
            "nll_bits_per_dim_stderr": results["nll_bits_per_dim_stderr"],
            "num_test_examples": results["num_test_examples"],
            "diffusion.loss": config.diffusion.loss,
            "diffusion.variance": config.diffusion.variance,
            "T": config.diffusion.steps,
        }
        k_model = jax.random.fold_in(key, 10 + i)
        configs = [("ancestral", config.diffusion.steps)]
        configs += [(m, s) for m in ("ancestral", "ddim") for s in args.steps]
        for method, steps in configs:
            draw = functools.partial(
                sampled, config, model, k_model, method=method, num_steps=steps
            )
            section, row = f"steps/{name}", f"{method} {steps}"
            study.row(section, row, measured(draw, section, row))
    # Guidance: respaced ancestral sampling, labels y = i mod 10.
    config, params, _ = loaded("hybrid")
    logits_fn, sched = noisy_classifier(
        workdir, config, train_x, train_y, jax.random.fold_in(key, 2), args.classifier_steps
    )
    study.data["noisy_classifier_test_accuracy"] = noisy_accuracy(
        logits_fn, sched, test_x, test_y, key
    )
    grad_fn = guidance.classifier_grad(logits_fn, asked, NUM_CLASSES)
    model = adm.model_fn(config, params)
    k_guide = jax.random.fold_in(key, 20)
    for s in args.scales:
        draw = functools.partial(
            sampled,
            config,
            model,
            k_guide,
            num_steps=args.guidance_steps,
            grad_fn=grad_fn,
            guidance_scale=s,
        )
        study.row(
            "guidance/classifier", f"{s:g}", measured(draw, "guidance/classifier", f"{s:g}", asked)
        )
    config, params, _ = loaded("cfg")
    for s in args.scales:
        guided = cfg_model(config, params, asked, s)
        draw = functools.partial(sampled, config, guided, k_guide, num_steps=args.guidance_steps)
        section = "guidance/classifier_free"
        study.row(section, f"{s:g}", measured(draw, section, f"{s:g}", asked))
    study.data["guidance_sampler"] = f"{args.guidance_steps}-step respaced ancestral"
    rundir.write_json_atomic(study.path, study.data)
    return study.data


#: Samples kept per row for the figures.
KEPT_SAMPLES = 20


def _samples_path(workdir: Path, section: str, name: str) -> Path:
    return workdir / "samples" / f"{section.replace('/', '__')}__{name.replace(' ', '_')}.npy"


def save_samples(workdir: Path, section: str, name: str, samples) -> None:
    """The first :data:`KEPT_SAMPLES` samples of a row as uint8, for the figures."""
    path = _samples_path(workdir, section, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.round((np.asarray(samples[:KEPT_SAMPLES]) + 1.0) * 127.5).astype(np.uint8)
    np.save(path, pixels)


def samples_figure(workdir: Path, data: dict, section: str, path: Path, title: str) -> Path | None:
    """Labelled rows of the kept samples of each row of ``section``."""
    rows = []
    order = float if section.startswith("guidance") else _sampler_order
    for name in sorted(data.get(section, {}), key=order):
        file = _samples_path(workdir, section, name)
        if file.exists():
            label = f"s = {name}" if section.startswith("guidance") else name
            rows.append((label, np.load(file).astype(np.float32) / 255.0))
    if not rows:
        return None
    plotting.image_rows(path, rows, title=title)
    return path


def noisy_accuracy(logits_fn, sched, test_x, test_y, key) -> dict:
    """The noise-aware classifier's test accuracy at a few t (one noise draw per image)."""
    out = {}
    num_steps = sched.num_steps
    for t in (1, num_steps // 4, num_steps // 2, 3 * num_steps // 4):
        tt = jnp.full((len(test_y),), t, jnp.int32)
        x_t = gaussian.q_sample(
            sched, test_x, tt, jax.random.normal(jax.random.fold_in(key, t), test_x.shape)
        )
        hits = np.argmax(np.asarray(logits_fn(x_t, tt)), 1) == test_y
        out[f"t={t}"] = float(np.mean(hits))
    return out


# ----------------------------------------------------------------------------------------------
# Figures, tables, command line.


def steps_figure(data: dict, path: Path) -> Path:
    """Fréchet distance against sampling steps: respaced ancestral and DDIM, both losses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, colour in (("simple", "tab:blue"), ("hybrid", "tab:orange")):
        rows = data.get(f"steps/{name}", {})
        for method, style in (("ancestral", "-o"), ("ddim", "--s")):
            pts = sorted((int(k.split()[1]), r) for k, r in rows.items() if k.split()[0] == method)
            if pts:
                ax.errorbar(
                    [p[0] for p in pts],
                    [p[1]["frechet_distance"] for p in pts],
                    yerr=[p[1]["frechet_distance_bootstrap_se"] for p in pts],
                    fmt=style,
                    color=colour,
                    label=f"L_{name}, {method}",
                    capsize=2,
                )
    ref = data.get("reference", {}).get("training images")
    if ref:
        ax.axhline(ref["frechet_distance"], color="grey", lw=1, label="training images")
    ax.set_xscale("log")
    ax.set_xlabel("sampling steps")
    ax.set_ylabel("Fréchet distance (digit-classifier features)")
    ax.set_title("Sampling steps versus sample quality (lower is better)")
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def guidance_figure(data: dict, path: Path) -> Path:
    """Accuracy and Fréchet distance against the guidance scale (ADM Fig. 4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, label in (
        ("classifier", "classifier guidance"),
        ("classifier_free", "classifier-free"),
    ):
        rows = data.get(f"guidance/{name}", {})
        pts = sorted((float(k), r) for k, r in rows.items())
        if not pts:
            continue
        s = [p[0] for p in pts]
        axes[0].errorbar(
            s,
            [p[1]["accuracy"] for p in pts],
            yerr=[p[1]["accuracy_stderr"] for p in pts],
            fmt="-o",
            label=label,
            capsize=2,
        )
        axes[1].errorbar(
            s,
            [p[1]["frechet_distance"] for p in pts],
            yerr=[p[1]["frechet_distance_bootstrap_se"] for p in pts],
            fmt="-o",
            label=label,
            capsize=2,
        )
    axes[0].set_ylabel("accuracy of an independent classifier")
    axes[1].set_ylabel("Fréchet distance (lower is better)")
    scales = sorted(
        {float(k) for n in ("classifier", "classifier_free") for k in data.get(f"guidance/{n}", {})}
    )
    for ax in axes:
        ax.set_xlabel("guidance scale s")
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xticks(scales, [f"{s:g}" for s in scales])
        ax.legend(fontsize=8)
    fig.suptitle("Guidance: fidelity against diversity (ADM Fig. 4), digits")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _sampler_order(key: str) -> tuple[int, int]:
    """ "ancestral 1000" before "ancestral 250" before ... before "ddim 250" ..."""
    method, steps = key.split()
    return (method != "ancestral", -int(steps))


def _pm(row: dict, key: str, se: str, digits: int = 2) -> str:
    return f"{row[key]:.{digits}f} ± {row[se]:.{digits}f}"


def tables(data: dict) -> str:
    """quality.md: the tables of ``quality.json``."""
    lines = [f"Command: `{data['command']}`", ""]
    fc = data["feature_classifier"]
    lines += [
        f"Feature classifier: {fc['num_features']} features, test accuracy "
        f"{fc['test_accuracy']:.3f} on {fc['num_test']} test digits.",
        "",
        "| model | NLL bits/dim (exact bound) | FD, T-step ancestral | precision | recall |",
        "|---|---|---|---|---|",
    ]
    for name in ("simple", "hybrid"):
        b = data["bits_per_dim"][name]
        steps = data[f"steps/{name}"]
        row = steps[f"ancestral {b['T']}"]
        lines.append(
            f"| L_{name} | {_pm(b, 'nll_bits_per_dim', 'nll_bits_per_dim_stderr', 3)} | "
            f"{_pm(row, 'frechet_distance', 'frechet_distance_bootstrap_se')} | "
            f"{row['precision']:.2f} | {row['recall']:.2f} |"
        )
    ref = data["reference"]["training images"]
    lines += [
        f"| training images | | {_pm(ref, 'frechet_distance', 'frechet_distance_bootstrap_se')} | "
        f"{ref['precision']:.2f} | {ref['recall']:.2f} |",
        "",
        "| sampler | steps | FD, L_simple | FD, L_hybrid |",
        "|---|---|---|---|",
    ]
    for key in sorted(data["steps/hybrid"], key=_sampler_order):
        method, steps = key.split()
        cells = [
            _pm(data[f"steps/{n}"][key], "frechet_distance", "frechet_distance_bootstrap_se")
            if key in data.get(f"steps/{n}", {})
            else ""
            for n in ("simple", "hybrid")
        ]
        lines.append(f"| {method} | {steps} | {cells[0]} | {cells[1]} |")
    lines += [
        "",
        f"Guidance ({data.get('guidance_sampler', '')}, samples asked for y = i mod 10):",
        "",
        "| s | classifier: accuracy | classifier: FD | classifier-free: accuracy | classifier-free: FD |",
        "|---|---|---|---|---|",
    ]
    for s in sorted(data.get("guidance/classifier", {}), key=float):
        cells = []
        for name in ("classifier", "classifier_free"):
            r = data.get(f"guidance/{name}", {}).get(s)
            cells += (
                [
                    _pm(r, "accuracy", "accuracy_stderr", 3),
                    _pm(r, "frechet_distance", "frechet_distance_bootstrap_se"),
                ]
                if r
                else ["", ""]
            )
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _parse(argv):
    parser = argparse.ArgumentParser(
        prog="python -m experiments.adm_quality", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--workdir", required=True, help="where quality.json and figures go")
    parser.add_argument("--simple", help="a finished adm run trained with L_simple")
    parser.add_argument("--hybrid", help="a finished adm run trained with L_hybrid")
    parser.add_argument("--cfg", help="a finished class-conditional adm run with label dropout")
    parser.add_argument("--num_samples", type=int, default=500, help="samples per row")
    parser.add_argument(
        "--guidance_steps", type=int, default=100, help="respaced steps when guiding"
    )
    parser.add_argument(
        "--scales", type=float, nargs="+", default=list(SCALES), help="guidance scales"
    )
    parser.add_argument(
        "--steps", type=int, nargs="+", default=list(STEPS), help="respaced step counts"
    )
    parser.add_argument(
        "--classifier_steps", type=int, default=3000, help="training steps of each classifier"
    )
    parser.add_argument("--seed", type=int, default=0, help="the study's PRNG seed")
    parser.add_argument("--redraw", action="store_true", help="redraw from quality.json only")
    args = parser.parse_args(argv)
    if not args.redraw and not (args.simple and args.hybrid and args.cfg):
        parser.error("--simple, --hybrid and --cfg are required (or --redraw).")
    if args.num_samples < 20:
        parser.error(f"--num_samples must be >= 20, got {args.num_samples}.")
    if args.classifier_steps < 1:
        parser.error(f"--classifier_steps must be >= 1, got {args.classifier_steps}.")
    for s in args.scales:
        try:
            guidance.check_scale(s)
        except ValueError as e:
            parser.error(str(e))
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(argv)
    workdir = Path(args.workdir)
    if args.redraw:
        path = workdir / "quality.json"
        if not path.exists():
            common.fail(f"{path} does not exist: run the study first.")
        data = json.loads(path.read_text())
    else:
        try:
            data = run(args, shlex.join(["python", "-m", "experiments.adm_quality", *argv]))
        except (FileNotFoundError, ValueError) as e:
            common.fail(str(e))
    steps_figure(data, workdir / "figures" / "steps.png")
    for section, title in (
        ("steps/hybrid", "L_hybrid samples by sampler and steps"),
        ("steps/simple", "L_simple samples by sampler and steps"),
        ("guidance/classifier", "Classifier guidance: samples asked for 0, 1, ..., 9, 0, ..."),
        (
            "guidance/classifier_free",
            "Classifier-free guidance: samples asked for 0, 1, ..., 9, 0, ...",
        ),
    ):
        name = section.replace("/", "_")
        samples_figure(workdir, data, section, workdir / "figures" / f"{name}.png", title)
    guidance_figure(data, workdir / "figures" / "guidance.png")
    (workdir / "quality.md").write_text(tables(data))
    print(f"wrote {workdir / 'quality.md'} and {workdir / 'figures'}")


if __name__ == "__main__":
    main()
