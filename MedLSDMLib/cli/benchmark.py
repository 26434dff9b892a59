"""``medlsdm benchmark``: time, memory and UNet evaluations of each sampler configuration."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from MedLSDMLib.cli.options import add_bars_options, engine_arguments
from MedLSDMLib.errors import Cancelled, InputError
from MedLSDMLib.runtime.hardware import add_threads_option
from MedLSDMLib.runtime.progress import Reporter

NAME = "benchmark"


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add ``benchmark`` to the ``medlsdm`` subcommands."""
    p = commands.add_parser(
        NAME,
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
    add_bars_options(p)
    p.set_defaults(run=run_benchmark)


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
