"""Dice per class, background excluded, with absent classes handled explicitly.

Dice = 2|P ∩ G| / (|P| + |G|) for the voxels of one class in the prediction P and the reference G.
A class in neither has no Dice (None: left out of every mean, never counted as 1 or 0); a class in only
one of them has Dice 0. MONAI's ``compute_dice`` decides emptiness by the reference alone (NaN, or 1 with
``ignore_empty=False``), which would hide a class predicted where the reference has none.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Optional

import numpy as np


def dice_per_class(prediction: np.ndarray, reference: np.ndarray, classes: Iterable[int]) -> Dict[int, Optional[float]]:
    """Dice of each (foreground) class value in ``classes``; None where the class is in neither map."""
    scores: Dict[int, Optional[float]] = {}
    for value in classes:
        if value == 0:
            continue
        predicted, expected = prediction == value, reference == value
        total = int(predicted.sum()) + int(expected.sum())
        scores[int(value)] = None if total == 0 else 2.0 * int((predicted & expected).sum()) / total
    return scores


def mean_defined(values: Iterable[Optional[float]]) -> Optional[float]:
    """The mean of the values that are not None (None when there are none)."""
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def per_class_means(cases: List[Mapping[int, Optional[float]]]) -> Dict[int, Optional[float]]:
    """For each class, the mean of its Dice over the cases where it is defined."""
    classes = sorted({c for case in cases for c in case})
    return {c: mean_defined(case.get(c) for case in cases) for c in classes}


def ratio(synthetic: Optional[float], real: Optional[float]) -> Optional[float]:
    """synthetic / real, None when either is undefined or the real one is 0."""
    if synthetic is None or real is None or real == 0:
        return None
    return synthetic / real
