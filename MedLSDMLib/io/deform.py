"""Smooth random deformations of a label map: K samples of one map become K anatomies.

A cubic B-spline transform on a coarse control grid (one control point every ``CONTROL_SPACING_MM``)
whose control displacements are drawn uniformly in a ball of radius ``amplitude`` mm. A B-spline's
weights are non-negative and sum to one, so every voxel moves by at most ``amplitude`` mm. The map is
resampled with nearest-neighbour interpolation on its own grid: the deformed map holds only values of
the input (outside the input: 0). Seeded: the same seed gives the same deformation.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from MedLSDMLib.errors import InputError

CONTROL_SPACING_MM = 32.0
MAX_AMPLITUDE_MM = 50.0


def check_amplitude(amplitude: float) -> None:
    """``--deform MM``: a finite amplitude from 0 (no deformation) to ``MAX_AMPLITUDE_MM``, or InputError."""
    if not (np.isfinite(amplitude) and 0 <= amplitude <= MAX_AMPLITUDE_MM):
        raise InputError(
            f"--deform {amplitude:g}: give the largest displacement in mm, from 0 to {MAX_AMPLITUDE_MM:g} "
            "(a few mm, e.g. 4, keeps the anatomy plausible)"
        )


def random_transform(grid: sitk.Image, amplitude: float, seed: int) -> sitk.BSplineTransform:
    """A smooth random B-spline transform over ``grid``'s extent moving no point by more than
    ``amplitude`` mm, drawn from ``seed``."""
    extent = np.asarray(grid.GetSize(), dtype=float) * np.asarray(grid.GetSpacing(), dtype=float)
    mesh = [max(1, int(round(e / CONTROL_SPACING_MM))) for e in extent]
    transform = sitk.BSplineTransformInitializer(grid, mesh, 3)
    count = len(transform.GetParameters()) // 3
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((count, 3))
    directions /= np.maximum(np.linalg.norm(directions, axis=1, keepdims=True), 1e-12)
    radii = amplitude * rng.uniform(0.0, 1.0, (count, 1)) ** (1.0 / 3.0)  # uniform in the ball
    # SimpleITK orders the parameters as every x displacement, then every y, then every z
    transform.SetParameters((directions * radii).T.flatten().tolist())
    return transform


def deform_labels(labels: sitk.Image, amplitude: float, seed: int) -> sitk.Image:
    """``labels`` moved by ``random_transform`` (nearest neighbour, on its own grid); 0 mm: a copy."""
    if amplitude == 0:
        return sitk.Image(labels)
    transform = random_transform(labels, amplitude, seed)
    return sitk.Resample(labels, labels, transform, sitk.sitkNearestNeighbor, 0, labels.GetPixelID())
