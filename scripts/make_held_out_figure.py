"""The README's figure of the held-out new person: real | the bundled model's sample | the training-free
baseline renderer, three planes with tissue outlines, each panel in its own grey window.

Run after ``make evaluate`` (it reads the held-out pair and the synthetic image it made)::

    python scripts/make_held_out_figure.py --eval data/eval --case voxelmorph -o docs/held_out_person.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=Path, default=REPO / "data" / "eval", help="the folder make evaluate wrote")
    parser.add_argument("--case", default="voxelmorph", help="held-out case name")
    parser.add_argument("-o", "--output", type=Path, default=REPO / "docs" / "held_out_person.png")
    args = parser.parse_args(argv)

    from MedLSDMLib.evaluation.baseline import render
    from MedLSDMLib.io.figures import planes_figure
    from MedLSDMLib.io.volumes import image_to_array

    pairs = args.eval / "pairs"
    real = sitk.ReadImage(str(pairs / f"{args.case}_image.nii.gz"), sitk.sitkFloat32)
    labels = sitk.ReadImage(str(pairs / f"{args.case}_label.nii.gz"))
    synthetic_path = args.eval / "synthetic" / f"{args.case}_synthetic.nrrd"
    synthetic = sitk.ReadImage(str(synthetic_path), sitk.sitkFloat32)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(synthetic_path))
    reader.ReadImageInformation()
    made_by = " ".join(reader.GetMetaData(k) for k in ("medlsdm_model", "medlsdm_sampler") if reader.HasMetaDataKey(k))
    baseline = render(real, labels, seed=1)
    # index axes along L, P, S (nearest to the grid's directions), so that the rows are axial, coronal, sagittal
    real, labels, synthetic, baseline = (sitk.DICOMOrient(i, "LPS") for i in (real, labels, synthetic, baseline))
    planes_figure(
        args.output,
        [("real (held out)", image_to_array(real)), ("MedLSDM sample", image_to_array(synthetic)),
         ("baseline renderer", image_to_array(baseline))],
        image_to_array(labels),
        real.GetSpacing(),
        title=f"a person no model saw ({args.case}): {made_by}",
    )
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
