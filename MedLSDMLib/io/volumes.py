"""Reading and writing volumes with their geometry (NIfTI, NRRD, MHA, Slicer .seg.nrrd)."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Collection, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union

import numpy as np
import SimpleITK as sitk
from numpy.typing import ArrayLike

from MedLSDMLib.errors import Cancelled, InputError, MedLSDMError, ModelError, OutOfMemory
from MedLSDMLib.runtime import interrupt

PathLike = Union[str, "os.PathLike[str]"]
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
SEGMENTATION_SUFFIX = ".seg.nrrd"

# ITK prints its warnings (e.g. about a header it repairs) as many lines on stderr: MedLSDM reports
# problems itself, one line each.
sitk.ProcessObject.SetGlobalWarningDisplay(False)

# Geometry a medical image can have, in mm: beyond these a header is damaged (or the grid cannot be
# written back exactly, e.g. NIfTI keeps positions as 32-bit floats).
MAX_EXTENT = 1e5  # size x spacing along any axis (100 m)
MAX_COORDINATE = 1e5  # |origin|
MIN_SPACING = 1e-4
ORTHOGONALITY_TOLERANCE = 1e-4
# deflate (gzip, zlib) never packs more than 1032 bytes into one: a compressed file smaller than
# declared bytes / 1032 cannot hold the voxels its header declares
MAX_COMPRESSION_RATIO = 1032
# bzip2's (its run-length steps pack up to about 4.6e7 bytes into one)
BZIP2_MAX_RATIO = 46_000_000
PARTIAL_PREFIX = ".medlsdm-partial-"
BYTES_PER_OUTPUT = 4096  # memory for one output's paths, checks and seed while a run keeps track of it
MAX_DATA_FILES = 10000  # of one detached header (a slice per file), checked against the outputs


def suffix_of(path: PathLike) -> str:
    """The format suffix of a file name (``.seg.nrrd`` and ``.nii.gz`` count as one)."""
    name = os.path.basename(os.fspath(path)).lower()
    for suffix in (SEGMENTATION_SUFFIX,) + IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return Path(path).suffix.lower()


def is_segmentation_file(path: PathLike) -> bool:
    return suffix_of(path) == SEGMENTATION_SUFFIX


def _check_readable(path: Path, what: str) -> None:
    if not path.exists():
        raise InputError(f"{what} {path} does not exist: check the path")
    if not path.is_file():
        raise InputError(f"{what} {path} is not a file: give a NIfTI, NRRD or MHA file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{what} {path} cannot be read: check its permissions")


def check_geometry(size: Sequence[int], spacing: ArrayLike, origin: ArrayLike, direction: ArrayLike, what: str) -> None:
    """A grid MedLSDM can work on and write back exactly, or InputError saying what is wrong with it:
    finite positive spacing, a finite orthonormal direction, and an extent and origin of a body."""
    spacing_mm = np.asarray(spacing, dtype=float)
    origin_mm = np.asarray(origin, dtype=float)
    matrix = np.asarray(direction, dtype=float).reshape(len(spacing_mm), len(spacing_mm))
    fix = "fix the file's header (spacing, origin, direction)"
    if not np.all(np.isfinite(spacing_mm)) or np.any(spacing_mm < MIN_SPACING):
        raise InputError(
            f"{what} has voxel spacing {_numbers(spacing_mm)} mm: every spacing must be a positive "
            f"number of at least {MIN_SPACING:g} mm; {fix}"
        )
    if not np.all(np.isfinite(matrix)):
        raise InputError(f"{what} has a direction matrix that is not a number (NaN or infinite): {fix}")
    if not np.all(np.isfinite(origin_mm)) or np.any(np.abs(origin_mm) > MAX_COORDINATE):
        raise InputError(
            f"{what} has origin {_numbers(origin_mm)} mm, beyond {MAX_COORDINATE:g} mm or not a number: {fix}"
        )
    if abs(np.linalg.det(matrix)) < 1e-6:
        raise InputError(f"{what} has a singular direction matrix (two axes along one line): {fix}")
    if np.abs(matrix.T @ matrix - np.eye(len(spacing_mm))).max() > ORTHOGONALITY_TOLERANCE:
        raise InputError(
            f"{what} has a sheared (non-orthogonal) direction matrix, which MedLSDM cannot give back "
            "exactly: resample it onto an orthogonal grid first (e.g. Slicer's Resample Scalar Volume)"
        )
    extent = np.asarray(size, dtype=float) * spacing_mm
    if np.any(extent > MAX_EXTENT):
        raise InputError(
            f"{what} spans {_numbers(extent)} mm (size {tuple(int(s) for s in size)} x spacing "
            f"{_numbers(spacing_mm)} mm), more than {MAX_EXTENT:g} mm: check the spacing in its header"
        )


def _numbers(values: Iterable[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def check_volume(image: sitk.Image, what: str) -> None:
    """A 3D single-component image with at least two voxels along each axis on a usable grid, or InputError."""
    _check_shape(image.GetDimension(), image.GetNumberOfComponentsPerPixel(), image.GetSize(), what)
    check_geometry(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection(), what)


def _check_shape(dimension: int, components: int, size: Sequence[int], what: str) -> None:
    if dimension != 3:
        raise InputError(f"{what} is {dimension}D: MedLSDM needs a 3D volume")
    if components != 1:
        raise InputError(f"{what} has {components} components per voxel: give a scalar volume")
    if min(size) < 2:
        raise InputError(f"{what} has size {tuple(size)}, a single slice: MedLSDM needs a 3D volume")


def _capacity(path: Path, voxel_bytes: int) -> Tuple[int, str]:
    """The most voxel bytes the file(s) of image ``path`` can hold, and which file(s) they are: the file
    itself, or the data file(s) a detached header (.nhdr, .mhd, NRRD 'data file', Analyze .hdr) names;
    compressed data by the most its compression packs into one byte, text by one voxel per character."""
    analyze = suffix_of(path) in (".hdr", ".img", ".img.gz")
    data = [f for f in files_read(path)[1:] if not analyze or (f.suffix != ".hdr" and f.exists())]
    for data_file in data:
        if not data_file.is_file():
            raise InputError(
                f"the header {path.name} names the data file {data_file}, which does not exist: keep the data "
                "file beside its header (or fix the header's data file name)"
            )
    holders = data or [path]
    size = sum(f.stat().st_size for f in holders)
    encoding = (_header_field(path, b"encoding") or b"").lower()
    compressed = (_header_field(path, b"compresseddata") or b"").lower() == b"true"
    if encoding.startswith(b"bz"):
        ratio = BZIP2_MAX_RATIO
    elif encoding in (b"ascii", b"text", b"txt"):
        ratio = voxel_bytes
    elif not data or compressed or encoding.startswith(b"g") or any(f.name.lower().endswith(".gz") for f in data):
        ratio = MAX_COMPRESSION_RATIO  # an attached file: its own compression is not read here
    else:
        ratio = 1
    names = ", ".join(f.name for f in holders[:3]) + (f" and {len(holders) - 3} more" if len(holders) > 3 else "")
    return size * ratio, f"{'its data file ' if data else ''}{names} ({size} bytes)"


def _header_field(path: Path, name: bytes) -> Optional[bytes]:
    """A NRRD (``name: value``) or MetaImage (``Name = value``) header field's value, or None."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(1 << 16)
    except OSError:
        return None
    separator = b"=" if suffix_of(path) in (".mha", ".mhd") else b":"
    for line in head.splitlines():
        key, sep, value = line.partition(separator)
        key = key.strip().lower().replace(b" ", b"")
        if not line.strip():
            break  # a NRRD header ends at a blank line
        if sep and key == name:
            return value.strip()
        if key == b"elementdatafile":
            break  # a MetaImage header ends there
    return None


def check_declared_size(path: Path, voxels: int, voxel_bytes: int, what: str, copies: float = 2.0) -> None:
    """Before any voxel is read: the file, or a detached header's data file(s), can hold what the header
    declares, and the memory is there to read it (``copies`` times the voxels, for the reader's buffer
    and a working copy)."""
    from MedLSDMLib.runtime.resources import _size, available_ram

    declared = int(voxels) * int(voxel_bytes)
    room, holders = _capacity(path, voxel_bytes)
    if declared > room:
        raise InputError(
            f"{what} {path} declares {voxels} voxels ({_size(declared)}) but {holders} cannot hold them: "
            "it is truncated or its header is damaged"
        )
    needed, available = int(declared * copies), available_ram()
    if available is not None and needed > available:
        raise OutOfMemory(
            f"reading {what} {path.name} ({voxels} voxels) needs about {_size(needed)} but "
            f"{_size(available)} of RAM is available: crop it, or use a machine with more memory"
        )


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence what C++ code writes straight to file descriptor 2 (MetaIO and NIfTI print their
    complaints about a damaged file there, many lines) while a file is read; MedLSDM reports the
    problem itself, in one line."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _header(path: Path, what: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with quiet_native_stderr():
            reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(
            f"{what} {path} is not an image SimpleITK can read{_itk_reason(exc)}: "
            "give a NIfTI (.nii, .nii.gz), NRRD or MHA file"
        ) from None
    return reader


def _itk_reason(exc: BaseException) -> str:
    """A short reason from ITK's many-line exception text, when it names one MedLSDM can explain."""
    text = str(exc).lower()
    for words, reason in (
        (("spacing",), " (its voxel spacing is zero or invalid)"),
        (("direction",), " (its space directions are zero, singular or not numbers)"),
        (("nan",), " (its header holds a value that is not a number)"),
        (("no space", "disk full", "quota"), " (the disk is full)"),
    ):
        if any(w in text for w in words):
            return reason
    return ""


def read_image(path: PathLike, what: str = "image") -> sitk.Image:
    """Read a 3D scalar image keeping its geometry; any problem is an InputError naming the file.
    The header is checked (shape, geometry, size against the file and the memory) before any voxel
    is read."""
    path = Path(path)
    _check_readable(path, what)
    reader = _header(path, what)
    name = f"{what} {path.name}"
    _check_shape(reader.GetDimension(), reader.GetNumberOfComponents(), reader.GetSize(), name)
    check_geometry(reader.GetSize(), reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection(), name)
    voxel_bytes = sitk.Image([1] * 3, reader.GetPixelID()).GetSizeOfPixelComponent()
    check_declared_size(path, int(np.prod(reader.GetSize(), dtype=np.float64)), voxel_bytes, what)
    try:
        with quiet_native_stderr():
            image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(
            f"{what} {path} cannot be read{_itk_reason(exc) or ' (its voxel data is damaged)'}: "
            "give a NIfTI (.nii, .nii.gz), NRRD or MHA file"
        ) from None
    except MemoryError:
        raise OutOfMemory(
            f"there is not enough memory to read {what} {path.name}: crop it, or use a machine with more memory"
        ) from None
    check_volume(image, name)
    return image


def read_segmentation(path: PathLike) -> Tuple[sitk.Image, Dict[str, np.ndarray]]:
    """Read a Slicer .seg.nrrd: its grid as an empty image, and each segment's mask by name
    (masks in SimpleITK's z, y, x array order)."""
    import slicerio

    path = Path(path)
    _check_readable(path, "segmentation")
    reader = _header(path, "segmentation")  # the declared size, checked before pynrrd reads the voxels
    voxel_bytes = sitk.Image([1] * 3, reader.GetPixelID()).GetSizeOfPixelComponent()
    check_declared_size(
        path,
        int(np.prod(reader.GetSize(), dtype=np.float64)) * reader.GetNumberOfComponents(),
        voxel_bytes,
        "segmentation",
        copies=3.0,
    )
    try:
        segmentation = slicerio.read_segmentation(str(path))
    except Exception as exc:  # slicerio raises many kinds for a malformed file
        reason = " ".join(str(exc).split())[:200]
        raise InputError(f"segmentation {path} cannot be read as a Slicer .seg.nrrd ({reason})") from None
    voxels = segmentation["voxels"]
    if voxels.ndim not in (3, 4):
        raise InputError(f"segmentation {path.name} has {voxels.ndim} dimensions: need a 3D segmentation")
    ijk_to_lps = np.asarray(segmentation["ijkToLPS"], dtype=float)
    if ijk_to_lps.shape != (4, 4) or not np.all(np.isfinite(ijk_to_lps)):
        raise InputError(
            f"segmentation {path.name} has space directions or an origin that are not numbers: "
            "fix the file's header (spacing, origin, direction)"
        )
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    size = [int(s) for s in voxels.shape[-3:]]
    with np.errstate(divide="ignore", invalid="ignore"):
        direction = ijk_to_lps[:3, :3] / spacing
    if np.any(spacing < MIN_SPACING):
        raise InputError(
            f"segmentation {path.name} has voxel spacing {_numbers(spacing)} mm: every spacing must "
            f"be a positive number of at least {MIN_SPACING:g} mm; fix the file's header"
        )
    check_geometry(size, spacing, ijk_to_lps[:3, 3], direction.flatten(), f"segmentation {path.name}")
    grid = sitk.Image(size, sitk.sitkUInt8)
    grid.SetSpacing(spacing.tolist())
    grid.SetOrigin(ijk_to_lps[:3, 3].tolist())
    grid.SetDirection(direction.flatten().tolist())
    check_volume(grid, f"segmentation {path.name}")
    masks: Dict[str, np.ndarray] = {}
    for segment in segmentation["segments"]:
        mask = slicerio.segment_mask(segmentation, segment)  # i, j, k order
        name = segment.get("name", segment["id"])
        masks[name] = masks[name] | mask.T if name in masks else mask.T
    return grid, masks


def check_output_folder(path: Path) -> Path:
    """The folder an output ``path`` goes in, checked to exist and be writable."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"output folder {folder} does not exist: create it first")
    if not os.access(folder, os.W_OK):
        raise InputError(f"output folder {folder} is not writable: choose another folder")
    return folder


def check_output_dir(path: PathLike, holds: str, parents: bool = False) -> Path:
    """An output folder for ``holds``, created later by the command: not a file, writable when it exists,
    and in an existing writable folder (or, with ``parents``, one the command creates with it)."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"-o {folder} is a file: give a folder for {holds}")
    if not (parents and not folder.parent.exists()):
        check_output_folder(folder)
    if folder.is_dir() and not os.access(folder, os.W_OK):
        raise InputError(f"output folder {folder} is not writable: choose another folder")
    return folder


def check_output_path(path: PathLike, inputs: Iterable[Optional[PathLike]] = ()) -> Path:
    """An output file that can be written: supported format, existing folder, a name the file system
    takes, not a file an input reads, and not an existing file that cannot be replaced."""
    return check_outputs([path], inputs)[0]


def check_outputs(
    paths: Sequence[PathLike], inputs: Iterable[Optional[PathLike]] = (), what: str = "the outputs"
) -> List[Path]:
    """Output files that can be written (``check_output_path``) and are different files (``what`` they
    are names them). Every file an output writes (its header, a detached data file) is checked against
    every file an input reads and every other output's by resolved path, by file identity (a hard link)
    and by name in any letter case (one file on a case-insensitive file system). Linear in the number of
    outputs: a folder is listed once, and only a name already there costs a system call."""
    read: Dict[object, Tuple[Path, Path]] = {}
    for other in (Path(p) for p in inputs if p is not None):
        for file in files_read(other):
            for key in _identities(file, file.exists() or file.is_symlink()):
                read.setdefault(key, (other, file))
    folders: Dict[Path, Tuple[str, Set[str], int]] = {}
    seen: Dict[object, Tuple[int, Path, str]] = {}  # key -> the output, and the name of its file
    checked = [Path(p) for p in paths]
    for index, path in enumerate(checked):
        name, parent = path.name, path.parent
        suffix = suffix_of(name)
        if suffix == SEGMENTATION_SUFFIX or suffix not in IMAGE_SUFFIXES:
            raise InputError(f"output {name} has an unsupported extension: use one of " + ", ".join(IMAGE_SUFFIXES))
        if parent not in folders:
            folder = check_output_folder(path)
            try:
                listed = set(os.listdir(folder))
            except OSError:
                listed = set()
            folders[parent] = (str(folder.resolve()), listed, _name_max(folder))
        resolved_folder, names, limit = folders[parent]
        if len(os.fsencode(name)) > limit:
            raise InputError(
                f"output name {name[:40]}... is {len(os.fsencode(name))} bytes long but the "
                f"file system allows {limit}: choose a shorter name"
            )
        if name in names and path.is_dir():
            raise InputError(f"output {path} is a folder: give a file name such as {path / 'synthetic.nii.gz'}")
        stem = name[: len(name) - len(suffix)]
        for written_name in [name] + [stem + ending for ending in _data_file_endings(suffix)]:
            there = written_name in names
            keys: List[object]
            if there:
                keys = _identities(parent / written_name, True)
            else:  # a name not there yet: its folder, resolved, and the name (no system call)
                keys = [os.path.normcase(os.path.join(resolved_folder, written_name)).casefold()]
            for key in keys:
                if key in read:
                    written, (other, file) = parent / written_name, read[key]
                    subject = f"output {path}" + ("" if written == path else f" would write {written.name}, which")
                    target = f"input {other}" if file == other else f"the data file {file.name} of input {other}"
                    raise InputError(
                        f"{subject} {_clash(written, file) or 'is'} {target}: the output is also an input and "
                        "writing it would destroy that input; choose another output name"
                    )
                if key in seen and seen[key][0] != index:
                    _, first, first_name = seen[key]
                    written, first_file = parent / written_name, first.parent / first_name
                    raise InputError(
                        f"{what} must be different files: {written} {_clash(written, first_file) or 'is'} "
                        f"{first_file} ({first}, {path})"
                    )
                seen[key] = (index, path, written_name)
            if there and not os.access(parent / written_name, os.W_OK, follow_symlinks=False):
                raise InputError(
                    f"output {parent / written_name} exists and is read-only or immutable, so it cannot be "
                    "replaced: choose another output file, or make it writable"
                )
    return checked


def check_room_for_files(output: Path, count: int, option: str) -> None:
    """``count`` outputs like ``output`` fit, before any work: the file system of its folder has the
    files (inodes) and at least a block per file for them, and memory holds their bookkeeping
    (``BYTES_PER_OUTPUT`` each); OutOfMemory naming ``option`` otherwise."""
    from MedLSDMLib.runtime.resources import _size, available_ram

    files = count * len(files_written(output))
    folder = output.parent if str(output.parent) else Path(".")
    try:
        status = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs (Windows): the write checks each file
        status = None
    if status is not None:
        free_files = status.f_favail if status.f_files else files  # 0 files: the file system has no limit
        room = status.f_bavail * status.f_frsize // max(status.f_frsize, 1)
        if files > min(free_files, room):
            raise OutOfMemory(
                f"{option} {count}: {count} outputs need {files} files, but {folder} has room for "
                f"{min(free_files, room)} more (free files and disk space): ask for fewer, or free some space"
            )
    needed, available = count * BYTES_PER_OUTPUT, available_ram() if count > 1 else None
    if available is not None and needed > available:
        raise OutOfMemory(
            f"{option} {count}: keeping track of {count} outputs needs about {_size(needed)} of memory but "
            f"{_size(available)} is available: ask for fewer"
        )


def _identities(file: Path, exists: bool) -> List[object]:
    """The keys under which two names are one file: the resolved path in any letter case, and an existing
    file's device and inode."""
    resolved = file.resolve()
    keys: List[object] = [os.path.normcase(str(resolved)).casefold()]
    if exists:
        with contextlib.suppress(OSError):
            status = resolved.stat()
            keys.append((status.st_dev, status.st_ino))
    return keys


def _clash(a: Path, b: Path) -> str:
    """How files ``a`` and ``b`` are one file: the same path once resolved, the same file (inode; a hard
    link), or names that differ only in letter case (one file on macOS, Windows and other case-insensitive
    file systems); "" when they are not."""
    resolved_a, resolved_b = a.resolve(), b.resolve()
    if resolved_a == resolved_b:
        return "is"
    with contextlib.suppress(OSError):
        first, second = resolved_a.stat(), resolved_b.stat()
        if (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino):
            return "is the same file (a hard link) as"
    if os.path.normcase(str(resolved_a)).casefold() == os.path.normcase(str(resolved_b)).casefold():
        return "differs only in letter case (one file on a case-insensitive file system) from"
    return ""


def files_read(path: PathLike) -> List[Path]:
    """The files reading the image ``path`` opens: the file itself and, for a detached header (.nhdr,
    .mhd, NRRD 'data file', Analyze .hdr/.img), the data file(s) it names."""
    path = Path(path)
    files = [path]
    suffix = suffix_of(path)
    try:
        if suffix in (".nrrd", ".nhdr", SEGMENTATION_SUFFIX):
            files += _data_files(path, re.compile(rb"data ?file\s*:\s*(.*)", re.IGNORECASE), b"")
        elif suffix in (".mha", ".mhd"):
            files += _data_files(path, re.compile(rb"elementdatafile\s*=\s*(.*)", re.IGNORECASE), b"local")
        elif suffix in (".hdr", ".img", ".img.gz"):
            stem = path.name[: len(path.name) - len(suffix)]
            files += [path.with_name(stem + s) for s in (".hdr", ".img", ".img.gz") if s != suffix]
    except OSError:
        pass  # an unreadable input: reading it fails with its own error
    return files


def _data_files(header: Path, field: "re.Pattern[bytes]", local: bytes) -> List[Path]:
    """The data files a NRRD or MetaImage header names in ``field`` (relative to the header's folder): one
    name, ``LIST`` and the names on the lines after it, or a ``%d`` pattern with min, max and step. The
    header ends at that field or at a blank line (NRRD), where an attached file's voxels begin."""
    with open(header, "rb") as stream:
        lines = stream.read(1 << 20).splitlines()
    for number, line in enumerate(lines):
        if not line.strip():
            return []
        match = field.match(line.strip())
        if not match:
            continue
        value = match.group(1).strip()
        words = value.split()
        if not words or value.lower() == local:
            return []
        names = [value]
        if words[0].upper() == b"LIST":
            names = [n.strip() for n in lines[number + 1 :] if n.strip()]
        elif b"%" in words[0] and len(words) >= 4:
            with contextlib.suppress(ValueError, TypeError):
                first, last, step = (int(w) for w in words[1:4])
                indices = range(first, last + (1 if step > 0 else -1), step or 1)
                names = [words[0] % k for k in indices[:MAX_DATA_FILES]]
        return [header.parent / os.fsdecode(name) for name in names[:MAX_DATA_FILES]]
    return []


def files_written(path: PathLike) -> List[Path]:
    """The files writing an image to ``path`` creates: ``path`` and, for a format SimpleITK writes as two
    files (.nhdr, .mhd), its data file beside it, named after the output (found once per format by
    writing a tiny image)."""
    path = Path(path)
    suffix = suffix_of(path)
    endings = _data_file_endings(suffix)
    if not endings:
        return [path]
    stem = path.name[: len(path.name) - len(suffix)]
    return [path] + [path.with_name(stem + ending) for ending in endings]


@functools.lru_cache(maxsize=None)
def _data_file_endings(suffix: str) -> Tuple[str, ...]:
    """What follows the stem in the names of the data files SimpleITK writes beside a ``suffix`` header."""
    with tempfile.TemporaryDirectory(prefix=PARTIAL_PREFIX) as folder:
        try:
            with quiet_native_stderr():
                writer = sitk.ImageFileWriter()  # the writer that sitk.WriteImage uses, as a probe of its own
                writer.SetFileName(str(Path(folder) / f"probe{suffix}"))
                writer.SetUseCompression(True)
                writer.Execute(sitk.Image([2, 2, 2], sitk.sitkUInt8))
        except RuntimeError:
            return ()
        names = [f for f in os.listdir(folder) if f != f"probe{suffix}"]
        return tuple(sorted(f[len("probe") :] for f in names if f.startswith("probe")))


def _staged_name(path: Path) -> str:
    """The name an output is written under before it is renamed into place: ITK picks the writer by a
    lower-case extension, so OUT.NII.GZ is written as OUT.nii.gz (and its data file named after that)."""
    suffix = suffix_of(path)
    return path.name[: len(path.name) - len(suffix)] + suffix


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(str(folder), "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def numbered_paths(path: PathLike, count: int) -> List[Path]:
    """``count`` output paths: the path itself for one, else ``stem_01.ext``, ``stem_02.ext``, ..."""
    path = Path(path)
    if count == 1:
        return [path]
    suffix = suffix_of(path)
    stem = path.name[: len(path.name) - len(suffix)]
    width = max(2, len(str(count)))
    return [path.with_name(f"{stem}_{k:0{width}d}{suffix}") for k in range(1, count + 1)]


def _host() -> str:
    node = os.uname().nodename if hasattr(os, "uname") else os.environ.get("COMPUTERNAME", "")
    return re.sub(r"[^A-Za-z0-9]", "", node)[:12] or "host"


def _partial_prefix() -> str:
    return f"{PARTIAL_PREFIX}{_host()}-{os.getpid()}-"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def clean_stale_partials(folder: Path, names: Collection[str], max_age: float = 24 * 3600) -> None:
    """Remove what an interrupted write (kill -9, power loss) left in ``folder``: hidden
    ``.medlsdm-partial-HOST-PID-*`` folders of a process of this host that no longer runs (or of
    another host, after ``max_age`` seconds), and the older ``.NAME.partial-*`` folders of ``names``."""
    here = _host()
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return
    for entry in entries:
        match = re.match(re.escape(PARTIAL_PREFIX) + r"([A-Za-z0-9]+)-(\d+)-", entry.name)
        legacy = (
            entry.name.startswith(".") and ".partial-" in entry.name and entry.name[1:].split(".partial-")[0] in names
        )
        if not (match or legacy) or not entry.is_dir() or entry.is_symlink():
            continue
        try:
            age = time.time() - entry.stat().st_mtime
        except OSError:
            continue
        if match and match.group(1) == here:
            stale = not _process_alive(int(match.group(2)))
        else:
            stale = age > (max_age if match else 3600)
        if stale:
            shutil.rmtree(entry, ignore_errors=True)


def _fsync(path: Path) -> None:
    with open(path, "rb") as stream:
        os.fsync(stream.fileno())


def _write_failed(path: Path, folder: Path, reason: str) -> MedLSDMError:
    """The one line of a failed write (interrupt.write_error), or of an output folder removed meanwhile."""
    if not folder.is_dir():
        return InputError(
            f"could not write {path}: its folder {folder} was removed while MedLSDM was running; nothing "
            "was written: create the folder again, or choose another one"
        )
    return interrupt.write_error(path, reason)


def check_finite(image: sitk.Image, path: Path) -> None:
    """No NaN or infinite voxel is ever written: such a result is a ModelError (the inputs are finite and
    in range, so a computation overflowed), raised before anything is written."""
    values = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(values.dtype, np.floating):
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if bad:
            raise ModelError(
                f"the result for {path.name} has {bad} NaN or infinite voxels (a computation overflowed; with "
                "--precision fp16 or bf16, try --precision fp32): nothing was written"
            )


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    """Equal size, and spacing, origin and direction equal to within what 32-bit floats (NIfTI) keep."""

    def close(x: Sequence[float], y: Sequence[float], rtol: float, atol: float) -> bool:
        return bool(np.allclose(x, y, rtol=rtol, atol=atol))

    return (
        a.GetSize() == b.GetSize()
        and close(a.GetSpacing(), b.GetSpacing(), 1e-6, 0.0)
        and close(a.GetOrigin(), b.GetOrigin(), 1e-6, 1e-4)
        and close(a.GetDirection(), b.GetDirection(), 0.0, 1e-5)
    )


def _verify_written(image: sitk.Image, temporary: Path, path: Path, folder: Path) -> None:
    """Read the written file back: a short write (a full disk; SimpleITK may report success) or a
    format that cannot keep the grid must not replace anything."""
    try:
        with quiet_native_stderr():
            written = sitk.ReadImage(str(temporary))
    except RuntimeError:
        raise _write_failed(path, folder, "the written file is incomplete, the disk may be full") from None
    if written.GetPixelID() != image.GetPixelID() or written.GetSize() != image.GetSize():
        raise _write_failed(path, folder, "the written file is incomplete, the disk may be full")
    if not _same_grid(written, image):
        raise InputError(
            f"the format of {path.name} cannot store this grid exactly (origin {_numbers(image.GetOrigin())}, "
            f"spacing {_numbers(image.GetSpacing())}): write .nrrd or .mha instead; nothing was written"
        )
    a, b = sitk.GetArrayViewFromImage(written), sitk.GetArrayViewFromImage(image)
    same = np.array_equal(a, b, equal_nan=True) if np.issubdtype(a.dtype, np.floating) else np.array_equal(a, b)
    if not same:
        raise _write_failed(path, folder, "the written voxels differ from the image, the disk may be damaged or full")


class StagedImages:
    """Several outputs (in one folder) written atomically as a set: each ``write`` goes into a hidden
    temporary folder beside them, flushed to the disk, read back and compared (size, grid, voxels) —
    a short write (a full disk, where SimpleITK may report success) or a format that cannot keep the
    grid fails there with one InputError line; ``commit`` renames them all into place (a detached
    header's data file first, so that .nhdr/.mhd name their data file after the output). Leaving the
    ``with`` block without ``commit`` (an error, a cancel) removes the temporary folder: existing files
    of those names are kept."""

    def __init__(self, paths: Sequence[PathLike]) -> None:
        self.paths = [Path(p) for p in paths]
        self.folder = self.paths[0].parent if str(self.paths[0].parent) else Path(".")
        self.written: Dict[int, List[Path]] = {}
        self.scratch: Optional[Path] = None
        self._marked = contextlib.ExitStack()  # the scratch folder, for a hard stop's clean-up

    def __enter__(self) -> "StagedImages":
        clean_stale_partials(self.folder, {path.name for path in self.paths})
        try:
            self.scratch = Path(tempfile.mkdtemp(dir=self.folder, prefix=_partial_prefix()))
        except OSError as exc:
            raise _write_failed(self.paths[0], self.folder, exc.strerror or str(exc)) from None
        self._marked.enter_context(interrupt.temporary(self.scratch))
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self._marked.close()
            self.scratch = None

    def write(self, index: int, image: sitk.Image) -> None:
        path, scratch = self.paths[index], self.scratch
        assert scratch is not None, "StagedImages.write outside its with block"
        check_finite(image, path)
        temporary = scratch / _staged_name(path)
        try:
            before = set(scratch.iterdir())
            with quiet_native_stderr():  # the NIfTI writer prints its own "wrote only N bytes" there
                sitk.WriteImage(image, str(temporary), useCompression=True)
            files = sorted(set(scratch.iterdir()) - before)
            for written in files:
                _fsync(written)
        except RuntimeError as exc:
            reason = _itk_reason(exc).strip(" ()") or "the disk may be full or the folder not writable"
            raise _write_failed(path, self.folder, reason) from None
        except OSError as exc:
            raise _write_failed(path, self.folder, exc.strerror or str(exc)) from None
        _verify_written(image, temporary, path, self.folder)
        self.written[index] = [temporary] + [f for f in files if f != temporary]

    def commit(self) -> None:
        """Rename every written file into place; a stop asked for before then writes nothing."""
        if interrupt.requested():
            raise Cancelled()
        try:
            for index, files in sorted(self.written.items()):
                path, temporary = self.paths[index], files[0]
                for data_file in files[1:]:
                    os.replace(data_file, path.with_name(data_file.name))
                os.replace(temporary, path)
        except OSError as exc:
            raise _write_failed(path, self.folder, exc.strerror or str(exc)) from None


def write_image(image: sitk.Image, path: PathLike) -> Path:
    """Write one image atomically and checked (see ``StagedImages``); any failure is one InputError
    line, and an existing file of that name is kept."""
    path = Path(path)
    with StagedImages([path]) as staged:
        staged.write(0, image)
        staged.commit()
    return path


def image_to_array(image: sitk.Image) -> np.ndarray:
    """Voxels in (x, y, z) order, the layout the networks see (as MONAI's image readers give)."""
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def array_to_image(array: np.ndarray, grid: sitk.Image) -> sitk.Image:
    """An (x, y, z) array placed on ``grid``'s geometry."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.CopyInformation(grid)
    return image
