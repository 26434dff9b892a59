"""Grids: the model's working grid around a label map, resampling onto it and back onto a target."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from MedLSDMLib.errors import InputError
from MedLSDMLib.io.grids import Grid, grid_differences


def _direction(image: sitk.Image) -> np.ndarray:
    return np.array(image.GetDirection(), dtype=float).reshape(3, 3)


def corners(image: sitk.Image) -> np.ndarray:
    """Physical positions (8, 3) of the outer corners of the image's voxels."""
    size = np.array(image.GetSize(), dtype=float)
    index = np.array(list(itertools.product(*[(-0.5, s - 0.5) for s in size])))
    matrix = _direction(image) * np.array(image.GetSpacing())
    return index @ matrix.T + np.array(image.GetOrigin())


@dataclass
class GridSpec:
    """A grid's geometry without its voxels (so that its memory can be planned before it exists)."""

    size: Tuple[int, int, int]
    spacing: Tuple[float, float, float]
    origin: Tuple[float, float, float]
    direction: Tuple[float, ...]

    def image(self) -> sitk.Image:
        grid = sitk.Image([int(s) for s in self.size], sitk.sitkUInt8)
        grid.SetSpacing(self.spacing)
        grid.SetDirection(self.direction)
        grid.SetOrigin(self.origin)
        return grid


def working_geometry(
    image: sitk.Image, spacing: Sequence[float], orientation: str, multiple: int, minimum: int = 0
) -> GridSpec:
    """The grid the model generates on: the image's axes permuted and flipped to ``orientation`` (as
    MONAI's Orientation does; obliquity is kept), the model's spacing, covering the image's extent,
    each size padded evenly to a multiple of ``multiple`` and to at least ``minimum`` voxels (the
    networks' smallest input)."""
    direction = _direction(sitk.DICOMOrient(image, orientation))
    local = corners(image) @ direction  # coordinates along the working axes
    low, high = local.min(axis=0), local.max(axis=0)
    step = np.asarray(spacing, dtype=float)
    size = np.maximum(np.ceil((high - low) / step - 1e-6), max(minimum, 1)).astype(np.int64)
    padded = ((size + multiple - 1) // multiple) * multiple
    # the grid is centred on the extent; its first voxel centre, in working coordinates:
    first_centre = (low + high) / 2 - (padded - 1) * step / 2
    origin = direction @ first_centre
    si, sj, sk = (int(s) for s in padded)
    xi, xj, xk = (float(s) for s in step)
    oi, oj, ok = (float(o) for o in origin)
    return GridSpec((si, sj, sk), (xi, xj, xk), (oi, oj, ok), tuple(float(d) for d in direction.flatten()))


def working_grid(
    image: sitk.Image, spacing: Sequence[float], orientation: str, multiple: int, minimum: int = 0
) -> sitk.Image:
    """An empty UInt8 image on ``working_geometry``'s grid."""
    return working_geometry(image, spacing, orientation, multiple, minimum).image()


def resample(image: sitk.Image, grid: sitk.Image, interpolator: int, default: float = 0.0) -> sitk.Image:
    """``image`` resampled onto ``grid``'s exact geometry (size, spacing, origin, direction)."""
    result = sitk.Resample(image, grid, sitk.Transform(), interpolator, float(default), image.GetPixelID())
    result.CopyInformation(grid)
    return result


def check_overlap(classes: sitk.Image, reference: sitk.Image) -> None:
    """Some foreground of the class map must fall inside the reference image, or InputError."""
    on_reference = resample(classes, reference, sitk.sitkNearestNeighbor)
    if not sitk.GetArrayViewFromImage(on_reference).any():
        raise InputError(
            "the reference image does not overlap the label map's foreground: give the image the label map was drawn on"
        )


def grid_of(image: sitk.Image) -> Grid:
    """An image's grid as plain numbers (size, spacing, origin, direction), for ``grid_differences``."""
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def same_grid(a: sitk.Image, b: sitk.Image, tolerance: float = 1e-6) -> bool:
    """True when both images have the same size, spacing, origin and direction (within ``tolerance``
    plus 1e-5 of each number, as numpy's allclose)."""
    return not grid_differences(grid_of(a), grid_of(b), tolerance, relative=1e-5)
