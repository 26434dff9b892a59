"""Mapping a user's label map onto the model's classes: by value, by segment name, or by a mapping."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Sequence, Union

import numpy as np
import SimpleITK as sitk

from MedLSDMLib.card import LabelEntry
from MedLSDMLib.errors import InputError
from MedLSDMLib.io.mapfile import MapFile, read_map_file
from MedLSDMLib.io.names import class_index, name_key
from MedLSDMLib.io.volumes import PathLike, check_volume, is_segmentation_file, read_image, read_segmentation

LabelSource = Union[PathLike, sitk.Image]


class LabelTable:
    """The model's classes; class index i is channel i of the one-hot conditioning map."""

    def __init__(self, entries: Sequence[LabelEntry]) -> None:
        self.entries = list(entries)

    def __len__(self) -> int:
        return len(self.entries)

    def describe(self) -> str:
        return ", ".join(f"{e.value}={e.name}" for e in self.entries)

    def find(self, text: str) -> Optional[int]:
        """Class index for a class name or value given as text, or None (see MedLSDMLib.io.names)."""
        return class_index(text, [(e.value, e.name) for e in self.entries])

    def resolve(self, text: str) -> int:
        index = self.find(text)
        if index is None:
            raise InputError(f"'{text}' is not a class of this model: use one of {self.describe()}")
        return index


def parse_mapping(pairs: Sequence[str]) -> Dict[str, str]:
    """``["Tumor=lesion", "5=3"]`` → ``{"Tumor": "lesion", "5": "3"}``."""
    mapping: Dict[str, str] = {}
    given: Dict[str, str] = {}  # each source's key (its value, or its name key) -> the pair that mapped it
    for pair in pairs:
        source, sep, target = pair.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise InputError(f"--map {pair!r} is not NAME=CLASS: write it like --map Tumor=lesion or --map 5=2")
        source, target = source.strip(), target.strip()
        key = str(int(source)) if re.fullmatch(r"-?\d+", source) else name_key(source)
        earlier = given.setdefault(key, pair)
        if name_key(earlier.partition("=")[2]) != name_key(target):
            raise InputError(
                f"--map {earlier!r} and --map {pair!r} map one source to two classes: keep one --map per source"
            )
        mapping[source] = target
    return mapping


def _integer_labels(image: sitk.Image, name: str) -> np.ndarray:
    array = sitk.GetArrayFromImage(image)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise InputError(f"label map {name} has non-integer values: give a label map, not an intensity image")
        array = array.astype(np.int64)
    return array


def _classes_from_values(
    array: np.ndarray,
    table: LabelTable,
    mapping: Mapping[str, str],
    name: str,
    file_values: Optional[Mapping[str, str]] = None,
) -> np.ndarray:
    """Class indices by value: ``mapping`` (``--map``) over the mapping file's rows over ``*`` (either's)
    over the model's own values (used only when there is no ``*``)."""
    file_values = dict(file_values or {})
    default = mapping.get("*", file_values.get("*"))
    lookup: Dict[int, int] = {} if default is not None else {e.value: i for i, e in enumerate(table.entries)}
    for source, target in file_values.items():
        if source != "*":
            lookup[int(source)] = table.resolve(target)
    for source, target in mapping.items():
        if source == "*":
            continue
        if not re.fullmatch(r"-?\d+", source):
            raise InputError(
                f"--map {source}=...: {name} is a plain label map, so map label values "
                "(names apply to Slicer .seg.nrrd segments)"
            )
        lookup[int(source)] = table.resolve(target)
    fallback = table.resolve(default) if default is not None else None
    values, inverse = np.unique(array, return_inverse=True)
    unknown = [int(v) for v in values if int(v) not in lookup and fallback is None]
    if unknown:
        raise InputError(
            f"label map {name} has value(s) {', '.join(map(str, unknown[:10]))} that the model "
            f"does not know: its classes are {table.describe()}; map them with --map VALUE=CLASS "
            "or a --map-file"
        )
    per_value = np.array([lookup.get(int(v), fallback) for v in values], dtype=np.uint8)
    return per_value[inverse.reshape(array.shape)]


def _classes_from_segments(
    masks: Mapping[str, np.ndarray],
    shape: Sequence[int],
    table: LabelTable,
    mapping: Mapping[str, str],
    name: str,
    file_names: Optional[Mapping[str, str]] = None,
    log: Optional[Callable[[str], None]] = None,
) -> np.ndarray:
    """Class indices by segment name: ``mapping`` (``--map``) over the mapping file's names over ``*``
    over the model's own class names (used only when there is no ``*``)."""
    by_key = {name_key(k): v for k, v in mapping.items() if k != "*"}
    from_file = {name_key(k): v for k, v in (file_names or {}).items() if k != "*"}
    default = mapping.get("*", (file_names or {}).get("*"))

    def target_of(segment: str) -> Optional[int]:
        target = by_key.get(name_key(segment), from_file.get(name_key(segment)))
        if target is not None:
            return table.resolve(target)
        if default is not None:
            return table.resolve(default)
        return table.find(segment)

    unmatched = [s for s in masks if target_of(s) is None]
    if unmatched:
        raise InputError(
            f"segment(s) {', '.join(repr(s) for s in unmatched)} of {name} match no class of the "
            f"model ({table.describe()}): rename them or map them with --map NAME=CLASS"
        )
    unknown = [k for k in mapping if k != "*" and name_key(k) not in {name_key(s) for s in masks}]
    if unknown:
        raise InputError(
            f"--map names segment(s) {', '.join(unknown)} that {name} does not have: "
            f"its segments are {', '.join(masks) or 'none'}"
        )
    classes = np.zeros(tuple(shape), dtype=np.uint8)
    owner = np.full(tuple(shape), -1, dtype=np.int32)  # which segment each voxel took its class from
    names = list(masks)
    for index, (segment, mask) in enumerate(masks.items()):
        mask = mask.astype(bool)
        earlier = owner[mask]
        if log is not None and (earlier >= 0).any():
            for other, count in zip(*np.unique(earlier[earlier >= 0], return_counts=True)):
                log(
                    f"segments {names[other]!r} and {segment!r} of {name} overlap in {count} voxels: the one listed "
                    f"later in the file, {segment!r}, gives their class"
                )
        target = target_of(segment)
        assert target is not None  # every segment matched (checked above)
        classes[mask] = target
        owner[mask] = index
    return classes


def check_map_file(map_file: "MapFile", table: LabelTable) -> None:
    """Every target of a mapping file is a class of the model, and no segment (named by a row's source or
    name column, in any case) goes to two classes; else InputError naming the file's lines."""
    for target, line in map_file.targets().items():
        if table.find(target) is None:
            raise InputError(
                f"{map_file.path} line {line}: '{target}' is not a class of this model: use one of {table.describe()}"
            )
    for key, rows in map_file.segment_rows().items():
        first = rows[0]
        for row in rows[1:]:
            if table.find(row.target) != table.find(first.target):
                name = next(n for n in (first.source, first.name) if n and name_key(n) == key)
                raise InputError(
                    f"{map_file.path} lines {first.line} and {row.line} map segment {name!r} to two classes "
                    f"({first.target}, {row.target}): keep one class per segment"
                )


def class_image(
    source: LabelSource,
    table: LabelTable,
    mapping: Optional[Mapping[str, str]] = None,
    map_file: Union["MapFile", PathLike, None] = None,
    log: Optional[Callable[[str], None]] = None,
) -> sitk.Image:
    """The label map as a UInt8 image of class indices on the label map's own grid. ``map_file`` (a parsed
    mapping file, see mapfile.py) maps the values or segment names it lists; ``mapping`` overrides it."""
    mapping = dict(mapping or {})
    if map_file is not None and not isinstance(map_file, MapFile):
        map_file = read_map_file(os.fspath(map_file))
    if map_file is not None:
        check_map_file(map_file, table)
    file_values = map_file.values() if map_file is not None else None
    file_names = map_file.names() if map_file is not None else None
    if isinstance(source, sitk.Image):
        check_volume(source, "label map")
        grid, name = source, "the label map"
        classes = _classes_from_values(_integer_labels(source, name), table, mapping, name, file_values)
    elif is_segmentation_file(source):
        name = Path(source).name
        grid, masks = read_segmentation(source)
        classes = _classes_from_segments(masks, grid.GetSize()[::-1], table, mapping, name, file_names, log)
    else:
        name = Path(source).name
        grid = read_image(source, "label map")
        classes = _classes_from_values(_integer_labels(grid, name), table, mapping, name, file_values)
    if not classes.any():
        raise InputError(
            f"label map {name} has no foreground (every voxel is background): paint or load at least one structure"
        )
    image = sitk.GetImageFromArray(classes)
    image.CopyInformation(grid)
    return image
