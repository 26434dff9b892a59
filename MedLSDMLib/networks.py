"""The two networks, built from MONAI blocks: the VQ-GAN autoencoder and the SPADE latent UNet."""
from __future__ import annotations

from typing import Tuple

import torch
from monai.networks.nets import VQVAE, SPADEDiffusionModelUNet
from torch import nn

from .config import AutoencoderConfig, UNetConfig


class VQGAN(nn.Module):
    """MONAI ``VQVAE`` with the diffusion-facing interface: encode to the continuous latent,
    quantise (always in fp32, also under autocast), decode."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        levels = len(config.channels)
        self.vqvae = VQVAE(
            spatial_dims=3,
            in_channels=config.in_channels,
            out_channels=config.in_channels,
            channels=config.channels,
            num_res_layers=config.num_res_layers,
            num_res_channels=config.num_res_channels,
            downsample_parameters=((2, 4, 1, 1),) * levels,
            upsample_parameters=((2, 4, 1, 1, 0),) * levels,
            num_embeddings=config.num_embeddings,
            embedding_dim=config.latent_channels,
            commitment_cost=config.commitment_cost,
            decay=config.decay,
        )

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, X, Y, Z) in [-1, 1] → continuous latent (B, latent_channels, X/f, Y/f, Z/f)."""
        return self.vqvae.encode(images)

    def quantize(self, latent: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Nearest codebook vectors and the commitment loss, computed in fp32 whatever the autocast."""
        with torch.autocast(device_type=latent.device.type, enabled=False):
            return self.vqvae.quantize(latent.float())

    def decode_quantized(self, quantized: torch.Tensor) -> torch.Tensor:
        return self.vqvae.decode(quantized)

    def codebook_bounds(self, scale: float = 1.0) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per latent channel, the least and greatest value of the codebook's vectors times ``scale``,
        shaped (1, C, 1, 1, 1): the box every quantised (and scaled) latent lies in."""
        embedding = self.vqvae.quantizer.quantizer.embedding.weight.detach().float() * scale
        shape = (1, embedding.shape[1], 1, 1, 1)
        return embedding.min(0).values.view(shape), embedding.max(0).values.view(shape)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Continuous latent → image: quantise, then decode."""
        return self.decode_quantized(self.quantize(latent)[0])

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction and quantisation loss, for training."""
        quantized, loss = self.quantize(self.encode(images))
        return self.decode_quantized(quantized), loss


def build_unet(config: UNetConfig, latent_channels: int, num_classes: int) -> SPADEDiffusionModelUNet:
    """The latent UNet, conditioned on a ``num_classes``-channel label map through SPADE."""
    return SPADEDiffusionModelUNet(
        spatial_dims=3,
        in_channels=latent_channels,
        out_channels=latent_channels,
        label_nc=num_classes,
        num_res_blocks=config.num_res_blocks,
        channels=config.channels,
        attention_levels=config.attention_levels,
        norm_num_groups=config.norm_num_groups,
        num_head_channels=config.num_head_channels,
        spade_intermediate_channels=config.spade_intermediate_channels,
        use_flash_attention=True,  # PyTorch's fused attention: memory linear in the number of voxels
    )
