"""``medlsdm demo``: the bundled model on the bundled example map, with a comparison figure."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable, List, Optional

from MedLSDMLib.cli.options import add_device_options, add_reporting_options, engine_arguments
from MedLSDMLib.errors import InputError
from MedLSDMLib.runtime.progress import ProgressFn, Reporter

NAME = "demo"
EXAMPLE = "brain_example"


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add ``demo`` to the ``medlsdm`` subcommands."""
    p = commands.add_parser(
        NAME,
        help="generate from the bundled example map with the bundled model",
        description="Generate a T1 brain MRI from Resources/Examples/brain_example_label.nii.gz "
        "(a tissue map no model was trained on) and write it with a figure that "
        "compares it with the real image.",
    )
    p.add_argument("-o", "--output", default="medlsdm-demo", help="output folder (default: medlsdm-demo)")
    p.add_argument("--model", help="bundle folder or registered name (default: the bundled demo model)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the sampler's)")
    add_device_options(p)
    add_reporting_options(p, progress_help=argparse.SUPPRESS)
    p.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace, reporter: Reporter, cancel: Callable[[], bool]) -> int:
    start = time.perf_counter()
    volume, figure = make_demo(
        args.output, **engine_arguments(args, reporter, cancel, "model", "seed", "steps", "device", "precision")
    )
    reporter.close()
    print(
        f"synthetic volume: {volume}\ncomparison figure: {figure}\ntotal time: {time.perf_counter() - start:.1f} s",
        flush=True,
    )
    return 0


def make_demo(
    output: Path,
    *,
    model: Optional[str] = None,
    seed: int = 1,
    steps: Optional[int] = None,
    device: str = "auto",
    precision: str = "auto",
    progress: Optional[ProgressFn] = None,
    cancel: Optional[Callable[[], bool]] = None,
    log: Optional[Callable[[str], None]] = None,
) -> List[Path]:
    """Generate from Resources/Examples/brain_example_label.nii.gz into ``output``; write the
    synthetic volume and a figure (real | synthetic, tissue outlines). Returns both paths."""
    import SimpleITK as sitk

    from MedLSDMLib.generation.pipeline import Generator
    from MedLSDMLib.io.figures import planes_figure
    from MedLSDMLib.io.volumes import check_output_dir, image_to_array, read_image, write_image
    from MedLSDMLib.models.registry import resources_dir
    from MedLSDMLib.sampling.samplers import check_sampler_options

    examples = resources_dir() / "Examples"
    labels, real_path = examples / f"{EXAMPLE}_label.nii.gz", examples / f"{EXAMPLE}_image.nii.gz"
    if not labels.is_file():
        raise InputError(f"the example map {labels} is missing: reinstall MedLSDM")
    output = check_output_dir(output, "the demo's volume and figure (it is created if needed)", parents=True)
    check_sampler_options(None, steps)
    start = time.perf_counter()
    generator = Generator.load(model, device, precision, progress=progress)
    (image,) = generator.generate(labels, real_path, seed=seed, steps=steps, progress=progress, cancel=cancel, log=log)
    seconds = time.perf_counter() - start
    try:  # only now, so that a failed run leaves no empty folder
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder {output} ({exc.strerror or exc}): choose another") from None
    synthetic = write_image(image, output / f"{EXAMPLE}_synthetic.nii.gz")
    real = read_image(real_path, "example image")
    classes = image_to_array(sitk.ReadImage(str(labels)))
    card = generator.card
    figure = planes_figure(
        output / f"{EXAMPLE}_comparison.png",
        [
            ("real (deformed Colin27, held out)", image_to_array(real)),
            (f"synthetic, seed {seed}", image_to_array(image)),
        ],
        classes,
        real.GetSpacing(),
        title=f"{card.name} {card.version}: {image.GetMetaData('medlsdm_sampler')}, {seconds:.0f} s",
    )
    if log is not None:
        log(f"generated in {seconds:.1f} s")
    return [synthetic, figure]
