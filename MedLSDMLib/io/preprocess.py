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


FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_intensities(image: sitk.Image, what: str) -> None:
    """An image the networks' float32 arithmetic can scale: finite values within float32's range, or
    InputError saying so."""
    values = sitk.GetArrayViewFromImage(image)
    if not np.all(np.isfinite(values)):
        raise InputError(f"the {what} has NaN or infinite values: give a finite image")
    if values.size and max(abs(float(values.min())), abs(float(values.max()))) > FLOAT32_MAX:
        raise InputError(
            f"the {what} has values up to {max(abs(float(values.min())), abs(float(values.max()))):.3g}, beyond "
            f"what 32-bit floats hold ({FLOAT32_MAX:.3g}), so its intensities cannot be scaled: rescale the image"
        )


def intensity_range(image: np.ndarray, foreground: np.ndarray, config: IntensityConfig) -> Tuple[float, float]:
    """The image's [low, high] that maps to [-1, 1]: foreground percentiles (MRI) or the window (CT).
    Computed in float64, so that an image near float32's limits keeps a range that is not empty."""
    if config.mode == "window":
        return config.low, config.high
    values = image[foreground] if foreground.any() else image.ravel()
    low, high = (
        float(v) for v in np.percentile(values.astype(np.float64), [config.lower_percentile, config.upper_percentile])
    )
    return low, max(high, low + 1e-6 * max(1.0, abs(low)))


def intensities_on_grid(image: sitk.Image, grid: sitk.Image) -> np.ndarray:
    """``image`` resampled linearly onto ``grid`` as float32, (x, y, z); outside it, its minimum (as
    training pads)."""
    default = float(np.min(sitk.GetArrayViewFromImage(image)))
    return image_to_array(resample(sitk.Cast(image, sitk.sitkFloat32), grid, sitk.sitkLinear, default=default))


def normalise(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """[low, high] onto [-1, 1], clipped, as float32; computed in float64 (float32 overflows for values
    near its limits)."""
    scaled = (image.astype(np.float64) - low) * (2.0 / (high - low)) - 1.0
    return np.clip(scaled, -1.0, 1.0).astype(np.float32)


def denormalise(array: np.ndarray, low: float, high: float) -> np.ndarray:
    """[-1, 1] back onto [low, high] (``normalise``'s inverse), clipped to it, as float32; computed in float64."""
    values = (np.clip(array.astype(np.float64), -1.0, 1.0) + 1.0) * ((high - low) / 2.0) + low
    return np.clip(values, low, high).astype(np.float32)


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
