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

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Optional, Union

import numpy as np
import SimpleITK as sitk
import torch

from .data import intensity_range, normalise
from .errors import Cancelled, InputError, OutOfMemory
from .geometry import check_overlap, resample, working_grid
from .labels import class_image
from .volumes import array_to_image, check_volume, image_to_array, read_image

if TYPE_CHECKING:
    from .mapfile import MapFile
    from .pipeline import Generator

ProgressFn = Callable[[str, int, int], None]


def reconstruct(generator: "Generator", image: Union[str, Path, sitk.Image], labels: Union[str, Path, sitk.Image], *,
                mapping: Optional[Mapping[str, str]] = None, map_file: Union["MapFile", str, Path, None] = None,
                device: Optional[str] = None, precision: Optional[str] = None,
                progress: Optional[ProgressFn] = None, cancel: Optional[Callable[[], bool]] = None,
                log: Optional[Callable[[str], None]] = None) -> sitk.Image:
    """The image round-tripped through the generator's autoencoder, on the image's grid (module docstring)."""
    from .pipeline import autocast_for, decode_latent, resolve_device, resolve_precision

    card = generator.card
    real = image if isinstance(image, sitk.Image) else read_image(image, "image")
    check_volume(real, "image")
    values = sitk.GetArrayViewFromImage(real)
    if not np.all(np.isfinite(values)):
        raise InputError("the image has NaN or infinite values: give a finite image")
    classes = class_image(labels, generator.table, mapping, map_file)
    check_overlap(classes, real)
    torch_device = resolve_device(device or generator.device_name)
    chosen = resolve_precision(precision or generator.precision_name, torch_device)
    autocast = autocast_for(torch_device, chosen)

    grid = working_grid(real, card.spacing, card.orientation, card.size_multiple)
    raw = image_to_array(resample(sitk.Cast(real, sitk.sitkFloat32), grid, sitk.sitkLinear,
                                  default=float(np.min(values))))
    foreground = image_to_array(resample(classes, grid, sitk.sitkNearestNeighbor)) > 0
    if not foreground.any():
        raise InputError("the label map's foreground does not fall inside the image: give the label map of this image")
    low, high = intensity_range(raw, foreground, card.intensity)
    if log is not None:
        log(f"model {card.name} {card.version}: autoencoder round trip on {'x'.join(map(str, raw.shape))} voxels at "
            f"{'x'.join(f'{s:g}' for s in card.spacing)} mm; intensity [{low:g}, {high:g}] -> [-1, 1]; "
            f"{torch_device.type} {chosen.name}")
    generator._to(torch_device)
    autoencoder = generator.bundle.autoencoder
    tensor = torch.from_numpy(normalise(raw, low, high))[None, None].to(torch_device)
    try:
        with torch.no_grad():
            if progress is not None:
                progress("encode", 0, 2)
            with autocast():
                latent = autoencoder.encode(tensor).float()
            if cancel is not None and cancel():
                raise Cancelled()
            if progress is not None:
                progress("encode", 1, 2)
            decoded = decode_latent(autoencoder, latent, None, autocast)
            if progress is not None:
                progress("decode", 2, 2)
    except torch.cuda.OutOfMemoryError:
        raise OutOfMemory("the GPU ran out of memory: crop the image, or use --device cpu") from None
    except RuntimeError as exc:
        if "out of memory" in str(exc) or "can't allocate memory" in str(exc):
            raise OutOfMemory("ran out of memory: crop the image, or use a machine with more memory") from None
        raise
    array = decoded[0, 0].clamp(-1, 1).cpu().numpy().astype(np.float32)
    array = (array + 1) / 2 * (high - low) + low
    result = resample(array_to_image(array, grid), real, sitk.sitkLinear, default=low)
    result = sitk.Cast(result, sitk.sitkFloat32)
    result.CopyInformation(real)
    result.SetMetaData("medlsdm_model", f"{card.name} {card.version}")
    result.SetMetaData("medlsdm_reconstruction", "autoencoder round trip")
    return result
