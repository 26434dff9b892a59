"""``medlsdm evaluate``: synthetic images against the real ones of the same label maps (similarity, Dice
protocol, intensities, realism, 3D-FID and MMD), written as REPORT.json and REPORT.md."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from MedLSDMLib.cli.options import add_bars_options
from MedLSDMLib.errors import InputError
from MedLSDMLib.runtime.hardware import add_threads_option
from MedLSDMLib.runtime.progress import Reporter

NAME = "evaluate"


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add ``evaluate`` to the ``medlsdm`` subcommands."""
    p = commands.add_parser(
        NAME,
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
    add_bars_options(p)
    p.set_defaults(run=run_evaluate)


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
