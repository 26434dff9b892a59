"""DPM-Solver++ (2M) against the exact answer: for Gaussian data N(0, s²) the best denoiser is known
in closed form, and the diffusion ODE maps the starting noise x_T to s·x_T / √(ᾱ_T s² + 1 − ᾱ_T).
A second-order solver must land much closer to it than first-order DDIM with the same steps."""
from __future__ import annotations

from typing import Dict

import pytest
import torch
from torch import nn

from MedLSDMLib.card import SchedulerConfig
from MedLSDMLib.sampling.samplers import SAMPLERS, noise_scheduler, resolve_steps
from MedLSDMLib.sampling.guidance import GuidedUNet
from MedLSDMLib.sampling.loop import sample_latent

DATA_STD = 0.5
SHAPE = (1, 2, 4, 4, 4)


class GaussianDenoiser(nn.Module):
    """The exact ε- or v-prediction for data drawn from N(0, DATA_STD²), per element."""

    def __init__(self, config: SchedulerConfig) -> None:
        super().__init__()
        self.alphas = noise_scheduler(config).alphas_cumprod.double()
        self.prediction_type = config.prediction_type

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        a = self.alphas[timesteps[0]]
        x = x.double()
        eps = (1 - a).sqrt() * x / (a * DATA_STD ** 2 + 1 - a)
        x0 = a.sqrt() * DATA_STD ** 2 * x / (a * DATA_STD ** 2 + 1 - a)
        out = eps if self.prediction_type == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0
        return out.float()


def solve(sampler: str, steps: int, config: SchedulerConfig) -> Dict[str, torch.Tensor]:
    model = GuidedUNet(GaussianDenoiser(config), torch.zeros(1, 1, 4, 4, 4), 1.0, batched=True)
    generator = torch.Generator().manual_seed(3)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    result = sample_latent(model, config, SHAPE, sampler=sampler, steps=steps, generator=generator)
    a_start = noise_scheduler(config).alphas_cumprod.double()[-1]
    exact = DATA_STD * noise.double() / (a_start * DATA_STD ** 2 + 1 - a_start).sqrt()
    return {"result": result.double(), "exact": exact, "evaluations": torch.tensor(model.evaluations)}


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_dpm_solver_is_second_order_where_ddim_is_first(prediction: str) -> None:
    config = SchedulerConfig(kind="ddpm", num_train_timesteps=1000, schedule="cosine", prediction_type=prediction)
    errors = {}
    for sampler, steps in (("ddim", 20), ("dpm", 10), ("dpm", 20)):
        run = solve(sampler, steps, config)
        assert int(run["evaluations"]) == steps
        errors[sampler, steps] = float((run["result"] - run["exact"]).abs().max() / run["exact"].abs().max())
    assert errors["dpm", 20] < 0.01, errors
    assert errors["dpm", 20] < errors["ddim", 20] / 5, errors
    assert errors["dpm", 10] < errors["ddim", 20], errors  # half the steps, still closer


def test_dpm_solver_clamps_its_clean_estimate() -> None:
    """With the codebook's box narrower than the data, no clean estimate and no result leave it."""
    config = SchedulerConfig(kind="ddpm", num_train_timesteps=1000, schedule="cosine", prediction_type="epsilon")
    model = GuidedUNet(GaussianDenoiser(config), torch.zeros(1, 1, 4, 4, 4), 1.0, batched=True)
    bounds = (torch.full((1, 2, 1, 1, 1), -0.1), torch.full((1, 2, 1, 1, 1), 0.1))
    result = sample_latent(model, config, SHAPE, sampler="dpm", steps=8, generator=torch.Generator().manual_seed(0),
                           bounds=bounds)
    assert result.abs().max() <= 0.1 + 1e-6
    free = sample_latent(model, config, SHAPE, sampler="dpm", steps=8, generator=torch.Generator().manual_seed(0))
    assert free.abs().max() > 0.1


def test_dpm_solver_uses_one_batched_pass_per_step_with_guidance() -> None:
    config = SchedulerConfig(kind="ddpm", num_train_timesteps=50, schedule="cosine", prediction_type="epsilon")
    calls = []
    denoiser = GaussianDenoiser(config)
    denoiser.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    model = GuidedUNet(denoiser, torch.ones(1, 1, 4, 4, 4), 2.0, batched=SAMPLERS["dpm"].batched)
    sample_latent(model, config, SHAPE, sampler="dpm", steps=6, generator=torch.Generator().manual_seed(0))
    assert calls == [2] * 6  # [null map, map] in one pass at every step


def test_dpm_steps_default_and_limits() -> None:
    config = SchedulerConfig(kind="ddpm", num_train_timesteps=1000, schedule="cosine", prediction_type="epsilon")
    assert resolve_steps("dpm", None, config) == SAMPLERS["dpm"].default_steps
    short = SchedulerConfig(kind="ddpm", num_train_timesteps=12, schedule="cosine", prediction_type="epsilon")
    assert resolve_steps("dpm", None, short) == 12
    flow = SchedulerConfig(kind="rflow", num_train_timesteps=1000, schedule="cosine", prediction_type="epsilon")
    with pytest.raises(Exception, match="does not fit this model"):
        resolve_steps("dpm", None, flow)
