"""The guided sampling loop: classifier-free guidance on the SPADE map, and the samplers.

MONAI's ``sample(cfg=...)`` guides on cross-attention context, not on the SPADE map, so the loop
is ours: the UNet sees the batch [null map, map] in one pass and the two outputs are combined as
out_u + w·(out_c − out_u). ``w = 1`` is the plain conditional model (one pass, no null branch).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, Dict, Optional, Tuple

import torch
from monai.networks.schedulers import DDPMScheduler, RFlowScheduler
from monai.networks.schedulers.scheduler import Scheduler
from torch import nn

from .conditioning import null_map
from .config import SchedulerConfig
from .errors import Cancelled, InputError

ProgressFn = Callable[[str, int, int], None]
CancelFn = Callable[[], bool]


@dataclass(frozen=True)
class SamplerInfo:
    """What a sampler needs: the noise process it samples, its step count, its guidance passes."""

    process: str  # "ddpm" or "rflow": the SchedulerConfig.kind it works with
    default_steps: Optional[int]  # None: every training step
    any_steps: bool  # False: always runs every training step
    batched: bool  # True: one batched UNet pass for both guidance branches
    summary: str


SAMPLERS: Dict[str, SamplerInfo] = {
    "ddim": SamplerInfo("ddpm", 50, True, True, "deterministic DDIM, 50 steps by default (the default)"),
    "ddpm": SamplerInfo("ddpm", None, False, True, "ancestral DDPM over every training step"),
    "reference": SamplerInfo("ddpm", None, False, False,
                             "the published method: ancestral DDPM over every training step, "
                             "two separate UNet passes per step"),
    "rflow": SamplerInfo("rflow", 30, True, True, "rectified-flow Euler steps, 30 by default"),
}


def default_sampler(config: SchedulerConfig) -> str:
    return "ddim" if config.kind == "ddpm" else "rflow"


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
        raise InputError(f"sampler {sampler!r} runs all {total} training steps: leave --steps out, "
                         "or use ddim for fewer steps")
    return steps


def noise_scheduler(config: SchedulerConfig) -> Scheduler:
    """The MONAI scheduler of the training noise process (also used by training's add_noise)."""
    if config.kind == "rflow":
        return RFlowScheduler(num_train_timesteps=config.num_train_timesteps, use_discrete_timesteps=False)
    return DDPMScheduler(num_train_timesteps=config.num_train_timesteps, schedule=config.schedule,
                         clip_sample=False, prediction_type=config.prediction_type)


class GuidedUNet:
    """The UNet with classifier-free guidance on the SPADE map; counts its network evaluations."""

    def __init__(self, unet: nn.Module, condition: torch.Tensor, guidance: float, batched: bool,
                 autocast: Callable[[], ContextManager] = contextlib.nullcontext) -> None:
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


Bounds = Tuple[torch.Tensor, torch.Tensor]


def _ddim_step(alphas_cumprod: torch.Tensor, x: torch.Tensor, out: torch.Tensor, t: int, t_prev: int,
               prediction_type: str, bounds: Optional[Bounds] = None) -> torch.Tensor:
    """Deterministic DDIM (η = 0) from step t to t_prev (−1: the clean sample).

    MONAI's DDIMScheduler.step assumes t_prev = t − T // n, which differs from the spacing of its
    own set_timesteps when T is not a multiple of n; this step takes both ends explicitly.

    ``bounds`` (low, high) clamp the clean-sample estimate x0. Near t = T the cosine schedule's
    ᾱ_t is ~1e-9, so x0 = (x − √(1−ᾱ_t)·ε)/√ᾱ_t multiplies the UNet's error by ~10⁴ and the first
    steps would fill the latent with values no autoencoder latent takes; clamped to the box the
    VQ-GAN's codebook spans (where the decoder quantises every latent anyway), they cannot."""
    a_t = alphas_cumprod[t]
    a_prev = alphas_cumprod[t_prev] if t_prev >= 0 else torch.ones_like(a_t)
    if prediction_type == "v_prediction":
        x0 = a_t.sqrt() * x - (1 - a_t).sqrt() * out
        eps = a_t.sqrt() * out + (1 - a_t).sqrt() * x
    else:
        eps = out
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    if bounds is not None:
        x0 = torch.maximum(torch.minimum(x0, bounds[1]), bounds[0])
    return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps


def sample_latent(model: GuidedUNet, config: SchedulerConfig, shape: Tuple[int, ...], *, sampler: str,
                  steps: int, generator: torch.Generator, progress: Optional[ProgressFn] = None,
                  cancel: Optional[CancelFn] = None, bounds: Optional[Bounds] = None) -> torch.Tensor:
    """Run the reverse process from noise drawn with ``generator`` and return the clean latent.
    ``bounds``: the box DDIM's clean-sample estimates are clamped to (see ``_ddim_step``)."""
    device = generator.device
    x = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
    scheduler = noise_scheduler(config)
    total = config.num_train_timesteps

    if sampler == "ddim":
        timesteps = torch.linspace(total - 1, 0, steps).round().long().tolist()
        pairs = list(zip(timesteps, timesteps[1:] + [-1]))
    elif sampler == "rflow":
        scheduler.set_timesteps(steps, device=device, input_img_size_numel=int(torch.tensor(shape[2:]).prod()))
        timesteps = scheduler.timesteps.tolist()
        pairs = list(zip(timesteps, timesteps[1:] + [0]))
    else:
        scheduler.set_timesteps(total, device=device)
        pairs = [(t, t - 1) for t in scheduler.timesteps.tolist()]
    alphas_cumprod = getattr(scheduler, "alphas_cumprod", None)

    for i, (t, t_next) in enumerate(pairs):
        if cancel is not None and cancel():
            raise Cancelled()
        out = model(x, torch.tensor([t], device=device))
        if sampler == "ddim":
            x = _ddim_step(alphas_cumprod.to(device), x, out, int(t), int(t_next), config.prediction_type, bounds)
        elif sampler == "rflow":
            x, _ = scheduler.step(out, t, x, t_next)
        else:
            x, _ = scheduler.step(out, int(t), x, generator=generator)
        if progress is not None:
            progress("sample", i + 1, len(pairs))
    return x
