"""``python -m MedLSDMLib`` is the ``medlsdm`` command (``console_script`` is its console script)."""

import sys
from typing import List, Optional


def run(argv: Optional[List[str]] = None) -> int:
    """The command as a process: the stop handlers first, before any heavy import (runtime.interrupt)."""
    from MedLSDMLib.runtime import interrupt

    args = sys.argv[1:] if argv is None else list(argv)
    json_mode = "--progress=json" in args or any(a == "--progress" and b == "json" for a, b in zip(args, args[1:]))
    interrupt.own_process(lambda: say_cancelled("json" if json_mode else "text"))
    from MedLSDMLib.cli.main import main

    return main(args)


def console_script() -> None:
    """The ``medlsdm`` console script: ``run``, then the end of the process at once (runtime.interrupt)."""
    from MedLSDMLib.runtime.interrupt import exit_process

    exit_process(run())


def say_cancelled(mode: str) -> None:
    """The cancel line (and, for ``json``, the worker protocol's event) of a stop before the command's
    reporter exists."""
    from MedLSDMLib.errors import Cancelled
    from MedLSDMLib.runtime.progress import make_reporter

    make_reporter(mode).error(Cancelled.kind, str(Cancelled()))


if __name__ == "__main__":
    console_script()
