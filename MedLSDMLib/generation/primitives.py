"""What generate, edit and reconstruct share below them: reading a real image and putting it on the model's
grid scaled as training scales it, encoding it, turning a decoded volume back into the image's units, and
running out of memory as a clear error."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ContextManager, Iterator, Tuple, Union

import numpy as np
import SimpleITK as sitk
import torch

from MedLSDMLib.errors import InputError, OutOfMemory
from MedLSDMLib.io.geometry import resample
from MedLSDMLib.io.preprocess import check_intensities, denormalise, intensities_on_grid, intensity_range, normalise
from MedLSDMLib.io.volumes import check_volume, image_to_array, read_image

if TYPE_CHECKING:
    from MedLSDMLib.card import IntensityConfig
    from MedLSDMLib.models.autoencoder import LatentAutoencoder


def read_real(image: Union[str, Path, sitk.Image], what: str = "image") -> sitk.Image:
    """A real image, read and checked: a 3D scalar volume on a usable grid with finite values."""
    real = image if isinstance(image, sitk.Image) else read_image(image, what)
    check_volume(real, what)
    check_intensities(real, what)
    return real


def real_on_grid(
    real: sitk.Image, classes: sitk.Image, grid: sitk.Image, intensity: "IntensityConfig"
) -> Tuple[np.ndarray, np.ndarray, float, float]:
    """``real`` resampled linearly onto ``grid`` (outside it: its minimum, as training pads), ``classes``
    on it (nearest neighbour, int64), and the range [low, high] that training's normalisation maps to
    [-1, 1] (``classes`` > 0 is the foreground)."""
    raw = intensities_on_grid(real, grid)
    on_grid = image_to_array(resample(classes, grid, sitk.sitkNearestNeighbor)).astype(np.int64)
    foreground = on_grid > 0
    if not foreground.any():
        raise InputError("the label map's foreground does not fall inside the image: give the label map of this image")
    low, high = intensity_range(raw, foreground, intensity)
    return raw, on_grid, low, high


def encode_image(
    autoencoder: "LatentAutoencoder",
    raw: np.ndarray,
    low: float,
    high: float,
    device: torch.device,
    autocast: Callable[[], ContextManager],
) -> torch.Tensor:
    """The autoencoder's (unquantised) latent of ``raw`` scaled to [-1, 1] as training scales it."""
    tensor = torch.from_numpy(normalise(raw, low, high))[None, None].to(device)
    with autocast():
        return autoencoder.encode(tensor).float()


def decoded_to_array(decoded: torch.Tensor, low: float, high: float) -> np.ndarray:
    """A decoded (1, 1, X, Y, Z) tensor in [-1, 1] back in the image's units [low, high], as float32."""
    return denormalise(decoded[0, 0].cpu().numpy(), low, high)


@contextlib.contextmanager
def out_of_memory_as_error(what: str = "the image") -> Iterator[None]:
    """Running out of GPU or CPU memory in the block is an OutOfMemory line saying what to do."""
    try:
        yield
    except torch.cuda.OutOfMemoryError:
        raise OutOfMemory(f"the GPU ran out of memory: crop {what}, or use --device cpu") from None
    except RuntimeError as exc:
        if "out of memory" in str(exc) or "can't allocate memory" in str(exc):
            raise OutOfMemory(f"ran out of memory: crop {what}, or use a machine with more memory") from None
        raise
