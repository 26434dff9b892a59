"""Label mapping: by value, by Slicer segment name, by the user's --map; unknown labels are errors."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from MedLSDMLib.card import LabelEntry
from MedLSDMLib.errors import InputError
from MedLSDMLib.io.labels import LabelTable, class_image, parse_mapping

from conftest import (CLASS_TABLE, OBLIQUE, ODD_SIZE, ORIGIN, ANISOTROPIC, array_xyz, assert_grid,
                      assert_no_output, assert_one_line_error, brain_array, generate_args, image_from_xyz, read,
                      run_cli, tiny_card, write)

TABLE = LabelTable(tiny_card().labels)


def ijk_to_lps() -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = OBLIQUE * np.array(ANISOTROPIC)
    matrix[:3, 3] = ORIGIN
    return matrix


def write_seg(path: Path, masks: Dict[str, np.ndarray]) -> Path:
    """A Slicer .seg.nrrd on the oblique anisotropic grid, one segment per (name, i-j-k mask)."""
    segmentation = slicerio.create_segmentation(ODD_SIZE, ijk_to_lps())
    for index, (name, mask) in enumerate(masks.items()):
        slicerio.add_segment(segmentation, mask, {"id": f"Segment_{index + 1}", "name": name})
    slicerio.write_segmentation(str(path), segmentation)
    return path


def expected_seg_grid() -> sitk.Image:
    grid = sitk.Image(list(ODD_SIZE), sitk.sitkUInt8)
    grid.SetSpacing(ANISOTROPIC)
    grid.SetOrigin(ORIGIN)
    grid.SetDirection(OBLIQUE.flatten().tolist())
    return grid


# ---------------------------------------------------------------------------------------------
# By value
# ---------------------------------------------------------------------------------------------

def test_values_map_to_the_class_with_that_value() -> None:
    """Class index i is the i-th table entry, found by its value (not the value itself)."""
    table = LabelTable([LabelEntry(0, "background"), LabelEntry(10, "liver"), LabelEntry(20, "spleen"),
                        LabelEntry(30, "kidney")])
    values = brain_array() * 10
    classes = class_image(image_from_xyz(values.astype(np.int16)), table)
    np.testing.assert_array_equal(array_xyz(classes), brain_array())
    assert classes.GetPixelID() == sitk.sitkUInt8
    assert_grid(classes, image_from_xyz(values), atol=0)


def test_integer_valued_float_map_is_accepted() -> None:
    classes = class_image(image_from_xyz(brain_array().astype(np.float32)), TABLE)
    np.testing.assert_array_equal(array_xyz(classes), brain_array())


@pytest.mark.slow
def test_user_value_mapping(capfd, tmp_path: Path, bundle_dir: Path) -> None:
    values = brain_array().astype(np.int16)
    values[values == 3] = 5  # "5" is not a model value: mapped to grey matter
    image = image_from_xyz(values)
    with pytest.raises(InputError):
        class_image(image, TABLE)
    classes = array_xyz(class_image(image, TABLE, parse_mapping(["5=2"])))
    np.testing.assert_array_equal(classes, np.where(brain_array() == 3, 2, brain_array()))
    by_name = array_xyz(class_image(image, TABLE, parse_mapping(["5 = Grey_Matter"])))
    np.testing.assert_array_equal(by_name, classes)

    labels = write(image, tmp_path / "labels.nii.gz")
    output = tmp_path / "synthetic.nii.gz"
    result = run_cli(capfd, *generate_args(labels, output, bundle_dir, "--map", "5=2"))
    assert result.code == 0, result.err
    assert output.is_file()


def test_unknown_value_is_an_error_listing_the_classes(capfd, tmp_path: Path, bundle_dir: Path) -> None:
    values = brain_array()
    values[values == 3] = 7
    with pytest.raises(InputError) as raised:
        class_image(image_from_xyz(values), TABLE)
    assert "7" in str(raised.value) and CLASS_TABLE in str(raised.value)

    folder = tmp_path / "work"
    folder.mkdir()
    labels = write(image_from_xyz(values), folder / "labels.nii.gz")
    result = run_cli(capfd, *generate_args(labels, folder / "synthetic.nii.gz", bundle_dir))
    assert_one_line_error(result, 2, "labels.nii.gz", "value(s) 7", CLASS_TABLE, "--map")
    assert_no_output(folder, ["labels.nii.gz"])


def test_names_apply_to_segmentations_only(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="map label values"):
        class_image(image_from_xyz(brain_array()), TABLE, parse_mapping(["Tumor=csf"]))


def test_mapping_to_an_unknown_class_lists_the_classes(capfd, tmp_path: Path, bundle_dir: Path) -> None:
    values = brain_array()
    values[values == 3] = 5
    folder = tmp_path / "work"
    folder.mkdir()
    labels = write(image_from_xyz(values), folder / "labels.nii.gz")
    result = run_cli(capfd, *generate_args(labels, folder / "synthetic.nii.gz", bundle_dir, "--map", "5=wm"))
    assert_one_line_error(result, 2, "'wm' is not a class", CLASS_TABLE)
    assert_no_output(folder, ["labels.nii.gz"])


@pytest.mark.parametrize("pair", ["Tumor", "=csf", "Tumor=", " = "])
def test_malformed_map_pairs(pair: str) -> None:
    with pytest.raises(InputError, match="NAME=CLASS"):
        parse_mapping([pair])


# ---------------------------------------------------------------------------------------------
# By segment name (Slicer .seg.nrrd)
# ---------------------------------------------------------------------------------------------

def brain_masks() -> Dict[str, np.ndarray]:
    """Segments named like the model's classes, but in other case and spacing."""
    array = brain_array()
    return {"CSF": array == 1, "Grey  Matter": array == 2, "white_matter": array == 3}


def test_segments_match_classes_by_name(tmp_path: Path) -> None:
    seg = write_seg(tmp_path / "brain.seg.nrrd", brain_masks())
    classes = class_image(seg, TABLE)
    np.testing.assert_array_equal(array_xyz(classes), brain_array())
    assert_grid(classes, expected_seg_grid(), atol=1e-9)


def test_overlapping_segments_in_layers(tmp_path: Path) -> None:
    """Overlapping segments are stored in layers (a 4D voxel array); later segments paint over earlier."""
    array = brain_array()
    seg = write_seg(tmp_path / "brain.seg.nrrd", {"csf": array >= 1, "grey matter": array >= 2,
                                                  "White Matter": array == 3})
    assert slicerio.read_segmentation(str(seg))["voxels"].ndim == 4
    np.testing.assert_array_equal(array_xyz(class_image(seg, TABLE)), array)


@pytest.mark.slow
def test_generate_from_a_segmentation_has_its_grid(capfd, tmp_path: Path, bundle_dir: Path) -> None:
    seg = write_seg(tmp_path / "brain.seg.nrrd", brain_masks())
    output = tmp_path / "synthetic.nrrd"
    result = run_cli(capfd, *generate_args(seg, output, bundle_dir))
    assert result.code == 0, result.err
    assert_grid(read(output), expected_seg_grid(), atol=1e-9)


@pytest.mark.slow
def test_segment_mapped_by_the_user(capfd, tmp_path: Path, bundle_dir: Path) -> None:
    array = brain_array()
    masks = {"csf": array == 1, "grey matter": array == 2, "Tumor": array == 3}
    seg = write_seg(tmp_path / "brain.seg.nrrd", masks)
    with pytest.raises(InputError):
        class_image(seg, TABLE)
    classes = class_image(seg, TABLE, parse_mapping(["tumor=White_Matter"]))
    np.testing.assert_array_equal(array_xyz(classes), array)

    output = tmp_path / "synthetic.nii.gz"
    result = run_cli(capfd, *generate_args(seg, output, bundle_dir, "--map", "Tumor=white matter"))
    assert result.code == 0, result.err
    assert output.is_file()


def test_unmatched_segment_name_is_an_error_naming_it(capfd, tmp_path: Path, bundle_dir: Path) -> None:
    array = brain_array()
    folder = tmp_path / "work"
    folder.mkdir()
    seg = write_seg(folder / "brain.seg.nrrd", {"csf": array == 1, "grey matter": array == 2, "Tumor": array == 3})
    result = run_cli(capfd, *generate_args(seg, folder / "synthetic.nii.gz", bundle_dir))
    assert_one_line_error(result, 2, "'Tumor'", "brain.seg.nrrd", CLASS_TABLE)
    assert_no_output(folder, ["brain.seg.nrrd"])


def test_map_naming_a_missing_segment_is_an_error(capfd, tmp_path: Path, bundle_dir: Path) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    seg = write_seg(folder / "brain.seg.nrrd", brain_masks())
    result = run_cli(capfd, *generate_args(seg, folder / "synthetic.nii.gz", bundle_dir, "--map", "Lesion=csf"))
    assert_one_line_error(result, 2, "Lesion", "does not have")
    assert_no_output(folder, ["brain.seg.nrrd"])
