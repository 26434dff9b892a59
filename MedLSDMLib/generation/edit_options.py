"""The options of an edit that need no model (torch-free: the command line and the Slicer module use them)."""

from __future__ import annotations

import math

from MedLSDMLib.errors import InputError

DEFAULT_MARGIN = 4.0  # mm over which a regenerated region fades into the real image


def check_edit_options(region: object, original: object, margin: float) -> None:
    """Exactly one of ``region`` and ``original``, and a positive finite margin; InputError otherwise."""
    if (region is None) == (original is None):
        raise InputError(
            "give the region to regenerate either as --region MASK or as --original-labels ORIGINAL "
            "(the label map before the edit), one of them"
        )
    check_margin(margin)


def check_margin(margin: float) -> None:
    """A positive finite margin in mm, or InputError saying what it must be."""
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not (math.isfinite(margin) and margin > 0):
        raise InputError(
            f"--margin {margin}: the margin must be a positive number of mm (default {DEFAULT_MARGIN:g}), "
            "the width over which the regenerated region fades into the real image"
        )
