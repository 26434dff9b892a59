"""The label maps of a synthesis job: files, folders of them, or a CSV/JSON list, each with a name."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Sequence, Tuple

from MedLSDMLib.errors import InputError
from MedLSDMLib.io.volumes import IMAGE_SUFFIXES, SEGMENTATION_SUFFIX, suffix_of

LABEL_SUFFIXES = (SEGMENTATION_SUFFIX,) + IMAGE_SUFFIXES


class MapEntry(NamedTuple):
    name: str  # what the outputs are named after
    path: Path
    mapping: Tuple[Tuple[str, str], ...] = ()  # this map's own label value (or segment name) -> model class


def _stem(path: Path) -> str:
    return path.name[: len(path.name) - len(suffix_of(path))]


def clean_name(text: str) -> str:
    """A file-name-safe name: letters, digits, '-', '.' and '_'."""
    return re.sub(r"[^\w\-.]+", "_", text).strip("_.") or "map"


def _from_folder(folder: Path) -> List[MapEntry]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and suffix_of(p) in LABEL_SUFFIXES)
    labels = [p for p in files if _stem(p).endswith("_label")]
    if labels:  # a folder of NAME_image / NAME_label pairs: the label maps only
        return [MapEntry(clean_name(_stem(p)[: -len("_label")]), p) for p in labels]
    return [MapEntry(clean_name(_stem(p)), p) for p in files]


def _from_list(path: Path) -> List[MapEntry]:
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8") as stream:
                rows: List[Dict[str, Any]] = list(csv.DictReader(stream))
        else:
            rows = json.loads(path.read_text(encoding="utf-8"))
        entries = []
        for row in rows:
            label = path.parent / str(row["label"])
            name = clean_name(str(row.get("name") or _stem(label)))
            entries.append(MapEntry(name, label, _row_mapping(row.get("map"))))
    except (KeyError, TypeError, AttributeError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(
            f"{path} must list label maps with a 'label' column, an optional 'name' and an optional 'map' "
            f'(JSON: {{"5": "csf"}}; CSV: 5=csf;6=grey_matter): {type(exc).__name__} {exc}'
        ) from None
    return entries


def _row_mapping(value: Any) -> Tuple[Tuple[str, str], ...]:
    """A list row's own mapping: a JSON object, or CSV text ``SOURCE=CLASS;SOURCE=CLASS``."""
    if not value:
        return ()
    if isinstance(value, dict):
        return tuple((str(k), str(v)) for k, v in value.items())
    pairs = [item.partition("=") for item in str(value).split(";") if item.strip()]
    if any(not sep or not a.strip() or not b.strip() for a, sep, b in pairs):
        raise ValueError(f"map {value!r} is not SOURCE=CLASS;SOURCE=CLASS")
    return tuple((a.strip(), b.strip()) for a, _, b in pairs)


def read_map_list(sources: Sequence[str]) -> List[MapEntry]:
    """Every label map of ``sources`` in order (a folder's sorted by name), named after their files (without
    ``_label``) or a list's ``name`` column, with a list's ``map`` (over ``--map``); InputError for a missing
    source, no map, or two maps of one name."""
    entries: List[MapEntry] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found = _from_folder(path)
            if not found:
                raise InputError(f"folder {path} holds no label map ({', '.join(LABEL_SUFFIXES)})")
            entries += found
        elif path.is_file() and path.suffix.lower() in (".csv", ".json"):
            entries += _from_list(path)
        elif path.is_file():
            entries.append(MapEntry(clean_name(_stem(path)), path))
        else:
            raise InputError(f"label map {path} does not exist: give label map files, folders or a .csv/.json list")
    if not entries:
        raise InputError("no label maps to synthesize from: give label map files, folders or a .csv/.json list")
    seen: Dict[str, Path] = {}
    for entry in entries:
        if entry.name in seen:
            raise InputError(
                f"two label maps are named {entry.name} ({seen[entry.name]} and {entry.path}): their outputs "
                "would overwrite each other; rename one, or give names in a .csv list"
            )
        seen[entry.name] = entry.path
    return entries
