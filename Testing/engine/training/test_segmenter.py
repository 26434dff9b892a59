"""The Dice protocol's trained segmenter: ``medlsdm train segmenter`` writes a hash-checked safetensors
folder that ``evaluate --segmenter`` loads, and its predictions come back onto the image's own grid."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import yaml

from MedLSDMLib.models.bundle import sha256
from MedLSDMLib.card import IntensityConfig, LabelEntry
from MedLSDMLib.evaluation.dice import dice_per_class
from MedLSDMLib.evaluation.segmenter import CARD_FILE, WEIGHTS_FILE, SegmenterCard, UNetSegmenter

from conftest import REPO, ODD_SIZE, array_xyz, assert_one_line_error, brain_array, brain_labels, image_from_xyz, run_cli, write

LABELS = [{"value": 0, "name": "background"}, {"value": 1, "name": "csf"}, {"value": 2, "name": "gm"},
          {"value": 3, "name": "wm"}]
LEVELS = (0.0, 40.0, 80.0, 120.0)


def tissue_image(seed: int) -> sitk.Image:
    classes = brain_array(ODD_SIZE)
    noise = np.random.default_rng(seed).normal(0, 2, classes.shape)
    return image_from_xyz((np.choose(classes, LEVELS) + noise).astype(np.float32))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A segmenter trained for 3 fp32 steps on 2 oblique, anisotropic pairs (mechanics, not accuracy)."""
    root = tmp_path_factory.mktemp("segmenter")
    (root / "pairs").mkdir()
    for k in range(2):
        write(tissue_image(k), root / "pairs" / f"case{k}_image.nii.gz")
        write(brain_labels(), root / "pairs" / f"case{k}_label.nii.gz")
    config = {"output": "run", "data": {"pairs": "pairs", "validation_fraction": 0.5},
              "model": {"name": "toy-segmenter", "labels": LABELS, "spacing": [2.0, 2.0, 2.0],
                        "network": {"channels": [4, 8], "strides": [2], "num_res_units": 1}},
              "training": {"steps": 3, "batch_size": 2, "patch_size": [16, 16, 16], "precision": "fp32",
                           "learning_rate": 0.01, "checkpoint_every": 3, "validate_every": 3, "log_every": 1}}
    (root / "segmenter.yaml").write_text(yaml.safe_dump(config))
    return root


@pytest.mark.slow
def test_training_writes_a_loadable_segmenter(capfd, trained: Path) -> None:
    result = run_cli(capfd, "train", "segmenter", trained / "segmenter.yaml", "--device", "cpu")
    assert result.code == 0, result.err
    folder = trained / "run" / "segmenter"
    assert sorted(p.name for p in folder.iterdir()) == [CARD_FILE, WEIGHTS_FILE]
    card = json.loads((folder / CARD_FILE).read_text())
    assert card["weights"][WEIGHTS_FILE] == sha256(folder / WEIGHTS_FILE)
    assert [e["value"] for e in card["labels"]] == [0, 1, 2, 3] and card["spacing"] == [2.0, 2.0, 2.0]
    assert card["orientation"] == "RAS" and card["intensity"]["mode"] == "percentile"
    assert card["network"]["channels"] == [4, 8] and card["patch_size"] == [16, 16, 16]
    assert card["training"]["steps"] == 3 and "validation_dice" in card["metrics"]
    with open(trained / "run" / "metrics.csv", newline="") as stream:
        names = {row["name"] for row in csv.DictReader(stream)}
    assert {"loss", "val_dice"} <= names
    segmenter = UNetSegmenter.load(folder)
    prediction = segmenter.segment(tissue_image(0), brain_labels())
    assert prediction.shape == ODD_SIZE and set(np.unique(prediction)) <= {0, 1, 2, 3}


@pytest.mark.slow
def test_evaluate_with_the_trained_segmenter(capfd, trained: Path, tmp_path: Path) -> None:
    folder = trained / "run" / "segmenter"
    if not folder.is_dir():
        pytest.skip("needs test_training_writes_a_loadable_segmenter")
    pairs = trained / "pairs"  # real images and label maps share this folder (NAME_image, NAME_label)
    for k in range(2):
        write(tissue_image(k), tmp_path / f"case{k}.nii.gz")
    result = run_cli(capfd, "evaluate", "--real", pairs, "--synthetic", tmp_path, "--labels", pairs,
                     "-o", tmp_path / "report", "--segmenter", folder, "--progress", "none")
    assert result.code == 0, result.err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["segmenter"]["kind"] == "unet" and report["segmenter"]["sha256"] == sha256(folder / WEIGHTS_FILE)
    dice = report["summary"]["dice"]
    assert dice["real"] == dice["synthetic"]  # identical images, one deterministic segmenter
    assert dice["ratio_of_means"] in (1.0, None)


def test_a_changed_weight_file_is_refused(capfd, trained: Path, tmp_path: Path) -> None:
    folder = trained / "run" / "segmenter"
    if not folder.is_dir():
        pytest.skip("needs test_training_writes_a_loadable_segmenter")
    copy = tmp_path / "segmenter"
    copy.mkdir()
    (copy / CARD_FILE).write_bytes((folder / CARD_FILE).read_bytes())
    data = bytearray((folder / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0xFF
    (copy / WEIGHTS_FILE).write_bytes(bytes(data))
    pairs = trained / "pairs"
    write(tissue_image(0), tmp_path / "case0.nii.gz")
    result = run_cli(capfd, "evaluate", "--real", pairs / "case0_image.nii.gz", "--synthetic", tmp_path / "case0.nii.gz",
                     "--labels", pairs / "case0_label.nii.gz", "-o", tmp_path / "report", "--segmenter", copy)
    assert_one_line_error(result, 3, "SHA-256")
    assert not (tmp_path / "report.json").exists()


class NearestLevel(torch.nn.Module):
    """An oracle 'network': logits that pick the class whose window-normalised level is nearest."""

    def __init__(self, levels) -> None:
        super().__init__()
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.float32).view(1, -1, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -((x - self.levels) ** 2) * 100


def test_predictions_come_back_onto_the_oblique_anisotropic_grid() -> None:
    """Preprocessing (RAS, 1 mm, window) → sliding windows → back onto the image grid: with a network that
    segments perfectly on the model grid, the result matches the label map up to resampling at borders."""
    window = IntensityConfig(mode="window", low=-20.0, high=140.0)
    card = SegmenterCard(name="oracle", labels=[LabelEntry(**e) for e in LABELS], spacing=(0.8, 0.8, 0.8),
                         intensity=window, patch_size=(16, 16, 16))
    levels = [2 * (v - window.low) / (window.high - window.low) - 1 for v in LEVELS]
    segmenter = UNetSegmenter(card, NearestLevel(levels), Path("oracle"))
    labels = brain_labels()
    prediction = segmenter.segment(tissue_image(3), labels)
    scores = dice_per_class(prediction, array_xyz(labels), [1, 2, 3])
    assert min(scores.values()) > 0.85, scores
    unknown = image_from_xyz(np.where(brain_array(ODD_SIZE) == 3, 7, brain_array(ODD_SIZE)).astype(np.uint8))
    with pytest.raises(Exception, match="does not know"):
        segmenter.segment(tissue_image(3), unknown)


def test_the_example_config_loads() -> None:
    from MedLSDMLib.training.config import load_run_config
    from MedLSDMLib.training.segmenter import SegmenterRun

    config = load_run_config(REPO / "Resources" / "Configs" / "brain_t1_segmenter.yaml",
                             SegmenterRun)
    assert [e.value for e in config.model.labels] == [0, 1, 2, 3]
    assert all(p % config.model.network.downsample_factor == 0 for p in config.training.patch_size)
