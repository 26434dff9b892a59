"""The two networks, built from MONAI blocks: the VQ-GAN autoencoder and the SPADE latent UNet."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from monai.networks.blocks import SPADE
from monai.networks.nets import VQVAE, SPADEDiffusionModelUNet
from torch import nn

from MedLSDMLib.card import AutoencoderConfig, UNetConfig
from MedLSDMLib.models.label_decoder import LabelConditionedDecoder, make_local, one_hot


class VQGAN(nn.Module):
    """MONAI ``VQVAE`` with the diffusion-facing interface: encode to the continuous latent,
    quantise (always in fp32, also under autocast), decode. With ``decoder: spade`` the decoder is
    ``LabelConditionedDecoder`` and decoding takes the class map (B, X, Y, Z) at full resolution."""

    def __init__(self, config: AutoencoderConfig, label_classes: int) -> None:
        super().__init__()
        self.config = config
        self.label_classes = label_classes
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
        self.encoder_frozen = False
        self.label_decoder: Optional[LabelConditionedDecoder] = None
        if config.label_conditioned:
            self.vqvae.register_module("decoder", nn.Identity())  # replaced: its weights would be dead
            widths = config.decoder_channels or config.channels
            self.label_decoder = LabelConditionedDecoder(
                config.latent_channels,
                config.in_channels,
                widths,
                config.num_res_layers,
                config.decoder_channels or config.num_res_channels,
                label_classes,
                config.spade_hidden_channels,
                config.upsample,
            )

    def freeze_encoder(self) -> None:
        """Fix the encoder and the codebook (no gradients, no EMA codebook updates, also in training mode):
        training then changes only the decoder, and the latent space stays as it was."""
        self.encoder_frozen = True
        self.vqvae.encoder.requires_grad_(False)
        self.vqvae.quantizer.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> "VQGAN":
        super().train(mode)
        if self.encoder_frozen:
            self.vqvae.encoder.eval()
            self.vqvae.quantizer.eval()
        return self

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, X, Y, Z) in [-1, 1] → continuous latent (B, latent_channels, X/f, Y/f, Z/f)."""
        return self.vqvae.encode(images)

    def quantize(self, latent: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Nearest codebook vectors and the commitment loss, computed in fp32 whatever the autocast."""
        with torch.autocast(device_type=latent.device.type, enabled=False):
            return self.vqvae.quantize(latent.float())

    def label_map(self, classes: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """What the decoder is fed besides the latent: the one-hot map of class indices (B, X, Y, Z), or
        None for the plain decoder (which takes no map)."""
        if self.label_decoder is None:
            return None
        if classes is None:
            raise ValueError("this autoencoder's decoder is conditioned on the label map: pass the classes")
        return one_hot(classes, self.label_classes)

    def decode_quantized(self, quantized: torch.Tensor, segmap: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Quantised latent (and, for the SPADE decoder, the one-hot map of ``label_map``) → image."""
        if self.label_decoder is None:
            return self.vqvae.decode(quantized)
        if segmap is None:
            raise ValueError("this autoencoder's decoder is conditioned on the label map: pass it")
        return self.label_decoder(quantized, segmap)

    def codebook_bounds(self, scale: float = 1.0) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per latent channel, the least and greatest value of the codebook's vectors times ``scale``,
        shaped (1, C, 1, 1, 1): the box every quantised (and scaled) latent lies in."""
        embedding = self.vqvae.quantizer.quantizer.embedding.weight.detach().float() * scale
        shape = (1, embedding.shape[1], 1, 1, 1)
        return embedding.min(0).values.view(shape), embedding.max(0).values.view(shape)

    def forward(
        self, images: torch.Tensor, classes: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction and quantisation loss, for training."""
        quantized, loss = self.quantize(self.encode(images))
        return self.decode_quantized(quantized, self.label_map(classes)), loss


def build_unet(config: UNetConfig, latent_channels: int, num_classes: int) -> SPADEDiffusionModelUNet:
    """The latent UNet, conditioned on a ``num_classes``-channel label map through SPADE.

    With ``spade: local`` every SPADE block's γ and β convolutions lose the instance normalisation of
    MONAI's ``Convolution`` (which has no parameters, so the weights are the same), as in the decoder:
    a 64³ training patch and a whole volume are then modulated alike. The activations' own
    normalisation stays the GroupNorm of every block of this UNet."""
    unet = SPADEDiffusionModelUNet(
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
    if config.spade == "local":
        for block in unet.modules():
            if isinstance(block, SPADE):
                make_local(block)
    return unet
