"""A synthetic training set on disk: where each image/label pair goes (the plain or nnU-Net layout), and
``manifest.csv``, one row per finished pair, which a rerun (or another shard) reads to skip what is done.

Rows are appended whole, under an exclusive lock where the system has one (several shards write one
manifest), each flushed to the disk before the next pair starts; a line cut short by a kill is ignored.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from MedLSDMLib.errors import InputError
from MedLSDMLib.models.bundle import sha256
from MedLSDMLib.runtime.interrupt import staged_file

try:  # POSIX; on Windows one process writes the manifest (no shards run side by side there)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

MANIFEST = "manifest.csv"
COLUMNS = (
    "name",
    "source",
    "sample",
    "noise_seed",
    "deform_seed",
    "deform_mm",
    "generator",
    "generator_sha256",
    "sampler",
    "steps",
    "guidance",
    "seconds",
    "image",
    "label",
    "image_sha256",
    "label_sha256",
)
# what a row must repeat of the current job to count as done (the rest: timing, paths, hashes)
SETTINGS = COLUMNS[:11]
LAYOUTS = ("plain", "nnunet")


def pair_paths(folder: Path, layout: str, name: str) -> Tuple[Path, Path]:
    """Where the image and the label of pair ``name`` go: ``NAME_image.nii.gz`` + ``NAME_label.nii.gz``, or
    nnU-Net's ``imagesTr/NAME_0000.nii.gz`` + ``labelsTr/NAME.nii.gz``."""
    if layout == "nnunet":
        return folder / "imagesTr" / f"{name}_0000.nii.gz", folder / "labelsTr" / f"{name}.nii.gz"
    return folder / f"{name}_image.nii.gz", folder / f"{name}_label.nii.gz"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[int]:
    """``path`` opened for appending (created when missing), under an exclusive lock."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        if fcntl is not None:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield descriptor
    finally:
        os.close(descriptor)  # closing releases the lock


def _line(values: Sequence[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue().encode("utf-8")


class Manifest:
    """``manifest.csv`` of an output folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / MANIFEST

    def rows(self) -> Dict[str, Dict[str, str]]:
        """The complete rows by pair name (a later row of a name replaces an earlier one)."""
        if not self.path.is_file():
            return {}
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{self.path} cannot be read ({exc}): remove it to start the set again") from None
        rows: Dict[str, Dict[str, str]] = {}
        lines = text.split("\n")
        complete = lines[:-1]  # the text after the last newline is a row cut short
        for values in csv.reader(complete[1:]):
            if len(values) == len(COLUMNS):
                row = dict(zip(COLUMNS, values))
                rows[row["name"]] = row
        return rows

    def append(self, row: Mapping[str, str]) -> None:
        """Add one row (the header first in a new file), whole, and flush it to the disk."""
        with _locked(self.path) as descriptor:
            size = os.fstat(descriptor).st_size
            data = b""
            if size == 0:
                data = _line(COLUMNS)
            else:
                os.lseek(descriptor, size - 1, os.SEEK_SET)
                if os.read(descriptor, 1) != b"\n":  # a row cut short by a kill: end it, it is ignored
                    data = b"\n"
            os.write(descriptor, data + _line([str(row[c]) for c in COLUMNS]))
            os.fsync(descriptor)

    def is_done(self, row: Optional[Mapping[str, str]], settings: Mapping[str, str]) -> bool:
        """True when ``row`` was made with ``settings`` and its files are there with the hashes it records."""
        if row is None or any(row[key] != str(settings[key]) for key in SETTINGS):
            return False
        for column in ("image", "label"):
            path = self.folder / row[column]
            if not path.is_file() or sha256(path) != row[f"{column}_sha256"]:
                return False
        return True


def write_dataset_json(folder: Path, classes: Sequence[Tuple[str, int]], modality: str, count: int) -> Path:
    """nnU-Net v2's ``dataset.json``: one input channel, the model's classes (name -> value, background 0)
    and the number of training pairs."""
    labels: Dict[str, int] = {}
    for name, value in classes:
        labels[name.replace(" ", "_")] = int(value)
    description: Dict[str, object] = {
        "channel_names": {"0": modality},
        "labels": labels,
        "numTraining": int(count),
        "file_ending": ".nii.gz",
        "name": folder.name,
        "description": "synthetic images made by medlsdm synthesize (see manifest.csv)",
    }
    path = folder / "dataset.json"
    with staged_file(path) as staging:
        staging.write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    return path


def relative(folder: Path, paths: List[Path]) -> List[str]:
    """``paths`` relative to ``folder``, with '/' (the manifest's own)."""
    return [p.relative_to(folder).as_posix() for p in paths]
