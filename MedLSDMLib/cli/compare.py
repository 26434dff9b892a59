"""``medlsdm compare``: a figure of two images and their difference on three planes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from MedLSDMLib.cli.options import add_bars_options
from MedLSDMLib.errors import InputError
from MedLSDMLib.runtime.progress import Reporter

if TYPE_CHECKING:
    import SimpleITK as sitk

NAME = "compare"


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add ``compare`` to the ``medlsdm`` subcommands."""
    p = commands.add_parser(
        NAME,
        help="figure of two images and their difference on three planes",
        description="A | B | A - B on the axial, coronal and sagittal planes through a point, "
        "with label outlines. Both images must be on one grid.",
    )
    p.add_argument("image_a")
    p.add_argument("image_b")
    p.add_argument("--labels", help="label map on the same grid: outlines, and the default point (its centre of mass)")
    p.add_argument("--point", type=int, nargs=3, metavar=("I", "J", "K"), help="voxel indices of the planes' point")
    p.add_argument("-o", "--output", required=True, help="figure file (.png, .pdf or .svg)")
    add_bars_options(p)
    p.set_defaults(run=run_compare)


def panel_title(letter: str, path: str, image: "sitk.Image") -> str:
    """'A: name.nrrd (seed 3)': the file name, and the seed a generated image carries in its metadata."""
    seed = image.GetMetaData("medlsdm_seed") if image.HasMetaDataKey("medlsdm_seed") else None
    return f"{letter}: {Path(path).name}" + (f" (seed {seed})" if seed is not None else "")


def run_compare(args: argparse.Namespace, reporter: Reporter, cancel: Callable[[], bool]) -> int:
    from MedLSDMLib.evaluation.evaluate import GRID_TOLERANCE
    from MedLSDMLib.io.figures import centre_of, compare_figure
    from MedLSDMLib.io.geometry import same_grid
    from MedLSDMLib.io.volumes import check_output_folder, image_to_array, read_image

    output = Path(args.output)
    if output.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise InputError(f"-o {output.name}: give a .png, .pdf or .svg file")
    check_output_folder(output)
    images = [read_image(args.image_a, "image A"), read_image(args.image_b, "image B")]
    labels = read_image(args.labels, "label map") if args.labels else None
    for image, name in ((images[1], args.image_b), (labels, args.labels)):
        if image is not None and not same_grid(images[0], image, GRID_TOLERANCE):
            raise InputError(
                f"{Path(name).name} is not on the grid of {Path(args.image_a).name} (size, spacing, "
                "origin or direction differ): resample it first"
            )
    arrays = [image_to_array(i).astype("float64") for i in images]
    classes = image_to_array(labels).astype("int64") if labels is not None else None
    shape = arrays[0].shape
    if args.point is not None and not all(0 <= p < s for p, s in zip(args.point, shape)):
        raise InputError(
            f"--point {' '.join(map(str, args.point))} is outside the image (size {' '.join(map(str, shape))})"
        )
    point = tuple(args.point) if args.point is not None else centre_of(classes, shape)
    titles = [panel_title("A", args.image_a, images[0]), panel_title("B", args.image_b, images[1])]
    compare_figure(
        output,
        (titles[0], arrays[0]),
        (titles[1], arrays[1]),
        classes,
        images[0].GetSpacing(),
        point,
        title=f"planes through voxel ({', '.join(map(str, point))})",
    )
    print(f"wrote {output}", flush=True)
    return 0
