"""Comparing grids given as plain numbers (MedLSDMLib.io.grids), as the Slicer module checks a result's
grid and as ``same_grid`` compares images."""
from __future__ import annotations

import SimpleITK as sitk

from MedLSDMLib.io.geometry import grid_of, same_grid
from MedLSDMLib.io.grids import grid_differences

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
GRID = ((20, 30, 40), (1.0, 1.0, 2.0), (-10.0, 5.5, 100.0), IDENTITY)


def test_the_same_grid_has_no_differences() -> None:
    assert grid_differences(GRID, GRID, 1e-4) == []
    nudged = ((20, 30, 40), (1.00005, 1.0, 2.0), (-10.0, 5.50009, 100.0), IDENTITY)
    assert grid_differences(nudged, GRID, 1e-4) == []


def test_each_difference_is_said_in_words() -> None:
    other = ((20, 30, 41), (1.0, 1.0, 2.5), (-10.0, 5.5, 100.0), (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    assert grid_differences(other, GRID, 1e-4) == [
        "size (20, 30, 41) instead of (20, 30, 40)",
        "spacing (1.0, 1.0, 2.5) instead of (1.0, 1.0, 2.0)",
        "direction (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0) instead of (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)",
    ]
    moved = (GRID[0], GRID[1], (-10.0, 5.5, 100.001), GRID[3])
    assert grid_differences(moved, GRID, 1e-4) == ["origin (-10.0, 5.5, 100.001) instead of (-10.0, 5.5, 100.0)"]
    assert grid_differences(moved, GRID, 1e-4, relative=1e-5) == []  # 100 mm * 1e-5 = 1 micrometre more


def test_same_grid_compares_images_through_it() -> None:
    image = sitk.Image([20, 30, 40], sitk.sitkUInt8)
    image.SetSpacing((1.0, 1.0, 2.0))
    image.SetOrigin((-10.0, 5.5, 100.0))
    assert grid_of(image) == GRID
    assert same_grid(image, image)
    shifted = sitk.Image(image)
    shifted.SetOrigin((-10.0, 5.5, 100.01))
    assert not same_grid(image, shifted)
    assert grid_differences(grid_of(shifted), grid_of(image), 1e-6) == [
        "origin (-10.0, 5.5, 100.01) instead of (-10.0, 5.5, 100.0)"
    ]
