"""The ``medlsdm`` command line: one module a command in ``COMMANDS`` (each with ``NAME``, ``add_command``
and the ``run_*`` its parser sets), and ``main``, which runs a command with its reporter, its stop handling
and its exit code. A new command: a module in cli/ like cli/compare.py, and its entry in ``COMMANDS``."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import TYPE_CHECKING, List, Optional

if TYPE_CHECKING:
    from typing import NoReturn

from MedLSDMLib import __version__
from MedLSDMLib.cli import benchmark, compare, demo, edit, evaluate, generate, models, reconstruct, synthesize, train
from MedLSDMLib.cli.options import PROGRESS_MODES
from MedLSDMLib.errors import Cancelled, InputError, MedLSDMError
from MedLSDMLib.protocol import EXIT_CANCELLED, EXIT_DONE, EXIT_FAILED, EXIT_INPUT
from MedLSDMLib.runtime.interrupt import requested, run_stoppable, signals_ask_to_stop
from MedLSDMLib.runtime.progress import Reporter, make_reporter

# the commands, in the order --help lists them
COMMANDS = (demo, generate, edit, synthesize, reconstruct, models, train, evaluate, benchmark, compare)
EXAMPLES = """examples:
  medlsdm generate labels.nii.gz -o synthetic.nii.gz --seed 1
  medlsdm generate brain.seg.nrrd --reference t1.nrrd -o synthetic.nrrd --samples 4
  medlsdm models list
  medlsdm evaluate --real real/ --synthetic synthetic/ --labels labels/ -o report
  medlsdm benchmark --model path/to/bundle --size 64 64 64
"""


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
    """The ``medlsdm`` parser with every command of ``COMMANDS``.

    Args:
        parser_class: ``ProtocolParser`` for the worker, whose usage errors and help become JSON lines.

    Returns:
        The parser; the parsed options' ``run(args, reporter, cancel)`` runs the command.
    """
    parser = parser_class(
        prog="medlsdm",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Synthetic 3D medical images from segmentations.",
    )
    parser.add_argument("--version", action="version", version=f"medlsdm {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{" + ",".join(command.NAME for command in COMMANDS) + "}"
    )
    for command in COMMANDS:
        command.add_command(commands)
    return parser


def _run_command(args: argparse.Namespace, reporter: Reporter) -> int:
    from MedLSDMLib.runtime.hardware import threads_set_to

    with threads_set_to(args.threads) if "threads" in args else contextlib.nullcontext():
        return int(args.run(args, reporter, requested))


def main(argv: Optional[List[str]] = None, protocol: bool = False) -> int:
    """Run a command. Its work runs in a thread while this one waits for SIGINT/SIGTERM: the first
    asks to stop at the next step, and if the work has not ended ``GRACE_SECONDS`` later (or a
    second signal comes) the process removes its temporary files and exits with 130 at once.

    Args:
        argv: the arguments after ``medlsdm`` (default: the command line).
        protocol: the worker's mode, where every outcome is a JSON line on stdout (usage errors, --help).

    Returns:
        The exit code: 0 done, 2 bad input, 3 model problem, 4 out of memory or disk, 130 cancelled.
    """
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
