"""Reading and writing volumes with their geometry (NIfTI, NRRD, MHA, Slicer .seg.nrrd)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Tuple, Union

import numpy as np
import SimpleITK as sitk

from .errors import InputError

PathLike = Union[str, "os.PathLike[str]"]
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
SEGMENTATION_SUFFIX = ".seg.nrrd"


def suffix_of(path: PathLike) -> str:
    """The format suffix of a file name (``.seg.nrrd`` and ``.nii.gz`` count as one)."""
    name = Path(path).name.lower()
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


def check_volume(image: sitk.Image, what: str) -> None:
    """A 3D single-component image with at least two voxels along each axis, or InputError."""
    if image.GetDimension() != 3:
        raise InputError(f"{what} is {image.GetDimension()}D: MedLSDM needs a 3D volume")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{what} has {image.GetNumberOfComponentsPerPixel()} components per voxel: "
                         "give a scalar volume")
    if min(image.GetSize()) < 2:
        raise InputError(f"{what} has size {image.GetSize()}, a single slice: MedLSDM needs a 3D volume")


def read_image(path: PathLike, what: str = "image") -> sitk.Image:
    """Read a 3D scalar image keeping its geometry; any problem is an InputError naming the file."""
    path = Path(path)
    _check_readable(path, what)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError:
        raise InputError(f"{what} {path} is not an image SimpleITK can read: "
                         "give a NIfTI (.nii, .nii.gz), NRRD or MHA file") from None
    check_volume(image, f"{what} {path.name}")
    return image


def read_segmentation(path: PathLike) -> Tuple[sitk.Image, Dict[str, np.ndarray]]:
    """Read a Slicer .seg.nrrd: its grid as an empty image, and each segment's mask by name
    (masks in SimpleITK's z, y, x array order)."""
    import slicerio

    path = Path(path)
    _check_readable(path, "segmentation")
    try:
        segmentation = slicerio.read_segmentation(str(path))
    except Exception as exc:  # slicerio raises many kinds for a malformed file
        raise InputError(f"segmentation {path} cannot be read as a Slicer .seg.nrrd ({exc})") from None
    voxels = segmentation["voxels"]
    if voxels.ndim not in (3, 4):
        raise InputError(f"segmentation {path.name} has {voxels.ndim} dimensions: need a 3D segmentation")
    ijk_to_lps = np.asarray(segmentation["ijkToLPS"], dtype=float)
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    grid = sitk.Image([int(s) for s in voxels.shape[-3:]], sitk.sitkUInt8)
    grid.SetSpacing(spacing.tolist())
    grid.SetOrigin(ijk_to_lps[:3, 3].tolist())
    grid.SetDirection((ijk_to_lps[:3, :3] / spacing).flatten().tolist())
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


def check_output_path(path: PathLike, inputs: Iterable[PathLike] = ()) -> Path:
    """An output file that can be written: supported format, existing folder, not an input."""
    path = Path(path)
    suffix = suffix_of(path)
    if suffix == SEGMENTATION_SUFFIX or suffix not in IMAGE_SUFFIXES:
        raise InputError(f"output {path.name} has an unsupported extension: use one of "
                         + ", ".join(IMAGE_SUFFIXES))
    check_output_folder(path)
    if path.is_dir():
        raise InputError(f"output {path} is a folder: give a file name such as {path / 'synthetic.nii.gz'}")
    for other in inputs:
        if other is not None and Path(other).exists() and path.resolve() == Path(other).resolve():
            raise InputError(f"output {path} is also an input: choose another output file")
    return path


def numbered_paths(path: PathLike, count: int) -> List[Path]:
    """``count`` output paths: the path itself for one, else ``stem_01.ext``, ``stem_02.ext``, ..."""
    path = Path(path)
    if count == 1:
        return [path]
    suffix = suffix_of(path)
    stem = path.name[: len(path.name) - len(suffix)]
    width = max(2, len(str(count)))
    return [path.with_name(f"{stem}_{k:0{width}d}{suffix}") for k in range(1, count + 1)]


def write_image(image: sitk.Image, path: PathLike) -> Path:
    """Write atomically: into a hidden temporary folder beside the output, then renamed into place
    (a detached header's data file first, so that .nhdr/.mhd name their data file after the output)."""
    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.partial-") as scratch:
        temporary = Path(scratch) / path.name
        sitk.WriteImage(image, str(temporary), useCompression=True)
        for data_file in Path(scratch).iterdir():
            if data_file != temporary:
                os.replace(data_file, path.with_name(data_file.name))
        os.replace(temporary, path)
    return path


def image_to_array(image: sitk.Image) -> np.ndarray:
    """Voxels in (x, y, z) order, the layout the networks see (as MONAI's image readers give)."""
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def array_to_image(array: np.ndarray, grid: sitk.Image) -> sitk.Image:
    """An (x, y, z) array placed on ``grid``'s geometry."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.CopyInformation(grid)
    return image
