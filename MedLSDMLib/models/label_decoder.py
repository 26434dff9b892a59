"""The label-conditioned VQ-GAN decoder (the paper's SPADE variant): every normalisation of the decoder
is MONAI's ``SPADE`` block, fed the one-hot label map at full resolution, so class boundaries reach the
image at the voxel size instead of only through the 4×-coarser latent."""

from __future__ import annotations

from typing import Sequence, cast

import torch
import torch.nn.functional as F
from monai.networks.blocks import SPADE, Convolution
from torch import nn

# Batch statistics, not instance statistics: in evaluation the running averages make the output of a
# window independent of its neighbours, so tiled decoding matches whole-volume decoding.
SPADE_NORM = "BATCH"


def make_local(block: SPADE) -> SPADE:
    """MONAI's SPADE block made local: its γ and β convolutions come with an instance normalisation
    (MONAI's Convolution default), which makes every voxel's modulation depend on the whole field of view,
    so a training patch, a tile and the whole volume would be modulated differently. They become plain
    convolutions, as in the SPADE paper (the normalisation has no parameters: the weights stay the same)."""
    for convolution in (block.mlp_gamma, block.mlp_beta):
        convolution.adn = nn.Identity()
    return block


def _spade(label_classes: int, channels: int, hidden: int) -> SPADE:
    """A local SPADE block (``make_local``) whose parameter-free normalisation has no affine part."""
    block = SPADE(
        label_nc=label_classes,
        norm_nc=channels,
        kernel_size=3,
        spatial_dims=3,
        hidden_channels=hidden,
        norm=SPADE_NORM,
        norm_params={"affine": False},
    )
    return make_local(block)


def _conv(in_channels: int, out_channels: int, kernel_size: int = 3) -> Convolution:
    return Convolution(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        strides=1,
        kernel_size=kernel_size,
        conv_only=True,
    )


class SPADEResidualUnit(nn.Module):
    """x + conv(act(SPADE(conv(act(SPADE(x))))))."""

    def __init__(self, channels: int, residual_channels: int, label_classes: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = _spade(label_classes, channels, hidden)
        self.conv1 = _conv(channels, residual_channels)
        self.norm2 = _spade(label_classes, residual_channels, hidden)
        self.conv2 = _conv(residual_channels, channels)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x, segmap)))
        return x + self.conv2(F.silu(self.norm2(h, segmap)))


def _upsample(in_channels: int, out_channels: int, kind: str) -> nn.Module:
    """×2 in every direction: MONAI's stride-2 transposed convolution (kernel 4), whose output varies with
    the position within each 2³ block even for a constant input (over two levels, a stamp of the 4-voxel latent
    grid), or ``resize``: nearest-neighbour ×2 then a 3×3×3 convolution, constant for a constant input."""
    if kind == "resize":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), _conv(in_channels, out_channels))
    return Convolution(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        strides=2,
        kernel_size=4,
        padding=1,
        output_padding=0,
        is_transposed=True,
        conv_only=True,
    )


class LabelConditionedDecoder(nn.Module):
    """Latent (B, latent_channels, X/f, Y/f, Z/f) and one-hot map (B, classes, X, Y, Z) → image (B, out, X, Y, Z).

    The mirror of MONAI's VQ-VAE decoder (a 3×3×3 convolution in, ``num_res_layers`` residual units and a
    ×2 upsampling a level, ``upsample``), with SPADE residual units, then a SPADE normalisation and
    the output convolution at full resolution."""

    def __init__(
        self,
        latent_channels: int,
        out_channels: int,
        channels: Sequence[int],
        num_res_layers: int,
        num_res_channels: Sequence[int],
        label_classes: int,
        hidden: int,
        upsample: str = "transposed",
    ) -> None:
        super().__init__()
        widths = list(reversed(channels))
        residual = list(reversed(num_res_channels))
        self.conv_in = _conv(latent_channels, widths[0])
        self.levels = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for i, width in enumerate(widths):
            self.levels.append(
                nn.ModuleList(
                    SPADEResidualUnit(width, residual[i], label_classes, hidden) for _ in range(num_res_layers)
                )
            )
            following = widths[i + 1] if i + 1 < len(widths) else widths[-1]
            self.upsamples.append(_upsample(width, following, upsample))
        self.out_norm = _spade(label_classes, widths[-1], hidden)
        self.conv_out = _conv(widths[-1], out_channels)

    def forward(self, latent: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(latent)
        for units, upsample in zip(self.levels, self.upsamples):
            for unit in cast(nn.ModuleList, units):
                x = unit(x, segmap)
            x = F.silu(upsample(x))
        return self.conv_out(F.silu(self.out_norm(x, segmap)))


def one_hot(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class indices (B, X, Y, Z) → one-hot float map (B, num_classes, X, Y, Z)."""
    return F.one_hot(classes.long(), num_classes).permute(0, 4, 1, 2, 3).float()
