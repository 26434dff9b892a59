"""The README's figures of ``medlsdm edit`` and of variability maps, from the bundled example and demo model.

1. The example's tissue map with the ventricles enlarged: the central deep CSF dilated by ``--grow`` mm into
   the brain tissue around it (``enlarged_ventricles``).
2. ``medlsdm edit`` of the real example image with that map (``--original-labels`` the example's map),
   ``--samples 4 --variability --mean``; and ``medlsdm generate --samples 4 --variability`` of the whole map.
3. docs/edit_ventricles.png: real | edited labels | result | result − real in three planes, with the
   outline of the edited region; docs/variability_ventricles.png: the standard deviation of the edit's
   samples and of the generated samples, three planes. The seam numbers are printed.

Usage (from the repository root; about 5 minutes on 2 CPU cores)::

    python scripts/make_edit_figures.py --work data/edit
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "Resources" / "Examples"
MODEL = REPO / "Resources" / "Models" / "brain-t1-demo"
CSF = 1


def enlarged_ventricles(labels: sitk.Image, grow: float) -> sitk.Image:
    """The tissue map with the ventricles dilated by ``grow`` mm into the brain tissue around them. The
    ventricles: CSF more than 15 mm inside the brain, within a central box (20 mm left and right of the
    brain's centre, 35 mm before and behind it, 10 mm below to 30 mm above), in pieces of 20 voxels or more."""
    array = sitk.GetArrayFromImage(labels)
    spacing = np.array(labels.GetSpacing())[::-1]  # z, y, x
    offset = (np.indices(array.shape).transpose(1, 2, 3, 0) - np.argwhere(array > 0).mean(axis=0)) * spacing
    central = ((np.abs(offset[..., 2]) <= 20) & (np.abs(offset[..., 1]) <= 35) & (offset[..., 0] >= -10)
               & (offset[..., 0] <= 30))
    deep = (array == CSF) & central & (ndimage.distance_transform_edt(array > 0, sampling=spacing) > 15)
    pieces, count = ndimage.label(deep)
    sizes = ndimage.sum(deep, pieces, range(1, count + 1))
    ventricles = np.isin(pieces, 1 + np.flatnonzero(sizes >= 20))
    near = ndimage.distance_transform_edt(~ventricles, sampling=spacing) <= grow
    edited = array.copy()
    edited[near & (array > CSF)] = CSF
    image = sitk.GetImageFromArray(edited)
    image.CopyInformation(labels)
    return image


def run(output: Path, *args: object) -> None:
    """``medlsdm ARGS``, unless ``output`` is there from an earlier run; prints the seconds it took."""
    from MedLSDMLib.cli.main import main

    if output.exists():
        print(f"reusing {output} (delete it to run medlsdm {args[0]} again)")
        return
    start = time.perf_counter()
    code = main([str(a) for a in args])
    if code != 0:
        sys.exit(f"medlsdm {args[0]} failed with exit code {code}")
    print(f"medlsdm {' '.join(str(a) for a in args[:1] + args[-4:])}...: {time.perf_counter() - start:.1f} s")


def seam_gradient(output: np.ndarray, real: np.ndarray, region: np.ndarray, spacing: Sequence[float],
                  margin: float) -> Tuple[float, float, int, int]:
    """On the seam (the voxels within one voxel of the grown region's border): the 99th percentile of the
    output's gradient magnitude, the real image's 99th percentile over the whole image (the bound), and
    how many seam voxels exceed the bound in the output and in the real image."""
    spacing_zyx = np.array(spacing)[::-1]
    distance = ndimage.distance_transform_edt(~region, sampling=spacing_zyx)
    shell = np.abs(distance - margin) <= spacing_zyx.max()

    def magnitude(a: np.ndarray) -> np.ndarray:
        return np.sqrt(sum(g ** 2 for g in np.gradient(a.astype(np.float64), *spacing_zyx)))

    out, ref = magnitude(output)[shell], magnitude(real)
    bound = float(np.percentile(ref, 99))
    return float(np.percentile(out, 99)), bound, int((out > bound).sum()), int((ref[shell] > bound).sum())


def planes(volume: np.ndarray, point: Sequence[int]) -> List[np.ndarray]:
    """Axial, coronal and sagittal cuts of a z, y, x volume through ``point`` (z, y, x), shown upright."""
    z, y, x = point
    return [volume[z][::-1], volume[:, y][::-1], volume[:, :, x][::-1]]


def edit_figure(path: Path, real: np.ndarray, edited: np.ndarray, result: np.ndarray, region: np.ndarray,
                point: Sequence[int], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    low, high = np.percentile(real, [0.5, 99.5])
    difference = result.astype(np.float64) - real
    limit = float(np.abs(difference).max()) or 1.0
    tissue = ListedColormap(["black", "#3366ff", "#999999", "#f2f2e6"])
    columns = [("real image", real, dict(cmap="gray", vmin=low, vmax=high)),
               ("edited labels (ventricles enlarged)", edited, dict(cmap=tissue, vmin=-0.5, vmax=3.5)),
               ("result", result, dict(cmap="gray", vmin=low, vmax=high)),
               ("result − real", difference, dict(cmap="RdBu_r", vmin=-limit, vmax=limit))]
    figure, axes = plt.subplots(3, 4, figsize=(13, 9.5))
    for column, (name, volume, style) in enumerate(columns):
        for row, (cut, outline) in enumerate(zip(planes(volume, point), planes(region, point))):
            axis = axes[row][column]
            shown = axis.imshow(cut, interpolation="nearest", **style)
            if column in (1, 3):  # the result is shown bare, to judge the seam
                axis.contour(outline, levels=[0.5], colors="#ff3030", linewidths=0.6)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(name, fontsize=10)
            if column == 0:
                axis.set_ylabel(("axial", "coronal", "sagittal")[row])
            if column == 3:
                figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.02)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def variability_figure(path: Path, rows: Sequence[Tuple[str, np.ndarray, np.ndarray, bool]], point: Sequence[int],
                       title: str) -> None:
    """One row per (name, mean image, standard deviation, only where it varies): the deviation in colour over
    the mean in grey; with the flag, voxels where it is 0 show the mean alone (an edit's unchanged image)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(rows), 3, figsize=(11, 3.9 * len(rows)), squeeze=False)
    for row, (name, mean, std, only_where_it_varies) in enumerate(rows):
        low, high = np.percentile(mean, [0.5, 99.5])
        top = float(np.percentile(std[std > 0], 99.5)) if (std > 0).any() else 1.0
        for column, (grey, colour) in enumerate(zip(planes(mean, point), planes(std, point))):
            axis = axes[row][column]
            axis.imshow(grey, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
            overlay = np.ma.masked_equal(colour, 0) if only_where_it_varies else colour
            shown = axis.imshow(overlay, cmap="inferno", vmin=0, vmax=top, alpha=0.85, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_title(f"{name}: {('axial', 'coronal', 'sagittal')[column]}", fontsize=9)
        figure.colorbar(shown, ax=list(axes[row]), fraction=0.02, pad=0.01, label="standard deviation (T1 units)")
    figure.suptitle(title, fontsize=10)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "data" / "edit", help="folder for the volumes")
    parser.add_argument("--docs", type=Path, default=REPO / "docs", help="folder for the figures")
    parser.add_argument("--grow", type=float, default=4.0, help="dilate the ventricles by this many mm")
    parser.add_argument("--margin", type=float, default=4.0, help="the edit's --margin (mm)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--samples", type=int, default=4)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    labels = sitk.ReadImage(str(EXAMPLES / "brain_example_label.nii.gz"))
    real_path = EXAMPLES / "brain_example_image.nii.gz"
    edited = enlarged_ventricles(labels, args.grow)
    edited_path = args.work / "brain_example_label_ventricles.nii.gz"
    sitk.WriteImage(edited, str(edited_path))
    common = ["--model", MODEL, "--seed", args.seed, "--samples", args.samples, "--progress", "none"]
    run(args.work / "edited_std.nii.gz", "edit", real_path, edited_path, "--original-labels",
        EXAMPLES / "brain_example_label.nii.gz", "-o", args.work / "edited.nii.gz", "--margin", args.margin,
        "--variability", args.work / "edited_std.nii.gz", "--mean", args.work / "edited_mean.nii.gz", *common)

    def volume(name: str) -> np.ndarray:
        return sitk.GetArrayFromImage(sitk.ReadImage(str(args.work / name)))

    real = sitk.GetArrayFromImage(sitk.ReadImage(str(real_path)))
    before, after = sitk.GetArrayFromImage(labels), sitk.GetArrayFromImage(edited)
    region = before != after
    first = volume("edited_01.nii.gz")
    # axial and coronal through the edit's centre, sagittal through a lateral ventricle (not the midline)
    centre = np.argwhere(region).mean(axis=0).round().astype(int)
    lateral = region.sum(axis=(0, 1)) * (np.abs(np.arange(region.shape[2]) - centre[2]) >= 4)
    point = (int(centre[0]), int(centre[1]), int(np.argmax(lateral)))
    grown = ndimage.distance_transform_edt(~region, sampling=np.array(labels.GetSpacing())[::-1]) < args.margin
    print(f"edited region: {int(region.sum())} voxels; changed voxels outside the grown region: "
          f"{int(((first != real) & ~grown).sum())}")
    seam, bound, above, real_above = seam_gradient(first, real, region, labels.GetSpacing(), args.margin)
    print(f"seam: 99th percentile of the gradient magnitude {seam:.1f} per mm (the real image's 99th percentile "
          f"{bound:.1f}); seam voxels above it: {above} (real image: {real_above})")
    print(f"mean intensity in the edited region (now CSF): result {first[region].mean():.0f}, real image there "
          f"{real[region].mean():.0f}; the real image's CSF / grey / white matter: "
          + " / ".join(f"{real[before == c].mean():.0f}" for c in (1, 2, 3)))
    edit_figure(args.docs / "edit_ventricles.png", real, after, first, region, point,
                f"medlsdm edit: ventricles enlarged by {args.grow:g} mm in the tissue map, regenerated with "
                f"brain-t1-demo (seed {args.seed}, margin {args.margin:g} mm; red: the edited voxels)")
    run(args.work / "generated_std.nii.gz", "generate", edited_path, "-o", args.work / "generated.nii.gz",
        "--variability", args.work / "generated_std.nii.gz", "--mean", args.work / "generated_mean.nii.gz", *common)

    variability_figure(args.docs / "variability_ventricles.png",
                       [("edit", volume("edited_mean.nii.gz"), volume("edited_std.nii.gz"), True),
                        ("generate", volume("generated_mean.nii.gz"), volume("generated_std.nii.gz"), False)], point,
                       f"standard deviation over {args.samples} samples "
                       f"(seeds {args.seed}-{args.seed + args.samples - 1})"
                       " over their mean: the edit varies only in the edited region, generation everywhere")
    print(f"wrote {args.docs / 'edit_ventricles.png'} and {args.docs / 'variability_ventricles.png'}")


if __name__ == "__main__":
    main()
