"""Image similarity inside the label map's foreground: PSNR, SSIM and MS-SSIM (MONAI's maths) with the
data range taken from the real image and windows and scales that fit small volumes.

- data range R: max − min of the real image over the foreground voxels;
- PSNR: 10·log10(R² / MSE), the MSE over the foreground voxels only (MONAI ``PSNRMetric``);
- SSIM: MONAI's local SSIM map (Gaussian window of 11 voxels, σ = 1.5, k1 = 0.01, k2 = 0.03; a smaller
  odd window when the volume is smaller) on the foreground's bounding box plus half a window, averaged
  over the foreground voxels (each one the centre of a window);
- MS-SSIM: MONAI ``MultiScaleSSIMMetric`` (window 7, σ = 1.5) on the foreground's bounding box plus a
  3-voxel margin (at least 14 voxels a side where the volume allows), with as many of the 5 standard
  scales as fit — the coarsest scale must still hold one window: side ≥ 7·2^(scales−1) — and the first
  ``scales`` standard weights renormalised to sum to 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from monai.metrics import MultiScaleSSIMMetric, PSNRMetric
from monai.metrics.regression import compute_ssim_and_cs

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
MS_SSIM_WINDOW = 7
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, finest scale first
MS_SSIM_MARGIN = 3

Box = Tuple[slice, ...]


@dataclass
class Similarity:
    """The similarity of a synthetic image to the real one, and the settings that produced it."""

    psnr: float
    ssim: Optional[float]
    ms_ssim: Optional[float]
    data_range: float
    ssim_window: Optional[int]
    ms_ssim_scales: int
    foreground_voxels: int
    ssim_voxels: int  # foreground voxels that are the centre of a whole window


def foreground_box(mask: np.ndarray, margin: int, minimum: int = 1) -> Box:
    """The bounding box of ``mask`` grown by ``margin`` voxels, then to at least ``minimum`` voxels a side
    where the volume allows; clipped to the volume."""
    indices = np.argwhere(mask)
    box = []
    for axis, size in enumerate(mask.shape):
        low = max(int(indices[:, axis].min()) - margin, 0)
        high = min(int(indices[:, axis].max()) + 1 + margin, size)
        need = min(minimum, size)
        if high - low < need:  # grow around the box's centre, shifted to stay inside the volume
            low = min(max((low + high) // 2 - need // 2, 0), size - need)
            high = low + need
        box.append(slice(low, high))
    return tuple(box)


def data_range(real: np.ndarray, mask: np.ndarray) -> float:
    """max − min of the real image over the foreground."""
    values = real[mask]
    return float(values.max() - values.min())


def _scalar(value: object) -> float:
    """The one number a MONAI metric call gives for one pair (typed as a tensor or a sequence of them)."""
    assert isinstance(value, torch.Tensor), "a MONAI metric of one pair gives one tensor"
    return float(value.item())


def psnr(real: np.ndarray, synthetic: np.ndarray, mask: np.ndarray, value_range: float) -> float:
    """PSNR in dB over the foreground voxels; infinite when they are identical."""
    as_tensor = lambda a: torch.from_numpy(np.asarray(a[mask], dtype=np.float64))[None, None]  # noqa: E731
    return _scalar(PSNRMetric(max_val=value_range)(as_tensor(synthetic), as_tensor(real)))


def ssim_window(shape: Sequence[int]) -> Optional[int]:
    """11, or the largest odd size that fits the smallest side (None below 3)."""
    side = min(shape)
    window = min(SSIM_WINDOW, side if side % 2 else side - 1)
    return window if window >= 3 else None


def _volume(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]


def masked_ssim(
    real: np.ndarray, synthetic: np.ndarray, mask: np.ndarray, value_range: float, window: int
) -> Tuple[Optional[float], int]:
    """The mean of MONAI's local SSIM map over the foreground voxels that are the centre of a whole
    window, and how many those are."""
    half = (window - 1) // 2
    box = foreground_box(mask, half, window)
    ssim_map, _ = compute_ssim_and_cs(
        _volume(synthetic[box]),
        _volume(real[box]),
        spatial_dims=3,
        kernel_size=(window,) * 3,
        kernel_sigma=(SSIM_SIGMA,) * 3,
        data_range=value_range,
    )
    # map voxel j is the window centred on box voxel j + half
    centres = mask[box][tuple(slice(half, s - half) for s in mask[box].shape)]
    values = ssim_map[0, 0].double().numpy()[centres]
    return (float(values.mean()) if values.size else None), int(values.size)


def ms_ssim_scales(shape: Sequence[int], window: int = MS_SSIM_WINDOW, most: int = 5) -> int:
    """The most scales (≤ ``most``) whose coarsest level still holds a window: each side ≥
    window·2^(scales−1); MONAI's own size check (side // (scales−1)² > window − 1) must pass too."""
    for scales in range(most, 0, -1):
        divisor = max(1, scales - 1) ** 2
        if all(s >= window * 2 ** (scales - 1) and s // divisor > window - 1 for s in shape):
            return scales
    return 0


def ms_ssim_weights(scales: int) -> Tuple[float, ...]:
    """The first ``scales`` standard weights, renormalised to sum to 1."""
    weights = MS_SSIM_WEIGHTS[:scales]
    return tuple(w / sum(weights) for w in weights)


def ms_ssim(
    real: np.ndarray, synthetic: np.ndarray, value_range: float, scales: int, window: int = MS_SSIM_WINDOW
) -> float:
    """MONAI's MS-SSIM of two equally shaped volumes with ``scales`` scales."""
    metric = MultiScaleSSIMMetric(
        spatial_dims=3,
        data_range=value_range,
        kernel_size=window,
        kernel_sigma=SSIM_SIGMA,
        weights=ms_ssim_weights(scales),
    )
    return _scalar(metric(_volume(synthetic), _volume(real)))


def similarity(real: np.ndarray, synthetic: np.ndarray, mask: np.ndarray) -> Similarity:
    """PSNR, SSIM and MS-SSIM of ``synthetic`` against ``real`` inside ``mask`` (module docstring).
    The caller checks that the mask is not empty and that the real image is not constant in it."""
    value_range = data_range(real, mask)
    window = ssim_window(real.shape)
    ssim_value, ssim_voxels = masked_ssim(real, synthetic, mask, value_range, window) if window else (None, 0)
    box = foreground_box(mask, MS_SSIM_MARGIN, 2 * MS_SSIM_WINDOW)
    scales = ms_ssim_scales(real[box].shape)
    ms_value = ms_ssim(real[box], synthetic[box], value_range, scales) if scales >= 2 else None
    return Similarity(
        psnr=psnr(real, synthetic, mask, value_range),
        ssim=ssim_value,
        ms_ssim=ms_value,
        data_range=value_range,
        ssim_window=window,
        ms_ssim_scales=scales if scales >= 2 else 0,
        foreground_voxels=int(mask.sum()),
        ssim_voxels=ssim_voxels,
    )
