"""Geometry: the output lies exactly on the label map's (or the reference's) grid, the working grid
covers the input, and the generated content lands where the label map has its structures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

import MedLSDMLib.generation.pipeline as pipeline
import MedLSDMLib.generation.runner as runner
from MedLSDMLib.io.geometry import corners, same_grid, working_grid

from conftest import (ANISOTROPIC, HIGH, LOW, MODEL_SPACING, OBLIQUE, ODD_SIZE, ORIGIN, array_xyz, assert_grid,
                      brain_labels, generate_args, image_from_xyz, read, region_array, rotation, run_cli, write)

PERMUTED = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])  # axes swapped and flipped
DIRECTIONS = {"identity": np.eye(3), "permuted": PERMUTED, "oblique": OBLIQUE}

# A reference image on another grid that overlaps the label map and reaches well beyond it.
REF_SIZE = (26, 19, 31)
REF_SPACING = (2.1, 3.3, 1.7)
REF_DIRECTION = rotation((3.0, -1.0, 2.0), 40.0)


def centre(image: sitk.Image) -> np.ndarray:
    return corners(image).mean(axis=0)


def reference_around(image: sitk.Image) -> sitk.Image:
    """An empty float reference of REF_SIZE etc., centred 3 mm away from ``image``'s centre."""
    reference = sitk.Image(list(REF_SIZE), sitk.sitkInt16)
    reference.SetSpacing(REF_SPACING)
    reference.SetDirection(REF_DIRECTION.flatten().tolist())
    half = REF_DIRECTION @ ((np.array(REF_SIZE) - 1) * np.array(REF_SPACING) / 2)
    reference.SetOrigin((centre(image) + np.array([3.0, -2.0, 1.0]) - half).tolist())
    return reference


# ---------------------------------------------------------------------------------------------
# working_grid
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("direction", list(DIRECTIONS.values()), ids=list(DIRECTIONS))
def test_working_grid_covers_the_input_at_model_spacing(bundle_dir: Path, direction: np.ndarray) -> None:
    from MedLSDMLib.models.bundle import read_card

    card = read_card(bundle_dir)
    labels = brain_labels(direction=direction)
    grid = working_grid(labels, card.spacing, card.orientation, card.size_multiple)

    assert grid.GetSpacing() == pytest.approx(MODEL_SPACING, abs=1e-12)
    assert card.size_multiple == 8
    assert all(s % card.size_multiple == 0 for s in grid.GetSize()), grid.GetSize()

    # every outer corner of the input's voxels is inside the working grid's voxels
    size = np.array(grid.GetSize())
    for point in corners(labels):
        index = np.array(grid.TransformPhysicalPointToContinuousIndex(point.tolist()))
        assert np.all(index >= -0.5 - 1e-6) and np.all(index <= size - 0.5 + 1e-6), (point, index, size)

    # ... and the grid is no bigger than that needs, padded evenly (centred on the input)
    working = np.array(grid.GetDirection()).reshape(3, 3)
    local = corners(labels) @ working
    needed = np.ceil((local.max(axis=0) - local.min(axis=0)) / np.array(MODEL_SPACING) - 1e-6)
    assert np.all(size >= needed) and np.all(size < needed + card.size_multiple), (size, needed)
    grid_centre = np.array(grid.GetOrigin()) + working @ ((size - 1) * np.array(MODEL_SPACING) / 2)
    np.testing.assert_allclose(grid_centre, centre(labels), atol=1e-6)


@pytest.mark.parametrize("direction", list(DIRECTIONS.values()), ids=list(DIRECTIONS))
def test_working_grid_direction_is_the_input_axes_reoriented(bundle_dir: Path, direction: np.ndarray) -> None:
    """The working axes are the input's axes permuted and flipped (DICOMOrient to the model's RAS);
    obliquity is kept, never resampled away."""
    from MedLSDMLib.models.bundle import read_card

    card = read_card(bundle_dir)
    labels = brain_labels(direction=direction)
    working = np.array(working_grid(labels, card.spacing, "RAS", card.size_multiple).GetDirection()).reshape(3, 3)

    assert np.allclose(working.T @ working, np.eye(3), atol=1e-9)
    signed_permutation = direction.T @ working
    rounded = np.round(signed_permutation)
    np.testing.assert_allclose(signed_permutation, rounded, atol=1e-9)
    assert np.all(np.abs(rounded).sum(axis=0) == 1) and np.all(np.abs(rounded).sum(axis=1) == 1)
    # RAS in ITK's LPS world: axis 0 mostly towards -x (right), axis 1 towards -y (anterior), axis 2 +z
    for axis, sign in enumerate((-1, -1, 1)):
        column = working[:, axis]
        assert int(np.argmax(np.abs(column))) == axis, working
        assert np.sign(column[axis]) == sign, working
    np.testing.assert_allclose(working.flatten(), sitk.DICOMOrient(labels, "RAS").GetDirection(), atol=1e-12)


def test_same_grid_compares_every_part_of_the_geometry() -> None:
    a = brain_labels()
    assert same_grid(a, brain_labels())
    assert not same_grid(a, brain_labels(size=(21, 27, 18)))
    assert not same_grid(a, brain_labels(spacing=(1.3, 0.9, 2.6)))
    assert not same_grid(a, brain_labels(origin=(10.25, -5.5, 3.2)))
    assert not same_grid(a, brain_labels(direction=rotation((1.0, 2.0, 3.0), 26.0)))


# ---------------------------------------------------------------------------------------------
# Output grids, end to end through the command
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_output_has_the_label_map_grid(capfd, tmp_path: Path, bundle_dir: Path, suffix: str) -> None:
    """Oblique, anisotropic, odd-sized: the output has exactly the label map's grid."""
    labels = write(brain_labels(), tmp_path / f"labels{suffix}")
    output = tmp_path / f"synthetic{suffix}"
    result = run_cli(capfd, *generate_args(labels, output, bundle_dir))
    assert result.code == 0, result.err

    source, synthetic = read(labels), read(output)
    assert synthetic.GetSize() == ODD_SIZE
    assert same_grid(synthetic, source)
    # NIfTI stores the geometry in float32; NRRD and MHA keep it exactly
    assert_grid(synthetic, source, atol=1e-6 if suffix == ".nii.gz" else 1e-12)
    if suffix == ".mha":
        assert synthetic.GetOrigin() == source.GetOrigin()
        assert synthetic.GetSpacing() == source.GetSpacing()
        assert synthetic.GetDirection() == source.GetDirection()
    values = sitk.GetArrayFromImage(synthetic)
    assert synthetic.GetPixelID() == sitk.sitkFloat32
    assert np.all(np.isfinite(values))
    assert values.min() >= LOW - 1e-3 and values.max() <= HIGH + 1e-3
    assert values.std() > 0


def test_output_has_the_reference_grid(capfd, tmp_path: Path, bundle_dir: Path) -> None:
    labels_image = brain_labels()
    labels = write(labels_image, tmp_path / "labels.nrrd")
    reference_image = reference_around(labels_image)
    reference = write(reference_image, tmp_path / "reference.nrrd")
    output = tmp_path / "synthetic.nrrd"

    result = run_cli(capfd, *generate_args(labels, output, bundle_dir, "--reference", reference))
    assert result.code == 0, result.err

    synthetic = read(output)
    assert synthetic.GetSize() == REF_SIZE
    assert same_grid(synthetic, read(reference))
    assert_grid(synthetic, read(reference), atol=1e-12)
    assert not same_grid(synthetic, read(labels))

    # physically in place: inside the label map's foreground the image is generated (varies, not the
    # fill value), while reference voxels beyond the model's working grid hold the fill value LOW
    values = array_xyz(synthetic)
    on_reference = array_xyz(sitk.Resample(labels_image, synthetic, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
    foreground = on_reference > 0
    assert foreground.sum() > 50
    assert values[foreground].std() > 0
    assert np.mean(values[foreground] == LOW) < 0.5
    grid = working_grid(labels_image, MODEL_SPACING, "RAS", 8)
    size = np.array(grid.GetSize())
    outside = np.zeros(values.shape, dtype=bool)
    for index in np.ndindex(*values.shape):
        point = synthetic.TransformIndexToPhysicalPoint([int(i) for i in index])
        continuous = np.array(grid.TransformPhysicalPointToContinuousIndex(point))
        outside[index] = np.any(continuous < -1) or np.any(continuous > size)
    assert outside.sum() > 100
    assert np.all(values[outside] == LOW)


# ---------------------------------------------------------------------------------------------
# Content placement: with a decoder that paints the class map it is given, the output must show
# the input's classes in the input's places (any transposed, flipped or shifted axis breaks it).
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def painting_decoder(monkeypatch: pytest.MonkeyPatch):
    """Replace decoding by "intensity = class": LOW + class / 3 * (HIGH - LOW) on the working grid."""
    seen = {}
    to_array = pipeline.image_to_array

    def capture(image: sitk.Image) -> np.ndarray:
        array = to_array(image)
        seen["classes"] = array
        return array

    def paint(autoencoder, latent, classes=None, tile=None, autocast=None, progress=None, cancel=None):
        classes = torch.from_numpy(seen["classes"].astype(np.float32))
        assert latent.shape[2:] == tuple(s // 4 for s in classes.shape)
        return (classes / 3 * 2 - 1)[None, None]

    monkeypatch.setattr(pipeline, "image_to_array", capture)
    monkeypatch.setattr(runner, "decode_latent", paint)
    return seen


def interior_classes(labels: sitk.Image, margin_mm: float) -> sitk.Image:
    """The label map's classes where the voxel is more than ``margin_mm`` from another class or the
    map's edge, else 255."""
    array = array_xyz(labels).astype(np.int32)
    padded = np.pad(array, 1, constant_values=-1)
    interior = np.full(array.shape, 255, dtype=np.uint8)
    for value in np.unique(array):
        distance = ndimage.distance_transform_edt(padded == value, sampling=labels.GetSpacing())[1:-1, 1:-1, 1:-1]
        interior[(array == value) & (distance > margin_mm)] = value
    image = sitk.GetImageFromArray(interior.transpose(2, 1, 0).copy())
    image.CopyInformation(labels)
    return image


def painted_classes(image: sitk.Image) -> np.ndarray:
    return np.round((array_xyz(image) - LOW) / (HIGH - LOW) * 3).astype(int)


def assert_classes_in_place(synthetic: sitk.Image, expected: np.ndarray) -> None:
    known = expected != 255
    for value in range(4):
        assert (expected == value).sum() >= 20, f"too few interior voxels of class {value} to test"
    painted = painted_classes(synthetic)
    wrong = (painted != expected) & known
    assert wrong.sum() == 0, f"{wrong.sum()} of {known.sum()} interior voxels show another class"


@pytest.mark.parametrize("direction", list(DIRECTIONS.values()), ids=list(DIRECTIONS))
def test_generated_content_is_in_the_label_map_places(generator, painting_decoder, direction: np.ndarray) -> None:
    labels = image_from_xyz(region_array((33, 41, 21)), ANISOTROPIC, ORIGIN, direction)
    synthetic, = generator.generate(labels, steps=1, seed=0, precision="fp32")
    assert same_grid(synthetic, labels)
    assert_classes_in_place(synthetic, array_xyz(interior_classes(labels, margin_mm=4.0)))


def test_generated_content_is_in_place_on_the_reference_grid(generator, painting_decoder) -> None:
    labels = image_from_xyz(region_array((33, 41, 21)), ANISOTROPIC, ORIGIN, OBLIQUE)
    reference = reference_around(labels)
    synthetic, = generator.generate(labels, reference, steps=1, seed=0, precision="fp32")
    assert same_grid(synthetic, reference)
    expected = sitk.Resample(interior_classes(labels, margin_mm=5.0), reference, sitk.Transform(),
                             sitk.sitkNearestNeighbor, 255)
    assert_classes_in_place(synthetic, array_xyz(expected))
