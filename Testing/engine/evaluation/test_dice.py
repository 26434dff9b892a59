"""Dice per class with empty and absent classes, and the training-free mixture segmenter: determinism,
near-perfect Dice on separable tissues, and the class-order rule that does not forgive swapped contrasts."""
from __future__ import annotations

import numpy as np
import pytest

from MedLSDMLib.evaluation.dice import dice_per_class, mean_defined, per_class_means, ratio
from MedLSDMLib.evaluation.mixture import MixtureSegmenter, class_order, fit_mixture, segment

from conftest import brain_array, image_from_xyz


def test_dice_by_hand() -> None:
    reference = np.array([0, 1, 1, 1, 2, 2, 0, 0])
    prediction = np.array([0, 1, 1, 2, 2, 0, 0, 1])
    scores = dice_per_class(prediction, reference, [0, 1, 2])
    assert set(scores) == {1, 2}  # background excluded
    assert scores[1] == pytest.approx(2 * 2 / (3 + 3))
    assert scores[2] == pytest.approx(2 * 1 / (2 + 2))


def test_empty_and_absent_classes() -> None:
    reference = np.array([0, 1, 1, 0, 0])
    scores = dice_per_class(np.array([0, 0, 0, 3, 0]), reference, [1, 2, 3])
    assert scores[1] == 0.0  # in the reference, predicted nowhere: 0
    assert scores[2] is None  # in neither: undefined, not 1 or 0
    assert scores[3] == 0.0  # predicted where the reference has none: 0
    assert mean_defined(scores.values()) == 0.0
    assert mean_defined([None, None]) is None
    assert per_class_means([{1: 0.5, 2: None}, {1: 1.0, 2: 0.8}]) == {1: 0.75, 2: 0.8}
    assert ratio(0.5, 1.0) == 0.5 and ratio(0.5, 0.0) is None and ratio(None, 1.0) is None


def test_mixture_recovers_three_gaussians() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(30, 3, 3000), rng.normal(60, 3, 1500), rng.normal(90, 3, 500)])
    mixture = fit_mixture(values, 3)  # quantile starts alone put two components in the largest class
    np.testing.assert_allclose(mixture.means, [30, 60, 90], atol=0.5)
    np.testing.assert_allclose(mixture.stds, [3, 3, 3], atol=0.3)
    np.testing.assert_allclose(mixture.weights, [0.6, 0.3, 0.1], atol=0.01)


def tissue(classes: np.ndarray, intensities, noise: float, seed: int) -> np.ndarray:
    return np.choose(classes, intensities) + np.random.default_rng(seed).normal(0, noise, classes.shape)


def test_mixture_segmenter_is_deterministic_and_fair() -> None:
    classes = brain_array((24, 28, 20))
    labels = image_from_xyz(classes)
    real = tissue(classes, [0.0, 20.0, 60.0, 100.0], 3.0, 1)  # csf dark, white matter bright (T1)
    similar = tissue(classes, [0.0, 24.0, 57.0, 104.0], 4.0, 2)
    swapped = tissue(classes, [0.0, 20.0, 100.0, 60.0], 3.0, 3)  # grey and white matter contrast inverted
    segmenter = MixtureSegmenter()

    def dice(synthetic: np.ndarray):
        pred_real, pred_synthetic = segmenter.segment_pair(image_from_xyz(real), image_from_xyz(synthetic), labels)
        return (mean_defined(dice_per_class(pred_real, classes, [1, 2, 3]).values()),
                mean_defined(dice_per_class(pred_synthetic, classes, [1, 2, 3]).values()), pred_real, pred_synthetic)

    real_dice, identical_dice, first, again = dice(real.copy())
    assert real_dice > 0.99 and identical_dice == real_dice and np.array_equal(first, again)
    assert ratio(identical_dice, real_dice) == 1.0
    assert dice(similar)[1] > 0.97
    assert dice(swapped)[1] < 0.5  # the order comes from the real image, so a swap is not forgiven
    assert class_order(real, classes) == [1, 2, 3] and class_order(swapped, classes) == [1, 3, 2]


def test_mixture_leaves_background_and_handles_one_class() -> None:
    classes = np.zeros((10, 10, 10), np.int64)
    classes[3:7, 3:7, 3:7] = 2
    image = tissue(classes, [5.0, 0.0, 50.0], 1.0, 0)
    result = segment(image, classes, class_order(image, classes))
    assert np.array_equal(result, classes)
