"""The latent-grid period peak: how much the spectral power of an image at the latent grid's period
(the autoencoder's downsampling factor, in voxels of the model's working grid) stands above that of
the neighbouring frequencies. A real image has no such peak (about 1); a decoder or UNet that stamps
the latent grid onto its output makes one."""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np


def _axis_ratio(volume: np.ndarray, axis: int, period: int) -> Optional[float]:
    """Power at 1/period cycles per voxel along ``axis`` over the median power of the neighbouring
    frequencies (±N/16 bins, the peak's own ±1 bins left out), from the Hann-windowed 1D spectra of
    every line along that axis, averaged. None when the axis is too short to tell."""
    moved = np.moveaxis(volume, axis, -1)
    length = moved.shape[-1] // period * period  # the period's frequency falls on a bin
    if length < 8 * period:
        return None
    lines = moved[..., :length].reshape(-1, length).astype(np.float64)
    lines = lines - lines.mean(axis=1, keepdims=True)
    power = (np.abs(np.fft.rfft(lines * np.hanning(length), axis=1)) ** 2).mean(axis=0)
    peak = length // period
    width = max(3, length // 16)
    neighbours = [k for k in range(peak - width, peak + width + 1) if abs(k - peak) > 1 and 0 < k < len(power)]
    reference = float(np.median(power[neighbours]))
    return float(power[peak] / reference) if reference > 0 else None


def period_peak(volume: np.ndarray, period: int, box: Optional[Tuple[slice, ...]] = None) -> Optional[float]:
    """The mean over the three axes of the power ratio at ``period`` voxels (see ``_axis_ratio``), of
    ``volume`` or of its ``box``; None when no axis is long enough."""
    if box is not None:
        volume = volume[box]
    ratios = [r for r in (_axis_ratio(volume, axis, period) for axis in range(volume.ndim)) if r is not None]
    return float(np.mean(ratios)) if ratios else None


def foreground_box(classes: np.ndarray) -> Optional[Tuple[slice, ...]]:
    """The bounding box of the non-background voxels (class > 0), or None when there are none."""
    where = np.argwhere(classes > 0)
    if not len(where):
        return None
    low, high = where.min(axis=0), where.max(axis=0) + 1
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))


def latent_period_peaks(volume: np.ndarray, classes: np.ndarray, period: int) -> Dict[str, Optional[float]]:
    """The period peak over the whole volume and inside the brain's (the foreground's) box; ``volume``
    and ``classes`` on the model's working grid, (x, y, z)."""
    if volume.shape != classes.shape:
        raise ValueError(f"image {volume.shape} and label map {classes.shape} differ in size")
    box = foreground_box(classes)
    return {
        "whole_volume": period_peak(volume, period),
        "brain_box": period_peak(volume, period, box) if box is not None else None,
    }


def describe(peaks: Dict[str, Optional[float]], names: Sequence[str] = ("whole_volume", "brain_box")) -> str:
    """``whole volume 5.40x, brain box 2.20x``."""
    return ", ".join(
        f"{name.replace('_', ' ')} {'—' if peaks.get(name) is None else format(peaks[name], '.2f') + 'x'}"
        for name in names
    )
