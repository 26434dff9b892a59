"""Every registered sampler (sampling.samplers.SAMPLERS) keeps the contract generation relies on: the same
seed gives the same latent, the latent keeps its shape, ``after_step`` is called once a step ending at the
clean end, and with the exact denoiser of data that is one known latent the sampler lands on it. A new
sampler is tested by registering it."""
from __future__ import annotations

from typing import List

import pytest
import torch

from MedLSDMLib.card import SchedulerConfig
from MedLSDMLib.errors import InputError
from MedLSDMLib.sampling.loop import sample_latent
from MedLSDMLib.sampling.samplers import SAMPLERS, Sampler, noise_scheduler, register, resolve_steps, sampler_help

TIMESTEPS = 20
SHAPE = (1, 2, 4, 4, 6)
BOUNDS = (-torch.ones(1, SHAPE[1], 1, 1, 1), torch.ones(1, SHAPE[1], 1, 1, 1))  # the codebook's box
TARGET = torch.linspace(-0.8, 0.8, int(torch.tensor(SHAPE).prod())).reshape(SHAPE)  # the one data point


def config_of(name: str) -> SchedulerConfig:
    return SchedulerConfig(kind=SAMPLERS[name].process, num_train_timesteps=TIMESTEPS)


class ExactDenoiser:
    """The guided UNet's output for data that is ``TARGET`` alone: ε for the DDPM process (x_t = √ᾱ x0 +
    √(1−ᾱ) ε), the velocity (x0 − x)·T/t for rectified flow (x_t = (1 − t/T) x0 + t/T ε)."""

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        scheduler = noise_scheduler(config)
        self.alphas = getattr(scheduler, "alphas_cumprod", None)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        step = int(t[0])
        if self.config.kind == "rflow":
            return (TARGET - x) * self.config.num_train_timesteps / max(step, 1e-6)
        a = self.alphas[step].float()
        return (x - a.sqrt() * TARGET) / (1 - a).sqrt()


def run(name: str, seed: int, model=None, after_step=None) -> torch.Tensor:
    config = config_of(name)
    return sample_latent(
        model or ExactDenoiser(config),
        config,
        SHAPE,
        sampler=name,
        steps=resolve_steps(name, None, config),
        generator=torch.Generator().manual_seed(seed),
        bounds=BOUNDS,
        after_step=after_step,
    )


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_same_seed_same_latent_of_the_same_shape(name: str) -> None:
    exact = ExactDenoiser(config_of(name))
    damped = lambda x, t: 0.9 * exact(x, t)  # noqa: E731  (an imperfect network: the result depends on the noise)
    first, again, other = run(name, 5, damped), run(name, 5, damped), run(name, 6, damped)
    assert first.shape == SHAPE and first.dtype == torch.float32 and torch.isfinite(first).all()
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_after_step_is_called_once_a_step_ending_at_the_clean_end(name: str) -> None:
    seen: List[int] = []

    def after_step(x: torch.Tensor, t_next: int) -> torch.Tensor:
        assert x.shape == SHAPE
        seen.append(t_next)
        return x

    run(name, 0, after_step=after_step)
    config = config_of(name)
    steps = resolve_steps(name, None, config)
    pairs = SAMPLERS[name](config, steps, torch.Generator(), None).pairs()
    assert len(seen) == len(pairs) and 0 < len(pairs) <= steps
    assert seen == sorted(seen, reverse=True)  # timesteps go down
    assert seen[-1] == (0 if SAMPLERS[name].process == "rflow" else -1)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_the_exact_denoiser_lands_on_the_data(name: str) -> None:
    assert torch.allclose(run(name, 1), TARGET, atol=1e-3)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_each_sampler_says_what_it_is(name: str) -> None:
    sampler = SAMPLERS[name]
    assert sampler.name == name and sampler.process in ("ddpm", "rflow")
    assert name in sampler_help()
    config = config_of(name)
    steps = resolve_steps(name, None, config)
    assert steps == (min(sampler.default_steps or TIMESTEPS, TIMESTEPS) if sampler.any_steps else TIMESTEPS)


def test_every_noise_process_has_one_default_and_the_help_starts_with_the_usual_one() -> None:
    for process in ("ddpm", "rflow"):
        assert sum(s.default_for == process for s in SAMPLERS.values()) == 1
    assert sampler_help().startswith("dpm (DPM-Solver++ 2M, 20 steps; the default), ddim (50 steps)")


def test_a_name_is_registered_once_and_unknown_names_are_input_errors() -> None:
    class Again(Sampler):
        name = "ddim"

    with pytest.raises(ValueError, match="already registered"):
        register(Again)
    assert SAMPLERS["ddim"] is not Again
    with pytest.raises(InputError, match="unknown sampler 'nope': use one of ddim, dpm, ddpm, reference, rflow"):
        resolve_steps("nope", None, config_of("ddim"))


@pytest.mark.parametrize("name", [n for n in SAMPLERS if n in ("ddim", "dpm", "rflow")])
def test_a_box_of_the_whole_draw_samples_as_the_whole_would(name: str) -> None:
    """The deterministic samplers, as the labels' box uses them (generation/crop.py): with a denoiser that
    looks at each voxel alone, sampling a box from that box of the whole grid's noise gives that box of the
    whole sample; rectified flow included (its timesteps do not depend on the volume's size)."""
    config = config_of(name)
    whole_shape, box = (1, 2, 8, 10, 6), (slice(None), slice(None), slice(2, 6), slice(3, 9), slice(0, 4))

    def pointwise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x) * (0.5 + float(t[0]) / (2 * TIMESTEPS))

    def sample(shape, noise=None) -> torch.Tensor:
        return sample_latent(pointwise, config, shape, sampler=name, steps=resolve_steps(name, 6, config),
                             generator=torch.Generator().manual_seed(4), noise=noise, bounds=None)

    whole = sample(whole_shape)
    noise = torch.randn(whole_shape, generator=torch.Generator().manual_seed(4))[box].contiguous()
    boxed = sample(tuple(noise.shape), noise)
    torch.testing.assert_close(boxed, whole[box], rtol=0, atol=1e-6)
