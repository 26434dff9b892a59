"""Errors that end a MedLSDM command, each with the exit code and kind of the worker protocol."""

from __future__ import annotations


class MedLSDMError(Exception):
    """Base error: its message is one line saying what is wrong and what to do. A subclass gives its exit
    code and kind in its class line (``class InputError(MedLSDMError, exit_code=2, kind="input")``)."""

    exit_code = 1
    kind = "internal"

    def __init_subclass__(cls, exit_code: int = 0, kind: str = "") -> None:
        super().__init_subclass__()
        if exit_code:
            cls.exit_code = exit_code
        if kind:
            cls.kind = kind


class InputError(MedLSDMError, exit_code=2, kind="input"):
    """The user's input (files, labels, options) cannot be used."""


class ModelError(MedLSDMError, exit_code=3, kind="model"):
    """The model bundle is missing, damaged or does not match."""


class OutOfMemory(MedLSDMError, exit_code=4, kind="memory"):
    """The request does not fit in the memory that is available."""


class DiskFull(OutOfMemory):
    """The disk (or the user's quota) is full: exit 4 and kind "memory", as for memory."""


class Cancelled(MedLSDMError, exit_code=130, kind="cancelled"):
    """The user cancelled the run (Ctrl-C, SIGTERM or the Cancel button)."""

    def __init__(self, message: str = "cancelled; no output was written") -> None:
        super().__init__(message)
