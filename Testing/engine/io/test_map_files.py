"""Mapping files (``--map-file``): the format, the shipped FreeSurfer/SynthSeg table, class maps from them,
and ``medlsdm generate`` / the worker with one."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MedLSDMLib.card import LabelEntry
from MedLSDMLib.errors import InputError
from MedLSDMLib.io.labels import LabelTable, class_image
from MedLSDMLib.io.mapfile import mappings_folder, parse_map_text, read_map_file, resolve_map_file

from conftest import REPO, array_xyz, assert_one_line_error, generate_args, image_from_xyz, run_cli, write

TABLE = LabelTable([LabelEntry(0, "background", (0, 0, 0)), LabelEntry(1, "csf", (0, 0, 1)),
                    LabelEntry(2, "grey_matter", (0.5, 0.5, 0.5)), LabelEntry(3, "white_matter", (1, 1, 1))])
SHIPPED = REPO / "Resources" / "Mappings" / "freesurfer_tissue.csv"


def test_parse_rows_comments_header_and_default() -> None:
    parsed = parse_map_text("# a comment\n\nsource,target,name\n2, white_matter, Left-Cerebral-White-Matter\n"
                            "03,grey_matter\nTumour,white matter\n*,background\n", "m.csv")
    assert [(r.line, r.source, r.target, r.name) for r in parsed.rows] == [
        (4, "2", "white_matter", "Left-Cerebral-White-Matter"), (5, "3", "grey_matter", None),
        (6, "Tumour", "white matter", None), (7, "*", "background", None)]
    assert parsed.values() == {"2": "white_matter", "3": "grey_matter", "*": "background"}
    assert parsed.names() == {"Left-Cerebral-White-Matter": "white_matter", "Tumour": "white matter",
                              "*": "background"}


@pytest.mark.parametrize("text, words", [
    ("2,white_matter\n2,grey_matter\n", ["line 2", "already mapped on line 1"]),
    ("2\n", ["line 1", "source,target"]),
    ("2,white_matter,a,b\n", ["line 1"]),
    ("# only comments\n", ["no mapping rows"]),
])
def test_malformed_files_name_the_line(text: str, words: list) -> None:
    with pytest.raises(InputError) as caught:
        parse_map_text(text, "bad.csv")
    for word in words:
        assert word in str(caught.value)


def freesurfer_map() -> sitk.Image:
    """A 6×4×4 FreeSurfer-style map: cortex, white matter, ventricle, CSF, skull (507), background."""
    array = np.zeros((6, 4, 4), dtype=np.int32)
    for x, value in enumerate((3, 41, 4, 24, 507, 0)):
        array[x] = value
    return image_from_xyz(array)


def test_shipped_table_maps_freesurfer_values_to_tissue_classes() -> None:
    classes = array_xyz(class_image(freesurfer_map(), TABLE, map_file=read_map_file(SHIPPED)))
    assert [int(classes[x, 0, 0]) for x in range(6)] == [2, 3, 1, 1, 0, 0]


def test_shipped_table_covers_the_freesurfer_structures() -> None:
    values = read_map_file("freesurfer_tissue").values()  # a shipped table by name
    expected = {"white_matter": [2, 41, 7, 46, 16], "grey_matter": [3, 42, 8, 47, 10, 11, 12, 13, 17, 18, 26, 28,
                                                                   49, 50, 51, 52, 53, 54, 58, 60],
                "csf": [4, 5, 43, 44, 14, 15, 24]}
    for target, sources in expected.items():
        for source in sources:
            assert values[str(source)] == target, source
    assert values["*"] == "background" and values["0"] == "background"
    assert "507" not in values  # non-brain labels go to the default row
    assert resolve_map_file("freesurfer_tissue.csv") == SHIPPED.resolve() or \
        resolve_map_file("freesurfer_tissue.csv").samefile(SHIPPED)
    assert mappings_folder().samefile(SHIPPED.parent)


def test_map_options_override_the_file_and_default_replaces_own_values(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("3,grey_matter\n*,background\n")
    image = freesurfer_map()
    with_override = array_xyz(class_image(image, TABLE, {"41": "csf", "4": "3"}, map_file=path))
    assert [int(with_override[x, 0, 0]) for x in range(6)] == [2, 1, 3, 0, 0, 0]
    path.write_text("3,grey_matter\n41,white_matter\n")  # no default row: 4, 24 and 507 are unknown
    with pytest.raises(InputError, match="507"):
        class_image(image, TABLE, map_file=path)


def test_unknown_target_names_the_file_line(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("# header comment\n3,grey_matter\n41,whitematterr\n")
    with pytest.raises(InputError, match=r"m.csv line 3: 'whitematterr' is not a class"):
        class_image(freesurfer_map(), TABLE, map_file=path)


def test_segment_names_match_the_name_column() -> None:
    from MedLSDMLib.io.labels import _classes_from_segments

    masks = {"Left-Cerebral-Cortex": np.ones((2, 2, 2), bool), "Skull": np.zeros((2, 2, 2), bool)}
    masks["Skull"][0] = True
    parsed = parse_map_text("3,grey_matter,Left-Cerebral-Cortex\n*,background\n")
    classes = _classes_from_segments(masks, (2, 2, 2), TABLE, {}, "seg", parsed.names())
    assert int(classes[1, 0, 0]) == 2 and int(classes[0, 0, 0]) == 0


@pytest.mark.slow
def test_generate_with_map_file_and_the_worker_forwards_it(capfd, bundle_dir: Path, tmp_path: Path) -> None:
    from MedLSDMLib.worker import main as worker_main

    array = np.zeros((12, 10, 8), dtype=np.int32)
    array[2:10, 2:8, 2:6] = 2
    array[4:8, 4:6, 3:5] = 41
    labels = write(image_from_xyz(array), tmp_path / "aseg.nii.gz")
    result = run_cli(capfd, *generate_args(labels, tmp_path / "out.nii.gz", bundle_dir,
                                                        "--map-file", SHIPPED, "--progress", "none"))
    assert result.code == 0, result.err
    out = sitk.ReadImage(str(tmp_path / "out.nii.gz"))
    assert out.GetSize() == (12, 10, 8)
    without = run_cli(capfd, *generate_args(labels, tmp_path / "x.nii.gz", bundle_dir, "--progress", "none"))
    assert_one_line_error(without, 2, "41", "--map-file")
    capfd.readouterr()
    code = worker_main([str(labels), "-o", str(tmp_path / "w.nii.gz"), "--model", str(bundle_dir), "--steps", "2",
                        "--seed", "1", "--map-file", str(SHIPPED)])
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.strip()]
    assert code == 0 and lines[-1]["type"] == "done"


def test_bad_map_file_is_one_line_exit_2(capfd, bundle_dir: Path, tmp_path: Path) -> None:
    array = np.zeros((8, 8, 8), dtype=np.int32)
    array[2:6, 2:6, 2:6] = 3
    labels = write(image_from_xyz(array), tmp_path / "aseg.nii.gz")
    result = run_cli(capfd, *generate_args(labels, tmp_path / "o.nii.gz", bundle_dir,
                                                        "--map-file", tmp_path / "missing.csv", "--progress", "none"))
    assert_one_line_error(result, 2, "missing.csv")
    assert not (tmp_path / "o.nii.gz").exists()
