"""What the machine runs fast: the CPU's bf16 support, the numeric precision ``auto`` picks, and the
number of PyTorch threads.

bf16 is picked only where it was measured to be fast. On a CPU without native bf16 (AVX2 only),
PyTorch's bf16 conv3d has no fast kernel: one 64-channel conv3d took 18 s against 0.07 s in fp32.
On a CPU with AVX512-BF16 but no AMX, the demo model's UNet pass was still 1.5x slower in bf16
than in fp32 (0.32 s against 0.21 s, one thread). So on the CPU ``auto`` is bf16 only with AMX;
on a CUDA GPU it is bf16 where the GPU supports it, else fp16.

torch is imported inside the functions: the command line and the Slicer module import the names
without paying for it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Iterator, Optional

from MedLSDMLib.errors import InputError

if TYPE_CHECKING:
    import argparse

    import torch

PRECISION_NAMES = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class CpuInfo:
    """The CPU as PyTorch sees it."""

    kernels: str  # PyTorch's vectorised kernels: "AVX2", "AVX512", "DEFAULT", ...
    avx512_bf16: bool
    amx_bf16: bool
    onednn_bf16: bool  # oneDNN (PyTorch's conv3d) has bf16 kernels here
    physical_cores: int

    @property
    def native_bf16(self) -> bool:
        """bf16 arithmetic in hardware, and PyTorch's kernels use it."""
        return (self.avx512_bf16 or self.amx_bf16) and self.onednn_bf16 and self.kernels.startswith(("AVX512", "AMX"))

    def describe(self) -> str:
        flags = [name for name, present in (("AVX512-BF16", self.avx512_bf16), ("AMX-BF16", self.amx_bf16)) if present]
        native = ", ".join(flags) if self.native_bf16 else "no native bf16"
        return f"{self.kernels} kernels, {native}, {self.physical_cores} physical cores"


def _cpuinfo_flags() -> set:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as stream:
            for line in stream:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _physical_cores(reported: Optional[int]) -> int:
    """Physical cores this process may use: PyTorch's count (or the sibling lists of Linux),
    no more than the CPUs it is allowed to run on."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cores = reported
    if not cores:
        siblings = set()
        for cpu in range(os.cpu_count() or 1):
            try:
                with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list", encoding="utf-8") as f:
                    siblings.add(f.read().strip())
            except OSError:
                break
        cores = len(siblings) or allowed
    return max(1, min(cores, allowed))


def probe_cpu() -> CpuInfo:
    """Ask PyTorch (and, for older builds, /proc/cpuinfo) what this CPU has. The environment
    variables ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA, which limit PyTorch's kernels, count."""
    import torch

    details: Dict[str, object] = {}
    getter = getattr(getattr(torch._C, "_cpu", None), "_get_cpu_capability", None)
    if getter is not None:
        try:
            details = dict(getter())
        except Exception:  # a build without it: fall back to the flags
            details = {}
    flags = _cpuinfo_flags() if not details else set()
    avx512_bf16 = bool(details.get("avx512_bf16", "avx512_bf16" in flags))
    amx_bf16 = bool(details.get("amx_bf16", "amx_bf16" in flags))
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        onednn = False
    cores = details.get("num_physical_cores")
    return CpuInfo(
        kernels=str(torch.backends.cpu.get_cpu_capability()),
        avx512_bf16=avx512_bf16,
        amx_bf16=amx_bf16,
        onednn_bf16=onednn,
        physical_cores=_physical_cores(int(cores) if isinstance(cores, int) else None),
    )


@dataclass(frozen=True)
class Precision:
    """The chosen precision: ``name`` fp32/bf16/fp16, the autocast dtype (None: plain fp32), why,
    and a warning when the user's own choice will be slow here."""

    name: str
    reason: str
    warning: Optional[str] = None

    @property
    def dtype(self) -> Optional["torch.dtype"]:
        import torch

        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.name]


def choose_precision(
    requested: str,
    device_type: str,
    cpu: Optional[Callable[[], CpuInfo]] = None,
    cuda_bf16: Optional[Callable[[], bool]] = None,
) -> Precision:
    """The precision for ``requested`` (auto, fp32, bf16, fp16) on a ``cpu`` or ``cuda`` device.
    ``cpu`` and ``cuda_bf16`` are the hardware probes (replaced in the tests)."""
    if requested not in PRECISION_NAMES:
        raise InputError(f"unknown precision {requested!r}: use {', '.join(PRECISION_NAMES)}")
    if device_type == "cuda":
        if cuda_bf16 is None:
            import torch

            cuda_bf16 = torch.cuda.is_bf16_supported
        has_bf16 = cuda_bf16()
        if requested == "auto":
            return Precision("bf16", "GPU with bf16") if has_bf16 else Precision("fp16", "GPU without bf16")
        warning = (
            None
            if requested != "bf16" or has_bf16
            else "this GPU has no native bf16: it will be slower; use --precision auto (fp16) or fp32"
        )
        return Precision(requested, "asked for", warning)
    info = (cpu or probe_cpu)()
    if requested == "auto":
        if info.amx_bf16 and info.native_bf16:
            return Precision("bf16", f"CPU with AMX ({info.describe()})")
        return Precision("fp32", f"CPU without AMX ({info.describe()})")
    warning = None
    if requested in ("bf16", "fp16") and not (requested == "bf16" and info.native_bf16):
        warning = (
            f"--precision {requested} on this CPU ({info.describe()}) has no fast kernels: generation and "
            f"training will be far slower (up to hundreds of times for 3D convolutions); "
            f"use --precision auto or fp32"
        )
    return Precision(requested, "asked for", warning)


def resolve_threads(requested: Optional[int], cpu: Optional[Callable[[], CpuInfo]] = None) -> int:
    """PyTorch's CPU threads: ``requested``; else OMP_NUM_THREADS when it is set (the user's choice
    for the whole environment); else one per physical core this process may use. The same inputs
    and seed give the same volume bit for bit with the same number of threads."""
    if requested is not None:
        if requested < 1:
            raise InputError(f"--threads {requested}: use 1 or more")
        return int(requested)
    environment = os.environ.get("OMP_NUM_THREADS", "").strip()
    if environment.isdigit() and int(environment) >= 1:
        return int(environment)
    return (cpu or probe_cpu)().physical_cores


def add_precision_option(parser: "argparse.ArgumentParser") -> None:
    """The --precision option of every command that runs the networks."""
    parser.add_argument(
        "--precision",
        default="auto",
        help="auto (chosen by the hardware: bf16 on GPUs and CPUs with AMX, else fp32), fp32, bf16 or fp16",
    )


def add_threads_option(parser: "argparse.ArgumentParser") -> None:
    """The --threads option of every command that runs the networks."""
    parser.add_argument("--threads", type=int, metavar="N", help="PyTorch CPU threads (default: one per physical core)")


def set_threads(requested: Optional[int]) -> int:
    """Set PyTorch's intra-op threads (see ``resolve_threads``) and return the number."""
    import torch

    threads = resolve_threads(requested)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


@contextmanager
def threads_set_to(requested: Optional[int]) -> Iterator[int]:
    """PyTorch's threads set as ``set_threads`` does within the block, and as they were after it (a
    command run inside another program, e.g. the tests, leaves its threads alone)."""
    import torch

    before = torch.get_num_threads()
    try:
        yield set_threads(requested)
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def describe_run(device_type: str, precision: Precision, threads: int) -> str:
    """The first log line's account of the hardware: device, precision and why, threads."""
    where = "GPU" if device_type == "cuda" else f"CPU, {threads} thread{'s' if threads != 1 else ''}"
    return f"{where}; precision {precision.name} ({precision.reason})"
