"""Images and label maps onto a model grid, with the intensity scaling training and generation share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from MedLSDMLib.card import IntensityConfig, LabelEntry
from MedLSDMLib.errors import InputError
from MedLSDMLib.io.geometry import resample, working_grid
from MedLSDMLib.io.volumes import image_to_array


@dataclass
class Case:
    """A preprocessed pair: image in [-1, 1] and class indices, (x, y, z) arrays on the model grid."""

    name: str
    image: np.ndarray
    classes: np.ndarray


def intensity_range(image: np.ndarray, foreground: np.ndarray, config: IntensityConfig) -> Tuple[float, float]:
    """The image's [low, high] that maps to [-1, 1]: foreground percentiles (MRI) or the window (CT)."""
    if config.mode == "window":
        return config.low, config.high
    values = image[foreground] if foreground.any() else image.ravel()
    low, high = np.percentile(values, [config.lower_percentile, config.upper_percentile])
    return float(low), float(max(high, low + 1e-6))


def intensities_on_grid(image: sitk.Image, grid: sitk.Image) -> np.ndarray:
    """``image`` resampled linearly onto ``grid`` as float32, (x, y, z); outside it, its minimum (as
    training pads)."""
    default = float(np.min(sitk.GetArrayViewFromImage(image)))
    return image_to_array(resample(sitk.Cast(image, sitk.sitkFloat32), grid, sitk.sitkLinear, default=default))


def normalise(image: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip(2 * (image - low) / (high - low) - 1, -1, 1).astype(np.float32)


def preprocess_images(
    name: str,
    image: sitk.Image,
    label: sitk.Image,
    labels: Sequence[LabelEntry],
    spacing: Sequence[float],
    orientation: str,
    intensity: IntensityConfig,
    label_name: str = "the label map",
) -> Tuple[Case, Tuple[float, float]]:
    """``preprocess`` for images already read and on one grid (evaluation's segmenter uses it too)."""
    values = np.unique(sitk.GetArrayViewFromImage(label))
    known = {e.value: i for i, e in enumerate(labels)}
    unknown = [int(v) for v in values if int(v) not in known or v != int(v)]
    if unknown:
        raise InputError(
            f"{label_name} has label value(s) {unknown[:10]} that are not in the config's label "
            f"table ({', '.join(f'{e.value}={e.name}' for e in labels)}): add them to model.labels"
        )
    grid = working_grid(label, spacing, orientation, 1)
    raw = intensities_on_grid(image, grid)
    values_on_grid = image_to_array(resample(label, grid, sitk.sitkNearestNeighbor))
    classes = np.zeros(values_on_grid.shape, dtype=np.uint8)
    for value, index in known.items():
        classes[values_on_grid == value] = index
    low, high = intensity_range(raw, classes > 0, intensity)
    return Case(name, normalise(raw, low, high), classes), (low, high)
