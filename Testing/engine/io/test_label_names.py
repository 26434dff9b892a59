"""Label names (MedLSDMLib.io.names): one matching rule for the engine's label table, its segment
names and the Slicer module."""
from __future__ import annotations

import pytest

from MedLSDMLib.card import LabelEntry
from MedLSDMLib.io.labels import LabelTable
from MedLSDMLib.io.names import class_index, name_key

CLASSES = [(0, "background"), (1, "csf"), (2, "grey matter"), (3, "White_Matter"), (7, "12")]


@pytest.mark.parametrize("name", ["white matter", "White-Matter", " WHITE_matter ", "white\tmatter", "whitematter"])
def test_names_match_ignoring_case_spaces_hyphens_and_underscores(name: str) -> None:
    assert name_key(name) == "whitematter"
    assert class_index(name, CLASSES) == 3


def test_a_class_is_found_by_value_when_no_name_matches() -> None:
    assert class_index("2", CLASSES) == 2
    assert class_index(" 0 ", CLASSES) == 0
    assert class_index("12", CLASSES) == 4  # a name first: the class named "12", not a value 12
    assert class_index("7", CLASSES) == 4


@pytest.mark.parametrize("text", ["tumour", "5", "-1", "", "grey  matter!"])
def test_unknown_names_and_values_find_nothing(text: str) -> None:
    assert class_index(text, CLASSES) is None


def test_the_label_table_uses_the_same_rule() -> None:
    table = LabelTable([LabelEntry(value, name) for value, name in CLASSES])
    for text in ("Grey-Matter", "3", "csf", "nothing", "12"):
        assert table.find(text) == class_index(text, CLASSES)
