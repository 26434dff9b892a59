"""The ``edit`` subcommand of ``medlsdm``: regenerate one region of a real scan from an edited label map."""

from __future__ import annotations

import argparse
from typing import Callable

from MedLSDMLib.cli.samples import add_generation_options, run_samples
from MedLSDMLib.generation.edit_options import DEFAULT_MARGIN, check_edit_options
from MedLSDMLib.runtime.progress import Reporter

NAME = "edit"


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add ``edit`` to the ``medlsdm`` subcommands."""
    p = commands.add_parser(
        NAME,
        help="regenerate one region of a real scan from an edited label map",
        description="Regenerate the region of IMAGE given by --region MASK, or where LABELS "
        "differs from --original-labels ORIGINAL, from the edited LABELS; the region "
        "fades into the real image over --margin mm, and beyond it the output is "
        "IMAGE exactly (same voxels, same grid).",
    )
    p.add_argument("image", help="the real image (.nii.gz, .nii, .nrrd, .mha)")
    p.add_argument("labels", help="the edited label map or Slicer segmentation, on the image's grid")
    p.add_argument("-o", "--output", required=True, help="output image; its extension picks the format")
    p.add_argument("--region", metavar="MASK", help="binary mask of the region to regenerate (1 inside)")
    p.add_argument(
        "--original-labels",
        metavar="ORIGINAL",
        help="the label map before the edit: the region is where the model classes differ",
    )
    p.add_argument(
        "--margin",
        type=float,
        default=DEFAULT_MARGIN,
        metavar="MM",
        help=f"grow the region by this many mm, over which it fades into the real image (default {DEFAULT_MARGIN:g})",
    )
    add_generation_options(p)
    p.set_defaults(run=run_edit)


def run_edit(args: argparse.Namespace, reporter: Reporter, cancel: Callable[[], bool]) -> int:
    return run_samples(
        args,
        reporter,
        cancel,
        [args.image, args.labels, args.region, args.original_labels],
        lambda generator, options: generator.edit(
            args.image, args.labels, region=args.region, original=args.original_labels, margin=args.margin, **options
        ),
        check=lambda: check_edit_options(args.region, args.original_labels, args.margin),
    )
