"""The ``medlsdm`` command line."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Type

if TYPE_CHECKING:
    from typing import NoReturn

    from MedLSDMLib.generation.pipeline import Generator
    from MedLSDMLib.generation.variability import SampleWriter

from MedLSDMLib import __version__
from MedLSDMLib.cli.options import (
    PROGRESS_MODES,
    add_device_options,
    add_model_options,
    add_reporting_options,
    engine_arguments,
)
from MedLSDMLib.errors import Cancelled, InputError, MedLSDMError
from MedLSDMLib.protocol import EXIT_CANCELLED, EXIT_DONE, EXIT_FAILED, EXIT_INPUT
from MedLSDMLib.runtime.hardware import add_threads_option
from MedLSDMLib.runtime.interrupt import requested, run_stoppable, signals_ask_to_stop
from MedLSDMLib.runtime.progress import Reporter, make_reporter

EXAMPLES = """examples:
  medlsdm generate labels.nii.gz -o synthetic.nii.gz --seed 1
  medlsdm generate brain.seg.nrrd --reference t1.nrrd -o synthetic.nrrd --samples 4
  medlsdm models list
  medlsdm evaluate --real real/ --synthetic synthetic/ --labels labels/ -o report
  medlsdm benchmark --model path/to/bundle --size 64 64 64
"""


def _add_generate(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "generate",
        help="generate synthetic images from a label map",
        description="Generate synthetic images from a label map or Slicer segmentation. "
        "The output lies exactly on the grid of the label map, or of --reference.",
    )
    p.add_argument("labels", help="label map (.nii.gz, .nii, .nrrd, .mha) or Slicer segmentation (.seg.nrrd)")
    p.add_argument("-o", "--output", required=True, help="output image; its extension picks the format")
    p.add_argument("--reference", help="image whose grid the output takes (size, spacing, origin, direction)")
    add_generation_options(p)
    p.set_defaults(run=run_generate)


def add_generation_options(p: argparse.ArgumentParser) -> None:
    """The options generate and edit share: model, label mapping, sampling, samples and their spread, device."""
    add_model_options(
        p,
        "map an input label value or segment name to a model class (repeatable)",
        "CSV table of label value (or segment name) -> model class, e.g. the shipped "
        "freesurfer_tissue for FreeSurfer/SynthSeg maps; --map overrides its rows",
    )
    p.add_argument("--steps", type=int, help="sampling steps (default: the sampler's)")
    p.add_argument(
        "--sampler",
        help="dpm (DPM-Solver++ 2M, 20 steps; the default), ddim (50 steps), ddpm, "
        "reference (the published method), or rflow (for rectified-flow models)",
    )
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


def _add_models(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("models", help="list, describe and verify models")
    actions = p.add_subparsers(dest="action", required=True, metavar="{list,info,verify}")
    actions.add_parser("list", help="models known to this installation").set_defaults(run=run_models_list)
    for name, run, text in (
        ("info", run_models_info, "show a model's card"),
        ("verify", run_models_verify, "check a model's files, hashes and networks"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("model", nargs="?", help="bundle folder or registered name (default: the first)")
        action.set_defaults(run=run)
    add_reporting_options(p, progress_help=argparse.SUPPRESS, debug_help=argparse.SUPPRESS)


def _add_train(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "train",
        help="train a VQ-GAN, then a latent diffusion model, on your data",
        description="Train on a folder of NAME_image / NAME_label pairs. Runs unchanged under "
        "torchrun --nproc_per_node=N for several processes or machines.",
    )
    p.add_argument(
        "stage",
        choices=("vqgan", "diffusion", "segmenter"),
        help="vqgan first; diffusion reads its bundle; segmenter: the Dice protocol's UNet",
    )
    p.add_argument("config", help="YAML config (examples in Resources/Configs/)")
    p.add_argument("--resume", action="store_true", help="continue the run in the config's output folder")
    p.add_argument("--device", default="auto", help="auto (GPU if available) or cpu")
    add_threads_option(p)
    add_reporting_options(p, progress_help=argparse.SUPPRESS)
    p.set_defaults(run=run_train)


def _add_demo(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "demo",
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
    from MedLSDMLib.cli.demo import run_demo as demo

    start = time.perf_counter()
    volume, figure = demo(
        args.output, **engine_arguments(args, reporter, cancel, "model", "seed", "steps", "device", "precision")
    )
    reporter.close()
    print(
        f"synthetic volume: {volume}\ncomparison figure: {figure}\ntotal time: {time.perf_counter() - start:.1f} s",
        flush=True,
    )
    return 0


def _add_evaluation(commands: argparse._SubParsersAction) -> None:
    from MedLSDMLib.cli.evaluation import add_commands

    add_commands(commands)


def run_train(args: argparse.Namespace, reporter: Reporter, cancel: Callable[[], bool]) -> int:
    from MedLSDMLib.training.config import DiffusionRun, VQGANRun, load_run_config
    from MedLSDMLib.training.trainer import Trainer

    if args.device not in ("auto", "cpu", "cuda"):
        raise InputError(f"unknown device {args.device!r}: use auto, cpu or cuda")
    trainer: Type[Trainer[Any]]
    kind: type
    if args.stage == "vqgan":
        from MedLSDMLib.training.vqgan import VQGANTrainer

        trainer, kind = VQGANTrainer, VQGANRun
    elif args.stage == "diffusion":
        from MedLSDMLib.training.diffusion import DiffusionTrainer

        trainer, kind = DiffusionTrainer, DiffusionRun
    else:
        from MedLSDMLib.training.segmenter import SegmenterRun, SegmenterTrainer

        trainer, kind = SegmenterTrainer, SegmenterRun
    config = load_run_config(args.config, kind)
    start = time.perf_counter()
    bundle = trainer.run(config, resume=args.resume, device=args.device, cancel=cancel)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {bundle} in {time.perf_counter() - start:.0f} s", flush=True)
    return 0


class UsageError(Exception):
    """A command line argparse cannot take: the message, and the help of the (sub)command."""

    def __init__(self, message: str, help_text: str) -> None:
        super().__init__(message)
        self.help_text = help_text


class ProtocolParser(argparse.ArgumentParser):
    """argparse for the worker, whose stdout carries JSON lines only: usage errors and --help are
    raised as UsageError (the help with an empty message) instead of printed."""

    def error(self, message: str) -> "NoReturn":
        raise UsageError(message, self.format_help())

    def print_help(self, file: object = None) -> None:
        raise UsageError("", self.format_help())


def build_parser(parser_class: type = argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser = parser_class(
        prog="medlsdm",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Synthetic 3D medical images from segmentations.",
    )
    parser.add_argument("--version", action="version", version=f"medlsdm {__version__}")
    commands = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="{demo,generate,edit,synthesize,reconstruct,models,train,evaluate,benchmark,compare}",
    )
    _add_generate(commands)
    from MedLSDMLib.cli.edit import add_command as _add_edit

    _add_edit(commands)
    from MedLSDMLib.cli.synthesize import add_command as _add_synthesize

    _add_synthesize(commands)
    _add_models(commands)
    _add_train(commands)
    _add_evaluation(commands)
    _add_demo(commands)
    return parser


def run_generate(args: argparse.Namespace, reporter: Reporter, cancel: Callable[[], bool]) -> int:
    return run_samples(
        args,
        reporter,
        cancel,
        [args.labels, args.reference],
        lambda generator, options: generator.generate(args.labels, args.reference, **options),
    )


def run_samples(
    args: argparse.Namespace,
    reporter: Reporter,
    cancel: Callable[[], bool],
    inputs: List[Optional[str]],
    produce: Callable[["Generator", Dict[str, Any]], object],
    check: Callable[[], None] = lambda: None,
) -> int:
    """What generate and edit share: check the options (and ``check`` the command's own) and the outputs
    before any work, load the model, ``produce(generator, options)`` the samples into the writer, and
    put them in place."""
    from MedLSDMLib.generation.pipeline import Generator, check_generation_options, parse_max_memory
    from MedLSDMLib.io.labels import parse_mapping
    from MedLSDMLib.io.mapfile import read_map_file

    start = time.perf_counter()
    max_memory = parse_max_memory(args.max_memory)
    check_generation_options(guidance=args.guidance, seed=args.seed, samples=args.samples, max_memory=max_memory)
    check()
    map_file = read_map_file(args.map_file) if args.map_file else None
    with sample_writer(args, inputs, reporter) as writer:
        generator = Generator.load(args.model, args.device, args.precision, progress=reporter.progress)
        produce(
            generator,
            {
                **engine_arguments(args, reporter, cancel, "steps", "guidance", "seed", "sampler", "samples"),
                "mapping": parse_mapping(args.map),
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


def run_models_list(args: argparse.Namespace, reporter: Reporter, cancel: Callable[[], bool]) -> int:
    from MedLSDMLib.models.registry import known_models, models_home, printable

    entries = known_models()
    if not entries:
        print("no models are registered; pass a bundle folder to --model")
    for entry in entries:
        state = "bundled" if entry.path else ("downloaded" if entry.installed() else "available for download")
        print(printable(f"{entry.name} {entry.version} ({state}): {entry.description}"))
    print(f"downloads go to {models_home()} (set MEDLSDM_HOME to change)", file=sys.stderr)
    return 0


def run_models_info(args: argparse.Namespace, reporter: Reporter, cancel: Callable[[], bool]) -> int:
    from MedLSDMLib.models.bundle import read_card
    from MedLSDMLib.models.registry import printable, resolve_model
    from MedLSDMLib.sampling.samplers import SAMPLERS

    folder = resolve_model(args.model, reporter.progress)
    card = read_card(folder)
    samplers = ", ".join(n for n, i in SAMPLERS.items() if i.process == card.scheduler.kind)
    rows = [
        ("model", f"{card.name} {card.version} ({folder})"),
        ("modality", card.modality),
        ("description", card.description),
        ("classes", card.label_names()),
        ("spacing", " x ".join(f"{s:g}" for s in card.spacing) + " mm"),
        ("orientation", card.orientation),
        ("intensity", f"{card.intensity.mode}, [-1, 1] <-> [{card.intensity.low:g}, {card.intensity.high:g}]"),
        ("latent", f"{card.autoencoder.latent_channels} channels at 1/{card.autoencoder.downsample_factor}"),
        (
            "diffusion",
            f"{card.scheduler.kind}, {card.scheduler.num_train_timesteps} steps, "
            f"{card.scheduler.schedule}, {card.scheduler.prediction_type}",
        ),
        ("samplers", samplers),
        ("guidance", f"{card.default_guidance:g} by default"),
    ]
    rows += [(f"training.{k}", str(v)) for k, v in card.training.items()]
    rows += [(f"metrics.{k}", str(v)) for k, v in card.metrics.items()]
    for key, value in rows:
        print(printable(f"{key:>12}: {value}"))
    return 0


def run_models_verify(args: argparse.Namespace, reporter: Reporter, cancel: Callable[[], bool]) -> int:
    from MedLSDMLib.models.bundle import ModelBundle
    from MedLSDMLib.models.registry import printable, resolve_model

    bundle = ModelBundle.load(resolve_model(args.model, reporter.progress))
    print(
        printable(
            f"OK: {bundle.card.name} {bundle.card.version} at {bundle.path}: hashes match and the weights "
            "fit the networks"
        )
    )
    return 0


def _run_command(args: argparse.Namespace, reporter: Reporter) -> int:
    from MedLSDMLib.runtime.hardware import threads_set_to

    with threads_set_to(args.threads) if "threads" in args else contextlib.nullcontext():
        return int(args.run(args, reporter, requested))


def main(argv: Optional[List[str]] = None, protocol: bool = False) -> int:
    """Run a command. Its work runs in a thread while this one waits for SIGINT/SIGTERM: the first
    asks to stop at the next step, and if the work has not ended ``GRACE_SECONDS`` later (or a
    second signal comes) the process removes its temporary files and exits with 130 at once.
    ``protocol``: the worker's, where every outcome is a JSON line on stdout (usage errors, --help)."""
    with signals_ask_to_stop():
        if not protocol:
            return _main(build_parser().parse_args(argv))
        try:
            args = build_parser(ProtocolParser).parse_args(argv)
        except UsageError as exc:
            reporter = make_reporter("json")
            if not str(exc):
                reporter.log(exc.help_text)
                return EXIT_DONE
            reporter.error(InputError.kind, f"{exc}: see the options with --help")
            return EXIT_INPUT
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    mode = getattr(args, "progress", "text")
    if mode not in PROGRESS_MODES:  # no reporter to say it with: one line on stderr
        print(f"medlsdm: error: --progress {mode!r}: use one of {', '.join(PROGRESS_MODES)}", file=sys.stderr)
        return InputError.exit_code
    reporter = make_reporter(mode)

    def hard_stop() -> None:
        reporter.error(Cancelled.kind, str(Cancelled()))

    try:
        if requested():
            raise Cancelled()
        return run_stoppable(lambda: _run_command(args, reporter), hard_stop)
    except MedLSDMError as exc:
        reporter.error(exc.kind, str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        reporter.error(Cancelled.kind, str(Cancelled()))
        return EXIT_CANCELLED
    except Exception as exc:  # anything unforeseen: one line, unless --debug
        if args.debug:
            raise
        reporter.error("internal", f"unexpected {type(exc).__name__}: {exc} (rerun with --debug and report it)")
        return EXIT_FAILED
    finally:
        reporter.close()


if __name__ == "__main__":
    sys.exit(main())
