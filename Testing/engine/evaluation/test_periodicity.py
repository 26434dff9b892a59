"""The latent-period peak: about 1 for images without a period, far above 1 for an image carrying a
pattern of the latent grid's period, measured in the brain's box and over the whole volume."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from MedLSDMLib.evaluation.periodicity import describe, foreground_box, latent_period_peaks, period_peak


def smooth_volume(seed: int = 0, shape=(64, 72, 60)) -> np.ndarray:
    return gaussian_filter(np.random.default_rng(seed).normal(size=shape), 1.0) * 10


def grid_stamp(shape, period: int = 4) -> np.ndarray:
    """A pattern repeated on every period³ block (what a decoder stamping the latent grid adds)."""
    block = np.random.default_rng(5).normal(size=(period,) * 3)
    reps = [int(np.ceil(s / period)) for s in shape]
    return np.tile(block, reps)[tuple(slice(0, s) for s in shape)]


def test_an_image_without_a_period_scores_about_one() -> None:
    assert period_peak(smooth_volume(), 4) == pytest.approx(1.0, abs=0.3)


def test_a_stamp_of_the_latent_grid_raises_the_peak() -> None:
    volume = smooth_volume()
    stamped = volume + 0.5 * volume.std() * grid_stamp(volume.shape)
    assert period_peak(stamped, 4) > 3


def test_the_brain_box_and_the_whole_volume_are_measured_apart() -> None:
    volume = smooth_volume(shape=(80, 80, 80))
    classes = np.zeros(volume.shape, np.int64)
    classes[20:60, 16:64, 24:56] = 2
    stamp = np.zeros(volume.shape)
    outside = classes == 0
    stamp[outside] = grid_stamp(volume.shape)[outside]  # a stamp in the background only
    peaks = latent_period_peaks(volume + volume.std() * stamp, classes, 4)
    assert peaks["whole_volume"] > 3
    assert peaks["brain_box"] == pytest.approx(1.0, abs=0.3)
    assert foreground_box(classes) == (slice(20, 60), slice(16, 64), slice(24, 56))
    assert "whole volume" in describe(peaks) and "x" in describe(peaks)


def test_too_short_axes_and_mismatched_maps() -> None:
    assert period_peak(np.zeros((8, 8, 8)), 4) is None
    assert foreground_box(np.zeros((4, 4, 4))) is None
    with pytest.raises(ValueError, match="differ in size"):
        latent_period_peaks(np.zeros((40, 40, 40)), np.zeros((40, 40, 39)), 4)
