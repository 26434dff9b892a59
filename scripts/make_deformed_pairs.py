"""The held-out evaluation set: image/label pairs that no model was trained on.

* the **voxelmorph subject** of ../shared/data (a person distinct from every training subject): its
  FreeSurfer segmentation turned into the four tissue classes by the shipped mapping table
  (Resources/Mappings/freesurfer_tissue.csv), on its own grid (FreeSurfer's conformed LIA, 1 mm);
* **deformed training subjects**: each training pair warped by a smooth random B-spline deformation
  (seeded, so every run gives the same set), its label map with nearest-neighbour and its image with
  linear interpolation, onto an **oblique, anisotropic** grid (default 1.4 x 1.6 x 2.2 mm, turned by
  a seeded rotation of up to ``--tilt`` degrees) that covers the subject's extent.

Each pair is then cut to its label map's foreground box plus 8 mm (geometry kept), as a user crops a scan.

Usage (from the repository root, after scripts/prepare_demo_data.py)::

    python scripts/make_deformed_pairs.py --pairs data/demo --out data/eval/pairs --count 1
    python scripts/make_deformed_pairs.py --pairs data/demo --out Resources/Examples --count 1 \
        --subjects colin27 --seed 7 --name brain_example --spacing 2 2 2 --tilt 0 --no-held-out

The pure functions (``random_deformation``, ``oblique_grid``, ``deformed_pair``, ``tissue_map``) are
importable without side effects.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
HELD_OUT = REPO.parent / "shared" / "data" / "voxelmorph-subject"
HELD_OUT_NAME = "voxelmorph"


def random_deformation(image: sitk.Image, seed: int, magnitude_mm: float, mesh: int = 4) -> sitk.Transform:
    """A B-spline transform with ``mesh`` control points per axis, displaced up to ``magnitude_mm``."""
    transform = sitk.BSplineTransformInitializer(image, [mesh] * 3, order=3)
    rng = np.random.default_rng(seed)
    parameters = rng.uniform(-magnitude_mm, magnitude_mm, len(transform.GetParameters()))
    transform.SetParameters(parameters.tolist())
    return transform


def rotation_matrix(seed: int, degrees: float) -> np.ndarray:
    """A seeded rotation about a random axis by a random angle of at most ``degrees`` (identity for 0)."""
    if degrees <= 0:
        return np.eye(3)
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(0.5, 1.0) * degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def oblique_grid(image: sitk.Image, spacing: Sequence[float], rotation: np.ndarray) -> sitk.Image:
    """An empty UInt8 grid with ``spacing`` and the image's direction turned by ``rotation``, covering the
    image's whole extent (its voxel corners), centred on it."""
    direction = rotation @ np.array(image.GetDirection()).reshape(3, 3)
    size = np.array(image.GetSize(), dtype=float)
    corners = np.array([[i, j, k] for i in (-0.5, size[0] - 0.5) for j in (-0.5, size[1] - 0.5)
                        for k in (-0.5, size[2] - 0.5)])
    physical = np.array([image.TransformContinuousIndexToPhysicalPoint(c.tolist()) for c in corners])
    local = physical @ direction  # coordinates along the new axes
    low, high = local.min(axis=0), local.max(axis=0)
    spacing = np.asarray(spacing, dtype=float)
    count = np.maximum(np.ceil((high - low) / spacing), 2).astype(int)
    first = (low + high) / 2 - (count - 1) * spacing / 2
    grid = sitk.Image([int(c) for c in count], sitk.sitkUInt8)
    grid.SetSpacing(spacing.tolist())
    grid.SetDirection(direction.flatten().tolist())
    grid.SetOrigin((direction @ first).tolist())
    return grid


def deformed_pair(image: sitk.Image, label: sitk.Image, seed: int, magnitude_mm: float,
                  spacing: Sequence[float], tilt_degrees: float = 0.0) -> Tuple[sitk.Image, sitk.Image]:
    """The pair warped by one random deformation and resampled onto an oblique grid with ``spacing``."""
    transform = random_deformation(label, seed, magnitude_mm)
    grid = oblique_grid(label, spacing, rotation_matrix(seed, tilt_degrees))
    warped_label = sitk.Resample(label, grid, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    warped_image = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), grid, transform, sitk.sitkLinear, 0.0,
                                 sitk.sitkFloat32)
    return warped_image, warped_label


def tissue_map(segmentation: sitk.Image, map_file: Optional[Path] = None) -> sitk.Image:
    """A FreeSurfer-style segmentation as the four tissue classes (0 background, 1 CSF, 2 grey matter, 3 white
    matter) by the mapping table (default: the shipped freesurfer_tissue.csv), on the segmentation's grid."""
    from MedLSDMLib.card import LabelEntry
    from MedLSDMLib.io.labels import LabelTable, class_image
    from MedLSDMLib.io.mapfile import read_map_file

    table = LabelTable([LabelEntry(0, "background", (0, 0, 0)), LabelEntry(1, "csf", (0, 0, 1)),
                        LabelEntry(2, "grey_matter", (0.5, 0.5, 0.5)), LabelEntry(3, "white_matter", (1, 1, 1))])
    return class_image(segmentation, table, map_file=read_map_file(map_file or "freesurfer_tissue"))


def crop_to_foreground(image: sitk.Image, label: sitk.Image, margin_mm: float = 8.0) -> Tuple[sitk.Image, sitk.Image]:
    """Both images cut to the label map's foreground box plus ``margin_mm`` (the grid's geometry is kept:
    same spacing and direction, origin moved to the box's first voxel), as a user crops a scan to the head."""
    array = sitk.GetArrayViewFromImage(label)
    found = np.argwhere(array > 0)
    if not found.size:
        return image, label
    margin = [int(np.ceil(margin_mm / s)) for s in label.GetSpacing()[::-1]]
    low = np.maximum(found.min(axis=0) - margin, 0)
    high = np.minimum(found.max(axis=0) + 1 + np.array(margin), array.shape)
    index, size = [int(v) for v in low[::-1]], [int(v) for v in (high - low)[::-1]]
    return sitk.RegionOfInterest(image, size, index), sitk.RegionOfInterest(label, size, index)


def write_pair(image: sitk.Image, label: sitk.Image, out: Path, stem: str) -> sitk.Image:
    image, label = crop_to_foreground(image, label)
    sitk.WriteImage(sitk.Cast(image, sitk.sitkFloat32), str(out / f"{stem}_image.nii.gz"), useCompression=True)
    sitk.WriteImage(sitk.Cast(label, sitk.sitkUInt8), str(out / f"{stem}_label.nii.gz"), useCompression=True)
    return label


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="data/demo", help="folder of the training NAME_image/NAME_label pairs")
    parser.add_argument("--out", default="data/eval/pairs", help="output folder")
    parser.add_argument("--count", type=int, default=1, help="deformed pairs per training subject")
    parser.add_argument("--subjects", nargs="*", help="training subject names (default: all pairs)")
    parser.add_argument("--seed", type=int, default=100, help="seed of the first deformation")
    parser.add_argument("--magnitude", type=float, default=6.0, help="largest control-point shift in mm")
    parser.add_argument("--spacing", type=float, nargs=3, default=(1.4, 1.6, 2.2), help="output spacing in mm")
    parser.add_argument("--tilt", type=float, default=20.0, help="largest rotation of the output grid in degrees")
    parser.add_argument("--name", help="output name stem (default: SUBJECT_deformedN)")
    parser.add_argument("--held-out", default=str(HELD_OUT),
                        help="folder of the held-out subject (subject_image / subject_label, FreeSurfer labels)")
    parser.add_argument("--no-held-out", action="store_true", help="leave the held-out subject out")
    args = parser.parse_args(argv)

    pairs = Path(args.pairs)
    subjects = args.subjects or sorted(p.name[: -len("_image.nii.gz")] for p in pairs.glob("*_image.nii.gz"))
    if not subjects:
        print(f"make_deformed_pairs: no NAME_image.nii.gz in {pairs}: run scripts/prepare_demo_data.py first",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.no_held_out:
        folder = Path(args.held_out)
        image_path, label_path = folder / "subject_image.nii.gz", folder / "subject_label.nii.gz"
        if not (image_path.is_file() and label_path.is_file()):
            print(f"make_deformed_pairs: {folder} has no subject_image/subject_label.nii.gz: give --held-out or "
                  "--no-held-out", file=sys.stderr)
            return 2
        write_pair(sitk.ReadImage(str(image_path)), tissue_map(sitk.ReadImage(str(label_path))), out, HELD_OUT_NAME)
        print(f"wrote {out / HELD_OUT_NAME}_{{image,label}}.nii.gz (the held-out subject, its FreeSurfer labels as "
              "tissue classes by Resources/Mappings/freesurfer_tissue.csv)")
    seed = args.seed
    for subject in subjects:
        image = sitk.ReadImage(str(pairs / f"{subject}_image.nii.gz"))
        label = sitk.ReadImage(str(pairs / f"{subject}_label.nii.gz"))
        for k in range(args.count):
            warped_image, warped_label = deformed_pair(image, label, seed, args.magnitude, args.spacing, args.tilt)
            stem = args.name or f"{subject}_deformed{k + 1}"
            warped_label = write_pair(warped_image, warped_label, out, stem)
            print(f"wrote {out / stem}_{{image,label}}.nii.gz (from {subject}, seed {seed}, "
                  f"{'x'.join(map(str, warped_label.GetSize()))} voxels of "
                  f"{'x'.join(f'{s:g}' for s in warped_label.GetSpacing())} mm)")
            seed += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
