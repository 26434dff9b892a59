"""Draw the extension icon, Resources/Icons/MedLSDM.png (128 x 128 pixels).

An axial slice of the bundled example brain, split along the diagonal: the label map in colour
(upper left) turns into the grey image (lower right), which is what MedLSDM does.

    python scripts/make_icon.py [--out Resources/Icons/MedLSDM.png]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "Resources" / "Examples"
SIZE = 128  # pixels, what the Extensions Manager expects
# Label colours (background, CSF, grey matter, white matter): distinct hues rather than the
# model card's greys, so that the map reads as a segmentation next to the image.
COLOURS = np.array([[0.09, 0.11, 0.16], [0.25, 0.55, 0.95], [0.95, 0.55, 0.20], [0.98, 0.87, 0.35]])


def axial_slice(name: str) -> np.ndarray:
    """The middle axial slice of an example volume, anterior up, cropped to a square on the brain."""
    volume = sitk.GetArrayFromImage(sitk.ReadImage(str(EXAMPLES / name)))  # z, y, x
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(EXAMPLES / "brain_example_label.nii.gz")))
    z = int(np.argmax((label > 0).sum(axis=(1, 2))))  # the slice with the most brain
    rows, cols = np.nonzero(label[z])
    centre_r, centre_c = (rows.min() + rows.max()) // 2, (cols.min() + cols.max()) // 2
    half = max(rows.max() - rows.min(), cols.max() - cols.min()) // 2 + 3
    padded = np.pad(volume[z], half)  # the square may reach past the volume's edge
    square = padded[centre_r:centre_r + 2 * half, centre_c:centre_c + 2 * half]
    return np.flipud(square)  # the file's direction is LPS-like (-1, -1, 1): flip to anterior up


def icon() -> np.ndarray:
    """RGB image: colour label map above the anti-diagonal, grey image below it."""
    labels = axial_slice("brain_example_label.nii.gz").astype(int)
    image = axial_slice("brain_example_image.nii.gz")
    grey = np.clip(image / np.percentile(image[labels > 0], 99.5), 0.0, 1.0)
    rgb_grey = np.repeat(grey[..., None], 3, axis=2)
    rgb_grey[labels == 0] = COLOURS[0]  # same background on both sides
    rgb_labels = COLOURS[labels]
    rows, cols = np.indices(labels.shape)
    upper_left = rows + cols < labels.shape[0]
    return np.where(upper_left[..., None], rgb_labels, rgb_grey)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "Resources" / "Icons" / "MedLSDM.png")
    args = parser.parse_args(argv)

    picture = icon()
    figure = plt.figure(figsize=(1, 1), dpi=SIZE)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.imshow(picture, interpolation="lanczos", extent=(0, 1, 0, 1))
    axes.plot([0, 1], [0, 1], color="white", linewidth=1.2)  # the seam between map and image
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.axis("off")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=SIZE, facecolor=tuple(COLOURS[0]))
    plt.close(figure)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
