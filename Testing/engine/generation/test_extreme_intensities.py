"""Images at the edge of float32 (foreground near 3e38, a range from -3e38 to +3.3e38): reconstruct and
edit scale them in float64 and give a finite result in the image's units (not NaN, not the input
unchanged), with no numpy RuntimeWarning; values beyond float32 are refused with one line; and no NaN or
infinite voxel is ever written, whatever produced it."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
import SimpleITK as sitk

from MedLSDMLib.card import IntensityConfig
from MedLSDMLib.errors import ModelError
from MedLSDMLib.io.volumes import write_image

from conftest import assert_one_line_error, brain_labels, make_bundle, run_cli, tiny_card

EXTREMES = {
    "near the maximum": lambda classes: np.where(classes > 0, 3e38 * (1 - 0.01 * classes), 0.0),
    "the whole range": lambda classes: np.where(classes > 0, 1.1e38 * classes, -3e38),
}


@pytest.fixture(scope="module", params=["percentile", "window"])
def model(request, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with percentile scaling (the image's own range) or a fixed window."""
    folder = tmp_path_factory.mktemp("extreme") / request.param
    overrides = {"intensity": IntensityConfig(mode="percentile")} if request.param == "percentile" else {}
    make_bundle(tiny_card(**overrides)).save(folder)
    return folder


def extreme_case(folder: Path, values) -> Tuple[Path, Path, Path, np.ndarray]:
    labels = brain_labels()
    classes = sitk.GetArrayFromImage(labels)
    image = sitk.GetImageFromArray(values(classes).astype(np.float32))
    image.CopyInformation(labels)
    paths = folder / "image.nrrd", folder / "labels.nii.gz", folder / "region.nii.gz"
    sitk.WriteImage(image, str(paths[0]))
    sitk.WriteImage(labels, str(paths[1]))
    sitk.WriteImage(sitk.Cast(labels == 3, sitk.sitkUInt8), str(paths[2]))
    return (*paths, sitk.GetArrayFromImage(image))


def run_recording_warnings(capfd, *args) -> Tuple[object, List[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_cli(capfd, *args)
    return result, [f"{w.category.__name__}: {w.message}" for w in caught if issubclass(w.category, RuntimeWarning)]


@pytest.mark.parametrize("extreme", list(EXTREMES))
@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
def test_reconstruct_of_an_extreme_image_is_finite(capfd, tmp_path: Path, model: Path, extreme: str,
                                                   suffix: str) -> None:
    image, labels, _, values = extreme_case(tmp_path, EXTREMES[extreme])
    output = tmp_path / f"round{suffix}"
    result, runtime_warnings = run_recording_warnings(
        capfd, "reconstruct", image, labels, "-o", output, "--model", model, "--device", "cpu", "--progress", "none")
    assert result.code == 0, result.err
    assert runtime_warnings == [] and "Warning" not in result.err, (runtime_warnings, result.err)
    out = sitk.GetArrayFromImage(sitk.ReadImage(str(output))).astype(np.float64)
    assert np.isfinite(out).all()
    if "percentile" in model.name:  # in the image's own units: its foreground range, not the model's window
        assert out.max() > 1e36


@pytest.mark.parametrize("extreme", list(EXTREMES))
def test_edit_of_an_extreme_image_regenerates_the_region(capfd, tmp_path: Path, model: Path, extreme: str) -> None:
    """Not a silent no-op: the region changes, the rest is the image exactly, every voxel is finite."""
    image, labels, region, values = extreme_case(tmp_path, EXTREMES[extreme])
    output = tmp_path / "edited.nrrd"
    result, runtime_warnings = run_recording_warnings(
        capfd, "edit", image, labels, "--region", region, "-o", output, "--model", model, "--device", "cpu",
        "--steps", "2", "--seed", "1", "--margin", "1", "--progress", "none")
    assert result.code == 0, result.err
    assert runtime_warnings == [] and "Warning" not in result.err, (runtime_warnings, result.err)
    out = sitk.GetArrayFromImage(sitk.ReadImage(str(output)))
    inside = sitk.GetArrayFromImage(sitk.ReadImage(str(region))) > 0
    assert np.isfinite(out).all()
    assert not np.array_equal(out[inside], values[inside])
    assert out.min() >= values.min() and out.max() <= values.max()


def test_values_beyond_float32_are_refused(capfd, tmp_path: Path, bundle_dir: Path) -> None:
    labels = brain_labels()
    image = sitk.GetImageFromArray(np.where(sitk.GetArrayFromImage(labels) > 0, 1e300, 0.0))
    image.CopyInformation(labels)
    sitk.WriteImage(image, str(tmp_path / "huge.nrrd"))
    sitk.WriteImage(labels, str(tmp_path / "labels.nii.gz"))
    result = run_cli(capfd, "reconstruct", tmp_path / "huge.nrrd", tmp_path / "labels.nii.gz", "-o",
                     tmp_path / "r.nrrd", "--model", bundle_dir, "--device", "cpu", "--progress", "none")
    assert_one_line_error(result, 2, "1e+300", "32-bit")
    assert not (tmp_path / "r.nrrd").exists()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_voxel_is_never_written(tmp_path: Path, bad: float) -> None:
    values = np.zeros((4, 5, 6), dtype=np.float32)
    values[1, 2, 3] = bad
    with pytest.raises(ModelError, match="1 NaN or infinite voxels"):
        write_image(sitk.GetImageFromArray(values), tmp_path / "x.nrrd")
    assert list(tmp_path.iterdir()) == []
