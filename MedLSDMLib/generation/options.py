"""The options of generate (and edit) that need no model, checked before any work (torch-free, like
edit_options.py: the command line checks them before loading anything)."""

from __future__ import annotations

import math
from typing import Optional, Union

from MedLSDMLib.errors import InputError

MAX_SEED = 2**63 - 1
MAX_MEMORY_GIB = float(2**34)  # a 64-bit address space: a larger --max-memory caps nothing more


def check_generation_options(
    guidance: Optional[float] = None, seed: Optional[int] = None, samples: int = 1, max_memory: Optional[float] = None
) -> None:
    """Check the generation options that need no model.

    Args:
        guidance: the classifier-free guidance scale, or None for the model's.
        seed: the first sample's seed, or None for a random one.
        samples: the number of samples (sample k uses seed + k).
        max_memory: the memory to stay within in GiB, or None for what is free.

    Raises:
        InputError: naming the option, its value and what it must be.
    """
    if guidance is not None and not (isinstance(guidance, (int, float)) and math.isfinite(guidance) and guidance >= 0):
        raise InputError(
            f"--guidance {guidance}: the guidance scale must be a finite number, 0 or more "
            "(the model's default is usually 1 to 5)"
        )
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise InputError(f"--samples {samples}: the number of samples must be at least 1")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED - (samples - 1)
    ):
        raise InputError(
            f"--seed {seed}: the seed must be a whole number from 0 to {MAX_SEED - (samples - 1)} "
            "(sample k uses seed + k)"
        )
    if max_memory is not None and not (
        isinstance(max_memory, (int, float)) and math.isfinite(max_memory) and max_memory > 0
    ):
        raise InputError(_MAX_MEMORY.format(max_memory))


_MAX_MEMORY = (
    "--max-memory {}: give the memory to stay within in GiB, a positive number such as 8 (or leave it out to use "
    "what is free)"
)


def parse_max_memory(text: Union[str, float, None]) -> Optional[float]:
    """``--max-memory``'s value in GiB: a finite positive number, or InputError."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise InputError(_MAX_MEMORY.format(text))
    return min(value, MAX_MEMORY_GIB)
