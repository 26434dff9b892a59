"""Mapping files: a table from a user's label values (or segment names) to a model's classes.

A mapping file is a small CSV text file, one row per source label::

    # comments and blank lines are ignored
    source,target,name            <- optional header row
    2,white_matter,Left-Cerebral-White-Matter
    3,grey_matter,Left-Cerebral-Cortex
    Tumour,white_matter           <- a segment name of a Slicer .seg.nrrd
    *,background                  <- every value (or segment) not listed

- ``source``: an integer label value, a segment name, or ``*`` (everything not listed).
- ``target``: a class of the model, by name or by value (``medlsdm models info`` lists them).
- ``name`` (optional): the source structure's name; a segment of that name matches the row too
  (Slicer names FreeSurfer segments after the colour table: ``Left-Cerebral-White-Matter``).

Rows of a mapping file that the label map does not use are ignored (one table serves many maps);
``--map`` pairs given on the command line override the file's rows. Without a ``*`` row, a value the
model knows maps to its own class, and any other value is an error that names it. With a ``*`` row
every value not listed goes to ``*``'s class.

This module needs neither numpy nor torch.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Union

from MedLSDMLib.errors import InputError
from MedLSDMLib.io.names import name_key

ANY = "*"
MAX_MAP_FILE_BYTES = 16 * 2**20  # a table of every FreeSurfer label is about 50 KiB


@dataclass
class MapRow:
    line: int
    source: str
    target: str
    name: Optional[str] = None


@dataclass
class MapFile:
    """The rows of a mapping file, and the file they came from."""

    path: str
    rows: List[MapRow]

    def values(self) -> Dict[str, str]:
        """Integer sources and ``*`` → target (as text), for plain label maps."""
        return {r.source: r.target for r in self.rows if r.source == ANY or _is_integer(r.source)}

    def names(self) -> Dict[str, str]:
        """Segment names (the source when it is a name, and the name column) and ``*`` → target."""
        found: Dict[str, str] = {}
        for r in self.rows:
            if r.source == ANY or not _is_integer(r.source):
                found.setdefault(r.source, r.target)
            if r.name:
                found.setdefault(r.name, r.target)
        return found

    def segment_rows(self) -> Dict[str, List[MapRow]]:
        """The rows that name each segment (by its source or its name column), by the segment's name key."""
        found: Dict[str, List[MapRow]] = {}
        for r in self.rows:
            for name in {name_key(n) for n in (r.source, r.name) if n and n != ANY and not _is_integer(n)}:
                found.setdefault(name, []).append(r)
        return found

    def targets(self) -> Dict[str, int]:
        """Each target class written in the file, with the first line that names it (to check them)."""
        found: Dict[str, int] = {}
        for r in self.rows:
            found.setdefault(r.target, r.line)
        return found


def _is_integer(text: str) -> bool:
    return re.fullmatch(r"-?\d+", text.strip()) is not None


def mappings_folder() -> Path:
    """Resources/Mappings beside the engine (the source tree and the Slicer install keep them there)."""
    package = Path(__file__).resolve().parents[1]  # MedLSDMLib/
    for folder in (package.parent / "Resources" / "Mappings", package / "Resources" / "Mappings"):
        if folder.is_dir():
            return folder
    return package.parent / "Resources" / "Mappings"


def resolve_map_file(text: Union[str, Path]) -> Path:
    """A path, or the name of a table shipped in Resources/Mappings (``freesurfer_tissue`` or its file name)."""
    path = Path(text)
    if path.exists():
        return path
    shipped = mappings_folder()
    for candidate in (shipped / str(text), shipped / f"{text}.csv"):
        if "/" not in str(text) and candidate.is_file():
            return candidate
    names = ", ".join(sorted(p.stem for p in shipped.glob("*.csv"))) or "none"
    raise InputError(f"--map-file {text} does not exist: give a mapping file, or one shipped with MedLSDM ({names})")


def parse_map_text(text: str, path: str = "mapping file") -> MapFile:
    """Parse a mapping file's text; a malformed row is an InputError naming the file and line."""
    rows: List[MapRow] = []
    seen: Dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            cells = [c.strip() for c in next(csv.reader(io.StringIO(stripped), skipinitialspace=True))]
        except csv.Error as exc:  # a cell over the csv module's field limit, a NUL byte
            raise InputError(f"{path} line {number} is not a CSV row ({exc}): write 'source,target[,name]'") from None
        if not rows and not seen and [c.lower() for c in cells[:2]] == ["source", "target"]:
            seen["<header>"] = number
            continue
        while cells and cells[-1] == "":
            cells.pop()
        if len(cells) < 2 or len(cells) > 3 or not cells[0] or not cells[1]:
            raise InputError(
                f"{path} line {number}: {stripped!r} is not 'source,target[,name]' "
                "(e.g. '2,white_matter,Left-Cerebral-White-Matter' or '*,background')"
            )
        source = str(int(cells[0])) if _is_integer(cells[0]) else cells[0]
        key = source if _is_integer(source) or source == ANY else name_key(source)
        if key in seen:
            raise InputError(
                f"{path} line {number}: source {source} is already mapped on line {seen[key]}: keep one row per source"
            )
        seen[key] = number
        rows.append(MapRow(number, source, cells[1], cells[2] if len(cells) > 2 and cells[2] else None))
    if not rows:
        raise InputError(f"{path} has no mapping rows: write one 'source,target' row per label")
    return MapFile(path, rows)


def read_map_file(path: Union[str, Path]) -> MapFile:
    """Read and parse a mapping file (a path, or the name of a shipped table); InputError if unusable."""
    resolved = resolve_map_file(path)
    if not resolved.is_file():
        raise InputError(f"--map-file {path} is not a file: give a CSV mapping file")
    try:
        if resolved.stat().st_size > MAX_MAP_FILE_BYTES:
            raise InputError(
                f"--map-file {path} has {resolved.stat().st_size} bytes, more than a mapping table's "
                f"{MAX_MAP_FILE_BYTES // 2**20} MiB: give a CSV table of 'source,target[,name]' rows"
            )
        text = resolved.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--map-file {path} cannot be read as text ({exc})") from None
    return parse_map_text(text, resolved.name)
