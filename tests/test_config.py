"""Nested configs: dotted keys, tuples from the command line, validation on rebuild, JSON."""

from __future__ import annotations

import dataclasses
import json

import pytest

from experiments import config as cfg


@dataclasses.dataclass(frozen=True)
class Model:
    ch: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1

    def __post_init__(self):
        if not self.channel_mult:
            raise ValueError("model.channel_mult must not be empty.")


@dataclasses.dataclass(frozen=True)
class Train:
    steps: int = 1000
    ema_decay: float = 0.0
    flip: bool = False
    name: str = "run"


@dataclasses.dataclass(frozen=True)
class Config:
    seed: int = 0
    model: Model = Model()
    train: Train = Train()


def test_flatten_lists_every_leaf_with_its_dotted_key():
    flat = cfg.flatten(Config())
    assert list(flat) == [
        "seed",
        "model.ch",
        "model.channel_mult",
        "model.attn_resolutions",
        "model.dropout",
        "train.steps",
        "train.ema_decay",
        "train.flip",
        "train.name",
    ]
    assert flat["model.channel_mult"] == (1, 2, 2, 2)
    assert set(cfg.leaf_types(Config)) == set(flat)


@pytest.mark.parametrize(
    "key, text, expected",
    [
        ("model.channel_mult", "1,2,4", (1, 2, 4)),
        ("model.attn_resolutions", "", ()),
        ("model.dropout", "0.25", 0.25),
        ("train.flip", "yes", True),
        ("train.steps", "7", 7),
        ("train.name", "a,b", "a,b"),
    ],
)
def test_command_line_values_take_the_declared_type(key, text, expected):
    kind = cfg.leaf_types(Config)[key]
    value = cfg.parse_value(text, kind)
    assert value == expected and type(value) is type(expected)


def test_replace_rebuilds_sections_and_validates_them():
    new = cfg.replace(Config(), {"model.channel_mult": (1, 2), "train.steps": 5, "seed": 3})
    assert new.model.channel_mult == (1, 2) and new.train.steps == 5 and new.seed == 3
    assert new.model.ch == 128 and Config().train.steps == 1000  # the default is untouched
    with pytest.raises(ValueError, match="channel_mult must not be empty"):
        cfg.replace(Config(), {"model.channel_mult": ()})
    with pytest.raises(KeyError, match=r"unknown config key\(s\) \['model.chanel_mult'\]"):
        cfg.replace(Config(), {"model.chanel_mult": (1,)})
    with pytest.raises(ValueError, match="expected true or false"):
        cfg.parse_value("maybe", bool)


def test_json_round_trip_keeps_tuples():
    config = cfg.replace(Config(), {"model.channel_mult": (1, 3)})
    saved = json.loads(json.dumps(cfg.to_json(config)))
    assert saved["model.channel_mult"] == [1, 3]
    assert cfg.from_json(Config(), saved) == config
