"""Reading and writing volumes: atomic writes (no temporary file left, an existing file untouched
when writing or generating fails), numbered outputs, output path and folder checks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import MedLSDMLib.io.volumes as volumes
from MedLSDMLib.errors import DiskFull, InputError
from MedLSDMLib.io.volumes import check_output_dir, check_output_path, numbered_paths, read_image, suffix_of, write_image

from conftest import (assert_grid, assert_one_line_error, brain_labels, folder_entries, generate_args, run_cli)


@pytest.mark.parametrize("name, data_file", [("image.nii.gz", None), ("image.nii", None), ("image.nrrd", None),
                                             ("image.mha", None), ("image.nhdr", "image.raw.gz"),
                                             ("image.mhd", "image.zraw")])
def test_write_image_leaves_only_the_output(tmp_path: Path, name: str, data_file: str) -> None:
    """No temporary file stays behind; a detached header (.nhdr, .mhd) has its data file beside it,
    named after the output (not after a temporary name)."""
    folder = tmp_path / "written"
    folder.mkdir()
    image = sitk.Cast(brain_labels(), sitk.sitkFloat32) * 1.5
    path = write_image(image, folder / name)
    assert path == folder / name
    assert folder_entries(folder) == sorted([name] + ([data_file] if data_file else []))
    if data_file:
        assert data_file in (folder / name).read_text(errors="replace")
    moved = folder.rename(tmp_path / "moved")  # the output is self-contained
    again = read_image(moved / name)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(again), sitk.GetArrayFromImage(image))
    assert_grid(again, image, atol=1e-6)


def test_write_image_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "image.nrrd"
    path.write_bytes(b"old")
    write_image(sitk.Cast(brain_labels(), sitk.sitkFloat32), path)
    assert folder_entries(tmp_path) == ["image.nrrd"]
    assert read_image(path).GetSize() == brain_labels().GetSize()


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "image.nii.gz"
    path.write_bytes(b"an earlier result")
    written = []

    def write_half_then_fail(image, name, useCompression=False):
        Path(name).write_bytes(b"half an image")
        written.append(Path(name))
        raise RuntimeError("disk full")

    monkeypatch.setattr(volumes.sitk, "WriteImage", write_half_then_fail)
    with pytest.raises(DiskFull, match="could not write .*image.nii.gz .*the disk is full.*kept"):
        write_image(brain_labels(), path)
    assert written and written[0] != path and tmp_path in written[0].parents  # beside it: same file system
    assert path.read_bytes() == b"an earlier result"
    assert folder_entries(tmp_path) == ["image.nii.gz"]


def test_failed_generation_leaves_an_existing_output(capfd, tmp_path: Path, labels_path: Path,
                                                     bundle_dir: Path) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    output = folder / "synthetic.nii.gz"
    output.write_bytes(b"an earlier result")
    result = run_cli(capfd, *generate_args(labels_path, output, bundle_dir, "--max-memory", "1e-6"))
    assert_one_line_error(result, 4, "needs about")
    assert output.read_bytes() == b"an earlier result"
    assert folder_entries(folder) == ["synthetic.nii.gz"]

    result = run_cli(capfd, *generate_args(labels_path, output, bundle_dir))  # a good run replaces it
    assert result.code == 0, result.err
    assert folder_entries(folder) == ["synthetic.nii.gz"]
    assert read_image(output).GetSize() == brain_labels().GetSize()


def test_numbered_paths(tmp_path: Path) -> None:
    assert numbered_paths(tmp_path / "a.nii.gz", 1) == [tmp_path / "a.nii.gz"]
    assert numbered_paths(tmp_path / "a.nii.gz", 3) == [tmp_path / f"a_0{k}.nii.gz" for k in (1, 2, 3)]
    assert numbered_paths(tmp_path / "b.v2.nrrd", 2) == [tmp_path / "b.v2_01.nrrd", tmp_path / "b.v2_02.nrrd"]
    many = numbered_paths(tmp_path / "c.mha", 100)
    assert many[0].name == "c_001.mha" and many[-1].name == "c_100.mha" and len(set(many)) == 100


def test_suffixes() -> None:
    assert suffix_of("x/brain.seg.nrrd") == ".seg.nrrd"
    assert suffix_of("x/brain.NII.GZ") == ".nii.gz"
    assert suffix_of("brain.nrrd") == ".nrrd"


def test_check_output_path(tmp_path: Path) -> None:
    labels = tmp_path / "labels.nii.gz"
    labels.write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.nii.gz").symlink_to(labels)
    assert check_output_path(tmp_path / "out.nrrd", [labels, None]) == tmp_path / "out.nrrd"
    for bad, says in ((tmp_path / "out.seg.nrrd", "extension"), (tmp_path / "out.txt", "extension"),
                      (tmp_path / "no" / "out.nrrd", "does not exist"), (labels, "also an input"),
                      (tmp_path / "sub" / ".." / "labels.nii.gz", "also an input"),
                      (tmp_path / "link.nii.gz", "also an input")):
        with pytest.raises(InputError, match=says):
            check_output_path(bad, [labels, None])


def test_one_output_folder_check(tmp_path: Path) -> None:
    afile = tmp_path / "file"
    afile.write_text("keep")
    with pytest.raises(InputError, match=r"is a file: give a folder for the things"):
        check_output_dir(afile, "the things")
    with pytest.raises(InputError, match="does not exist: create it first"):
        check_output_dir(tmp_path / "missing" / "out", "the things")
    assert check_output_dir(tmp_path / "missing" / "out", "the things", parents=True) == tmp_path / "missing" / "out"
    assert check_output_dir(tmp_path / "new", "the things") == tmp_path / "new"
    assert afile.read_text() == "keep"
