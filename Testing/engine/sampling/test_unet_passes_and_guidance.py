"""Samplers and classifier-free guidance: how many UNet passes each sampler makes, and that the
batched guidance pass equals the two-pass combination."""
from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedLSDMLib.models.bundle import ModelBundle
from MedLSDMLib.models.conditioning import condition_map, null_map
from MedLSDMLib.card import SchedulerConfig
from MedLSDMLib.errors import InputError
from MedLSDMLib.generation.pipeline import Generator
from MedLSDMLib.sampling.guidance import GuidedUNet
from MedLSDMLib.sampling.samplers import resolve_steps
from MedLSDMLib.sampling.loop import sample_latent

from conftest import TIMESTEPS, brain_array, brain_labels, tiny_card


@contextlib.contextmanager
def unet_calls(unet: torch.nn.Module) -> Iterator[List[int]]:
    """The batch size of every UNet forward call made inside the block."""
    batches: List[int] = []
    handle = unet.register_forward_hook(lambda module, args, kwargs, output: batches.append(int(output.shape[0])),
                                        with_kwargs=True)
    try:
        yield batches
    finally:
        handle.remove()


@pytest.mark.parametrize("sampler, steps, guidance, calls, batch", [
    ("dpm", 3, 2.0, 3, 2),  # the default: one batched pass [null map, map] per step
    ("ddim", 3, 2.0, 3, 2),
    ("ddim", 4, 1.0, 4, 1),  # w = 1 is the plain conditional model: no null branch
    ("ddim", 4, 0.0, 4, 1),  # w = 0 is the unconditional model
    ("ddpm", None, 2.0, TIMESTEPS, 2),
    ("reference", None, 2.0, 2 * TIMESTEPS, 1),  # the published method: two separate passes per step
])
def test_unet_passes_per_sampler(generator, sampler: str, steps: Optional[int], guidance: float, calls: int,
                                 batch: int) -> None:
    with unet_calls(generator.bundle.unet) as batches:
        image, = generator.generate(brain_labels(), sampler=sampler, steps=steps, guidance=guidance, seed=0)
    assert len(batches) == calls
    assert set(batches) == {batch}
    assert image.GetMetaData("medlsdm_sampler").startswith(sampler)


def test_reference_makes_twice_the_passes_of_ddpm(generator) -> None:
    counts = {}
    for sampler in ("ddpm", "reference"):
        with unet_calls(generator.bundle.unet) as batches:
            generator.generate(brain_labels(), sampler=sampler, guidance=3.0, seed=0)
        counts[sampler] = len(batches)
    assert counts["reference"] == 2 * counts["ddpm"] == 2 * TIMESTEPS


@pytest.fixture(scope="module")
def guided_inputs(generator):
    torch.manual_seed(0)
    classes = torch.from_numpy(brain_array((16, 16, 24)).astype("int64"))[None]
    condition = condition_map(classes, 4, 4)
    x = torch.randn(1, 4, 4, 4, 6)
    return generator.bundle.unet, condition, x


@pytest.mark.parametrize("sampler, steps, expected", [("ddim", 5, 5), ("ddpm", TIMESTEPS, TIMESTEPS),
                                                      ("reference", TIMESTEPS, 2 * TIMESTEPS)])
def test_guided_unet_counts_its_evaluations(guided_inputs, sampler: str, steps: int, expected: int) -> None:
    unet, condition, x = guided_inputs
    model = GuidedUNet(unet, condition, 2.0, batched=sampler != "reference")
    progress = []
    latent = sample_latent(model, tiny_card().scheduler, tuple(x.shape), sampler=sampler, steps=steps,
                           generator=torch.Generator().manual_seed(1), progress=lambda *a: progress.append(a))
    assert model.evaluations == expected
    assert progress == [("sample", i, steps) for i in range(1, steps + 1)]
    assert latent.shape == x.shape and torch.isfinite(latent).all()


@torch.no_grad()
def test_batched_guidance_equals_two_passes(guided_inputs) -> None:
    unet, condition, x = guided_inputs
    t = torch.tensor([7])
    conditional = unet(x, timesteps=t, seg=condition)
    unconditional = unet(x, timesteps=t, seg=null_map(condition))
    assert not torch.allclose(conditional, unconditional, atol=1e-4), "the label map must change the UNet output"

    for w in (0.0, 1.0, 2.0, 4.5):
        batched = GuidedUNet(unet, condition, w, batched=True)
        separate = GuidedUNet(unet, condition, w, batched=False)
        a, b = batched(x, t), separate(x, t)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a, unconditional + w * (conditional - unconditional), rtol=1e-5, atol=1e-5)
        assert separate.evaluations == 2
        assert batched.evaluations == 1
    assert not torch.allclose(GuidedUNet(unet, condition, 2.0, True)(x, t), conditional, atol=1e-4)


def test_null_map_is_all_zeros_and_condition_sums_to_one() -> None:
    classes = torch.from_numpy(brain_array((16, 16, 24)).astype("int64"))[None]
    condition = condition_map(classes, 4, 4)
    assert condition.shape == (1, 4, 4, 4, 6)
    torch.testing.assert_close(condition.sum(dim=1), torch.ones(1, 4, 4, 6))
    assert not null_map(condition).any()


def test_step_counts() -> None:
    config = SchedulerConfig(num_train_timesteps=1000)
    assert resolve_steps("ddim", None, config) == 50
    assert resolve_steps("dpm", None, config) == 20
    assert resolve_steps("ddpm", None, config) == 1000
    assert resolve_steps("reference", None, config) == 1000
    assert resolve_steps("ddim", 7, config) == 7
    with pytest.raises(InputError):
        resolve_steps("ddim", 1001, config)
    with pytest.raises(InputError):
        resolve_steps("rflow", None, config)
    rflow = SchedulerConfig(kind="rflow", num_train_timesteps=1000)
    assert resolve_steps("rflow", None, rflow) == 30
    with pytest.raises(InputError):
        resolve_steps("ddim", None, rflow)


def test_default_steps_never_exceed_the_training_steps() -> None:
    """A model trained with fewer steps than a sampler's default runs each training step once."""
    small = SchedulerConfig(num_train_timesteps=TIMESTEPS)
    assert resolve_steps("ddim", None, small) == TIMESTEPS
    assert resolve_steps("rflow", None, SchedulerConfig(kind="rflow", num_train_timesteps=10)) == 10


def test_default_sampler_of_the_tiny_model(generator) -> None:
    with unet_calls(generator.bundle.unet) as batches:
        image, = generator.generate(brain_labels(), seed=0)
    assert image.GetMetaData("medlsdm_sampler") == f"dpm {TIMESTEPS} steps, guidance 2"
    # 20 steps over 20 training steps round two timesteps to one: DPM-Solver runs each once (a repeated
    # timestep made its next step divide by a zero log-SNR difference, and the image NaN)
    assert len(batches) == TIMESTEPS - 1
    assert np.isfinite(sitk.GetArrayViewFromImage(image)).all()


def test_rflow_model_samples(generator) -> None:
    """A rectified-flow model (same networks, rflow process) samples with rflow Euler steps."""
    card = tiny_card(scheduler=SchedulerConfig(kind="rflow", num_train_timesteps=TIMESTEPS))
    bundle = ModelBundle(card, generator.bundle.autoencoder, generator.bundle.unet)
    rflow = Generator(bundle, device="cpu")
    with unet_calls(bundle.unet) as batches:
        a, = rflow.generate(brain_labels(), steps=3, seed=2, precision="fp32")
    b, = rflow.generate(brain_labels(), steps=3, seed=2, precision="fp32")
    assert len(batches) == 3 and set(batches) == {2}
    assert a.GetMetaData("medlsdm_sampler") == "rflow 3 steps, guidance 2"
    import SimpleITK as sitk
    import numpy as np

    array = sitk.GetArrayFromImage(a)
    assert np.isfinite(array).all() and np.array_equal(array, sitk.GetArrayFromImage(b))


def test_ddim_keeps_its_clean_estimates_inside_the_codebook_box(generator) -> None:
    """A UNet whose ε is off by 0.5 everywhere: near t = T the cosine schedule's tiny ᾱ turns that
    into an x0 estimate of ~10⁴; with the codebook's bounds, DDIM's result stays inside the box."""
    card = tiny_card()
    low, high = generator.bundle.autoencoder.codebook_bounds(2.0)
    assert low.shape == high.shape == (1, card.autoencoder.latent_channels, 1, 1, 1) and (low < high).all()

    def off_by_half(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, 0.5)

    shape = (1, card.autoencoder.latent_channels, 3, 3, 3)
    free = sample_latent(off_by_half, card.scheduler, shape, sampler="ddim", steps=10,
                         generator=torch.Generator().manual_seed(0))
    bounded = sample_latent(off_by_half, card.scheduler, shape, sampler="ddim", steps=10,
                            generator=torch.Generator().manual_seed(0), bounds=(low, high))
    assert free.abs().max() > 10 * high.abs().max()
    assert (bounded >= low - 1e-6).all() and (bounded <= high + 1e-6).all()
