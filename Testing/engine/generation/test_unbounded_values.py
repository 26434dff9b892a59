"""Values far beyond what their quantity can mean are bounded by it, not an "unexpected" error: a
--margin of 1e300 mm reaches the whole image (every voxel regenerated), a --max-memory of 1e300 GiB caps
nothing more than the machine has."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from conftest import brain_labels, generate_args, run_cli, write


def test_a_margin_wider_than_the_image_regenerates_the_whole_image(capfd, tmp_path: Path, bundle_dir: Path) -> None:
    labels = brain_labels()
    image = sitk.Cast(labels, sitk.sitkFloat32) * 50.0 + 7.0
    write(labels, tmp_path / "labels.nii.gz")
    write(image, tmp_path / "image.nrrd")
    region = np.zeros(sitk.GetArrayFromImage(labels).shape, dtype=np.uint8)
    region[8, 13, 10] = 1  # one voxel: the margin grows it to the whole image
    mask = sitk.GetImageFromArray(region)
    mask.CopyInformation(labels)
    write(mask, tmp_path / "region.nii.gz")
    result = run_cli(capfd, "edit", tmp_path / "image.nrrd", tmp_path / "labels.nii.gz", "--region",
                     tmp_path / "region.nii.gz", "-o", tmp_path / "edited.nrrd", "--margin", "1e300", "--model",
                     bundle_dir, "--device", "cpu", "--steps", "2", "--seed", "1", "--progress", "none")
    assert result.code == 0, result.err
    edited = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "edited.nrrd")))
    assert np.isfinite(edited).all()
    assert (edited != sitk.GetArrayFromImage(image)).mean() > 0.99  # regenerated everywhere


def test_a_memory_cap_beyond_any_machine_is_no_cap(capfd, tmp_path: Path, bundle_dir: Path) -> None:
    write(brain_labels(), tmp_path / "labels.nii.gz")
    result = run_cli(capfd, *generate_args(tmp_path / "labels.nii.gz", tmp_path / "o.nii.gz", bundle_dir,
                                           "--max-memory", "1e300", "--progress", "none"))
    assert result.code == 0, result.err
    assert (tmp_path / "o.nii.gz").is_file()
