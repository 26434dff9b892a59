"""The samplers' steps: one ``Stepper`` class a sampler, each with ``pairs()`` and ``step()``."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple, Type

import torch
from monai.networks.schedulers import DDPMScheduler, RFlowScheduler

from MedLSDMLib.card import SchedulerConfig
from MedLSDMLib.sampling.samplers import noise_scheduler

Bounds = Tuple[torch.Tensor, torch.Tensor]


def _clamp(x0: torch.Tensor, bounds: Optional[Bounds]) -> torch.Tensor:
    """The clean-latent estimate clamped to the box the VQ-GAN's codebook spans. Near t = T the cosine
    schedule's ᾱ_t is ~1e-9, so x0 = (x − √(1−ᾱ_t)·ε)/√ᾱ_t multiplies the UNet's error by ~10⁴ and the
    first steps would fill the latent with values no autoencoder latent takes; the decoder quantises
    every latent to the codebook anyway, so nothing inside the box is lost."""
    return x0 if bounds is None else torch.maximum(torch.minimum(x0, bounds[1]), bounds[0])


def _clean_and_noise(
    alpha_bar: torch.Tensor, x: torch.Tensor, out: torch.Tensor, prediction_type: str
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(x0, ε) from the UNet's output ``out`` at a step with cumulative ᾱ ``alpha_bar``."""
    if prediction_type == "v_prediction":
        return alpha_bar.sqrt() * x - (1 - alpha_bar).sqrt() * out, alpha_bar.sqrt() * out + (1 - alpha_bar).sqrt() * x
    return (x - (1 - alpha_bar).sqrt() * out) / alpha_bar.sqrt(), out


class Stepper:
    """One sampler: the (t, t_next) pairs it visits and its update ``step(x, out, t, t_next)``."""

    def __init__(
        self, config: SchedulerConfig, steps: int, generator: torch.Generator, bounds: Optional[Bounds], numel: int
    ) -> None:
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
        assert isinstance(self.scheduler, DDPMScheduler), "the ddpm samplers run on a DDPM noise process"
        return self.scheduler.step(out, int(t), x, generator=self.generator)[0]


class RFlowStepper(Stepper):
    """Rectified-flow Euler steps (MONAI's RFlowScheduler, with its resolution-dependent shift)."""

    def pairs(self) -> List[Tuple[int, int]]:
        assert isinstance(self.scheduler, RFlowScheduler), "the rflow sampler runs on a rectified-flow process"
        self.scheduler.set_timesteps(self.steps, device=self.device, input_img_size_numel=self.numel)
        timesteps = self.scheduler.timesteps.tolist()
        return list(zip(timesteps, timesteps[1:] + [0]))

    def step(self, x: torch.Tensor, out: torch.Tensor, t: int, t_next: int) -> torch.Tensor:
        assert isinstance(self.scheduler, RFlowScheduler), "the rflow sampler runs on a rectified-flow process"
        return self.scheduler.step(out, t, x, t_next)[0]


STEPPERS: Dict[str, Type[Stepper]] = {
    "ddim": DDIMStepper,
    "dpm": DPMSolverStepper,
    "ddpm": AncestralStepper,
    "reference": AncestralStepper,
    "rflow": RFlowStepper,
}
