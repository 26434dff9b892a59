"""What ``generate`` and ``edit`` share: their sampling options, and the run that checks the options and
outputs, loads the model, hands each sample to a writer and puts the outputs in place."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from MedLSDMLib.cli.options import add_device_options, add_model_options, add_reporting_options, engine_arguments
from MedLSDMLib.errors import Cancelled
from MedLSDMLib.runtime.progress import Reporter

if TYPE_CHECKING:
    from MedLSDMLib.generation.pipeline import Generator
    from MedLSDMLib.generation.variability import SampleWriter


class SamplerOption(argparse.Action):
    """``--sampler NAME``: its help lists the registered samplers (sampling.samplers.SAMPLERS), read when
    the help is shown, so that building the parser does not import PyTorch."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: Optional[str] = None,
    ) -> None:
        setattr(namespace, self.dest, values)

    @property
    def help(self) -> str:
        from MedLSDMLib.sampling.samplers import sampler_help

        return sampler_help()

    @help.setter
    def help(self, value: Optional[str]) -> None:
        pass  # the registry's, always


def add_generation_options(p: argparse.ArgumentParser) -> None:
    """The options generate and edit share: model, label mapping, sampling, samples and their spread, device."""
    add_model_options(
        p,
        "map an input label value or segment name to a model class (repeatable)",
        "CSV table of label value (or segment name) -> model class, e.g. the shipped "
        "freesurfer_tissue for FreeSurfer/SynthSeg maps; --map overrides its rows",
    )
    p.add_argument("--steps", type=int, help="sampling steps (default: the sampler's)")
    p.add_argument("--sampler", action=SamplerOption)
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale w (default: the model's)")
    p.add_argument("--seed", type=int, help="random seed; sample k uses seed+k (default: random, printed)")
    p.add_argument("--samples", type=int, default=1, help="number of images; K>1 writes OUTPUT_01 ... OUTPUT_K")
    p.add_argument(
        "--variability",
        metavar="OUTPUT",
        help="also write the voxelwise standard deviation of the samples (needs --samples 2 or more)",
    )
    p.add_argument("--mean", metavar="OUTPUT", help="also write the voxelwise mean of the samples")
    add_device_options(p)
    p.add_argument("--max-memory", metavar="GIB", help="memory to stay within in GiB (default: what is free)")
    add_reporting_options(p)


def run_samples(
    args: argparse.Namespace,
    reporter: Reporter,
    cancel: Callable[[], bool],
    inputs: List[Optional[str]],
    produce: Callable[["Generator", Dict[str, Any]], object],
    check: Callable[[], None] = lambda: None,
) -> int:
    """Check the options (and ``check`` the command's own) and the outputs before any work, load the model,
    ``produce(generator, options)`` the samples into the writer, and put them in place.

    Args:
        args: the command's options (those of ``add_generation_options``, ``-o``).
        reporter: progress, log and the final ``done`` line.
        cancel: the stop check.
        inputs: the command's input files (an output may not overwrite one).
        produce: runs the generation; ``options`` holds the engine's keyword arguments, ``on_sample`` included.
        check: the command's own option check, run before any work.

    Returns:
        The exit code, 0.
    """
    from MedLSDMLib.generation.model_cache import load_generator
    from MedLSDMLib.generation.options import check_generation_options, parse_max_memory
    from MedLSDMLib.io.labels import parse_mapping
    from MedLSDMLib.io.mapfile import read_map_file
    from MedLSDMLib.sampling.samplers import check_sampler_options

    start = time.perf_counter()
    max_memory = parse_max_memory(args.max_memory)
    check_generation_options(guidance=args.guidance, seed=args.seed, samples=args.samples, max_memory=max_memory)
    check_sampler_options(args.sampler, args.steps)
    check()
    mapping = parse_mapping(args.map)
    map_file = read_map_file(args.map_file) if args.map_file else None
    with sample_writer(args, inputs + [args.map_file], reporter) as writer:
        generator = load_generator(args.model, args.device, args.precision, progress=reporter.progress)
        produce(
            generator,
            {
                **engine_arguments(args, reporter, cancel, "steps", "guidance", "seed", "sampler", "samples"),
                "mapping": mapping,
                "map_file": map_file,
                "max_memory": max_memory,
                "on_sample": writer.write,
            },
        )
        finish_samples(writer, reporter, cancel, start)
    return 0


def sample_writer(args: argparse.Namespace, inputs: List[Optional[str]], reporter: Reporter) -> "SampleWriter":
    """The outputs of generate or edit (-o, --samples, --variability, --mean), checked before any work. Each
    sample is written (and read back) as soon as it is done into a hidden folder beside the outputs; all
    are renamed into place at the end, so a failure or a cancel replaces nothing."""
    from MedLSDMLib.generation.variability import SampleWriter

    return SampleWriter(args.output, args.samples, inputs, args.variability, args.mean, reporter.progress)


def finish_samples(writer: "SampleWriter", reporter: Reporter, cancel: Callable[[], bool], start: float) -> None:
    """Write the maps and rename every output into place (unless cancelled), and report them."""
    if cancel():
        raise Cancelled()
    writer.commit()
    for name, path in writer.maps.items():
        reporter.log(f"{name} map of {len(writer.paths)} samples: {path}")
    reporter.done([str(p) for p in writer.paths], writer.seeds, time.perf_counter() - start)
