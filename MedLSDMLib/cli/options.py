"""What the ``medlsdm`` commands share: their option groups, and the keyword arguments that hand a command's
options, progress, log and cancel check to the engine."""

from __future__ import annotations

import argparse
from typing import Any, Callable, Dict, Sequence

from MedLSDMLib.runtime.hardware import add_precision_option, add_threads_option
from MedLSDMLib.runtime.progress import Reporter

PROGRESS_MODES = ("text", "json", "none")  # runtime.progress.make_reporter's reporters
PROGRESS_HELP = "text: bars on stderr; json: one JSON object per stdout line (the worker protocol)"
MODEL_HELP = "bundle folder or a name from Resources/Models.json (default: the first)"


def add_model_options(p: argparse.ArgumentParser, map_help: str, map_file_help: str) -> None:
    """--model, and the label mapping (--map, --map-file) of the commands that read a label map with it."""
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--map", action="append", default=[], metavar="NAME=CLASS", help=map_help)
    p.add_argument("--map-file", metavar="FILE", help=map_file_help)


def add_device_options(p: argparse.ArgumentParser) -> None:
    """--device, --precision and --threads of the commands that run the networks."""
    p.add_argument("--device", default="auto", help="auto (GPU if available), cpu or cuda")
    add_precision_option(p)
    add_threads_option(p)


def add_reporting_options(
    p: argparse.ArgumentParser,
    modes: Sequence[str] = PROGRESS_MODES,
    progress_help: str = PROGRESS_HELP,
    debug_help: str = "show the traceback of unexpected errors",
) -> None:
    """--progress (how progress is shown; ``argparse.SUPPRESS`` hides an option from --help) and --debug."""
    p.add_argument("--progress", choices=modes, default="text", help=progress_help)
    p.add_argument("--debug", action="store_true", help=debug_help)


def add_bars_options(p: argparse.ArgumentParser) -> None:
    """--progress text|none and --debug, of the commands whose progress is bars on stderr only."""
    add_reporting_options(p, ("text", "none"), "progress bars on stderr, or none")


def engine_arguments(
    args: argparse.Namespace, reporter: Reporter, cancel: Callable[[], bool], *names: str
) -> Dict[str, Any]:
    """The keyword arguments of an engine call: the options ``names`` of ``args`` under their own names, the
    reporter's ``progress`` and ``log``, and ``cancel``."""
    return {
        **{name: getattr(args, name) for name in names},
        "progress": reporter.progress,
        "cancel": cancel,
        "log": reporter.log,
    }
