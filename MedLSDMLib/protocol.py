"""The worker protocol: the JSON lines of ``--progress json`` and the exit codes.

Each stdout line is one JSON object with a ``type``:

- ``{"type": "progress", "stage": str, "step": int, "total": int}``
- ``{"type": "log", "message": str}``
- ``{"type": "done", "path": str, "paths": [str], "seeds": [int], "seconds": float}``
- ``{"type": "error", "kind": str, "message": str}`` (``kind``: input, model, memory, cancelled, internal)

The exit code says how the run ended (see ``EXIT_MEANINGS``). The engine's JSON reporter writes these
lines; the Slicer module reads them with ``parse_line``. Plain Python only: Slicer's process imports it.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Sequence

from MedLSDMLib.errors import Cancelled, InputError, MedLSDMError, ModelError, OutOfMemory

Event = Dict[str, Any]

PROGRESS, LOG, DONE, ERROR = "progress", "log", "done", "error"
EVENT_TYPES = (PROGRESS, LOG, DONE, ERROR)

EXIT_DONE = 0
EXIT_FAILED = MedLSDMError.exit_code  # anything unforeseen
EXIT_INPUT = InputError.exit_code
EXIT_MODEL = ModelError.exit_code
EXIT_MEMORY = OutOfMemory.exit_code
EXIT_CANCELLED = Cancelled.exit_code
EXIT_MEANINGS = {
    EXIT_DONE: "done",
    EXIT_FAILED: "it failed",
    EXIT_INPUT: "the input cannot be used",
    EXIT_MODEL: "the model is missing or damaged",
    EXIT_MEMORY: "out of memory: crop the segmentation or choose the CPU",
    EXIT_CANCELLED: "cancelled",
}


def exit_meaning(code: int) -> str:
    """What an exit code of the worker means, in words for the user."""
    return EXIT_MEANINGS.get(code, EXIT_MEANINGS[EXIT_FAILED])


def progress_event(stage: str, step: int, total: int) -> Event:
    """A progress line.

    Args:
        stage: download, prepare, encode, sample, decode or write.
        step: steps done, from 1.
        total: the stage's steps.

    Returns:
        The event.
    """
    return {"type": PROGRESS, "stage": stage, "step": step, "total": total}


def log_event(message: str) -> Event:
    """A log line: something to show the user (the model and hardware, a warning, a stray print)."""
    return {"type": LOG, "message": message}


def done_event(paths: Sequence[str], seeds: Sequence[int], seconds: float) -> Event:
    """The last line of a run that succeeded.

    Args:
        paths: the outputs written, in order (``path`` is the first, for readers of one output).
        seeds: the seed of each sample (empty when the command draws none).
        seconds: the run's time.

    Returns:
        The event.
    """
    return {"type": DONE, "path": paths[0], "paths": list(paths), "seeds": list(seeds), "seconds": round(seconds, 3)}


def error_event(kind: str, message: str) -> Event:
    """The last line of a run that failed.

    Args:
        kind: the error's kind (input, model, memory, cancelled, internal; ``MedLSDMError.kind``).
        message: one line for the user: what is wrong and what to do.

    Returns:
        The event.
    """
    return {"type": ERROR, "kind": kind, "message": message}


def to_line(event: Event) -> str:
    """An event as its protocol line (without the line end)."""
    return json.dumps(event)


def parse_line(line: str) -> Event:
    """A protocol line as its event.

    Args:
        line: one stdout line of the worker, without its end.

    Returns:
        The event; anything that is not a JSON object with a type (a stray print, a warning) is a log
        event carrying the line.
    """
    try:
        event = json.loads(line)
    except ValueError:
        event = None
    if isinstance(event, dict) and isinstance(event.get("type"), str):
        return event
    return log_event(line)
