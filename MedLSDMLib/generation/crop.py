"""Sampling only where the labels are: the box of latent voxels around the label map's foreground (or an
edit's region) grown by ``CONTEXT`` latent voxels, and the model's background level around it.

A whole-head label map at 1 mm lies on a 256 mm working grid, but its brain fills about half of it: sampling
and decoding the box costs what the brain costs. ``CONTEXT`` is the margin at which the box stops showing
(README, "Speed and quality": the result inside the brain against the uncropped one for each margin).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

CONTEXT = 2  # latent voxels of background the UNet sees around the labels (measured: README, "Speed and quality")
Slices = Tuple[slice, slice, slice]


def latent_box(mask: np.ndarray, step: int, minimum: int, context: int) -> Slices:
    """The box of ``mask`` (x, y, z latent voxels) grown by ``context``, its ends on multiples of ``step``
    and at least ``minimum`` long (what the UNet takes), inside the latent grid (itself such a size)."""
    where = np.argwhere(mask)
    box = []
    for low, high, size in zip(where.min(axis=0) - context, where.max(axis=0) + 1 + context, mask.shape):
        low, high = max(0, low // step * step), min(size, -(-high // step) * step)
        if high - low < minimum:
            high = min(size, low + minimum)
            low = max(0, high - minimum)
        box.append(slice(int(low), int(high)))
    return tuple(box)  # type: ignore[return-value]


def foreground_box(classes: np.ndarray, factor: int, step: int, minimum: int) -> Optional[Slices]:
    """The latent box (``latent_box``) of the latent voxels that touch the foreground of ``classes`` (x, y, z
    model classes on a working grid, each size a multiple of ``factor``), or None when it is the whole grid."""
    x, y, z = (s // factor for s in classes.shape)
    touched: np.ndarray = np.any((classes > 0).reshape(x, factor, y, factor, z, factor), axis=(1, 3, 5))
    if not touched.any():
        return None
    box = latent_box(touched, step, minimum, CONTEXT)
    if all(s.start == 0 and s.stop == n for s, n in zip(box, touched.shape)):
        return None
    return box


def scaled(box: Slices, factor: int) -> Slices:
    """A latent box as the box of working-grid voxels it decodes to."""
    return tuple(slice(s.start * factor, s.stop * factor) for s in box)  # type: ignore[return-value]


def into_background(
    values: np.ndarray, classes: np.ndarray, box: Slices, whole: Sequence[int], factor: int, fallback: float
) -> Tuple[np.ndarray, float]:
    """The decoded latent ``box`` (``values``, x, y, z working voxels) faded into the model's background level
    over the ``factor`` voxels next to each face that lies inside the ``whole`` latent grid (the decoder's
    padding darkens them),
    and that level: the median of the box's background voxels (class 0) away from those faces (else of all of
    them, else ``fallback``). Around the box, the result is that level."""
    weight = np.ones(values.shape)
    ramp = (np.arange(factor) + 0.5) / factor
    for axis, (part, size) in enumerate(zip(box, whole)):
        profile = np.ones(values.shape[axis])
        if part.start > 0:
            profile[:factor] = ramp
        if part.stop < size:
            profile[-factor:] = np.minimum(profile[-factor:], ramp[::-1])
        weight *= profile.reshape([-1 if a == axis else 1 for a in range(3)])
    level = fallback
    for where in ((classes == 0) & (weight == 1), classes == 0):
        if where.any():
            level = float(np.median(values[where]))
            break
    return (weight * values + (1 - weight) * level).astype(values.dtype), level


def box_text(box: Slices, size: Sequence[int]) -> str:
    """``box`` and the grid it lies in, for the run's log line."""
    return f"{'x'.join(str(s.stop - s.start) for s in box)} of {'x'.join(map(str, size))}"
