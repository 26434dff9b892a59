"""The reverse process: noise to a clean latent, one step of a registered sampler at a time."""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch

from MedLSDMLib.card import SchedulerConfig
from MedLSDMLib.errors import Cancelled
from MedLSDMLib.runtime.progress import CancelFn, ProgressFn
from MedLSDMLib.sampling.guidance import GuidedUNet
from MedLSDMLib.sampling.samplers import SAMPLERS, Bounds

# replaces the latent after each step: after_step(x, t_next) (t_next < 0: the clean end)
AfterStep = Callable[[torch.Tensor, int], torch.Tensor]


def sample_latent(
    model: GuidedUNet,
    config: SchedulerConfig,
    shape: Tuple[int, ...],
    *,
    sampler: str,
    steps: int,
    generator: torch.Generator,
    progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelFn] = None,
    bounds: Optional[Bounds] = None,
    after_step: Optional[AfterStep] = None,
    noise: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Run the reverse process from noise drawn with ``generator``.

    Args:
        model: the guided UNet.
        config: the model's noise process.
        shape: the latent's shape (1, C, X, Y, Z).
        sampler: a name of ``SAMPLERS``.
        steps: the steps to run (``resolve_steps``).
        generator: draws the starting noise (and the ancestral samplers' noise); its device is used.
        progress: ``progress("sample", step, steps)`` after each step.
        cancel: checked before each step; True raises ``Cancelled``.
        bounds: the box the clean-latent estimates of DDIM and DPM-Solver are clamped to.
        after_step: ``after_step(x, t_next)`` replaces the latent after each step (t_next < 0: the clean
            end), e.g. to keep a known part of it (edit.py's inpainting).
        noise: the starting noise, of ``shape`` (default: drawn with ``generator``); a box of a larger draw
            samples that box as the larger sample would (crop.py).

    Returns:
        The clean latent, of ``shape``.
    """
    if noise is None:
        noise = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
    x = noise
    stepper = SAMPLERS[sampler](config, steps, generator, bounds)
    pairs = stepper.pairs()
    for i, (t, t_next) in enumerate(pairs):
        if cancel is not None and cancel():
            raise Cancelled()
        out = model(x, torch.tensor([t], device=x.device))
        x = stepper.step(x, out, int(t), int(t_next))
        if after_step is not None:
            x = after_step(x, int(t_next))
        if progress is not None:
            progress("sample", i + 1, len(pairs))
    return x
