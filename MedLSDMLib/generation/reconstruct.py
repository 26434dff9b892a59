"""The autoencoder round trip: a real image normalised as training does, encoded, quantised, decoded and
de-normalised, on the image's own grid. No sample of the model can be closer to the real image than
this: it is the ceiling of any sample, and ``medlsdm evaluate`` scores it like a synthetic image.

Steps (those of training and generation, so that the round trip sees what the networks saw):
1. the label map's classes (mapped like ``generate`` maps them) and the image are resampled onto the
   model's working grid around the image (model spacing and orientation, sizes padded to what the
   networks take): image linearly (outside the image: its minimum, as training pads), labels by
   nearest neighbour;
2. the image is scaled to [-1, 1] as training scales it: foreground percentiles (``intensity.mode:
   percentile``) or the card's window (``window``), then clipped;
3. encode, quantise (fp32), decode;
4. the result is scaled back with the same range, so it is in the image's own units, and resampled
   linearly onto the image's exact grid.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ContextManager, Iterator, Mapping, Optional, Tuple, Union

import numpy as np
import SimpleITK as sitk
import torch

from MedLSDMLib.errors import Cancelled, InputError, OutOfMemory
from MedLSDMLib.io.geometry import check_overlap, resample, working_grid
from MedLSDMLib.io.labels import LabelSource, class_image
from MedLSDMLib.io.preprocess import check_intensities, denormalise, intensities_on_grid, intensity_range, normalise
from MedLSDMLib.io.volumes import array_to_image, check_volume, image_to_array, read_image
from MedLSDMLib.runtime.progress import ProgressFn

if TYPE_CHECKING:
    from MedLSDMLib.card import IntensityConfig
    from MedLSDMLib.generation.pipeline import Generator
    from MedLSDMLib.io.mapfile import MapFile
    from MedLSDMLib.models.networks import VQGAN


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
    autoencoder: "VQGAN",
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


def reconstruct(
    generator: "Generator",
    image: Union[str, Path, sitk.Image],
    labels: LabelSource,
    *,
    mapping: Optional[Mapping[str, str]] = None,
    map_file: Union["MapFile", str, Path, None] = None,
    device: Optional[str] = None,
    precision: Optional[str] = None,
    progress: Optional[ProgressFn] = None,
    cancel: Optional[Callable[[], bool]] = None,
    log: Optional[Callable[[str], None]] = None,
) -> sitk.Image:
    """The image round-tripped through the generator's autoencoder, on the image's grid (module docstring)."""
    from MedLSDMLib.models.decoding import decode_latent
    from MedLSDMLib.runtime.devices import autocast_for, resolve_device, resolve_precision

    card = generator.card
    real = read_real(image)
    classes = class_image(labels, generator.table, mapping, map_file)
    check_overlap(classes, real)
    torch_device = resolve_device(device or generator.device_name)
    chosen = resolve_precision(precision or generator.precision_name, torch_device)
    autocast = autocast_for(torch_device, chosen)

    grid = working_grid(real, card.spacing, card.orientation, card.size_multiple)
    raw, on_grid, low, high = real_on_grid(real, classes, grid, card.intensity)
    if log is not None:
        log(
            f"model {card.name} {card.version}: autoencoder round trip on {'x'.join(map(str, raw.shape))} voxels at "
            f"{'x'.join(f'{s:g}' for s in card.spacing)} mm; intensity [{low:g}, {high:g}] -> [-1, 1]; "
            f"{torch_device.type} {chosen.name}"
        )
    generator._to(torch_device)
    autoencoder = generator.bundle.autoencoder
    with out_of_memory_as_error(), torch.no_grad():
        latent = encode_image(autoencoder, raw, low, high, torch_device, autocast)
        if cancel is not None and cancel():
            raise Cancelled()
        if progress is not None:
            progress("encode", 1, 2)
        decoded = decode_latent(
            autoencoder, latent, torch.from_numpy(on_grid)[None].to(torch_device), autocast=autocast
        )
        if progress is not None:
            progress("decode", 2, 2)
    result = resample(array_to_image(decoded_to_array(decoded, low, high), grid), real, sitk.sitkLinear, default=low)
    result = sitk.Cast(result, sitk.sitkFloat32)
    result.CopyInformation(real)
    result.SetMetaData("medlsdm_model", f"{card.name} {card.version}")
    result.SetMetaData("medlsdm_reconstruction", "autoencoder round trip")
    return result
