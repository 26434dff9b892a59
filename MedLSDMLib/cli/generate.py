"""``medlsdm generate``: synthetic images from a label map, on its grid or a reference's."""

from __future__ import annotations

import argparse
from typing import Callable

from MedLSDMLib.cli.samples import add_generation_options, run_samples
from MedLSDMLib.runtime.progress import Reporter

NAME = "generate"


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add ``generate`` to the ``medlsdm`` subcommands."""
    p = commands.add_parser(
        NAME,
        help="generate synthetic images from a label map",
        description="Generate synthetic images from a label map or Slicer segmentation. "
        "The output lies exactly on the grid of the label map, or of --reference.",
    )
    p.add_argument("labels", help="label map (.nii.gz, .nii, .nrrd, .mha) or Slicer segmentation (.seg.nrrd)")
    p.add_argument("-o", "--output", required=True, help="output image; its extension picks the format")
    p.add_argument("--reference", help="image whose grid the output takes (size, spacing, origin, direction)")
    add_generation_options(p)
    p.set_defaults(run=run_generate)


def run_generate(args: argparse.Namespace, reporter: Reporter, cancel: Callable[[], bool]) -> int:
    return run_samples(
        args,
        reporter,
        cancel,
        [args.labels, args.reference],
        lambda generator, options: generator.generate(args.labels, args.reference, **options),
    )
