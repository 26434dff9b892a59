"""``--deform``: a seeded, smooth, label-preserving deformation within its amplitude; and the label maps of a
synthesis job read from files, folders and lists, named, with duplicates refused."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import array_xyz, assert_grid, brain_labels, write
from MedLSDMLib.errors import InputError
from MedLSDMLib.io.deform import check_amplitude, deform_labels, random_transform
from MedLSDMLib.io.maplist import read_map_list


def test_the_same_seed_gives_the_same_deformation_and_another_seed_another():
    labels = brain_labels(size=(30, 34, 22))
    first, again = deform_labels(labels, 4.0, seed=3), deform_labels(labels, 4.0, seed=3)
    other = deform_labels(labels, 4.0, seed=4)
    assert np.array_equal(array_xyz(first), array_xyz(again))
    assert not np.array_equal(array_xyz(first), array_xyz(other))
    assert not np.array_equal(array_xyz(first), array_xyz(labels))  # it moved


def test_the_deformed_map_keeps_the_grid_and_only_the_input_values():
    labels = brain_labels(size=(30, 34, 22), dtype=np.uint16)
    array = array_xyz(labels)
    array[array == 2] = 517  # a value no interpolation would produce between 1 and 3
    labels = sitk.GetImageFromArray(array.transpose(2, 1, 0))
    labels.CopyInformation(brain_labels(size=(30, 34, 22)))
    deformed = deform_labels(labels, 5.0, seed=1)
    assert_grid(deformed, labels, atol=0)
    assert deformed.GetPixelID() == labels.GetPixelID()
    assert set(np.unique(array_xyz(deformed))) <= {0, 1, 517, 3}
    # every class is still there and of about its size (a smooth deformation, not a scramble)
    for value in (1, 517, 3):
        before, after = (array_xyz(labels) == value).sum(), (array_xyz(deformed) == value).sum()
        assert 0.7 < after / before < 1.3


def test_no_point_moves_more_than_the_amplitude():
    grid = brain_labels(size=(40, 40, 30))
    transform = random_transform(grid, 3.0, seed=11)
    field = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, grid.GetSize(), grid.GetOrigin(),
                                              grid.GetSpacing(), grid.GetDirection())
    lengths = np.linalg.norm(sitk.GetArrayFromImage(field), axis=-1)
    assert 1.0 < lengths.max() <= 3.0 + 1e-9


def test_zero_mm_is_no_deformation():
    labels = brain_labels()
    assert np.array_equal(array_xyz(deform_labels(labels, 0.0, seed=5)), array_xyz(labels))


@pytest.mark.parametrize("amplitude", [-1.0, float("nan"), float("inf"), 51.0])
def test_an_impossible_amplitude_is_an_input_error(amplitude):
    with pytest.raises(InputError, match="--deform"):
        check_amplitude(amplitude)


def test_maps_come_from_files_folders_of_pairs_and_lists_with_names(tmp_path: Path):
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    for name in ("b", "a"):
        write(brain_labels(), pairs / f"{name}_label.nii.gz")
        write(brain_labels(), pairs / f"{name}_image.nii.gz")
    single = write(brain_labels(), tmp_path / "my map.nrrd")
    listed = tmp_path / "list.csv"
    listed.write_text("label,name\npairs/a_label.nii.gz,first\n", encoding="utf-8")
    entries = read_map_list([str(pairs), str(single), str(listed)])
    assert [(e.name, e.path.name) for e in entries] == [
        ("a", "a_label.nii.gz"), ("b", "b_label.nii.gz"), ("my_map", "my map.nrrd"), ("first", "a_label.nii.gz")]


def test_two_maps_of_one_name_are_refused(tmp_path: Path):
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        write(brain_labels(), tmp_path / folder / "case.nii.gz")
    with pytest.raises(InputError, match="two label maps are named case"):
        read_map_list([str(tmp_path / "x"), str(tmp_path / "y")])


@pytest.mark.parametrize("text", ["image,name\nx.nii.gz,x\n", "not json"])
def test_a_list_without_a_label_column_is_an_input_error(tmp_path: Path, text: str):
    listed = tmp_path / ("list.csv" if "," in text else "list.json")
    listed.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match="'label' column"):
        read_map_list([str(listed)])


def test_a_missing_map_is_an_input_error(tmp_path: Path):
    with pytest.raises(InputError, match="does not exist"):
        read_map_list([str(tmp_path / "nothing.nii.gz")])


def test_a_list_row_may_carry_its_own_mapping(tmp_path: Path):
    write(brain_labels(), tmp_path / "a.nii.gz")
    (tmp_path / "list.json").write_text('[{"label": "a.nii.gz", "map": {"1": "csf", "7": "white matter"}}]',
                                        encoding="utf-8")
    (tmp_path / "list.csv").write_text("label,map\na.nii.gz,1=csf;7=white matter\n", encoding="utf-8")
    for listed in ("list.json", "list.csv"):
        (entry,) = read_map_list([str(tmp_path / listed)])
        assert entry.mapping == (("1", "csf"), ("7", "white matter"))
    (tmp_path / "bad.csv").write_text("label,map\na.nii.gz,1:csf\n", encoding="utf-8")
    with pytest.raises(InputError, match="SOURCE=CLASS"):
        read_map_list([str(tmp_path / "bad.csv")])
