"""An output never writes a file an input reads: not its header, not a detached data file (.nhdr +
.raw.gz, .mhd + .zraw, a header naming another data file), not through a hard link, and not under a
name that differs only in letter case (one file on macOS and Windows). Each is refused before any
work with one line, exit 2, and the input's files stay byte for byte as they were."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

import pytest
import SimpleITK as sitk

from MedLSDMLib.errors import InputError
from MedLSDMLib.io import volumes
from MedLSDMLib.io.volumes import check_output_path

from conftest import assert_one_line_error, brain_labels, generate_args, run_cli


def write(image: sitk.Image, path: Path, compressed: bool = True) -> Path:
    sitk.WriteImage(image, str(path), useCompression=compressed)
    return path


def snapshot(folder: Path) -> Dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("name, output, data_file", [
    ("scan.nhdr", "scan.NHDR", "scan.raw.gz"),
    ("scan.mhd", "scan.MHD", "scan.zraw"),
    ("scan.mhd", "Scan.mhd", "scan.zraw"),
    ("scan.nhdr", "SCAN.nhdr", "scan.raw.gz"),
    ("scan.mhd", "scan.Mhd", "scan.raw"),  # an uncompressed input: the headers clash
])
def test_case_differing_detached_output_is_refused(capfd, tmp_path: Path, bundle_dir: Path, name: str,
                                                   output: str, data_file: str) -> None:
    """scan.nhdr in, -o scan.NHDR out: the output's data file is the input's (the data loss of issue 22)."""
    labels = write(brain_labels(), tmp_path / name, compressed=not data_file.endswith(".raw"))
    assert (tmp_path / data_file).is_file()
    before = snapshot(tmp_path)
    result = run_cli(capfd, *generate_args(labels, tmp_path / output, bundle_dir))
    assert_one_line_error(result, 2, "also an input", "letter case")
    assert snapshot(tmp_path) == before


def test_output_writing_another_headers_data_file_is_refused(capfd, tmp_path: Path, bundle_dir: Path) -> None:
    """A header names a data file of another name (a.nhdr -> out.raw.gz): -o out.nhdr would write it."""
    write(brain_labels(), tmp_path / "out.nhdr")
    (tmp_path / "out.nhdr").rename(tmp_path / "a.nhdr")  # a.nhdr reads out.raw.gz
    assert volumes.files_read(tmp_path / "a.nhdr") == [tmp_path / "a.nhdr", tmp_path / "out.raw.gz"]
    before = snapshot(tmp_path)
    result = run_cli(capfd, *generate_args(tmp_path / "a.nhdr", tmp_path / "out.nhdr", bundle_dir))
    assert_one_line_error(result, 2, "out.raw.gz", "a.nhdr")
    assert snapshot(tmp_path) == before


def test_hard_link_to_an_input_is_refused(capfd, tmp_path: Path, bundle_dir: Path) -> None:
    """An output that is another name of an input's file (same inode) is that input."""
    labels = write(brain_labels(), tmp_path / "labels.nii.gz")
    os.link(labels, tmp_path / "copy.nii.gz")
    before = snapshot(tmp_path)
    result = run_cli(capfd, *generate_args(labels, tmp_path / "copy.nii.gz", bundle_dir))
    assert_one_line_error(result, 2, "hard link")
    assert snapshot(tmp_path) == before


def test_case_differing_header_is_refused(tmp_path: Path) -> None:
    labels = write(brain_labels(), tmp_path / "labels.nii.gz")
    with pytest.raises(InputError, match="letter case"):
        check_output_path(tmp_path / "LABELS.nii.gz", [labels])
    with pytest.raises(InputError, match="letter case"):
        check_output_path(tmp_path / "Labels.NII.GZ", [labels])


def test_outputs_that_share_a_file_are_refused(capfd, tmp_path: Path, bundle_dir: Path) -> None:
    """--variability and --mean whose names differ only in case write one file (and one data file)."""
    labels = write(brain_labels(), tmp_path / "labels.nii.gz")
    result = run_cli(capfd, *generate_args(labels, tmp_path / "s.nrrd", bundle_dir, "--samples", "2",
                                           "--variability", tmp_path / "m.nhdr", "--mean", tmp_path / "M.nhdr"))
    assert_one_line_error(result, 2, "different files", "letter case")


def test_files_read_lists_every_data_file(tmp_path: Path) -> None:
    """LIST headers, %d patterns and MetaImage's ElementDataFile name the files an input reads."""
    (tmp_path / "list.nhdr").write_text("NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 2 2\nencoding: raw\n"
                                        "data file: LIST\nslice0.raw\nslice1.raw\n")
    assert volumes.files_read(tmp_path / "list.nhdr")[1:] == [tmp_path / "slice0.raw", tmp_path / "slice1.raw"]
    (tmp_path / "p.mhd").write_text("ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\n"
                                    "ElementDataFile = sub/s%02d.raw 1 3 1\n")
    assert volumes.files_read(tmp_path / "p.mhd")[1:] == [tmp_path / "sub" / f"s{k:02d}.raw" for k in (1, 2, 3)]
    attached = write(brain_labels(), tmp_path / "attached.nrrd")
    assert volumes.files_read(attached) == [attached]
    assert volumes.files_read(write(brain_labels(), tmp_path / "a.mha")) == [tmp_path / "a.mha"]


def test_files_written_names_the_data_file(tmp_path: Path) -> None:
    assert volumes.files_written(tmp_path / "x.NHDR") == [tmp_path / "x.NHDR", tmp_path / "x.raw.gz"]
    assert volumes.files_written(tmp_path / "x.mhd") == [tmp_path / "x.mhd", tmp_path / "x.zraw"]
    assert volumes.files_written(tmp_path / "x.nii.gz") == [tmp_path / "x.nii.gz"]


def test_a_distinct_detached_output_is_written(capfd, tmp_path: Path, bundle_dir: Path) -> None:
    """The check refuses only clashes: scan.nhdr in, other.nhdr out works and leaves the input intact."""
    labels = write(brain_labels(), tmp_path / "scan.nhdr")
    before = snapshot(tmp_path)
    result = run_cli(capfd, *generate_args(labels, tmp_path / "other.nhdr", bundle_dir))
    assert result.code == 0, result.err
    after = snapshot(tmp_path)
    assert {k: after[k] for k in before} == before
    assert sitk.ReadImage(str(tmp_path / "other.nhdr")).GetSize() == brain_labels().GetSize()
