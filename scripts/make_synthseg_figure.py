"""The README's SynthSeg check: every FreeSurfer-style map of ``../shared/data/synthseg-label-maps`` (new people,
no images) through the FreeSurfer tissue table, with the bundled model and seed 1. For each map: the seconds,
whether the output lies exactly on the map's grid, and the mean intensity of each tissue class and of the
background next to the brain; the figure of the first map in three planes with tissue outlines.

Usage: python scripts/make_synthseg_figure.py [--maps ../shared/data/synthseg-label-maps] [--model brain-t1-demo]
       [--figure docs/synthseg_training_seg_01.png] [--out data/synthseg]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def figure(path: Path, image: sitk.Image, classes: sitk.Image, title: str) -> None:
    """Three planes through the brain's centre in radiological display (the volumes turned to LPS), the image
    alone above and with the tissue outlines below, pixels at their physical aspect ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # (z, y, x) of the LPS volume: z up, y to the back, x to the patient's left (shown on the right)
    volume = sitk.GetArrayFromImage(sitk.DICOMOrient(image, "LPS")).astype(np.float32)
    tissue = sitk.GetArrayFromImage(sitk.DICOMOrient(classes, "LPS"))
    sx, sy, sz = sitk.DICOMOrient(image, "LPS").GetSpacing()
    centre = [int(round(c)) for c in ndimage.center_of_mass(tissue > 0)]
    planes = [  # (slice of the volume, slice of the classes, aspect, name); rows of the display go down
        (volume[centre[0]], tissue[centre[0]], sy / sx, "axial"),
        (volume[:, centre[1]][::-1], tissue[:, centre[1]][::-1], sz / sx, "coronal"),
        (volume[:, :, centre[2]][::-1], tissue[:, :, centre[2]][::-1], sz / sy, "sagittal"),
    ]
    low, high = np.percentile(volume[tissue > 0], [0.5, 99.5])
    fig, axes = plt.subplots(2, 3, figsize=(12, 8.4))
    for column, (plane, labels, aspect, name) in enumerate(planes):
        for row in range(2):
            ax = axes[row, column]
            ax.imshow(plane, cmap="gray", vmin=min(low, 0.0), vmax=high, aspect=aspect, interpolation="nearest")
            if row == 1:
                ax.contour(labels, levels=[0.5, 1.5, 2.5], colors=["#ffd400", "#ff5a36", "#36c3ff"], linewidths=0.6)
            ax.set_title(name if row == 0 else f"{name}, tissue outlines", fontsize=9)
            ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", default=str(REPO.parent / "shared" / "data" / "synthseg-label-maps"))
    parser.add_argument("--model", default="brain-t1-demo")
    parser.add_argument("--figure", default=str(REPO / "docs" / "synthseg_training_seg_01.png"))
    parser.add_argument("--out", default=str(REPO / "data" / "synthseg"), help="the outputs and synthseg.json")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    from MedLSDMLib.generation.pipeline import Generator
    from MedLSDMLib.io.geometry import same_grid
    from MedLSDMLib.io.labels import class_image
    from MedLSDMLib.io.mapfile import resolve_map_file
    from MedLSDMLib.io.volumes import image_to_array, write_image

    maps = sorted(Path(args.maps).glob("training_seg_*.nii.gz"))
    if not maps:
        raise SystemExit(f"make_synthseg_figure: no training_seg_*.nii.gz in {args.maps}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    map_file = resolve_map_file("freesurfer_tissue")
    generator = Generator.load(args.model)
    names = {index: entry.name for index, entry in enumerate(generator.card.labels)}  # class_image gives indices
    rows: Dict[str, Dict[str, Any]] = {}
    for path in maps:
        name = path.name.split(".")[0]
        labels = sitk.ReadImage(str(path))
        tic = time.perf_counter()
        image = generator.generate(str(path), map_file=map_file, seed=args.seed)[0]
        seconds = time.perf_counter() - tic
        write_image(image, out / f"{name}_synthetic.nii.gz")
        tissue = class_image(str(path), generator.table, map_file=map_file)
        classes = image_to_array(tissue)
        values = image_to_array(image).astype(np.float64)
        brain = classes > 0
        near = ndimage.binary_dilation(brain, iterations=5) & ~brain  # the background within 5 mm of the brain
        means = {names[v]: float(values[classes == v].mean()) for v in np.unique(classes) if v > 0}
        rows[name] = {
            "seconds": round(seconds, 1),
            "on_the_maps_grid": same_grid(image, labels),
            "means": {k: round(v, 1) for k, v in means.items()},
            "background_within_5_voxels": round(float(values[near].mean()), 1),
        }
        print(f"{name}: {json.dumps(rows[name])}", flush=True)
        if path == maps[0]:
            model = f"{generator.card.name} {generator.card.version}"
            figure(Path(args.figure), image, tissue, f"{name} through freesurfer_tissue: {model}, seed {args.seed}")
    (out / "synthseg.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {out / 'synthseg.json'} and {args.figure}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
