"""The ``synthesize`` subcommand of ``medlsdm``: a synthetic training set from many label maps, K samples each,
in one process, several (``--shard I/N``, torchrun) or on several machines."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Callable

from MedLSDMLib.cli.options import add_device_options, add_model_options, add_reporting_options
from MedLSDMLib.cli.samples import SamplerOption
from MedLSDMLib.runtime.progress import JsonReporter, Reporter

NAME = "synthesize"
LAYOUT_HELP = (
    "plain: NAME_sNN_image.nii.gz + NAME_sNN_label.nii.gz; nnunet: imagesTr/NAME_sNN_0000.nii.gz, "
    "labelsTr/NAME_sNN.nii.gz and dataset.json (default: plain)"
)


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add ``synthesize`` to the ``medlsdm`` subcommands."""
    p = commands.add_parser(
        NAME,
        help="make a synthetic training set: K image/label pairs per label map",
        description="Make K synthetic image/label pairs from each label map into FOLDER, with manifest.csv. "
        "A rerun skips the pairs that are done (their files checked against the manifest's hashes). "
        "Under torchrun each process takes its share (RANK of WORLD_SIZE) and its own GPU.",
    )
    p.add_argument(
        "maps",
        nargs="+",
        metavar="MAPS",
        help="label maps, folders of them, or a .csv/.json list (a 'label' column, an optional 'name')",
    )
    p.add_argument("-o", "--output", required=True, metavar="FOLDER", help="the training set's folder")
    p.add_argument("--samples", type=int, default=1, metavar="K", help="pairs per label map (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="item i of the job uses seed + i (default: 0)")
    p.add_argument(
        "--deform",
        type=float,
        default=0.0,
        metavar="MM",
        help="give each sample its own smooth "
        "random deformation of the map, up to MM mm (default: 0, none); the deformed map is the label",
    )
    p.add_argument(
        "--renderer",
        metavar="PAIRS",
        help="instead of the model: the training-free renderer of "
        "evaluate --baseline, with the class statistics of the real NAME_image/NAME_label pairs in PAIRS",
    )
    p.add_argument("--layout", choices=("plain", "nnunet"), default="plain", help=LAYOUT_HELP)
    p.add_argument(
        "--shard",
        metavar="I/N",
        help="make only items I, I+N, I+2N ... (0 <= I < N), e.g. one task "
        "of a SLURM array; N shards into one folder make the set one process makes",
    )
    add_model_options(
        p,
        "map an input label value or segment name to a model class (repeatable)",
        "CSV table of label value (or segment name) -> model class, e.g. the shipped freesurfer_tissue",
    )
    p.add_argument("--steps", type=int, help="sampling steps (default: the sampler's)")
    p.add_argument("--sampler", action=SamplerOption)
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale w (default: the model's)")
    add_device_options(p)
    p.add_argument("--max-memory", metavar="GIB", help="memory to stay within in GiB (default: what is free)")
    add_reporting_options(p)
    p.set_defaults(run=run_synthesize)


def run_synthesize(args: argparse.Namespace, reporter: Reporter, cancel: Callable[[], bool]) -> int:
    import torch

    from MedLSDMLib.errors import Cancelled, InputError
    from MedLSDMLib.generation.manifest import pair_paths
    from MedLSDMLib.generation.model_cache import load_generator
    from MedLSDMLib.generation.options import parse_max_memory
    from MedLSDMLib.generation.synthesize import (
        ModelProducer,
        Producer,
        RendererProducer,
        SynthesisJob,
        job_items,
        parse_shard,
        torchrun_device,
        torchrun_shard,
    )
    from MedLSDMLib.io.deform import check_amplitude
    from MedLSDMLib.io.labels import LabelTable, check_map_file, parse_mapping
    from MedLSDMLib.io.mapfile import read_map_file
    from MedLSDMLib.io.maplist import read_map_list
    from MedLSDMLib.io.volumes import check_output_dir
    from MedLSDMLib.models.bundle import read_card
    from MedLSDMLib.models.registry import resolve_model

    start = time.perf_counter()
    check_amplitude(args.deform)
    max_memory = parse_max_memory(args.max_memory)
    ranks = torchrun_shard(os.environ)
    if args.shard and ranks is not None and ranks[1] > 1:
        raise InputError("--shard under torchrun: torchrun already gives each process its share; leave --shard out")
    index, count = parse_shard(args.shard) if args.shard else (ranks or (0, 1))
    items = job_items(read_map_list(args.maps), args.samples, args.seed)[index::count]
    output = check_output_dir(args.output, "the training set", parents=True)
    mapping = parse_mapping(args.map)
    map_file = read_map_file(args.map_file) if args.map_file else None
    producer: Producer
    if args.renderer:
        from MedLSDMLib.training.data import find_pairs

        if not Path(args.renderer).exists():
            raise InputError(
                f"--renderer {args.renderer} does not exist: give a folder of real NAME_image / NAME_label pairs "
                "(or a .csv/.json list of them) whose class statistics the renderer uses"
            )
        card = read_card(resolve_model(args.model, reporter.progress))
        pairs = find_pairs(args.renderer)
        producer = RendererProducer(LabelTable(card.labels), [(p.image, p.label) for p in pairs])
    else:
        device = torchrun_device(args.device, os.environ, torch.cuda.is_available())
        generator = load_generator(args.model, device, args.precision, progress=reporter.progress)
        card = generator.card
        producer = ModelProducer(generator, args.sampler, args.steps, args.guidance, max_memory)
    if map_file is not None:
        check_map_file(map_file, producer.table)
    output.mkdir(parents=True, exist_ok=True)
    if count > 1:
        reporter.log(f"shard {index}/{count}: {len(items)} pairs")
    job = SynthesisJob(items, output, producer, args.layout, args.deform, mapping, map_file, card.modality)
    # the job's progress: a JSON event per pair for the worker's reader (one-shot or serving); on a terminal,
    # the line per pair
    job_progress = reporter.progress if isinstance(reporter, JsonReporter) else None
    summary = job.run(job_progress, reporter.log, cancel, reporter.progress)
    for line in summary.lines():
        reporter.log(line)
    kept = len(summary.done) + len(summary.skipped)
    if summary.cancelled:
        raise Cancelled(f"cancelled; the {kept} finished pairs are kept in {output}: rerun to make the rest")
    if summary.failed:
        raise InputError(
            f"{len(summary.failed)} label map(s) failed (above); the {kept} other pairs are in {output}: fix or "
            "remove the failing maps and rerun to make the rest"
        )
    made = set(summary.done)
    reporter.done(
        [str(pair_paths(output, args.layout, item.name)[0]) for item in items if item.name in made],
        [item.seed for item in items if item.name in made],
        time.perf_counter() - start,
    )
    return 0
