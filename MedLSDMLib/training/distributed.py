"""Running under torchrun: process group set-up (gloo on CPU, NCCL on GPU), ranks, reductions."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Distributed:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of ``value`` over all processes."""
        if self.enabled:
            value = value.clone()
            dist.all_reduce(value)
            value /= self.world_size
        return value

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def setup(device: str = "auto") -> Distributed:
    """Join the process group torchrun describes in the environment (or run alone). ``device`` is
    checked as generation checks it: asking for a GPU that PyTorch does not see is an InputError."""
    if device != "auto":
        from MedLSDMLib.runtime.devices import resolve_device

        device = resolve_device(device).type
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    torch_device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(torch_device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Distributed(rank, world_size, torch_device)
