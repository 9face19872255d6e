"""The declared experiment interface and the command line of dotted config keys."""

from __future__ import annotations

import dataclasses
import importlib
import re

import pytest

from experiments import all_experiments, common
from experiments import config as cfg
from experiments.images import ImageExperiment

NAMES = (
    *("swiss_roll", "binary_heartbeat", "mnist", "cifar10", "dead_leaves", "bark"),
    *("ddpm", "ddpm_swiss_roll", "ddpm_dead_leaves", "adm"),
)
IMAGES = ("mnist", "cifar10", "dead_leaves", "bark")
#: What a choice needs changed with it: DDPM's CIFAR-10 U-Net halves 28 x 28 digits once too often.
DDPM_DIGITS = {"data.dataset": "mnist", "model.ch_mult": (1, 2, 2), "model.attn_resolutions": (14,)}
ALSO_NEEDED = {
    ("ddpm", "data.dataset", "mnist"): DDPM_DIGITS,
    ("ddpm", "data.source", "mnist_5k"): DDPM_DIGITS,
    ("ddpm", "data.source", "digits_8x8"): {
        **DDPM_DIGITS,
        "model.ch_mult": (1, 2),
        "model.attn_resolutions": (4,),
    },
    # ADM: a learned variance goes with L_hybrid, a fixed one with L_simple.
    **{
        ("adm", "diffusion.variance", v): {"diffusion.loss": "simple"}
        for v in ("fixed_large", "fixed_small")
    },
    ("adm", "diffusion.loss", "simple"): {"diffusion.variance": "fixed_large"},
    ("adm", "data.dataset", "cifar10"): {
        "data.source": "tfds",
        "model.attention_resolutions": (16,),
    },
    **{
        ("adm", "data.source", source): {"model.attention_resolutions": (14,)}
        for source in ("tfds", "npz", "folder", "mnist_5k")
    },
    **{
        (name, "diffusion.mean", mean): {"diffusion.loss": "bound"}  # L_simple is on eps
        for name in ("ddpm", "ddpm_dead_leaves")
        for mean in ("x0", "posterior_mean")
    },
}


KEYS_NEWER_THAN_SECTIONS = {"swiss_roll": {"data.name"}}


@pytest.mark.parametrize("name", NAMES)
def test_every_experiment_module_declares_an_experiment_object(name):
    module = importlib.import_module(f"experiments.{name}")
    experiment = module.experiment
    assert isinstance(experiment, common.Experiment) and experiment.name == name
    assert callable(module.main)
    assert isinstance(experiment.description, str) and experiment.description
    assert isinstance(experiment.units, str) and "bits" in experiment.units
    assert isinstance(experiment.paper, dict) and "source" in experiment.paper
    for method in ("run", "report", "figures", "main", "convert_command"):
        assert callable(getattr(experiment, method)), method
    # The config: a frozen dataclass of sections, every preset an instance, defaults first.
    config_class = experiment.config_class
    assert dataclasses.is_dataclass(config_class)
    assert experiment.presets.get("default", config_class()) == config_class()
    assert all(type(p) is config_class for p in experiment.presets.values())
    keys = set(cfg.flatten(config_class()))
    assert {"seed", "diffusion.steps", "train.steps", "eval.num_test"} <= keys
    assert set(experiment.mutable_keys) <= keys
    # The conversion table from the flat keys of earlier versions reaches every key once
    # (experiments younger than the sectioned configs have none).
    # Keys added after the sectioning have no flat ancestor.
    targets = [v for v in experiment.legacy_keys.values() if v is not None]
    newer = KEYS_NEWER_THAN_SECTIONS.get(name, set())
    assert sorted(targets) == (sorted(keys - newer) if experiment.legacy_keys else [])
    if name in IMAGES:
        assert isinstance(experiment, ImageExperiment) and callable(experiment.load_split)
    assert all_experiments()[name] is experiment


@pytest.mark.parametrize("name", ["swiss_roll", "binary_heartbeat"])
def test_figures_where_unsupported_is_a_clear_error(name, tmp_path, capsys):
    experiment = all_experiments()[name]
    with pytest.raises(NotImplementedError, match=f"--figures is not available for {name}"):
        experiment.figures(experiment.config_class(), tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        experiment.main(["--workdir", str(tmp_path), "--figures"])
    assert exit_info.value.code == 1
    assert "use --eval_only" in capsys.readouterr().err


@pytest.mark.parametrize("name", NAMES)
def test_help_lists_every_dotted_key_with_its_default_and_type(name, capsys):
    experiment = all_experiments()[name]
    with pytest.raises(SystemExit) as exit_info:
        experiment.main(["--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert experiment.description.split()[0] in out
    kinds = cfg.leaf_types(experiment.config_class)
    for key, value in cfg.flatten(experiment.config_class()).items():
        assert f"--config.{key} {cfg.type_name(kinds[key])} default: {value!r}" in out, key


def _help(name, capsys) -> str:
    """``--help`` of experiment ``name``, whitespace normalised (argparse wraps lines)."""
    with pytest.raises(SystemExit) as exit_info:
        all_experiments()[name].main(["--help"])
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def _key_help(out: str, key: str) -> str:
    """The help text of ``--config.KEY`` (after its metavar) in normalised ``--help``."""
    found = re.search(
        rf"--config\.{re.escape(key)} \S+ (default: .*?)(?= --config\.| presets \(|$)", out
    )
    assert found, key
    return found.group(1)


def _choice_sources(name: str) -> dict:
    """{dotted key: what ``__post_init__`` validates it against} of experiment ``name``."""
    from dpm_jax import parameterisation, schedules
    from dpm_jax.data import images
    from experiments import image_config, swiss_roll_config

    data_names = swiss_roll_config.DataConfig.CHOICES["name"]
    if name == "swiss_roll":
        return {
            "data.name": data_names,
            "diffusion.schedule_baseline": schedules.BASELINES,
            "model.readout": parameterisation.READOUTS,
            "train.objective": swiss_roll_config.OBJECTIVES,
        }
    if name == "binary_heartbeat":
        return {}
    from experiments import ddpm_config, ddpm_swiss_roll

    if name == "ddpm_swiss_roll":
        return {"data.name": data_names, "diffusion.variance": ddpm_swiss_roll.VARIANCES}
    ddpm = {
        "diffusion.mean": ddpm_config.MEANS,
        "diffusion.variance": ddpm_config.VARIANCES,
        "diffusion.loss": ddpm_config.LOSSES,
    }
    if name == "ddpm_dead_leaves":
        return ddpm
    model = {
        "model.network": image_config.NETWORKS,
        "model.readout": parameterisation.READOUTS,
        "model.compute_dtype": image_config.COMPUTE_DTYPES,
    }
    tfds = {"data.dataset": tuple(sorted(images.IMAGE_SHAPES))}
    if name == "cifar10":
        return {**tfds, "data.source": image_config.FILE_SOURCES, **model}
    sources = image_config.FILE_SOURCES + image_config.DIGIT_SOURCES
    if name == "adm":
        from experiments import adm_config

        return {
            **tfds,
            "data.source": sources,
            "diffusion.schedule": adm_config.SCHEDULES,
            "diffusion.variance": adm_config.VARIANCES,
            "diffusion.loss": adm_config.LOSSES,
        }
    if name in ("mnist", "ddpm"):
        return {**tfds, "data.source": sources, **(ddpm if name == "ddpm" else model)}
    return model


@pytest.mark.parametrize("name", NAMES)
def test_help_gives_every_dotted_key_a_meaning(name, capsys):
    out = _help(name, capsys)
    for key, value in cfg.flatten(all_experiments()[name].config_class()).items():
        text = _key_help(out, key)
        rest = re.sub(r"^ \(one of: [^)]*\)", "", text[len(f"default: {value!r}") :])
        assert text.startswith(f"default: {value!r}") and rest.startswith("; "), (key, text)
        assert len(rest[2:].split()) >= 3, (key, text)  # a meaning, not a stray word


@pytest.mark.parametrize("name", NAMES)
def test_help_lists_the_allowed_values_of_every_choice_key(name, capsys, tmp_path):
    experiment = all_experiments()[name]
    out = _help(name, capsys)
    default = experiment.config_class()
    sources = _choice_sources(name)
    kinds = cfg.leaf_types(experiment.config_class)
    for key in cfg.flatten(default):
        listed = re.match(r"default: \S+ \(one of: ([^)]*)\)", _key_help(out, key))
        if key not in sources:
            assert listed is None, key
            if kinds[key] is str:  # no fixed set: any string passes validation
                cfg.replace(default, {key: "any-string"})
            continue
        allowed = tuple(sources[key])
        assert listed and tuple(listed.group(1).split(", ")) == allowed, (key, listed)
        for value in allowed:
            also = ALSO_NEEDED.get((name, key, value), {})
            assert cfg.flatten(cfg.replace(default, {key: value, **also}))[key] == value
        with pytest.raises(ValueError, match=re.escape(f"{key} must be one of {allowed}")):
            cfg.replace(default, {key: "not-a-choice"})
        argv = ["--workdir", str(tmp_path), f"--config.{key}=not-a-choice"]
        with pytest.raises(SystemExit) as exit_info:
            common.parse_command_line(name, type(default), experiment.presets, argv)
        assert exit_info.value.code == 2
        assert f"invalid config: {key} must be one of" in capsys.readouterr().err


@pytest.mark.parametrize("name", NAMES)
def test_help_shows_the_keys_each_preset_changes(name, capsys):
    experiment = all_experiments()[name]
    out = _help(name, capsys)
    defaults = cfg.flatten(experiment.config_class())
    epilog = out.split("presets (--preset NAME): the keys each sets that differ from the defaults ")
    assert len(epilog) == 2
    parts = re.split(r"(?:^| )(\w+): ", epilog[1])[1:]
    shown = dict(zip(parts[::2], parts[1::2], strict=True))
    assert list(shown) == list(experiment.presets)
    for preset_name, preset in experiment.presets.items():
        changed = {k for k, v in cfg.flatten(preset).items() if v != defaults[k]}
        if not changed:
            assert shown[preset_name] == "(the defaults)"
            continue
        items = shown[preset_name].split(", ")
        assert {item.split("=")[0] for item in items} == changed, preset_name
        # What --help shows, passed back as overrides of the defaults, is the preset.
        argv = ["--workdir", "w", *(f"--config.{item}" for item in items)]
        config, _ = common.parse_command_line(name, type(preset), experiment.presets, argv)
        assert config == preset, preset_name


@pytest.mark.parametrize("name", NAMES)
def test_help_and_choices_tables_leave_the_configs_alone(name):
    """``HELP`` and ``CHOICES`` are class attributes naming declared fields: no config key,
    value, equality, hash or JSON round trip changes with them."""
    experiment = all_experiments()[name]

    def sections(config):
        yield config
        for field in dataclasses.fields(config):
            value = getattr(config, field.name)
            if cfg.is_section(value):
                yield from sections(value)

    for preset in experiment.presets.values():
        for section in sections(preset):
            names = {f.name for f in dataclasses.fields(section)}
            assert not {"HELP", "CHOICES"} & names
            for klass in type(section).__mro__:
                for table in ("HELP", "CHOICES"):
                    assert set(vars(klass).get(table, {})) <= names, (klass, table)
        assert cfg.from_json(experiment.config_class(), cfg.to_json(preset)) == preset
        assert hash(preset) == hash(dataclasses.replace(preset))


@dataclasses.dataclass(frozen=True)
class _Model:
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    dropout: float = 0.1


@dataclasses.dataclass(frozen=True)
class _Train:
    steps: int = 10
    flip: bool = False


@dataclasses.dataclass(frozen=True)
class _Demo:
    seed: int = 0
    model: _Model = _Model()
    train: _Train = _Train()


def _parse(argv):
    return common.parse_command_line(
        "demo", _Demo, {"tiny": _Demo(seed=3)}, ["--workdir", "w", *argv]
    )


def test_tuples_and_typed_values_from_the_command_line(capsys):
    config, args = _parse(["--config.model.channel_mult=1,2,4", "--config.train.flip=yes"])
    assert config.model.channel_mult == (1, 2, 4) and config.train.flip is True
    assert config.train.steps == 10 and str(args.workdir) == "w"
    config, _ = _parse(["--preset", "tiny", "--config.model.channel_mult", "8", "--config.seed=5"])
    assert config.model.channel_mult == (8,) and config.seed == 5  # overrides on the preset
    with pytest.raises(SystemExit) as exit_info:
        _parse(["--config.model.channel_mult=1,x"])
    assert exit_info.value.code == 2
    assert "invalid int,... value: '1,x'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parse(["--config.train.flip=maybe"])
    assert "expected true or false" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        common.parse_command_line("demo", _Demo, argv=["--help"])
    assert "--config.model.channel_mult INT,..." in capsys.readouterr().out


def test_an_unknown_dotted_key_exits_listing_the_valid_keys(capsys):
    for argv, unknown in [
        (["--config.model.chanel_mult=1"], "model.chanel_mult"),
        (["--config.train.step=5"], "train.step"),  # no abbreviations of train.steps
        (["--config.steps=5"], "steps"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            _parse(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert f"unknown config key(s) ['{unknown}']" in err, err
        assert "valid keys: seed, model.channel_mult, model.dropout, train.steps, train.flip" in err


def test_the_saved_config_and_results_use_dotted_keys(tmp_path):
    from dpm_jax import rundir
    from experiments import swiss_roll as sr

    config = cfg.replace(sr.PRESETS["small"], {"model.num_hidden": 4})
    as_dict = rundir.config_to_dict(config)
    assert as_dict == cfg.to_json(config) and as_dict["model.num_hidden"] == 4
    assert cfg.from_json(sr.Config(), as_dict) == config
    rundir.save_run_config(tmp_path, "swiss_roll", as_dict)
    rundir.check_run_compatible(tmp_path, "swiss_roll", as_dict, sr.MUTABLE_KEYS)
    changed = rundir.config_to_dict(cfg.replace(config, {"eval.num_test": 7, "train.log_every": 3}))
    rundir.check_run_compatible(tmp_path, "swiss_roll", changed, sr.MUTABLE_KEYS)  # mutable
    with pytest.raises(RuntimeError, match="train.steps: saved 300 vs requested 301"):
        other = rundir.config_to_dict(cfg.replace(config, {"train.steps": 301}))
        rundir.check_run_compatible(tmp_path, "swiss_roll", other, sr.MUTABLE_KEYS)
