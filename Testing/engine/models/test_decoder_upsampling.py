"""The SPADE decoder's upsampling (``autoencoder.upsample``): resize-convolution decodes a constant
latent and map to a constant image (no stamp of the latent grid), MONAI's transposed convolution does
not; tiled decoding still matches whole decoding; bundles without the key keep the transposed one."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from MedLSDMLib.card import AutoencoderConfig
from MedLSDMLib.models.decoding import decode_latent
from MedLSDMLib.models.networks import VQGAN

SPADE = AutoencoderConfig(
    channels=(8, 8),
    num_res_layers=1,
    num_res_channels=(8, 8),
    latent_channels=4,
    num_embeddings=16,
    decoder="spade",
    spade_hidden_channels=8,
)


def decoder(upsample: str) -> VQGAN:
    torch.manual_seed(0)
    return VQGAN(dataclasses.replace(SPADE, upsample=upsample), 4).eval()


@torch.no_grad()
def constant_decode(model: VQGAN) -> torch.Tensor:
    latent = torch.ones(1, 4, 16, 16, 16) * 0.3
    segmap = model.label_map(torch.full((1, 64, 64, 64), 2))
    # beyond the decoder's reach (about 6 latent voxels) from the zero-padded edges
    return model.decode_quantized(latent, segmap)[0, 0, 26:-26, 26:-26, 26:-26]


def test_resize_upsampling_decodes_a_constant_latent_to_a_constant_image() -> None:
    inner = constant_decode(decoder("resize"))
    assert float(inner.std()) < 1e-5 * max(1.0, float(inner.abs().mean()))


def test_transposed_upsampling_stamps_the_latent_grid_onto_a_constant_latent() -> None:
    inner = constant_decode(decoder("transposed"))
    assert float(inner.std()) > 1e-4
    for axis in range(3):  # the same 4-voxel block everywhere: the latent grid's stamp
        assert float((inner.narrow(axis, 4, 8) - inner.narrow(axis, 0, 8)).abs().max()) < 1e-5
        assert float((inner.narrow(axis, 1, 8) - inner.narrow(axis, 0, 8)).abs().max()) > 1e-5


@torch.no_grad()
def test_tiled_decoding_matches_whole_decoding_with_resize_upsampling() -> None:
    model = decoder("resize")
    torch.manual_seed(2)
    latent = torch.randn(1, 4, 20, 18, 22)
    classes = torch.randint(0, 4, (1, 80, 72, 88))
    whole = decode_latent(model, latent, classes)
    tiled = decode_latent(model, latent, classes, tile=16)
    # each tile is decoded with a halo of context, and the decoder is local: the tiles meet without a seam
    assert (tiled - whole).abs().max() < 1e-2 * whole.abs().max()


def test_upsampling_kinds_are_checked() -> None:
    assert AutoencoderConfig().upsample == "transposed"
    with pytest.raises(ValueError, match="upsample"):
        dataclasses.replace(SPADE, upsample="bicubic")
    with pytest.raises(ValueError, match="upsample"):
        AutoencoderConfig(upsample="resize")  # the plain MONAI decoder has only its own
