"""Progress reporting: tqdm bars on stderr, the worker's JSON lines on stdout, or nothing."""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING, Callable, List, Optional

from MedLSDMLib import protocol
from MedLSDMLib.runtime.interrupt import request as request_stop

if TYPE_CHECKING:
    from tqdm import tqdm

ProgressFn = Callable[[str, int, int], None]  # progress(stage, step, total)
CancelFn = Callable[[], bool]  # True: stop at the next step
STAGE_NAMES = {
    "download": "downloading model",
    "prepare": "preparing",
    "sample": "sampling",
    "decode": "decoding",
    "write": "writing",
}


def printable(text: object) -> str:
    """``text`` with control characters (terminal escape sequences, newlines, NUL) shown as '?': what a
    file or a model card says is printed, never obeyed by the terminal, and a message stays one line."""
    return re.sub(r"[\x00-\x1f\x7f-\x9f]", "?", str(text))


class Reporter:
    """Silent reporter; the base of the others. ``progress`` is the callback the engine calls."""

    def progress(self, stage: str, step: int, total: int) -> None:
        pass

    def log(self, message: str) -> None:
        pass

    def done(self, paths: List[str], seeds: List[int], seconds: float) -> None:
        pass

    def error(self, kind: str, message: str) -> None:
        print(f"medlsdm: error: {printable(message)}", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


class TextReporter(Reporter):
    """A tqdm bar per stage on stderr, log lines on stderr, the outputs on stdout."""

    def __init__(self) -> None:
        self._bar: Optional["tqdm"] = None
        self._stage: Optional[str] = None

    def progress(self, stage: str, step: int, total: int) -> None:
        if stage != self._stage or self._bar is None or self._bar.total != total or step < self._bar.n:
            from tqdm import tqdm  # imported when first needed: the command starts (and takes signals) sooner

            self.close()
            self._bar = tqdm(
                total=total,
                desc=STAGE_NAMES.get(stage, stage),
                file=sys.stderr,
                unit="step" if stage == "sample" else "it",
                leave=False,
            )
            self._stage = stage
        self._bar.update(step - self._bar.n)

    def log(self, message: str) -> None:
        self.close()
        print(printable(message), file=sys.stderr, flush=True)

    def done(self, paths: List[str], seeds: List[int], seconds: float) -> None:
        self.close()
        for path, seed in zip(paths, seeds):
            print(f"wrote {path} (seed {seed})", flush=True)
        print(f"done in {seconds:.1f} s", file=sys.stderr, flush=True)

    def error(self, kind: str, message: str) -> None:
        self.close()
        super().error(kind, message)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._stage = None


class JsonReporter(Reporter):
    """The worker protocol (MedLSDMLib.protocol): one JSON object per stdout line (progress, log, done, error)."""

    def _emit(self, event: protocol.Event) -> None:
        try:
            sys.stdout.write(protocol.to_line(event) + "\n")
            sys.stdout.flush()
        except (OSError, ValueError, AttributeError):  # the reader is gone (a closed pipe or stdout: None)
            _silence_stdout()
            request_stop()

    def progress(self, stage: str, step: int, total: int) -> None:
        self._emit(protocol.progress_event(stage, step, total))

    def log(self, message: str) -> None:
        self._emit(protocol.log_event(printable(message)))

    def done(self, paths: List[str], seeds: List[int], seconds: float) -> None:
        self._emit(protocol.done_event(paths, seeds, seconds))

    def error(self, kind: str, message: str) -> None:
        self._emit(protocol.error_event(kind, printable(message)))
        super().error(kind, message)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def make_reporter(mode: str) -> Reporter:
    return {"text": TextReporter, "json": JsonReporter, "none": Reporter}[mode]()
