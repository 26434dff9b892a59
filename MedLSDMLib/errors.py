"""Errors that end a MedLSDM command, each with the exit code and kind of the worker protocol."""

from __future__ import annotations


class MedLSDMError(Exception):
    """Base error: its message is one line saying what is wrong and what to do."""

    exit_code = 1
    kind = "internal"


class InputError(MedLSDMError):
    """The user's input (files, labels, options) cannot be used."""

    exit_code = 2
    kind = "input"


class ModelError(MedLSDMError):
    """The model bundle is missing, damaged or does not match."""

    exit_code = 3
    kind = "model"


class OutOfMemory(MedLSDMError):
    """The request does not fit in the memory that is available."""

    exit_code = 4
    kind = "memory"


class Cancelled(MedLSDMError):
    """The user cancelled the run (Ctrl-C, SIGTERM or the Cancel button)."""

    exit_code = 130
    kind = "cancelled"

    def __init__(self, message: str = "cancelled; no output was written") -> None:
        super().__init__(message)
