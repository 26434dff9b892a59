"""Classifier-free guidance on the SPADE map: the UNet seen by a sampler."""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

import torch
from torch import nn

from MedLSDMLib.models.conditioning import null_map


class GuidedUNet:
    """The UNet with classifier-free guidance on the SPADE map; counts its network evaluations."""

    def __init__(
        self,
        unet: nn.Module,
        condition: torch.Tensor,
        guidance: float,
        batched: bool,
        autocast: Callable[[], ContextManager] = contextlib.nullcontext,
    ) -> None:
        self.unet, self.condition, self.guidance = unet, condition, float(guidance)
        self.batched, self.autocast = batched, autocast
        self.evaluations = 0

    def _run(self, x: torch.Tensor, t: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        self.evaluations += 1
        with self.autocast():
            timesteps = t.expand(x.shape[0]).to(x.device)
            return self.unet(x, timesteps=timesteps, seg=seg).float()

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        w, cond = self.guidance, self.condition
        if self.batched and w == 1.0:
            return self._run(x, t, cond)
        if self.batched and w == 0.0:
            return self._run(x, t, null_map(cond))
        if self.batched:
            both = self._run(torch.cat([x, x]), t, torch.cat([null_map(cond), cond]))
            uncond, conditional = both.chunk(2)
        else:
            conditional = self._run(x, t, cond)
            uncond = self._run(x, t, null_map(cond))
        return uncond + w * (conditional - uncond)
