"""``medlsdm reconstruct``: a real image round-tripped through a model's autoencoder, on its own grid."""

from __future__ import annotations

import argparse
from typing import Callable

from MedLSDMLib.cli.options import add_device_options, add_model_options, add_reporting_options, engine_arguments
from MedLSDMLib.errors import Cancelled
from MedLSDMLib.runtime.progress import Reporter

NAME = "reconstruct"


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add ``reconstruct`` to the ``medlsdm`` subcommands."""
    p = commands.add_parser(
        NAME,
        help="round-trip a real image through a model's autoencoder (the ceiling of any sample)",
        description="Normalise IMAGE as training does, encode, quantise, decode and de-normalise "
        "it with the model's autoencoder, and write the result on IMAGE's exact grid. "
        "No sample can be closer to the real image: evaluate scores it like a "
        "synthetic image.",
    )
    p.add_argument("image", help="the real image (.nii.gz, .nii, .nrrd, .mha)")
    p.add_argument("labels", help="its label map (for the foreground the intensity normalisation uses)")
    p.add_argument("-o", "--output", required=True, help="output image; its extension picks the format")
    add_model_options(
        p,
        "map a label value to a model class (repeatable), as for generate",
        "mapping file for the label map, as for generate",
    )
    add_device_options(p)
    add_reporting_options(p)
    p.set_defaults(run=run_reconstruct)


def run_reconstruct(args: argparse.Namespace, reporter: Reporter, cancel: Callable[[], bool]) -> int:
    import time

    from MedLSDMLib.generation.pipeline import Generator
    from MedLSDMLib.io.labels import parse_mapping
    from MedLSDMLib.io.mapfile import read_map_file
    from MedLSDMLib.io.volumes import check_output_path, write_image

    start = time.perf_counter()
    output = check_output_path(args.output, [args.image, args.labels, args.map_file])
    mapping = parse_mapping(args.map)
    map_file = read_map_file(args.map_file) if args.map_file else None
    generator = Generator.load(args.model, args.device, args.precision, progress=reporter.progress)
    image = generator.reconstruct(
        args.image,
        args.labels,
        mapping=mapping,
        map_file=map_file,
        **engine_arguments(args, reporter, cancel),
    )
    if cancel():
        raise Cancelled()
    write_image(image, output)
    reporter.done([str(output)], [], time.perf_counter() - start)
    if args.progress != "json":
        print(f"wrote {output}", flush=True)
    return 0
