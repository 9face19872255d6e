"""Every ``module.function`` of this project that the README or docs/ name exists; a dotted
config key they name (``train.steps``) is a key of some experiment's config."""

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
NAME = re.compile(
    r"`((?:dpm_jax\.|experiments\.)?[a-z_]+(?:\.[A-Za-z_][A-Za-z0-9_]*)+)(?:\([^`]*\))?`"
)
FILE_SUFFIXES = {"json", "jsonl", "py", "md", "png", "npz", "npy", "txt", "gz", "csv", "sh"}
# Names outside this project that the docs may mention; anything else must resolve here.
THIRD_PARTY = {
    "jax",
    "lax",
    "jnp",
    "np",
    "numpy",
    "tfds",
    "optax",
    "orbax",
    "ocp",
    "flax",
    "nn",
    "chex",
    "diffrax",
    "scipy",
    "sklearn",
    "mlxtend",
    "torch",
    "tf",
    "ml_collections",
    "os",
    "sys",
    "fcntl",
    "pytest",
    "plt",
    "matplotlib",
    "tqdm",
    "multihost_utils",
    "big_vision",
    "guided_diffusion",
    "improved_diffusion",
    "diffusion_tf",
    "vdm",
}


def _our_modules() -> dict[str, str]:
    """Short name -> importable path for every module and package of dpm_jax and experiments."""
    names = {"dpm_jax": "dpm_jax", "experiments": "experiments"}
    for package in ("dpm_jax", "experiments"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            dotted = ".".join(parts)
            names.setdefault(parts[-1], dotted)
            names[dotted] = dotted
    return names


def _config_keys() -> set[str]:
    """Every dotted config key of every experiment (``experiments.config.flatten``)."""
    from experiments import all_experiments
    from experiments import config as cfg

    return {k for e in all_experiments().values() for k in cfg.flatten(e.config_class())}


def _named_objects():
    modules = _our_modules()
    config_keys = _config_keys()
    found = []
    for doc in DOCS:
        for name in NAME.findall(doc.read_text()):
            parts = name.split(".")
            if parts[-1] in FILE_SUFFIXES or name in config_keys:
                continue
            if parts[0] in THIRD_PARTY:
                continue
            # The longest prefix that is one of our modules; none: a module that does not exist.
            for cut in range(len(parts), 0, -1):
                prefix = ".".join(parts[:cut])
                if prefix in modules:
                    found.append((doc.name, name, modules[prefix], parts[cut:]))
                    break
            else:
                found.append((doc.name, name, None, parts))
    return found


NAMED = _named_objects()


def test_the_docs_name_some_of_our_functions():
    assert len(NAMED) > 20


@pytest.mark.parametrize(
    "doc, name, module, attrs", NAMED, ids=[f"{d}:{n}" for d, n, _, _ in NAMED]
)
def test_named_object_exists(doc, name, module, attrs):
    assert module is not None, f"{doc} names `{name}`, but no module of this project is {attrs[0]}"
    obj = importlib.import_module(module)
    for attr in attrs:
        assert hasattr(obj, attr), f"{doc} names `{name}`, but {module} has no {'.'.join(attrs)}"
        obj = getattr(obj, attr)
