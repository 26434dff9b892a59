"""Deformed image/label pairs that no model was trained on: for evaluation and the demo example.

Each pair is a training pair warped by a smooth random B-spline deformation (seeded, so the output
is the same every run), its label map with nearest-neighbour and its image with linear
interpolation, resampled to ``--spacing``. Usage (from the repository root, after
scripts/prepare_demo_data.py):

    python scripts/make_deformed_pairs.py --pairs data/demo --out data/eval --count 4
    python scripts/make_deformed_pairs.py --pairs data/demo --out Resources/Examples --count 1 \
        --subjects colin27 --seed 7 --name brain_example
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk


def random_deformation(image: sitk.Image, seed: int, magnitude_mm: float, mesh: int = 4) -> sitk.Transform:
    """A B-spline transform with ``mesh`` control points per axis, displaced up to ``magnitude_mm``."""
    transform = sitk.BSplineTransformInitializer(image, [mesh] * 3, order=3)
    rng = np.random.default_rng(seed)
    parameters = rng.uniform(-magnitude_mm, magnitude_mm, len(transform.GetParameters()))
    transform.SetParameters(parameters.tolist())
    return transform


def deformed_pair(image: sitk.Image, label: sitk.Image, seed: int, magnitude_mm: float,
                  spacing: Sequence[float]) -> tuple:
    """The pair warped by one random deformation and resampled to ``spacing`` over the same extent."""
    transform = random_deformation(label, seed, magnitude_mm)
    size = [int(round(n * s / t)) for n, s, t in zip(label.GetSize(), label.GetSpacing(), spacing)]
    grid = sitk.Image(size, sitk.sitkUInt8)
    grid.SetSpacing(list(spacing))
    grid.SetDirection(label.GetDirection())
    grid.SetOrigin(label.TransformContinuousIndexToPhysicalPoint([(t / s - 1) / 2 for s, t in
                                                                 zip(label.GetSpacing(), spacing)]))
    warped_label = sitk.Resample(label, grid, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    warped_image = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), grid, transform, sitk.sitkLinear, 0.0,
                                 sitk.sitkFloat32)
    return warped_image, warped_label


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="data/demo", help="folder of NAME_image/NAME_label pairs")
    parser.add_argument("--out", default="data/eval", help="output folder")
    parser.add_argument("--count", type=int, default=2, help="deformed pairs per subject")
    parser.add_argument("--subjects", nargs="*", help="subject names (default: all pairs)")
    parser.add_argument("--seed", type=int, default=100, help="seed of the first deformation")
    parser.add_argument("--magnitude", type=float, default=6.0, help="largest control-point shift in mm")
    parser.add_argument("--spacing", type=float, nargs=3, default=(2.0, 2.0, 2.0), help="output spacing in mm")
    parser.add_argument("--name", help="output name stem (default: SUBJECT_deformedN)")
    args = parser.parse_args(argv)

    pairs = Path(args.pairs)
    subjects = args.subjects or sorted(p.name[: -len("_image.nii.gz")] for p in pairs.glob("*_image.nii.gz"))
    if not subjects:
        print(f"make_deformed_pairs: no NAME_image.nii.gz in {pairs}: run scripts/prepare_demo_data.py first",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seed = args.seed
    for subject in subjects:
        image = sitk.ReadImage(str(pairs / f"{subject}_image.nii.gz"))
        label = sitk.ReadImage(str(pairs / f"{subject}_label.nii.gz"))
        for k in range(args.count):
            warped_image, warped_label = deformed_pair(image, label, seed, args.magnitude, args.spacing)
            stem = args.name or f"{subject}_deformed{k + 1}"
            sitk.WriteImage(warped_image, str(out / f"{stem}_image.nii.gz"), useCompression=True)
            sitk.WriteImage(warped_label, str(out / f"{stem}_label.nii.gz"), useCompression=True)
            print(f"wrote {out / stem}_{{image,label}}.nii.gz (from {subject}, seed {seed}, "
                  f"{'x'.join(map(str, warped_label.GetSize()))} voxels)")
            seed += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
