"""The training-free baseline a learned model must beat: a SynthSeg-like rendering of the label map.

Each class of the label map (background included) is filled with Gaussian noise of the *real* image's
mean and standard deviation for that class, and the whole volume is then lightly blurred (a Gaussian of
``sigma`` voxels, as SynthSeg's generator blurs its per-label Gaussians). The noise is drawn with the
standard deviation that the blur brings back to the real one: inside a class, away from its borders,
the rendering has the real class's mean and standard deviation exactly (up to sampling); at borders
the blur mixes neighbouring classes like partial volume does. No training, no model; seeded.
"""

from __future__ import annotations

from typing import Dict, Mapping, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from MedLSDMLib.io.volumes import array_to_image, image_to_array

BLUR_SIGMA_VOXELS = 0.5
RULE = (
    f"per class (background included) Gaussian noise with the real image's class mean and sd, blurred by a "
    f"Gaussian of sigma {BLUR_SIGMA_VOXELS} voxel (noise drawn with the sd the blur brings back to the "
    "class's real sd); seeded"
)


def blur_gain(sigma: Sequence[float]) -> float:
    """How much a Gaussian blur of ``sigma`` voxels (scipy's discrete kernel) scales the standard
    deviation of white noise: the root of the sum of the squared kernel weights."""
    size = [2 * int(4 * s + 0.5) + 1 if s > 0 else 1 for s in sigma]
    impulse = np.zeros(size)
    impulse[tuple(n // 2 for n in size)] = 1.0
    kernel = ndimage.gaussian_filter(impulse, sigma, mode="constant")
    return float(np.sqrt((kernel**2).sum()))


def class_statistics(real: np.ndarray, classes: np.ndarray) -> Dict[int, Tuple[float, float]]:
    """Each class value's mean and standard deviation in ``real`` (arrays on one grid)."""
    real = real.astype(np.float64)
    return {int(v): (float(real[classes == v].mean()), float(real[classes == v].std())) for v in np.unique(classes)}


def render_classes(
    classes: np.ndarray, statistics: Mapping[int, Tuple[float, float]], seed: int = 0, sigma: float = BLUR_SIGMA_VOXELS
) -> np.ndarray:
    """The baseline rendering of ``classes`` with each class's (mean, sd) from ``statistics``."""
    sigmas = [sigma if n > 1 else 0.0 for n in classes.shape]
    gain = blur_gain(sigmas) if sigma > 0 else 1.0
    values = np.unique(classes)
    means = np.array([statistics[int(v)][0] for v in values])
    spreads = np.array([statistics[int(v)][1] for v in values]) / gain
    index = np.searchsorted(values, classes)
    noise = np.random.default_rng(seed).standard_normal(classes.shape)
    rendered = means[index] + spreads[index] * noise
    if sigma > 0:
        rendered = ndimage.gaussian_filter(rendered, sigmas, mode="nearest")
    return rendered.astype(np.float32)


def render_array(real: np.ndarray, classes: np.ndarray, seed: int = 0, sigma: float = BLUR_SIGMA_VOXELS) -> np.ndarray:
    """The baseline rendering of ``classes`` with the class statistics of ``real`` (arrays on one grid)."""
    return render_classes(classes, class_statistics(real, classes), seed, sigma)


def render(real: sitk.Image, labels: sitk.Image, seed: int = 0, sigma: float = BLUR_SIGMA_VOXELS) -> sitk.Image:
    """The baseline image on the real image's grid (``labels`` must be on that grid)."""
    array = render_array(image_to_array(real), image_to_array(labels).astype(np.int64), seed, sigma)
    image = array_to_image(array, real)
    image.SetMetaData("medlsdm_seed", str(seed))
    image.SetMetaData("medlsdm_model", "baseline renderer")
    return image
