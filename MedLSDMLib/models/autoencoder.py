"""The one interface generation uses to reach an autoencoder: ``LatentAutoencoder``.

Decoding, reconstruction, editing, the bundle and the pipeline use an autoencoder only through these
members, as MONAI's ``LatentDiffusionInferer`` uses any autoencoder through ``encode_stage_2_inputs`` and
``decode_stage_2_outputs``. ``networks.VQGAN`` is the implementation the bundles hold; another one (the test
double in Testing/engine/models/test_autoencoder_protocol.py) works wherever a ``LatentAutoencoder`` goes.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional, Protocol, Sequence, Tuple, runtime_checkable

import torch
from torch import nn

from MedLSDMLib.card import AutoencoderConfig


@runtime_checkable
class LatentAutoencoder(Protocol):
    """An autoencoder with a quantised latent, decoding with the label map when its decoder takes one.

    ``config`` gives the latent's channels (``latent_channels``) and the downsampling factor
    (``downsample_factor``) between the image and the latent grid; ``to`` and ``parameters`` are
    ``torch.nn.Module``'s (the device move and the memory plan)."""

    config: AutoencoderConfig

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The continuous latent of images.

        Args:
            images: (B, C, X, Y, Z) in [-1, 1], each size a multiple of ``config.downsample_factor``.

        Returns:
            (B, latent_channels, X/f, Y/f, Z/f).
        """
        ...

    def quantize(self, latent: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The nearest codebook vectors of a latent, in fp32 whatever the autocast.

        Returns:
            (quantised latent of the latent's shape, the quantisation loss).
        """
        ...

    def label_map(self, classes: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """What the decoder is fed besides the latent.

        Args:
            classes: class indices (B, X, Y, Z) on the image grid, or None.

        Returns:
            The decoder's map (e.g. one-hot), or None when the decoder takes no map.
        """
        ...

    def decode_quantized(self, quantized: torch.Tensor, segmap: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Images from a quantised latent.

        Args:
            quantized: (B, latent_channels, x, y, z), a window of the latent or all of it.
            segmap: ``label_map``'s map of the same window at image resolution, or None.

        Returns:
            (B, C, x·f, y·f, z·f) in about [-1, 1].
        """
        ...

    def codebook_bounds(self, scale: float = 1.0) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per latent channel, the least and greatest codebook value times ``scale``, shaped (1, C, 1, 1, 1):
        the box every quantised (and scaled) latent lies in."""
        ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...


def latent_shape(autoencoder: LatentAutoencoder, size: Sequence[int]) -> Tuple[int, ...]:
    """The latent of one image: (1, latent_channels, X/f, Y/f, Z/f) for an image of ``size`` (X, Y, Z)
    voxels, each a multiple of the downsampling factor f."""
    factor = autoencoder.config.downsample_factor
    return (1, autoencoder.config.latent_channels, *(s // factor for s in size))
