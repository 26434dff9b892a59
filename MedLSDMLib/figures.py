"""Figures: orthogonal planes of volumes side by side, with label outlines."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np


def centre_of(classes: Optional[np.ndarray], shape: Sequence[int]) -> Tuple[int, ...]:
    """The foreground's centre of mass, or the volume's centre."""
    if classes is not None and classes.any():
        return tuple(int(round(c)) for c in np.argwhere(classes > 0).mean(axis=0))
    return tuple(s // 2 for s in shape)


def planes_figure(path: Path, panels: Sequence[Tuple[str, np.ndarray]], classes: Optional[np.ndarray] = None,
                  spacing: Sequence[float] = (1.0, 1.0, 1.0), point: Optional[Sequence[int]] = None,
                  title: str = "") -> Path:
    """Save a PNG: one column per (title, volume) panel, rows are the three planes through
    ``point`` (default: the labels' centre), label outlines drawn on every panel. Arrays are
    (x, y, z); pixels are drawn with their physical aspect ratio. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shape = panels[0][1].shape
    point = tuple(point) if point is not None else centre_of(classes, shape)
    cuts = [("axial", lambda a: a[:, :, point[2]], (spacing[0], spacing[1])),
            ("coronal", lambda a: a[:, point[1], :], (spacing[0], spacing[2])),
            ("sagittal", lambda a: a[point[0], :, :], (spacing[1], spacing[2]))]
    figure, axes = plt.subplots(3, len(panels), figsize=(3 * len(panels), 9), squeeze=False)
    for column, (name, volume) in enumerate(panels):
        low, high = np.percentile(volume, [0.5, 99.5])
        for row, (plane, cut, (sx, sy)) in enumerate(cuts):
            axis = axes[row][column]
            axis.imshow(cut(volume).T, cmap="gray", origin="lower", vmin=low, vmax=high, aspect=sy / sx,
                        interpolation="nearest")
            if classes is not None:
                axis.contour(cut(classes).T, levels=np.arange(0.5, classes.max() + 0.5), colors="yellow",
                             linewidths=0.5, origin="lower")
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
    temporary = path.with_name(f".{path.stem}.partial-{os.getpid()}.png")
    figure.savefig(temporary, dpi=100)
    plt.close(figure)
    os.replace(temporary, path)
    return path
