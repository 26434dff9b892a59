"""Figures: orthogonal planes of volumes side by side, with label outlines."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from MedLSDMLib.runtime.interrupt import staged_file


def centre_of(classes: Optional[np.ndarray], shape: Sequence[int]) -> Tuple[int, ...]:
    """The foreground's centre of mass, or the volume's centre."""
    if classes is not None and classes.any():
        return tuple(int(round(c)) for c in np.argwhere(classes > 0).mean(axis=0))
    return tuple(s // 2 for s in shape)


def planes_figure(
    path: Path,
    panels: Sequence[Tuple[str, np.ndarray]],
    classes: Optional[np.ndarray] = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    point: Optional[Sequence[int]] = None,
    title: str = "",
    difference: bool = False,
) -> Path:
    """Save a PNG: one column per (title, volume) panel, rows are the three planes through
    ``point`` (default: the labels' centre), label outlines drawn on every panel. Arrays are
    (x, y, z); pixels are drawn with their physical aspect ratio. Written atomically.

    With ``difference``, the last panel is a signed difference, drawn with a diverging colour map
    symmetric about 0 and a colour bar, and the other panels share one grey window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shape = panels[0][1].shape
    point = tuple(point) if point is not None else centre_of(classes, shape)
    cuts = [
        ("axial", lambda a: a[:, :, point[2]], (spacing[0], spacing[1])),
        ("coronal", lambda a: a[:, point[1], :], (spacing[0], spacing[2])),
        ("sagittal", lambda a: a[point[0], :, :], (spacing[1], spacing[2])),
    ]
    figure, axes = plt.subplots(3, len(panels), figsize=(3 * len(panels), 9), squeeze=False)
    shared = np.percentile(np.concatenate([v.ravel() for _, v in panels[:-1]]), [0.5, 99.5]) if difference else None
    for column, (name, volume) in enumerate(panels):
        signed = difference and column == len(panels) - 1
        if signed:
            high = float(np.percentile(np.abs(volume), 99.5)) or 1.0
            low, cmap = -high, "RdBu_r"
        else:
            low, high = shared if shared is not None else np.percentile(volume, [0.5, 99.5])
            cmap = "gray"
        for row, (plane, cut, (sx, sy)) in enumerate(cuts):
            axis = axes[row][column]
            shown = axis.imshow(
                cut(volume).T, cmap=cmap, origin="lower", vmin=low, vmax=high, aspect=sy / sx, interpolation="nearest"
            )
            if signed:
                figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.02)
            if classes is not None:
                axis.contour(
                    cut(classes).T,
                    levels=np.arange(0.5, classes.max() + 0.5),
                    colors="yellow",
                    linewidths=0.5,
                    origin="lower",
                )
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(name, fontsize=9)
            if column == 0:
                axis.set_ylabel(plane)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path = Path(path)
    try:
        with staged_file(path) as temporary:
            figure.savefig(temporary, dpi=100, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(figure)
    return path


def compare_figure(
    path: Path,
    a: Tuple[str, np.ndarray],
    b: Tuple[str, np.ndarray],
    classes: Optional[np.ndarray] = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    point: Optional[Sequence[int]] = None,
    title: str = "",
) -> Path:
    """A | B | A − B through ``point`` (default: the labels' centre of mass), A and B in one grey window."""
    (name_a, volume_a), (name_b, volume_b) = a, b
    difference = volume_a.astype(np.float64) - volume_b.astype(np.float64)
    return planes_figure(
        path,
        [(name_a, volume_a), (name_b, volume_b), ("A − B", difference)],
        classes,
        spacing,
        point,
        title,
        difference=True,
    )
