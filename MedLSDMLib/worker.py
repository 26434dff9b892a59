"""The process the Slicer module starts: ``medlsdm generate`` (or ``medlsdm edit``, ``medlsdm synthesize``)
speaking the JSON worker protocol.

    PythonSlicer -m MedLSDMLib.worker LABELS -o OUTPUT [generate options]
    PythonSlicer -m MedLSDMLib.worker edit REAL LABELS -o OUTPUT [edit options]
    PythonSlicer -m MedLSDMLib.worker synthesize MAPS -o FOLDER [synthesize options]
    PythonSlicer -m MedLSDMLib.worker serve [--idle-timeout SECONDS]   (many requests, one process: cli/serving.py)

Each stdout line is one JSON object: {"type": "progress", "stage", "step", "total"},
{"type": "log", "message"}, {"type": "done", "path", "paths", "seeds", "seconds"} or
{"type": "error", "kind", "message"}. Exit codes: 0 done, 2 bad input, 3 model problem,
4 out of memory, 130 cancelled. Every outcome is a JSON line, usage errors and --help (a log event) too;
if the reader closes the pipe (or stdout is closed from the start), the worker stops as if cancelled:
130, nothing written.
"""

from __future__ import annotations

import os
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``medlsdm generate`` (or ``edit``) with ``--progress json`` in protocol mode.

    Args:
        argv: the worker's arguments (default: the command line); ``edit`` first selects edit.

    Returns:
        The exit code (protocol.EXIT_*); every outcome was also written as a JSON line.
    """
    from MedLSDMLib.cli.main import main as cli_main
    from MedLSDMLib.protocol import EXIT_CANCELLED

    if not _stdout_open():  # nobody reads the events: as if the reader had gone at once
        return EXIT_CANCELLED
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["serve"]:
        from MedLSDMLib.cli.serving import main as serve

        return serve(args[1:])
    command = args.pop(0) if args[:1] in (["edit"], ["synthesize"]) else "generate"
    return cli_main([command, *args, "--progress", "json"], protocol=True)


def _stdout_open() -> bool:
    """Whether stdout is there to write to (Python sets it to None when the descriptor is closed)."""
    try:
        return sys.stdout is not None and os.fstat(sys.stdout.fileno()) is not None
    except (OSError, ValueError, AttributeError):
        return False


def run() -> None:
    """The worker as a process: the stop handlers first, before any heavy import, and the end of the
    process at once after the command (runtime.interrupt)."""
    from MedLSDMLib.__main__ import say_cancelled
    from MedLSDMLib.runtime import interrupt

    interrupt.own_process(lambda: say_cancelled("json"))
    interrupt.exit_process(main())


if __name__ == "__main__":
    run()
