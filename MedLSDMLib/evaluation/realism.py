"""Realism of a synthetic image next to the real one of the same label map, beyond the Dice protocol.

All of them compare intensity *distributions and textures*, not voxel-wise agreement, and all are
scale-free: each image is first z-scored with the mean and standard deviation of its own voxels inside
the label map's foreground (value != 0), so a model that renders in other intensity units is not
penalised for the units, only for the shape of its histograms, its blur and its background.

- **histogram distance**, per foreground class: the 1-Wasserstein distance (scipy
  ``wasserstein_distance``, the earth mover's distance between the two empirical distributions) between
  the z-scored intensities of the class's voxels in the real and in the synthetic image. 0 for identical
  distributions; in units of the foreground's standard deviation (a shift of the whole class by 0.5 sd
  gives 0.5).
- **sharpness**, per foreground class and over the whole foreground: the mean gradient magnitude
  (central differences in mm, ``numpy.gradient`` with the voxel spacing) of the z-scored image over the
  class's voxels; reported for both images and as the ratio synthetic / real (1: as sharp as the real
  image; below 1: blurrier; above 1: noisier or sharper).
- **background noise**: the standard deviation of the z-scored image over the voxels outside the
  foreground (a skull-stripped real image with a black background has 0).
- **background to contrast**: that standard deviation over the spread of the foreground class means
  (the brightest class's mean minus the darkest's: white matter minus CSF in a T1 brain); 0.02 means the
  background's noise is 2 % of the tissue contrast.
- **contrast order**: whether the foreground classes' means come in the same order as in the real image
  (the tissue contrast is right): every two classes whose means differ in the real image differ the same
  way in the synthetic one. Means closer than ``ORDER_TOLERANCE`` of an image's intensity range are
  equal, and equal means are no order (a constant image has no contrast): false, with the reason.
- **correlation**: Pearson's correlation of the two images over the foreground voxels (voxel-wise
  agreement with the real image, for reference).
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy.stats import wasserstein_distance

ORDER_TOLERANCE = 1e-3  # class means closer than this fraction of an image's intensity range are equal
METHODS = {
    "histogram_distance": "per foreground class, the 1-Wasserstein distance (scipy.stats.wasserstein_distance) "
    "between the class's voxel intensities in the real and the synthetic image, each image "
    "z-scored by the mean and sd of its own foreground voxels; 0 = same distribution, in "
    "foreground sd units",
    "sharpness": "mean gradient magnitude (numpy.gradient, central differences per mm) of the foreground-z-scored "
    "image over each class's voxels and over the whole foreground; ratio synthetic / real "
    "(1 = as sharp as the real image, < 1 blurrier, > 1 noisier)",
    "background_noise": "standard deviation of the foreground-z-scored image over the voxels outside the "
    "label map's foreground (0 for a black background)",
    "background_to_contrast": "background standard deviation / (highest - lowest foreground class mean)",
    "contrast_order": "whether the foreground classes' mean intensities have the real image's order (means "
    "within 0.1 % of an image's intensity range are equal, and equal means are no order)",
    "correlation": "Pearson correlation of the real and the synthetic image over the foreground voxels",
}


def zscore(image: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """``image`` minus the mean of its foreground voxels, divided by their standard deviation (1 when that is 0)."""
    values = image[foreground].astype(np.float64)
    std = float(values.std())
    return (image.astype(np.float64) - float(values.mean())) / (std if std > 0 else 1.0)


def histogram_distance(real: np.ndarray, synthetic: np.ndarray) -> float:
    """1-Wasserstein distance between two samples of intensities."""
    return float(wasserstein_distance(np.ravel(real), np.ravel(synthetic)))


def gradient_magnitude(image: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """|∇image| per voxel, central differences (one-sided at the edges) in units per mm."""
    gradients = np.gradient(image.astype(np.float64), *[float(s) for s in spacing])
    return np.sqrt(sum(g**2 for g in gradients))


def background_noise(image: np.ndarray, foreground: np.ndarray) -> Optional[float]:
    """Standard deviation of ``image`` outside ``foreground``; None when every voxel is foreground."""
    outside = image[~foreground]
    return float(outside.std()) if outside.size else None


def class_means(image: np.ndarray, classes: np.ndarray, present: Sequence[int]) -> Dict[int, float]:
    return {v: float(image[classes == v].mean()) for v in present}


def contrast(means: Dict[int, float]) -> Optional[float]:
    """The spread of the class means (brightest minus darkest); None with fewer than two classes."""
    return max(means.values()) - min(means.values()) if len(means) > 1 else None


def contrast_order(
    means_r: Dict[int, float], means_s: Dict[int, float], range_r: float, range_s: float
) -> Tuple[bool, Optional[str]]:
    """Whether every two classes whose real means differ (by more than ``ORDER_TOLERANCE`` of the real
    image's intensity range ``range_r``) differ the same way in the synthetic image (by more than that of
    ``range_s``), and why not."""
    for u, v in combinations(sorted(means_r), 2):
        real_step, synthetic_step = means_r[v] - means_r[u], means_s[v] - means_s[u]
        if abs(real_step) <= ORDER_TOLERANCE * range_r:
            continue
        if abs(synthetic_step) <= ORDER_TOLERANCE * range_s:
            return False, (
                f"classes {u} and {v} have equal means in the synthetic image (within {ORDER_TOLERANCE:.1%} of its "
                "intensity range): no contrast between them, so no order"
            )
        if (synthetic_step > 0) != (real_step > 0):
            return False, f"classes {u} and {v} have their means in the opposite order to the real image's"
    return True, None


def correlation(real: np.ndarray, synthetic: np.ndarray, foreground: np.ndarray) -> Optional[float]:
    """Pearson's r over the foreground voxels; None when either image is constant there."""
    a, b = real[foreground].astype(np.float64), synthetic[foreground].astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else None


def _ratio(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return float(numerator / denominator)


def realism(real: np.ndarray, synthetic: np.ndarray, classes: np.ndarray, spacing: Sequence[float]) -> Dict[str, Any]:
    """Every realism metric of one case (arrays on one grid, ``classes`` the label map's values)."""
    foreground = classes != 0
    present = [int(v) for v in np.unique(classes) if v != 0]
    r, s = zscore(real, foreground), zscore(synthetic, foreground)
    gradient_r, gradient_s = gradient_magnitude(r, spacing), gradient_magnitude(s, spacing)
    distance = {v: histogram_distance(r[classes == v], s[classes == v]) for v in present}
    sharp_r = {v: float(gradient_r[classes == v].mean()) for v in present}
    sharp_s = {v: float(gradient_s[classes == v].mean()) for v in present}
    whole_r, whole_s = float(gradient_r[foreground].mean()), float(gradient_s[foreground].mean())
    noise_r, noise_s = background_noise(r, foreground), background_noise(s, foreground)
    means_r, means_s = class_means(r, classes, present), class_means(s, classes, present)
    order, why = contrast_order(means_r, means_s, float(np.ptp(r)), float(np.ptp(s)))
    return {
        "histogram_distance": distance,
        "histogram_distance_mean": float(np.mean(list(distance.values()))),
        "sharpness": {
            "real": sharp_r,
            "synthetic": sharp_s,
            "ratio": {v: _ratio(sharp_s[v], sharp_r[v]) for v in present},
            "foreground_real": whole_r,
            "foreground_synthetic": whole_s,
            "foreground_ratio": _ratio(whole_s, whole_r),
        },
        "background_noise": {"real": noise_r, "synthetic": noise_s},
        "background_to_contrast": {
            "real": _ratio(noise_r, contrast(means_r)),
            "synthetic": _ratio(noise_s, contrast(means_s)),
        },
        "contrast_order": order,
        "contrast_order_why": why,
        "correlation": correlation(real, synthetic, foreground),
    }


def _mean(values: List[Optional[float]]) -> Optional[float]:
    defined = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(defined)) if defined else None


def summarise_realism(cases: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Means over cases (per class over the cases that have the class)."""
    classes = sorted({v for c in cases for v in c["histogram_distance"]})

    def per_class(get) -> Dict[int, Optional[float]]:
        return {v: _mean([get(c, v) for c in cases if v in c["histogram_distance"]]) for v in classes}

    return {
        "histogram_distance": per_class(lambda c, v: c["histogram_distance"][v]),
        "histogram_distance_mean": _mean([c["histogram_distance_mean"] for c in cases]),
        "sharpness_ratio": per_class(lambda c, v: c["sharpness"]["ratio"][v]),
        "sharpness_ratio_foreground": _mean([c["sharpness"]["foreground_ratio"] for c in cases]),
        "background_noise_real": _mean([c["background_noise"]["real"] for c in cases]),
        "background_noise_synthetic": _mean([c["background_noise"]["synthetic"] for c in cases]),
        "background_to_contrast_real": _mean([c["background_to_contrast"]["real"] for c in cases]),
        "background_to_contrast_synthetic": _mean([c["background_to_contrast"]["synthetic"] for c in cases]),
        "contrast_order_right": sum(bool(c["contrast_order"]) for c in cases),
        "contrast_order_why": sorted({c["contrast_order_why"] for c in cases if c.get("contrast_order_why")}),
        "cases": len(cases),
        "correlation": _mean([c["correlation"] for c in cases]),
    }


def _sharpness_error(ratio: Optional[float]) -> Optional[float]:
    return abs(math.log(ratio)) if ratio is not None and ratio > 0 else None


def compare(
    model: Dict[str, Any],
    baseline: Dict[str, Any],
    dice_model: Optional[float] = None,
    dice_baseline: Optional[float] = None,
) -> Dict[str, Any]:
    """Which of two summaries (``summarise_realism``) is more realistic, metric by metric.

    Realism tests (each: which one is closer to the real images): histogram distance (lower),
    sharpness (|log(ratio)| lower: neither blurrier nor noisier), background noise (|synthetic − real|
    lower). Correlation and the Dice ratio are shown, not counted: a training-free renderer of the label
    map scores high on both without looking real."""
    rows = []

    def row(
        metric: str,
        a: Optional[float],
        b: Optional[float],
        error_a: Optional[float],
        error_b: Optional[float],
        rule: str,
        counted: bool = True,
    ) -> None:
        if error_a is None or error_b is None:
            winner = None
        else:
            winner = "model" if error_a < error_b else ("baseline" if error_b < error_a else "tie")
        rows.append({"metric": metric, "model": a, "baseline": b, "rule": rule, "better": winner, "counted": counted})

    row(
        "histogram distance",
        model["histogram_distance_mean"],
        baseline["histogram_distance_mean"],
        model["histogram_distance_mean"],
        baseline["histogram_distance_mean"],
        "lower is better",
    )
    ratio_a, ratio_b = model["sharpness_ratio_foreground"], baseline["sharpness_ratio_foreground"]
    row(
        "sharpness synthetic / real",
        ratio_a,
        ratio_b,
        _sharpness_error(ratio_a),
        _sharpness_error(ratio_b),
        "closer to 1 is better",
    )
    real_noise = model["background_noise_real"]
    noise_a, noise_b = model["background_noise_synthetic"], baseline["background_noise_synthetic"]
    row(
        "background noise",
        noise_a,
        noise_b,
        None if noise_a is None or real_noise is None else abs(noise_a - real_noise),
        None if noise_b is None or real_noise is None else abs(noise_b - real_noise),
        f"closer to the real images' {real_noise if real_noise is None else round(real_noise, 4)} is better",
    )
    row(
        "correlation with the real image",
        model["correlation"],
        baseline["correlation"],
        None if model["correlation"] is None else -model["correlation"],
        None if baseline["correlation"] is None else -baseline["correlation"],
        "higher is better; not counted",
        counted=False,
    )
    row(
        "Dice ratio synthetic / real",
        dice_model,
        dice_baseline,
        None if dice_model is None else abs(1 - dice_model),
        None if dice_baseline is None else abs(1 - dice_baseline),
        "closer to 1 is better; not counted",
        counted=False,
    )
    counted = [r for r in rows if r["counted"] and r["better"] is not None]
    wins = sum(r["better"] == "model" for r in counted)
    losses = sum(r["better"] == "baseline" for r in counted)
    verdict = (
        "the model beats the training-free baseline"
        if wins > losses and losses == 0
        else "the model beats the training-free baseline on most realism metrics"
        if wins > losses
        else "the model does NOT beat the training-free baseline"
    )
    return {
        "rows": rows,
        "model_wins": wins,
        "baseline_wins": losses,
        "counted": len(counted),
        "verdict": f"{verdict}: more realistic on {wins} of {len(counted)} realism metrics",
    }
