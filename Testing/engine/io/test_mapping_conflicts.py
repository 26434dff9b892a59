"""A mapping that sends one segment (by its source or its name column, in any letter case) or one
label value to two classes is refused with one line naming both rows, whatever their order; rows that
agree (even written differently: a class by name and by value) are accepted; --map pairs likewise."""
from __future__ import annotations

from pathlib import Path

import pytest

from MedLSDMLib.card import LabelEntry
from MedLSDMLib.errors import InputError
from MedLSDMLib.io.labels import LabelTable, check_map_file, parse_mapping
from MedLSDMLib.io.mapfile import parse_map_text

from conftest import assert_one_line_error, brain_labels, generate_args, run_cli, write

TABLE = LabelTable([LabelEntry(0, "background", (0, 0, 0)), LabelEntry(1, "csf", (0, 0, 1)),
                    LabelEntry(2, "grey_matter", (0.5, 0.5, 0.5)), LabelEntry(3, "white_matter", (1, 1, 1))])

CONFLICTS = [
    ("2,white_matter,Tumour\nTumour,grey_matter\n", ("lines 1 and 2", "tumour")),
    ("Tumour,grey_matter\n2,white_matter,Tumour\n", ("lines 1 and 2", "tumour")),  # the other order
    ("2,white_matter,Left-Cortex\n3,grey_matter,left cortex\n", ("lines 1 and 2", "left-cortex")),
    ("Lesion,csf\n# a comment\nLESION,grey_matter\n", ("line 3", "line 1")),  # by source, any case
    ("5,csf\n05,grey_matter\n", ("line 2", "line 1")),  # one value written two ways
]


@pytest.mark.parametrize("text, words", CONFLICTS)
def test_conflicting_rows_are_refused_naming_both(text: str, words) -> None:
    with pytest.raises(InputError) as raised:
        check_map_file(parse_map_text(text, "m.csv"), TABLE)
    message = str(raised.value)
    assert "\n" not in message
    for word in words:
        assert word in message.lower(), message


@pytest.mark.parametrize("text", [
    "2,white_matter,Tumour\nTumour,3\n",  # one class, by name and by value
    "2,white_matter,X\n41,White Matter,x\n",  # a name shared by rows that agree
])
def test_agreeing_rows_are_accepted(text: str) -> None:
    check_map_file(parse_map_text(text, "m.csv"), TABLE)


def test_conflicting_map_pairs_are_refused() -> None:
    for pairs in (["Tumor=csf", "tumor=grey_matter"], ["5=csf", "05=grey_matter"], ["A b=csf", "a-B=1", "AB=3"]):
        with pytest.raises(InputError, match="two classes"):
            parse_mapping(pairs)
    assert parse_mapping(["Tumor=csf", "TUMOR=CSF", "5=1"]) == {"Tumor": "csf", "TUMOR": "CSF", "5": "1"}


def test_conflicting_file_is_one_line_exit_2(capfd, tmp_path: Path, bundle_dir: Path) -> None:
    labels = write(brain_labels(), tmp_path / "labels.nii.gz")
    table = tmp_path / "m.csv"
    table.write_text("1,csf,Ventricles\n2,grey_matter\n3,white_matter\nventricles,white_matter\n")
    result = run_cli(capfd, *generate_args(labels, tmp_path / "o.nii.gz", bundle_dir, "--map-file", table))
    assert_one_line_error(result, 2, "m.csv", "lines 1 and 4", "Ventricles")
    assert not (tmp_path / "o.nii.gz").exists()
