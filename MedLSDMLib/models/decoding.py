"""Decoding latents to images, whole or in tiles with a halo of context (bounded memory)."""

from __future__ import annotations

import contextlib
import itertools
from typing import TYPE_CHECKING, Callable, ContextManager, List, Optional, Tuple, Union

import torch

from MedLSDMLib.errors import Cancelled
from MedLSDMLib.models.autoencoder import LatentAutoencoder
from MedLSDMLib.runtime.progress import CancelFn, ProgressFn

if TYPE_CHECKING:
    from types import EllipsisType


def tile_halo(tile: int) -> int:
    """Latent voxels of context decoded around each tile's kept core, on every side: a quarter of the
    tile, which covers the decoders' reach (about 5 latent voxels) for the tiles memory planning picks."""
    return max(1, tile // 4)


def tile_windows(size: List[int], tile: int) -> List[Tuple[Tuple[slice, ...], Tuple[slice, ...], Tuple[slice, ...]]]:
    """(window, core, core within the window) latent boxes that tile ``size``: each window is at most
    ``tile`` voxels a side, its core (what is kept) the window less ``tile_halo`` voxels of context on each
    side that is not the volume's edge. The cores cover the volume once."""
    halo = tile_halo(tile)
    core = max(1, tile - 2 * halo)
    per_axis = []
    for s in size:
        boxes = []
        for start in range(0, s, core):
            stop = min(start + core, s)
            low, high = max(0, start - halo), min(s, stop + halo)
            boxes.append((slice(low, high), slice(start, stop), slice(start - low, stop - low)))
        per_axis.append(boxes)
    return [tuple(zip(*combination)) for combination in itertools.product(*per_axis)]


def _index(box: Tuple[slice, ...], scale: int = 1) -> Tuple[Union[slice, "EllipsisType"], ...]:
    """The tensor index of a (B, C, X, Y, Z) tensor for a latent box, scaled to the image by ``scale``."""
    return (Ellipsis, *(slice(b.start * scale, b.stop * scale) for b in box))


def decode_latent(
    autoencoder: LatentAutoencoder,
    latent: torch.Tensor,
    classes: Optional[torch.Tensor] = None,
    tile: Optional[int] = None,
    autocast: Callable[[], ContextManager] = contextlib.nullcontext,
    progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelFn] = None,
) -> torch.Tensor:
    """Quantise and decode a latent (``classes``, the class indices (B, X, Y, Z) on the image grid, feed a
    label-conditioned decoder). With ``tile``, window by window (``tile_windows``): each window is decoded
    with its halo of context and only its core is kept, so memory stays bounded and the tiles meet
    without a seam."""
    quantized = autoencoder.quantize(latent)[0]
    segmap = autoencoder.label_map(classes)
    if tile is None or all(s <= tile for s in quantized.shape[2:]):
        with autocast():
            return autoencoder.decode_quantized(quantized, segmap).float()
    f = autoencoder.config.downsample_factor
    windows = tile_windows(list(quantized.shape[2:]), tile)
    output: Optional[torch.Tensor] = None
    for done, (window, core, inner) in enumerate(windows, 1):
        if cancel is not None and cancel():
            raise Cancelled()
        window_map = None if segmap is None else segmap[_index(window, f)]
        with autocast():
            decoded = autoencoder.decode_quantized(quantized[_index(window)], window_map).float()
        if output is None:
            shape = (*decoded.shape[:2], *(s * f for s in quantized.shape[2:]))
            output = torch.empty(shape, dtype=torch.float32, device=decoded.device)
        output[_index(core, f)] = decoded[_index(inner, f)]
        if progress is not None:
            progress("decode", done, len(windows))
    assert output is not None
    return output
