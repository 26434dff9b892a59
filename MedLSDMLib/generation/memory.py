"""How much memory a request needs, how much there is, and whether decoding must be tiled."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from MedLSDMLib.card import ModelCard
from MedLSDMLib.errors import OutOfMemory
from MedLSDMLib.generation.options import MAX_MEMORY_GIB
from MedLSDMLib.runtime.resources import GIB, _size, available_bytes

if TYPE_CHECKING:  # torch is imported only where a GPU is asked about: volumes use this module too
    import torch

BYTES = 4  # activations are counted as fp32: normalisation layers run in fp32 under autocast
DECODE_TILES = (32, 24, 16, 8)  # latent voxels per side of a decoding tile, largest first


def unet_bytes(card: ModelCard, latent_size: Sequence[int], batch: int) -> int:
    """Peak activations of one UNet evaluation: skip connections of every level plus the working
    set of the widest level (SPADE's hidden maps included)."""
    unet, voxels = card.unet, float(np.prod(latent_size))
    skips = sum((unet.num_res_blocks + 1) * c * voxels / 8**level for level, c in enumerate(unet.channels))
    working = 8 * max(unet.channels[0], unet.spade_intermediate_channels) * voxels
    return int(batch * (skips + working) * BYTES)


def decode_bytes(card: ModelCard, latent_size: Sequence[int], tile: Optional[int]) -> int:
    """Peak activations of decoding, whole or in tiles of ``tile``³ latent voxels, plus the
    full-size output and blending buffers."""
    factor = card.autoencoder.downsample_factor
    image_voxels = float(np.prod(latent_size)) * factor**3
    window = image_voxels if tile is None else float(np.prod([min(tile, s) for s in latent_size])) * factor**3
    widest = max(card.autoencoder.channels + card.autoencoder.num_res_channels)
    buffers = 0 if tile is None else 3 * image_voxels
    return int((4 * widest * window + buffers) * BYTES)


@dataclass
class MemoryPlan:
    needed: int  # bytes
    available: Optional[int]
    tile: Optional[int]  # latent tile size for decoding, None: decode whole


def plan_memory(
    card: ModelCard,
    latent_size: Sequence[int],
    batch: int,
    device: torch.device,
    max_memory_gib: Optional[float] = None,
    weights: int = 0,
    resident: int = 0,
) -> MemoryPlan:
    """Choose whole or tiled decoding so the request fits, or raise OutOfMemory saying what to do.
    ``max_memory_gib`` caps the budget; otherwise it is the free memory of ``device``. ``resident``:
    bytes held throughout besides the weights (the output images, counted like the weights)."""
    budget = int(min(max_memory_gib, MAX_MEMORY_GIB) * GIB) if max_memory_gib is not None else available_bytes(device)
    weights = weights + resident
    sampling = unet_bytes(card, latent_size, batch) + weights
    needed = max(sampling, decode_bytes(card, latent_size, None) + weights)
    if budget is None or needed <= budget:
        return MemoryPlan(needed, budget, None)
    for tile in DECODE_TILES:
        needed = max(sampling, decode_bytes(card, latent_size, tile) + weights)
        if needed <= budget:
            return MemoryPlan(needed, budget, tile)
    where = "GPU" if device.type == "cuda" else "RAM"
    raise OutOfMemory(
        f"this request needs about {_size(needed)} but {_size(budget)} of {where} is available: "
        "crop the label map to the region you need, or generate on a machine with more memory"
        + ("" if device.type == "cuda" else " or on a GPU (--device cuda)")
    )
