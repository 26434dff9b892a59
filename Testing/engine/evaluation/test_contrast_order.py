"""Contrast order: equal class means (a constant or all-zero synthetic image, or means within 0.1 % of
the image's intensity range) are no order, so not "contrast right"; the case and the report say why.
A right order and a swapped one are still told apart."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MedLSDMLib.evaluation.realism import realism

from conftest import ODD_SIZE, brain_array, brain_labels, image_from_xyz, run_cli, write

CLASSES = brain_array(ODD_SIZE)
SPACING = (1.0, 1.0, 1.0)


def real_array(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.choose(CLASSES, [0.0, 40.0, 80.0, 120.0]) + rng.normal(0, 3, CLASSES.shape)


@pytest.mark.parametrize("synthetic", [
    np.zeros(CLASSES.shape),
    np.full(CLASSES.shape, 55.0),
    # class means that differ by 1e-7 of the range: equal within the tolerance
    np.choose(CLASSES, [0.0, 1.0, 1.0 + 1e-7, 1.0 + 2e-7]),
], ids=["all zero", "constant", "equal within tolerance"])
def test_equal_class_means_are_no_order(synthetic: np.ndarray) -> None:
    case = realism(real_array(), synthetic, CLASSES, SPACING)
    assert case["contrast_order"] is False
    assert "equal means" in case["contrast_order_why"]


def test_right_and_swapped_orders() -> None:
    right = realism(real_array(), real_array(1) * 0.5 + 7, CLASSES, SPACING)
    assert right["contrast_order"] is True and right["contrast_order_why"] is None
    swapped = realism(real_array(), np.choose(CLASSES, [0.0, 120.0, 80.0, 40.0]), CLASSES, SPACING)
    assert swapped["contrast_order"] is False and "opposite order" in swapped["contrast_order_why"]


def test_evaluate_reports_a_constant_image_as_contrast_wrong(capfd, tmp_path: Path) -> None:
    for name in ("real", "labels", "synthetic"):
        (tmp_path / name).mkdir()
    write(image_from_xyz(real_array().astype(np.float32)), tmp_path / "real" / "case1_image.nii.gz")
    write(brain_labels(), tmp_path / "labels" / "case1_label.nii.gz")
    write(image_from_xyz(np.zeros(ODD_SIZE, dtype=np.float32)), tmp_path / "synthetic" / "case1.nii.gz")
    result = run_cli(capfd, "evaluate", "--real", tmp_path / "real", "--synthetic", tmp_path / "synthetic",
                     "--labels", tmp_path / "labels", "-o", tmp_path / "report", "--progress", "none")
    assert result.code == 0, result.err
    report = json.loads((tmp_path / "report.json").read_text())
    [case] = report["cases"]
    assert case["realism"]["contrast_order"] is False
    markdown = (tmp_path / "report.md").read_text()
    assert "0 of 1 case(s); not right: classes 1 and 2 have equal means" in markdown
