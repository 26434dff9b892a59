"""`medlsdm demo`: the bundled example map, a volume on the example image's grid, and a figure."""
from __future__ import annotations

import pytest

from pathlib import Path

import SimpleITK as sitk

from MedLSDMLib.models.registry import resources_dir

from conftest import assert_grid, run_cli


@pytest.mark.slow
def test_demo_writes_a_volume_on_the_example_grid_and_a_figure(tmp_path: Path, bundle_dir: Path, capsys) -> None:
    result = run_cli(capsys, "demo", "-o", tmp_path / "out", "--model", bundle_dir, "--steps", "2", "--progress", "none")
    assert result.code == 0, result.err
    volume = tmp_path / "out" / "brain_example_synthetic.nii.gz"
    figure = tmp_path / "out" / "brain_example_comparison.png"
    assert f"synthetic volume: {volume}" in result.out and f"comparison figure: {figure}" in result.out
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    real = sitk.ReadImage(str(resources_dir() / "Examples" / "brain_example_image.nii.gz"))
    assert_grid(sitk.ReadImage(str(volume)), real)


def test_demo_without_a_model_says_what_to_do(tmp_path: Path, capsys, monkeypatch) -> None:
    empty = tmp_path / "resources"
    (empty / "Examples").mkdir(parents=True)
    for name in ("brain_example_label.nii.gz", "brain_example_image.nii.gz"):
        (empty / "Examples" / name).write_bytes((resources_dir() / "Examples" / name).read_bytes())
    monkeypatch.setenv("MEDLSDM_RESOURCES", str(empty))
    result = run_cli(capsys, "demo", "-o", tmp_path / "out", "--progress", "none")
    assert result.code == 3 and "--model" in result.err
    assert not (tmp_path / "out" / "brain_example_synthetic.nii.gz").exists()
