"""The guided sampling loop: classifier-free guidance on the SPADE map, and the samplers.

MONAI's ``sample(cfg=...)`` guides on cross-attention context, not on the SPADE map, so the loop
is ours: the UNet sees the batch [null map, map] in one pass and the two outputs are combined as
out_u + w·(out_c − out_u). ``w = 1`` is the plain conditional model (one pass, no null branch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Union

from monai.networks.schedulers import DDPMScheduler, RFlowScheduler

from MedLSDMLib.card import SchedulerConfig
from MedLSDMLib.errors import InputError


@dataclass(frozen=True)
class SamplerInfo:
    """What a sampler needs: the noise process it samples, its step count, its guidance passes."""

    process: str  # "ddpm" or "rflow": the SchedulerConfig.kind it works with
    default_steps: Optional[int]  # None: every training step
    any_steps: bool  # False: always runs every training step
    batched: bool  # True: one batched UNet pass for both guidance branches
    summary: str


SAMPLERS: Dict[str, SamplerInfo] = {
    "ddim": SamplerInfo("ddpm", 50, True, True, "deterministic DDIM, 50 steps by default"),
    "dpm": SamplerInfo("ddpm", 20, True, True, "DPM-Solver++ (2M) multistep, 20 steps by default (the default)"),
    "ddpm": SamplerInfo("ddpm", None, False, True, "ancestral DDPM over every training step"),
    "reference": SamplerInfo(
        "ddpm",
        None,
        False,
        False,
        "the published method: ancestral DDPM over every training step, two separate UNet passes per step",
    ),
    "rflow": SamplerInfo("rflow", 30, True, True, "rectified-flow Euler steps, 30 by default"),
}


def default_sampler(config: SchedulerConfig) -> str:
    """DPM-Solver++ (2M), 20 steps, for ε/v models: on held-out maps it matched DDIM-50's Dice ratio within
    noise, with a higher correlation with the real image, in 2.5x fewer UNet passes (README, Speed and
    quality); rectified flow's own Euler sampler for rflow models."""
    return "dpm" if config.kind == "ddpm" else "rflow"


def resolve_steps(sampler: str, steps: Optional[int], config: SchedulerConfig) -> int:
    """The number of steps to run, or InputError for an unknown sampler or a bad step count."""
    if sampler not in SAMPLERS:
        raise InputError(f"unknown sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")
    info = SAMPLERS[sampler]
    if info.process != config.kind:
        usable = ", ".join(n for n, i in SAMPLERS.items() if i.process == config.kind)
        raise InputError(f"sampler {sampler!r} does not fit this model (trained as {config.kind}): use {usable}")
    total = config.num_train_timesteps
    if steps is None:
        return min(info.default_steps or total, total) if info.any_steps else total
    if steps < 1:
        raise InputError(f"--steps {steps}: the number of steps must be at least 1")
    if steps > total:
        raise InputError(f"--steps {steps}: this model was trained with {total} steps, so use at most {total}")
    if not info.any_steps and steps != total:
        raise InputError(
            f"sampler {sampler!r} runs all {total} training steps: leave --steps out, "
            "or use dpm or ddim for fewer steps"
        )
    return steps


def noise_scheduler(config: SchedulerConfig) -> Union[DDPMScheduler, RFlowScheduler]:
    """The MONAI scheduler of the training noise process (also used by training's add_noise)."""
    if config.kind == "rflow":
        return RFlowScheduler(num_train_timesteps=config.num_train_timesteps, use_discrete_timesteps=False)
    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        schedule=config.schedule,
        clip_sample=False,
        prediction_type=config.prediction_type,
    )
