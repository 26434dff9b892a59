"""How much memory a device has free, and sizes in words."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # torch is imported only where a GPU is asked about: volumes use this module too
    import torch


GIB = 1024**3


def available_bytes(device: "torch.device") -> Optional[int]:
    """Free memory on ``device`` in bytes, or None when it cannot be told."""
    if device.type == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    return available_ram()


def available_ram() -> Optional[int]:
    """Available main memory in bytes, or None when it cannot be told."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _size(count: float) -> str:
    """Bytes in the largest unit that keeps the number at least 1 (a small need must not read 0.00 GiB)."""
    for unit, scale in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= scale:
            return f"{count / scale:.2f} {unit}"
    return f"{int(count)} B"
