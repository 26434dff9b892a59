"""Any LatentAutoencoder works where the VQ-GAN does: a second implementation (average pooling to the latent,
rounding to a grid of codebook values, nearest upsampling back) goes through tiled decoding, generate,
reconstruct and edit with known answers, and both implementations satisfy the protocol."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from torch import nn

from MedLSDMLib.card import AutoencoderConfig
from MedLSDMLib.generation.pipeline import Generator
from MedLSDMLib.models.autoencoder import LatentAutoencoder, latent_shape
from MedLSDMLib.models.bundle import ModelBundle
from MedLSDMLib.models.decoding import decode_latent

from conftest import HIGH, LOW, array_xyz, brain_labels, image_from_xyz, make_bundle, tiny_card

LEVELS = 16  # codebook values per unit


class PoolingAutoencoder(nn.Module):
    """The latent of an image is its f-block means (in every latent channel); quantising rounds to multiples
    of 1/LEVELS in [-1, 1]; decoding repeats the channels' mean over each f-block. No label map."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        self.decoded = 0

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool3d(images, self.config.downsample_factor)
        return pooled.repeat(1, self.config.latent_channels, 1, 1, 1)

    def quantize(self, latent: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return (latent.float().clamp(-1, 1) * LEVELS).round() / LEVELS, torch.zeros(())

    def label_map(self, classes: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        return None

    def decode_quantized(self, quantized: torch.Tensor, segmap: Optional[torch.Tensor] = None) -> torch.Tensor:
        self.decoded += 1
        return F.interpolate(quantized.mean(1, keepdim=True), scale_factor=self.config.downsample_factor)

    def codebook_bounds(self, scale: float = 1.0) -> Tuple[torch.Tensor, torch.Tensor]:
        one = torch.ones(1, self.config.latent_channels, 1, 1, 1) * scale
        return -one, one


@pytest.fixture(scope="module")
def pooled() -> Generator:
    card = tiny_card()
    return Generator(ModelBundle(card, PoolingAutoencoder(card.autoencoder), make_bundle(card).unet), "cpu", "fp32")


def test_both_implementations_are_latent_autoencoders() -> None:
    card = tiny_card()
    assert isinstance(PoolingAutoencoder(card.autoencoder), LatentAutoencoder)
    assert isinstance(make_bundle(card).autoencoder, LatentAutoencoder)
    assert not isinstance(nn.Linear(2, 2), LatentAutoencoder)
    assert latent_shape(PoolingAutoencoder(card.autoencoder), (16, 24, 8)) == (1, 4, 4, 6, 2)


def test_tiled_decoding_of_the_double_is_its_whole_decoding() -> None:
    autoencoder = PoolingAutoencoder(tiny_card().autoencoder)
    latent = torch.rand(1, 4, 9, 6, 7) * 2 - 1
    whole = decode_latent(autoencoder, latent)
    tiled = decode_latent(autoencoder, latent, tile=4)
    expected = F.interpolate(autoencoder.quantize(latent)[0].mean(1, keepdim=True), scale_factor=4)
    assert torch.equal(whole, expected) and torch.equal(tiled, expected)
    assert autoencoder.decoded > 2  # the tiles went through the double one by one


def test_generate_decodes_through_the_double(pooled: Generator) -> None:
    labels = brain_labels()
    before = pooled.bundle.autoencoder.decoded
    image, = pooled.generate(labels, seed=3, steps=2)
    again, = pooled.generate(labels, seed=3, steps=2)
    assert pooled.bundle.autoencoder.decoded == before + 2
    assert image.GetSize() == labels.GetSize() and image.GetDirection() == labels.GetDirection()
    values = array_xyz(image)
    assert np.isfinite(values).all() and LOW - 1e-3 <= values.min() and values.max() <= HIGH + 1e-3
    assert np.array_equal(values, array_xyz(again))


def test_reconstruct_of_a_flat_image_gives_it_back(pooled: Generator) -> None:
    labels = brain_labels()
    level = LOW + (HIGH - LOW) * (0.5 + 3 / (2 * LEVELS))  # a codebook value, so quantising keeps it
    image = image_from_xyz(np.full(labels.GetSize(), level, dtype=np.float32))
    image.CopyInformation(labels)
    out = pooled.reconstruct(image, labels)
    inner = array_xyz(out)[4:-4, 4:-4, 4:-4]  # away from the working grid's padding
    assert np.allclose(inner, level, atol=1e-3)


def test_edit_through_the_double_keeps_the_real_voxels_outside_the_region(pooled: Generator) -> None:
    labels = brain_labels()
    real = image_from_xyz(np.random.default_rng(0).normal(100, 20, labels.GetSize()).astype(np.float32))
    real.CopyInformation(labels)
    region = np.zeros(labels.GetSize(), dtype=np.uint8)
    region[8:12, 10:15, 6:10] = 1
    mask = image_from_xyz(region)
    mask.CopyInformation(labels)
    edited, = pooled.edit(real, labels, region=mask, margin=2.0, seed=1, steps=2)
    far = array_xyz(sitk.Cast(sitk.BinaryDilate(mask, [6] * 3), sitk.sitkUInt8)) == 0
    assert np.array_equal(array_xyz(edited)[far], array_xyz(real)[far])
    assert not np.array_equal(array_xyz(edited)[region > 0], array_xyz(real)[region > 0])

