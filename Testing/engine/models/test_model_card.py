"""Model cards round-trip through model.json; unknown keys, wrong types and bad values are ValueErrors."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from MedLSDMLib.card import CARD_FILE
from MedLSDMLib.models.bundle import read_card
from MedLSDMLib.card import (
    AutoencoderConfig,
    IntensityConfig,
    LabelEntry,
    ModelCard,
    SchedulerConfig,
    UNetConfig,
    from_dict,
    to_dict,
)

from conftest import tiny_card


def card_dict() -> dict:
    return json.loads(json.dumps(to_dict(tiny_card())))


def test_round_trip_through_json() -> None:
    card = tiny_card()
    card.weights = {"autoencoder.safetensors": "ab" * 32, "diffusion.safetensors": "cd" * 32}
    card.metrics = {"fid": 12.5, "per_class": {"csf": 0.8}}
    text = json.dumps(to_dict(card))
    again = from_dict(ModelCard, json.loads(text))
    assert again == card
    assert isinstance(again.spacing, tuple) and isinstance(again.unet.attention_levels, tuple)
    assert isinstance(again.labels[0], LabelEntry) and isinstance(again.labels[0].color, tuple)
    assert isinstance(again.intensity, IntensityConfig) and again.intensity.mode == "window"
    assert json.dumps(to_dict(again)) == text


def test_saved_model_json_reads_back_equal(bundle_dir: Path) -> None:
    card = read_card(bundle_dir)
    expected = tiny_card()
    expected.weights = card.weights
    assert card == expected
    raw = json.loads((bundle_dir / CARD_FILE).read_text())
    assert raw["labels"][2] == {"value": 2, "name": "grey matter", "color": [0.6, 0.6, 0.6]}
    assert raw["intensity"]["low"] == -100 and raw["intensity"]["high"] == 300
    assert set(raw["weights"]) == {"autoencoder.safetensors", "diffusion.safetensors"}


def test_defaults_fill_missing_keys() -> None:
    card = from_dict(ModelCard, {"name": "minimal", "labels": [{"value": 0, "name": "bg"}, {"value": 1, "name": "x"}]})
    assert card.autoencoder == AutoencoderConfig() and card.scheduler == SchedulerConfig()
    assert card.spacing == (1.0, 1.0, 1.0)


def test_size_multiple() -> None:
    assert tiny_card().size_multiple == 4 * 2
    assert ModelCard(name="big", labels=[LabelEntry(0, "a"), LabelEntry(1, "b")]).size_multiple == 4 * 4


def set_path(data: dict, path: str, value: Any) -> dict:
    data = copy.deepcopy(data)
    *parents, last = path.split(".")
    target = data
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return data


@pytest.mark.parametrize("path, key", [("", "colour"), ("unet", "dropout"), ("autoencoder", "kernel"),
                                       ("labels.1", "opacity"), ("intensity", "gamma"), ("scheduler", "eta")])
def test_unknown_keys_are_errors(path: str, key: str) -> None:
    data = card_dict()
    target = data
    for part in filter(None, path.split(".")):
        target = target[int(part)] if isinstance(target, list) else target[part]
    target[key] = 1
    with pytest.raises(ValueError, match=key):
        from_dict(ModelCard, data)


@pytest.mark.parametrize("path, value, says", [
    ("name", 5, "name"),
    ("spacing", "2 2 2", "spacing"),
    ("spacing", [2, "2", 2], r"spacing\[1\]"),
    ("labels", {"0": "bg"}, "labels"),
    ("labels.0.value", "0", r"labels\[0\].value"),
    ("labels.0.value", 0.5, r"labels\[0\].value"),
    ("labels.1.name", None, r"labels\[1\].name"),
    ("autoencoder", [8, 8], "autoencoder"),
    ("autoencoder.channels", 8, "autoencoder.channels"),
    ("autoencoder.latent_channels", True, "autoencoder.latent_channels"),
    ("unet.attention_levels", [0, 1], r"unet.attention_levels\[0\]"),
    ("scheduler.num_train_timesteps", "20", "scheduler.num_train_timesteps"),
    ("intensity.low", "-100", "intensity.low"),
    ("default_guidance", False, "default_guidance"),
    ("weights", [], "weights"),
    ("training", "100 epochs", "training"),
])
def test_wrong_types_are_errors(path: str, value: Any, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        from_dict(ModelCard, set_path(card_dict(), path, value))


@pytest.mark.parametrize("make", [
    lambda: ModelCard(name="x", labels=[LabelEntry(1, "a"), LabelEntry(2, "b")]),  # no background 0
    lambda: ModelCard(name="x", labels=[LabelEntry(0, "a"), LabelEntry(0, "b")]),  # duplicate values
    lambda: ModelCard(name="x", labels=[LabelEntry(0, "a")]),  # a single class
    lambda: ModelCard(name="x", labels=[LabelEntry(0, "a"), LabelEntry(1, "b")], spacing=(1.0, 1.0)),
    lambda: ModelCard(name="x", labels=[LabelEntry(0, "a"), LabelEntry(1, "b")], spacing=(1.0, 0.0, 1.0)),
    lambda: ModelCard(name="x", labels=[LabelEntry(0, "a"), LabelEntry(1, "b")], orientation="RA"),
    lambda: SchedulerConfig(kind="score"),
    lambda: SchedulerConfig(prediction_type="sample"),
    lambda: SchedulerConfig(num_train_timesteps=0),
    lambda: IntensityConfig(mode="zscore"),
    lambda: IntensityConfig(low=1.0, high=1.0),
    lambda: UNetConfig(channels=(8, 12), norm_num_groups=8),
    lambda: UNetConfig(channels=(8, 16), attention_levels=(False,)),
    lambda: AutoencoderConfig(channels=(8, 8), num_res_channels=(8,)),
], ids=["no background", "duplicate values", "one class", "two spacings", "zero spacing", "orientation",
        "scheduler kind", "prediction type", "no timesteps", "intensity mode", "empty window", "groups",
        "attention levels", "res channels"])
def test_invalid_values_are_errors(make: Callable[[], Any]) -> None:
    with pytest.raises(ValueError):
        make()


def test_invalid_values_in_json_are_errors() -> None:
    with pytest.raises(ValueError, match="background"):
        from_dict(ModelCard, set_path(card_dict(), "labels.0.value", 7))
    with pytest.raises(ValueError, match="scheduler.kind"):
        from_dict(ModelCard, set_path(card_dict(), "scheduler.kind", "score"))
    with pytest.raises(ValueError):
        from_dict(ModelCard, {"labels": card_dict()["labels"]})  # the name is required
