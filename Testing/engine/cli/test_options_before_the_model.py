"""Every option that needs no model is checked before the model is read (README, What MedLSDM
guarantees): with a model that does not exist, a bad --steps, --sampler or --map is the bad option's
line (exit 2), not the missing model's (exit 3), in generate, edit, reconstruct and demo."""
from __future__ import annotations

from pathlib import Path
from typing import List

import pytest
import SimpleITK as sitk

from conftest import assert_one_line_error, brain_labels, run_cli, write

MISSING = "/nonexistent/model"
BAD = [
    (["--steps", "0"], ["--steps 0", "at least 1"]),
    (["--steps", "-5"], ["--steps -5"]),
    (["--sampler", "nosuch"], ["unknown sampler 'nosuch'"]),
    (["--map", "no-equals-sign"], ["--map 'no-equals-sign'", "NAME=CLASS"]),
    (["--map", "Tumor=csf", "--map", "tumor=grey_matter"], ["two classes"]),
]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    labels = brain_labels()
    write(labels, tmp_path / "labels.nii.gz")
    write(sitk.Cast(labels, sitk.sitkFloat32) * 10.0, tmp_path / "image.nii.gz")
    write(sitk.Cast(labels == 3, sitk.sitkUInt8), tmp_path / "region.nii.gz")
    return tmp_path


def commands(folder: Path) -> dict:
    return {
        "generate": ["generate", folder / "labels.nii.gz", "-o", folder / "o.nii.gz"],
        "edit": ["edit", folder / "image.nii.gz", folder / "labels.nii.gz", "--region", folder / "region.nii.gz",
                 "-o", folder / "o.nii.gz"],
    }


@pytest.mark.parametrize("command", ["generate", "edit"])
@pytest.mark.parametrize("option, words", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_a_bad_option_is_named_before_a_missing_model(capfd, files: Path, command: str, option: List[str],
                                                      words: List[str]) -> None:
    result = run_cli(capfd, *commands(files)[command], "--model", MISSING, *option, "--progress", "none")
    assert_one_line_error(result, 2, *words)
    assert not (files / "o.nii.gz").exists()


def test_reconstruct_checks_its_map_before_the_model(capfd, files: Path) -> None:
    result = run_cli(capfd, "reconstruct", files / "image.nii.gz", files / "labels.nii.gz", "-o", files / "r.nrrd",
                     "--model", MISSING, "--map", "broken", "--progress", "none")
    assert_one_line_error(result, 2, "--map 'broken'")


def test_demo_checks_its_steps_before_the_model(capfd, tmp_path: Path) -> None:
    result = run_cli(capfd, "demo", "-o", tmp_path / "demo", "--steps", "0", "--model", MISSING)
    assert_one_line_error(result, 2, "--steps 0")
    assert not (tmp_path / "demo").exists()
