"""The guided sampling loop: classifier-free guidance on the SPADE map, and the samplers.

MONAI's ``sample(cfg=...)`` guides on cross-attention context, not on the SPADE map, so the loop
is ours: the UNet sees the batch [null map, map] in one pass and the two outputs are combined as
out_u + w·(out_c − out_u). ``w = 1`` is the plain conditional model (one pass, no null branch).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, Dict, List, Optional, Tuple, Type

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
    "ddim": SamplerInfo("ddpm", 50, True, True, "deterministic DDIM, 50 steps by default"),
    "dpm": SamplerInfo("ddpm", 20, True, True, "DPM-Solver++ (2M) multistep, 20 steps by default (the default)"),
    "ddpm": SamplerInfo("ddpm", None, False, True, "ancestral DDPM over every training step"),
    "reference": SamplerInfo("ddpm", None, False, False,
                             "the published method: ancestral DDPM over every training step, "
                             "two separate UNet passes per step"),
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
        raise InputError(f"sampler {sampler!r} runs all {total} training steps: leave --steps out, "
                         "or use dpm or ddim for fewer steps")
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


def _clamp(x0: torch.Tensor, bounds: Optional[Bounds]) -> torch.Tensor:
    """The clean-latent estimate clamped to the box the VQ-GAN's codebook spans. Near t = T the cosine
    schedule's ᾱ_t is ~1e-9, so x0 = (x − √(1−ᾱ_t)·ε)/√ᾱ_t multiplies the UNet's error by ~10⁴ and the
    first steps would fill the latent with values no autoencoder latent takes; the decoder quantises
    every latent to the codebook anyway, so nothing inside the box is lost."""
    return x0 if bounds is None else torch.maximum(torch.minimum(x0, bounds[1]), bounds[0])


def _clean_and_noise(alpha_bar: torch.Tensor, x: torch.Tensor, out: torch.Tensor,
                     prediction_type: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """(x0, ε) from the UNet's output ``out`` at a step with cumulative ᾱ ``alpha_bar``."""
    if prediction_type == "v_prediction":
        return alpha_bar.sqrt() * x - (1 - alpha_bar).sqrt() * out, alpha_bar.sqrt() * out + (1 - alpha_bar).sqrt() * x
    return (x - (1 - alpha_bar).sqrt() * out) / alpha_bar.sqrt(), out


class Stepper:
    """One sampler: the (t, t_next) pairs it visits and its update ``step(x, out, t, t_next)``."""

    def __init__(self, config: SchedulerConfig, steps: int, generator: torch.Generator,
                 bounds: Optional[Bounds], numel: int) -> None:
        self.config, self.steps, self.generator, self.bounds = config, steps, generator, bounds
        self.numel = numel  # latent voxels (rectified flow's timestep shift depends on them)
        self.scheduler = noise_scheduler(config)
        self.device = generator.device
        alphas = getattr(self.scheduler, "alphas_cumprod", None)
        self.alphas_cumprod = None if alphas is None else alphas.to(self.device, torch.float64)

    def pairs(self) -> List[Tuple[int, int]]:
        raise NotImplementedError

    def step(self, x: torch.Tensor, out: torch.Tensor, t: int, t_next: int) -> torch.Tensor:
        raise NotImplementedError

    def _alpha_bar(self, t: int) -> torch.Tensor:
        assert self.alphas_cumprod is not None
        return self.alphas_cumprod[t] if t >= 0 else torch.ones((), dtype=torch.float64, device=self.device)

    def _x0(self, x: torch.Tensor, out: torch.Tensor, t: int) -> Tuple[torch.Tensor, torch.Tensor]:
        x0, eps = _clean_and_noise(self._alpha_bar(t).float(), x, out, self.config.prediction_type)
        return _clamp(x0, self.bounds), eps


class DDIMStepper(Stepper):
    """Deterministic DDIM (η = 0) over ``steps`` evenly spaced training steps, the last one t = 0.

    MONAI's DDIMScheduler.step assumes t_prev = t − T // n, which differs from the spacing of its own
    set_timesteps when T is not a multiple of n; this update takes both ends explicitly."""

    def pairs(self) -> List[Tuple[int, int]]:
        timesteps = torch.linspace(self.config.num_train_timesteps - 1, 0, self.steps).round().long().tolist()
        return list(zip(timesteps, timesteps[1:] + [-1]))

    def step(self, x: torch.Tensor, out: torch.Tensor, t: int, t_next: int) -> torch.Tensor:
        x0, eps = self._x0(x, out, t)
        a_next = self._alpha_bar(t_next).float()
        return a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps


class DPMSolverStepper(Stepper):
    """DPM-Solver++ (2M), the multistep second-order solver of the diffusion ODE in data prediction
    (Lu et al. 2022), for ε- and v-prediction models: it reaches in about 20 steps what DDIM needs 50
    for. Timesteps as diffusers' "linspace" spacing (T−1 down to about T/steps, then the clean
    sample); the last step is first order, as the second-order formula needs a finite log-SNR."""

    previous: Optional[Tuple[torch.Tensor, torch.Tensor]] = None  # (x0, λ) of the step before

    def pairs(self) -> List[Tuple[int, int]]:
        total = self.config.num_train_timesteps
        timesteps = torch.linspace(total - 1, 0, self.steps + 1).round().long().tolist()[:-1]
        return list(zip(timesteps, timesteps[1:] + [-1]))

    def _log_snr(self, t: int) -> torch.Tensor:
        a = self._alpha_bar(t)
        return 0.5 * (a.log() - (1 - a).log())

    def step(self, x: torch.Tensor, out: torch.Tensor, t: int, t_next: int) -> torch.Tensor:
        x0, _ = self._x0(x, out, t)
        if t_next < 0:  # to the clean sample: σ_next = 0, the first-order update gives x0
            return x0
        a, a_next = self._alpha_bar(t), self._alpha_bar(t_next)
        lam, lam_next = self._log_snr(t), self._log_snr(t_next)
        h = lam_next - lam
        data = x0
        if self.previous is not None:
            x0_prev, lam_prev = self.previous
            r = (lam - lam_prev) / h
            data = (1 + 1 / (2 * r)).float() * x0 - (1 / (2 * r)).float() * x0_prev
        self.previous = (x0, lam)
        ratio = ((1 - a_next).sqrt() / (1 - a).sqrt()).float()
        weight = (a_next.sqrt() * torch.expm1(-h)).float()
        return ratio * x - weight * data


class AncestralStepper(Stepper):
    """Ancestral DDPM over every training step (MONAI's DDPMScheduler.step)."""

    def pairs(self) -> List[Tuple[int, int]]:
        self.scheduler.set_timesteps(self.config.num_train_timesteps, device=self.device)
        return [(t, t - 1) for t in self.scheduler.timesteps.tolist()]

    def step(self, x: torch.Tensor, out: torch.Tensor, t: int, t_next: int) -> torch.Tensor:
        return self.scheduler.step(out, int(t), x, generator=self.generator)[0]


class RFlowStepper(Stepper):
    """Rectified-flow Euler steps (MONAI's RFlowScheduler, with its resolution-dependent shift)."""

    def pairs(self) -> List[Tuple[int, int]]:
        self.scheduler.set_timesteps(self.steps, device=self.device, input_img_size_numel=self.numel)
        timesteps = self.scheduler.timesteps.tolist()
        return list(zip(timesteps, timesteps[1:] + [0]))

    def step(self, x: torch.Tensor, out: torch.Tensor, t: int, t_next: int) -> torch.Tensor:
        return self.scheduler.step(out, t, x, t_next)[0]


STEPPERS: Dict[str, Type[Stepper]] = {"ddim": DDIMStepper, "dpm": DPMSolverStepper, "ddpm": AncestralStepper,
                                      "reference": AncestralStepper, "rflow": RFlowStepper}


def sample_latent(model: GuidedUNet, config: SchedulerConfig, shape: Tuple[int, ...], *, sampler: str,
                  steps: int, generator: torch.Generator, progress: Optional[ProgressFn] = None,
                  cancel: Optional[CancelFn] = None, bounds: Optional[Bounds] = None,
                  after_step: Optional[Callable[[torch.Tensor, int], torch.Tensor]] = None) -> torch.Tensor:
    """Run the reverse process from noise drawn with ``generator`` and return the clean latent.
    ``bounds``: the box the clean-latent estimates of DDIM and DPM-Solver are clamped to.
    ``after_step(x, t_next)``: replaces the latent after each step (t_next < 0: the clean end), e.g. to
    keep a known part of it (edit.py's inpainting)."""
    x = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
    stepper = STEPPERS[sampler](config, steps, generator, bounds, int(torch.tensor(shape[2:]).prod()))
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
