"""The ``evaluate``, ``benchmark`` and ``compare`` subcommands of ``medlsdm``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import SimpleITK as sitk

from MedLSDMLib.cli.options import add_device_options, add_model_options, add_reporting_options, engine_arguments
from MedLSDMLib.errors import Cancelled, InputError
from MedLSDMLib.runtime.hardware import add_threads_option
from MedLSDMLib.runtime.progress import Reporter


def _common(p: argparse.ArgumentParser) -> None:
    add_reporting_options(p, ("text", "none"), "progress bars on stderr, or none")


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add evaluate, benchmark and compare to the ``medlsdm`` subcommands."""
    p = commands.add_parser(
        "evaluate",
        help="PSNR, SSIM, MS-SSIM, Dice protocol, intensities, realism, 3D-FID and MMD",
        description="Compare synthetic images with the real ones of the same label maps. "
        "Folders are matched by case name (NAME_image / NAME_synthetic / NAME_label, "
        "or one name in each folder). Writes REPORT.json and REPORT.md.",
    )
    p.add_argument("--real", required=True, help="real image, or folder of them")
    p.add_argument("--synthetic", required=True, help="synthetic image, or folder of them")
    p.add_argument("--labels", required=True, help="the conditioning label map, or folder of them")
    p.add_argument("-o", "--output", default="evaluation", help="report name: writes OUTPUT.json and OUTPUT.md")
    p.add_argument(
        "--segmenter",
        default="mixture",
        help="'mixture' (training-free, a quick check) or the folder `medlsdm train segmenter` wrote",
    )
    p.add_argument("--fid-weights", help="3D ResNet weights (.safetensors or a PyTorch state dict) for 3D-FID and MMD")
    p.add_argument("--fid-network", default="resnet10", help="MONAI resnet10|18|34|50|101|152|200 matching the weights")
    p.add_argument(
        "--baseline",
        action="store_true",
        help="also score a training-free rendering of each label map (per class Gaussian with the real "
        "class mean and sd, lightly blurred) and say whether the synthetic images beat it",
    )
    add_threads_option(p)
    _common(p)
    p.set_defaults(run=run_evaluate)

    p = commands.add_parser(
        "reconstruct",
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

    p = commands.add_parser(
        "benchmark",
        help="time, memory and UNet evaluations of each sampler",
        description="Generate from a synthetic label map with each configuration, each in a "
        "process of its own; writes benchmark.md, .json and .png.",
    )
    p.add_argument("--model", help="bundle folder or registered name (default: the first)")
    p.add_argument(
        "--size",
        type=int,
        nargs=3,
        default=(64, 64, 64),
        metavar=("X", "Y", "Z"),
        help="label map size in voxels at the model's spacing (default 64 64 64)",
    )
    p.add_argument(
        "--config",
        action="append",
        metavar="SAMPLER[:STEPS[:PRECISION]]",
        help="a configuration (repeatable); default: dpm:20 dpm:10 ddim:50 reference (precision auto; "
        "reference fp32); ddim:50 and reference are added when missing",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    p.add_argument("--seed", type=int, default=0, help="seed of every run")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_threads_option(p)
    p.add_argument("-o", "--output", default="benchmark", help="output folder (default: ./benchmark)")
    _common(p)
    p.set_defaults(run=run_benchmark)

    p = commands.add_parser(
        "compare",
        help="figure of two images and their difference on three planes",
        description="A | B | A - B on the axial, coronal and sagittal planes through a point, "
        "with label outlines. Both images must be on one grid.",
    )
    p.add_argument("image_a")
    p.add_argument("image_b")
    p.add_argument("--labels", help="label map on the same grid: outlines, and the default point (its centre of mass)")
    p.add_argument("--point", type=int, nargs=3, metavar=("I", "J", "K"), help="voxel indices of the planes' point")
    p.add_argument("-o", "--output", required=True, help="figure file (.png, .pdf or .svg)")
    _common(p)
    p.set_defaults(run=run_compare)


def run_evaluate(args: argparse.Namespace, reporter: Reporter, cancel: Callable[[], bool]) -> int:
    from MedLSDMLib.evaluation.evaluate import Segmenter, evaluate, match_cases
    from MedLSDMLib.evaluation.evaluation_report import markdown
    from MedLSDMLib.evaluation.report import report_paths, to_json, write_files

    json_path, md_path = report_paths(args.output)
    cases = match_cases(args.real, args.synthetic, args.labels)
    if args.fid_weights and len(cases) < 2:
        raise InputError(
            f"3D-FID needs at least two volumes in each set (got {len(cases)}): evaluate folders "
            "of cases, or leave out --fid-weights"
        )
    segmenter: Segmenter
    if args.segmenter == "mixture":
        from MedLSDMLib.evaluation.mixture import MixtureSegmenter

        segmenter = MixtureSegmenter()
    else:
        from MedLSDMLib.evaluation.segmenter import UNetSegmenter

        segmenter = UNetSegmenter.load(args.segmenter)
    network, info = None, None
    if args.fid_weights:
        from MedLSDMLib.evaluation.fid import feature_network
        from MedLSDMLib.models.bundle import sha256

        network = feature_network(args.fid_network, Path(args.fid_weights))
        info = {"network": args.fid_network, "weights": str(args.fid_weights), "sha256": sha256(Path(args.fid_weights))}
    report = evaluate(
        cases, segmenter, network, info, progress=reporter.progress, cancel=cancel, baseline=args.baseline
    )
    write_files({json_path: to_json(report), md_path: markdown(report)})
    reporter.close()
    s = report["summary"]
    print(summary_line("synthetic", s), flush=True)
    if args.baseline:
        print(summary_line("baseline", report["baseline"]["summary"]), flush=True)
        print(report["comparison"]["verdict"], flush=True)
    ratio = s["dice"]["ratio_of_means"]
    print(
        f"wrote {json_path} and {md_path} ({s['cases']} case(s)); Dice ratio synthetic/real "
        f"{ratio if ratio is None else round(ratio, 4)}",
        flush=True,
    )
    return 0


def summary_line(what: str, summary: dict) -> str:
    """One line of the realism numbers of a summary (``evaluation.summarise``)."""
    r = summary["realism"]

    def n(value: object) -> str:
        return "—" if value is None else f"{value:.3f}"

    return (
        f"{what}: Dice ratio {n(summary['dice']['ratio_of_means'])}, correlation {n(r['correlation'])}, "
        f"histogram distance {n(r['histogram_distance_mean'])}, sharpness/real {n(r['sharpness_ratio_foreground'])}, "
        f"background noise {n(r['background_noise_synthetic'])} (real {n(r['background_noise_real'])})"
    )


def run_reconstruct(args: argparse.Namespace, reporter: Reporter, cancel: Callable[[], bool]) -> int:
    import time

    from MedLSDMLib.generation.pipeline import Generator
    from MedLSDMLib.io.labels import parse_mapping
    from MedLSDMLib.io.mapfile import read_map_file
    from MedLSDMLib.io.volumes import check_output_path, write_image

    start = time.perf_counter()
    output = check_output_path(args.output, [args.image, args.labels])
    map_file = read_map_file(args.map_file) if args.map_file else None
    generator = Generator.load(args.model, args.device, args.precision, progress=reporter.progress)
    image = generator.reconstruct(
        args.image,
        args.labels,
        mapping=parse_mapping(args.map),
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


def run_benchmark(args: argparse.Namespace, reporter: Reporter, cancel: Callable[[], bool]) -> int:
    from MedLSDMLib.generation.benchmark import (
        DEFAULT_CONFIGS,
        check_configs,
        parse_config,
    )
    from MedLSDMLib.generation.benchmark import (
        run_benchmark as measure_all,
    )
    from MedLSDMLib.generation.benchmark_report import rows_table, speedup_line, write_benchmark
    from MedLSDMLib.io.volumes import check_output_dir
    from MedLSDMLib.models.bundle import read_card
    from MedLSDMLib.models.registry import resolve_model
    from MedLSDMLib.runtime.devices import resolve_device

    if args.repeats < 1 or args.warmup < 0 or (args.threads is not None and args.threads < 1):
        raise InputError("--repeats and --threads must be at least 1, and --warmup at least 0")
    if min(args.size) < 2:
        raise InputError(f"--size {' '.join(map(str, args.size))}: every size must be at least 2 voxels")
    folder = check_output_dir(args.output, "benchmark.md, benchmark.json and benchmark.png")
    resolve_device(args.device)
    model = resolve_model(args.model, reporter.progress)
    card = read_card(model)
    configs = check_configs([parse_config(c) for c in (args.config or DEFAULT_CONFIGS)], card)
    result = measure_all(
        str(model),
        card,
        configs,
        args.size,
        **engine_arguments(args, reporter, cancel, "seed", "repeats", "warmup", "device", "threads"),
    )
    if cancel():
        raise Cancelled("benchmark cancelled; no report was written")
    paths = write_benchmark(result, folder)
    reporter.close()
    print("\n".join(rows_table(result)), flush=True)
    print(f"wrote {', '.join(str(p) for p in paths)}", file=sys.stderr, flush=True)
    print(speedup_line(result), flush=True)
    return 0


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
