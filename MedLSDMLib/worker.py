"""The process the Slicer module starts: ``medlsdm generate`` (or ``medlsdm edit``) speaking the JSON
worker protocol.

    PythonSlicer -m MedLSDMLib.worker LABELS -o OUTPUT [generate options]
    PythonSlicer -m MedLSDMLib.worker edit REAL LABELS -o OUTPUT [edit options]

Each stdout line is one JSON object: {"type": "progress", "stage", "step", "total"},
{"type": "log", "message"}, {"type": "done", "path", "paths", "seeds", "seconds"} or
{"type": "error", "kind", "message"}. Exit codes: 0 done, 2 bad input, 3 model problem,
4 out of memory, 130 cancelled. Every outcome is a JSON line, usage errors and --help (a log event) too;
if the reader closes the pipe, the worker stops as if cancelled.
"""

from __future__ import annotations

import sys
from typing import List, Optional

from MedLSDMLib.cli.main import main as cli_main


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``medlsdm generate`` (or ``edit``) with ``--progress json`` in protocol mode.

    Args:
        argv: the worker's arguments (default: the command line); ``edit`` first selects edit.

    Returns:
        The exit code (protocol.EXIT_*); every outcome was also written as a JSON line.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    command = args.pop(0) if args[:1] == ["edit"] else "generate"
    return cli_main([command, *args, "--progress", "json"], protocol=True)


if __name__ == "__main__":
    sys.exit(main())
