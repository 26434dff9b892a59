"""Writing reports: JSON (non-finite numbers as the strings "inf", "-inf", "nan") and Markdown, each
written to a temporary file and renamed into place only when both are complete."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from MedLSDMLib.errors import InputError
from MedLSDMLib.io.volumes import check_output_folder
from MedLSDMLib.runtime.interrupt import staged_file


def report_paths(output: str, suffixes: Sequence[str] = (".json", ".md")) -> Tuple[Path, ...]:
    """``-o PREFIX`` → PREFIX.json and PREFIX.md (a given .json/.md suffix is dropped), in a writable folder."""
    path = Path(output)
    if path.suffix.lower() in suffixes:
        path = path.with_suffix("")
    check_output_folder(path)
    if path.is_dir():
        raise InputError(f"-o {path} is a folder: give a report name such as {path / 'evaluation'}")
    paths = tuple(path.with_name(path.name + s) for s in suffixes)
    for each in paths:
        if each.is_dir():
            raise InputError(
                f"-o {output}: {each} is a folder, so the report cannot be written there: give another report name"
            )
    return paths


def plain(value: Any) -> Any:
    """``value`` with non-finite floats as strings, tuples as lists and keys as strings (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def write_files(contents: Dict[Path, str]) -> List[Path]:
    """Write every file to a hidden temporary beside it, then rename them all into place (none if a
    write fails or a stop was asked for)."""
    with contextlib.ExitStack() as stack:
        for path, text in contents.items():
            stack.enter_context(staged_file(path)).write_text(text, encoding="utf-8")
    return list(contents)


def to_json(report: Dict[str, Any]) -> str:
    return json.dumps(plain(report), indent=2, allow_nan=False) + "\n"


def number(value: Optional[float], digits: int = 4) -> str:
    """A table cell: '—' for undefined, '∞' for infinite."""
    if value is None:
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.{digits}g}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
