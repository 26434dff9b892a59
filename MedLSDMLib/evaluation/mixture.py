"""The training-free segmenter: a Gaussian mixture on the intensities inside the label map's foreground.

Each image gets its own 1-D mixture with one component per foreground class present in the label map,
fitted by EM from a fixed start (components at evenly spaced quantiles), so the result is deterministic.
Voxels outside the foreground stay background; each foreground voxel takes its most probable component.

Components are matched to classes by intensity order, and the order of the classes is taken from the
real image (classes sorted by their mean real intensity). The same order is applied to the real and the
synthetic image: each image is segmented by its own intensities only, and a synthetic image is rewarded
exactly when its tissues have the real image's contrast order in the right places. A per-image best
assignment against the labels would forgive a synthetic image with swapped contrasts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from MedLSDMLib.io.volumes import image_to_array

MAX_FIT_VOXELS = 100_000  # the fit uses an evenly strided subset of larger foregrounds


@dataclass
class Mixture:
    """A 1-D Gaussian mixture, components sorted by mean."""

    means: np.ndarray
    stds: np.ndarray
    weights: np.ndarray

    def log_densities(self, values: np.ndarray) -> np.ndarray:
        """log(weight_k · N(value | mean_k, std_k)), shape (N, K)."""
        z = (values[:, None] - self.means[None]) / self.stds[None]
        return np.log(self.weights)[None] - np.log(self.stds)[None] - 0.5 * z**2 - 0.5 * np.log(2 * np.pi)

    def predict(self, values: np.ndarray) -> np.ndarray:
        """The index (in mean order) of each value's most probable component."""
        return np.argmax(self.log_densities(np.asarray(values, dtype=np.float64)), axis=1)


def _em(values: np.ndarray, means: np.ndarray, iterations: int, tolerance: float) -> Tuple[Mixture, float]:
    """EM from the given means (equal weights and spreads); the fitted mixture and its mean log-likelihood."""
    components = len(means)
    spread = float(values.std()) or 1.0
    floor = (1e-3 * spread) ** 2  # keeps a component on a constant region alive
    variances = np.full(components, (spread / components) ** 2)
    weights = np.full(components, 1.0 / components)
    previous = likelihood = -np.inf
    for _ in range(iterations):
        log_p = Mixture(means, np.sqrt(variances), weights).log_densities(values)
        top = log_p.max(axis=1, keepdims=True)
        log_total = top[:, 0] + np.log(np.exp(log_p - top).sum(axis=1))
        likelihood = float(log_total.mean())
        responsibilities = np.exp(log_p - log_total[:, None])
        counts = responsibilities.sum(axis=0) + 1e-12
        weights = counts / values.size
        means = (responsibilities * values[:, None]).sum(axis=0) / counts
        variances = np.maximum((responsibilities * (values[:, None] - means) ** 2).sum(axis=0) / counts, floor)
        if likelihood - previous < tolerance:
            break
        previous = likelihood
    order = np.argsort(means, kind="stable")
    return Mixture(means[order], np.sqrt(variances[order]), weights[order]), likelihood


def fit_mixture(values: np.ndarray, components: int, iterations: int = 300, tolerance: float = 1e-7) -> Mixture:
    """A 1-D Gaussian mixture by EM from two deterministic starts — means evenly spaced between the 1st and
    99th percentiles, and means at evenly spaced quantiles — keeping the more likely fit."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size > MAX_FIT_VOXELS:
        values = values[:: int(np.ceil(values.size / MAX_FIT_VOXELS))]
    low, high = np.percentile(values, [1, 99])
    starts = [np.linspace(low, high, components), np.quantile(values, (np.arange(components) + 0.5) / components)]
    fits = [_em(values, start, iterations, tolerance) for start in starts]
    return max(fits, key=lambda fit: fit[1])[0]


def class_order(image: np.ndarray, labels: np.ndarray) -> List[int]:
    """The foreground class values present in ``labels``, sorted by their mean intensity in ``image``."""
    values = [int(v) for v in np.unique(labels) if v != 0]
    return sorted(values, key=lambda v: (float(image[labels == v].mean()), v))


def segment(image: np.ndarray, labels: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """Class values for each voxel: the k-th component (by mean) becomes ``order[k]``; background stays 0."""
    foreground = labels != 0
    result = np.zeros(labels.shape, dtype=np.int64)
    if len(order) == 1:
        result[foreground] = order[0]
        return result
    mixture = fit_mixture(image[foreground], len(order))
    result[foreground] = np.asarray(order, dtype=np.int64)[mixture.predict(image[foreground])]
    return result


class MixtureSegmenter:
    """The training-free segmenter of the Dice protocol (module docstring)."""

    name = "mixture"

    def describe(self) -> Dict[str, Any]:
        return {
            "kind": "mixture",
            "rule": "per-image 1-D Gaussian mixture on the intensities inside the label "
            "map's foreground, one component per present class; components matched to classes by the "
            "order of the classes' mean intensity in the real image, the same order for both images",
        }

    def segment_pair(
        self, real: sitk.Image, synthetic: sitk.Image, labels: sitk.Image
    ) -> Tuple[np.ndarray, np.ndarray]:
        """(x, y, z) class-value maps of the real and the synthetic image."""
        real_array, labels_array = image_to_array(real).astype(np.float64), image_to_array(labels)
        order = class_order(real_array, labels_array)
        return (
            segment(real_array, labels_array, order),
            segment(image_to_array(synthetic).astype(np.float64), labels_array, order),
        )
