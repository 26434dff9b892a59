"""Which torch device and precision a command runs on, and the autocast context for it."""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

import torch

from MedLSDMLib.errors import InputError
from MedLSDMLib.runtime.hardware import Precision, choose_precision

DEVICES = ("auto", "cpu", "cuda", "gpu")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks the GPU when there is one; asking for a missing GPU is an InputError."""
    if name not in DEVICES and not name.startswith("cuda:"):
        raise InputError(f"unknown device {name!r}: use auto, cpu or cuda")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name in ("cuda", "gpu") or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InputError(f"device {name} was asked for but PyTorch sees no CUDA GPU: use --device cpu")
        return torch.device("cuda" if name == "gpu" else name)
    return torch.device("cpu")


def resolve_precision(name: str, device: torch.device) -> Precision:
    """The precision for ``name`` on ``device``: ``auto`` is chosen by the hardware (hardware.py)."""
    return choose_precision(name, device.type)


def autocast_for(device: torch.device, precision: Precision) -> Callable[[], ContextManager]:
    """A context factory running the networks in ``precision`` (fp32: no autocast)."""
    dtype = precision.dtype
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)
