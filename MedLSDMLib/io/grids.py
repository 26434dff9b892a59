"""Comparing voxel grids given as plain numbers: size, spacing, origin and direction cosines. Plain
Python: Slicer's process imports it to check a generated volume against the grid it asked for."""

from __future__ import annotations

from typing import List, Sequence, Tuple

# size, spacing, origin, direction (row-major 3 x 3), as SimpleITK's GetSize/GetSpacing/GetOrigin/GetDirection
Grid = Tuple[Sequence[int], Sequence[float], Sequence[float], Sequence[float]]
PARTS = ("spacing", "origin", "direction")


def grid_differences(grid: Grid, expected: Grid, tolerance: float, relative: float = 0.0) -> List[str]:
    """What differs between ``grid`` and ``expected``, in words (``"spacing (1.0, 1.0, 2.0) instead of
    (1.0, 1.0, 1.0)"``); empty when they are the same grid. Numbers differ beyond ``tolerance`` (mm for
    spacing and origin) plus ``relative`` times the expected number."""
    found = []
    if tuple(int(s) for s in grid[0]) != tuple(int(s) for s in expected[0]):
        found.append(f"size {tuple(grid[0])} instead of {tuple(expected[0])}")
    for what, mine, theirs in zip(PARTS, grid[1:], expected[1:]):
        if len(mine) != len(theirs) or any(abs(a - b) > tolerance + relative * abs(b) for a, b in zip(mine, theirs)):
            found.append(f"{what} {_rounded(mine)} instead of {_rounded(theirs)}")
    return found


def _rounded(values: Sequence[float]) -> Tuple[float, ...]:
    return tuple(round(float(v), 6) for v in values)
