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
Only the box of the labels plus ``crop.CONTEXT`` latent voxels is encoded and decoded; beyond it the result is
the reconstruction's background level next to the box.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Optional, Union

import SimpleITK as sitk
import torch

from MedLSDMLib.errors import Cancelled
from MedLSDMLib.generation import crop
from MedLSDMLib.generation.primitives import (
    decoded_to_array,
    encode_image,
    out_of_memory_as_error,
    read_real,
    real_on_grid,
)
from MedLSDMLib.io.geometry import check_overlap, resample, working_grid
from MedLSDMLib.io.labels import LabelSource, class_image
from MedLSDMLib.io.volumes import array_to_image
from MedLSDMLib.models.decoding import decode_latent
from MedLSDMLib.runtime.devices import autocast_for
from MedLSDMLib.runtime.progress import ProgressFn

if TYPE_CHECKING:
    from MedLSDMLib.generation.runner import ModelRunner
    from MedLSDMLib.io.mapfile import MapFile


def reconstruct(
    runner: "ModelRunner",
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
    """The image round-tripped through the model's autoencoder, on the image's grid (module docstring).

    Args:
        runner: the loaded model (a ``Generator``).
        image: the real image.
        labels: its label map (its foreground sets the intensity normalisation), on any overlapping grid.
        mapping, map_file, device, precision, progress, cancel, log: as ``Generator.generate``.

    Returns:
        The round trip as float32 on the image's grid, in its units.
    """
    card = runner.card
    real = read_real(image)
    classes = class_image(labels, runner.table, mapping, map_file)
    check_overlap(classes, real)
    torch_device, chosen = runner.placement(device, precision)
    autocast = autocast_for(torch_device, chosen)

    grid = working_grid(real, card.spacing, card.orientation, card.size_multiple)
    raw, on_grid, low, high = real_on_grid(real, classes, grid, card.intensity)
    factor = card.autoencoder.downsample_factor
    whole = [n // factor for n in on_grid.shape]
    box = crop.foreground_box(on_grid, factor, 1, 2)  # the labels' box (crop.py)
    if box is not None:
        image_box = crop.scaled(box, factor)
        grid, raw, on_grid = grid[image_box], raw[image_box], on_grid[image_box]
    if log is not None:
        log(
            f"model {card.name} {card.version}: autoencoder round trip on {'x'.join(map(str, raw.shape))} voxels at "
            f"{'x'.join(f'{s:g}' for s in card.spacing)} mm; intensity [{low:g}, {high:g}] -> [-1, 1]; "
            f"{torch_device.type} {chosen.name}"
        )
    runner.to(torch_device)
    autoencoder = runner.bundle.autoencoder
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
    values, fill = decoded_to_array(decoded, low, high), low
    if box is not None:
        values, fill = crop.into_background(values, on_grid, box, whole, factor, low)
    result = resample(array_to_image(values, grid), real, sitk.sitkLinear, default=fill)
    result = sitk.Cast(result, sitk.sitkFloat32)
    result.CopyInformation(real)
    result.SetMetaData("medlsdm_model", f"{card.name} {card.version}")
    result.SetMetaData("medlsdm_reconstruction", "autoencoder round trip")
    return result
