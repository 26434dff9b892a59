"""The SPADE conditioning map: one-hot classes at latent resolution, and the null map of guidance."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def condition_map(classes: torch.Tensor, num_classes: int, downsample: int) -> torch.Tensor:
    """Class indices (B, X, Y, Z) → class fractions (B, num_classes, X/f, Y/f, Z/f).

    Each latent voxel holds the fraction of its f³ image voxels in each class, so thin
    structures survive the downsampling that a nearest-neighbour pick would lose."""
    one_hot = F.one_hot(classes.long(), num_classes).permute(0, 4, 1, 2, 3).float()
    return F.avg_pool3d(one_hot, downsample) if downsample > 1 else one_hot


def null_map(condition: torch.Tensor) -> torch.Tensor:
    """The map of "no label information": all zeros. Training's label dropout replaces maps with
    exactly this, and classifier-free guidance uses it for the unconditional branch."""
    return torch.zeros_like(condition)
