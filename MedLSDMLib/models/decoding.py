"""Decoding latents to images, whole or in overlapping tiles (bounded memory)."""

from __future__ import annotations

import contextlib
import math
from typing import Callable, ContextManager, List, Optional

import torch
from monai.inferers import sliding_window_inference

from MedLSDMLib.errors import Cancelled
from MedLSDMLib.models.label_decoder import pack_map, unpack_map
from MedLSDMLib.models.networks import VQGAN
from MedLSDMLib.runtime.progress import CancelFn, ProgressFn

TILE_OVERLAP = 0.25


def _count_windows(size: List[int], roi: List[int]) -> int:
    """Number of windows sliding_window_inference visits for this size, roi and TILE_OVERLAP."""
    count = 1
    for s, r in zip(size, roi):
        interval = max(int(r * (1 - TILE_OVERLAP)), 1)
        count *= 1 if s <= r else math.ceil((s - r) / interval) + 1
    return count


def decode_latent(
    autoencoder: VQGAN,
    latent: torch.Tensor,
    classes: Optional[torch.Tensor] = None,
    tile: Optional[int] = None,
    autocast: Callable[[], ContextManager] = contextlib.nullcontext,
    progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelFn] = None,
) -> torch.Tensor:
    """Quantise and decode a latent (``classes``, the class indices (B, X, Y, Z) on the image grid, feed a
    label-conditioned decoder); with ``tile``, in overlapping windows of tile³ latent voxels blended with
    Gaussian weights (MONAI's sliding-window inference), so that memory stays bounded. The label map
    travels through the windows packed beside the latent (``pack_map``)."""
    quantized = autoencoder.quantize(latent)[0]
    segmap = autoencoder.label_map(classes)
    if tile is None:
        with autocast():
            return autoencoder.decode_quantized(quantized, segmap).float()
    factor = autoencoder.config.downsample_factor
    channels = quantized.shape[1]
    inputs = quantized if segmap is None else torch.cat([quantized, pack_map(segmap, factor)], 1)
    size = list(quantized.shape[2:])
    roi = [min(tile, s) for s in size]
    total, done = _count_windows(size, roi), [0]

    def decode_window(window: torch.Tensor) -> torch.Tensor:
        if cancel is not None and cancel():
            raise Cancelled()
        window_map = None if segmap is None else unpack_map(window[:, channels:], factor)
        with autocast():
            out = autoencoder.decode_quantized(window[:, :channels], window_map).float()
        done[0] += 1
        if progress is not None:
            progress("decode", done[0], max(total, done[0]))
        return out

    return sliding_window_inference(inputs, roi, 1, decode_window, overlap=TILE_OVERLAP, mode="gaussian")
