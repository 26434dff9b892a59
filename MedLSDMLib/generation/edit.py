"""Editing a real scan: regenerate one region from an edited label map and keep the rest exactly.

1. The region is a mask, or the voxels whose model class differs between the edited label map and the
   original one. A feathered weight is 1 on it and falls smoothly to 0 at ``margin`` mm from it; the
   voxels where it is above 0 are the grown region.
2. The real image goes onto the model's working grid and is scaled to [-1, 1] as training does
   (reconstruct.py). The grid is cut to the box of the latent region (the latent voxels touching the
   grown region, dilated by one) plus ``crop.CONTEXT`` latent voxels of real surroundings, and encoded (2, where
   the ventricle edit's seam and region look as with 4: README, "Speed and quality").
3. RePaint-style latent inpainting: after every sampling step, the latent outside the latent region is
   replaced by the real latent noised to the next timestep with a fixed noise (the sample's starting
   noise, so that DDIM and DPM-Solver follow one deterministic trajectory), and at the clean end by the
   real latent itself. The UNet, conditioned on the edited map, fills the region in agreement with it.
4. The latent is decoded, scaled back and resampled onto the real image's grid, then blended into the
   real image with the feathered weight. Where the weight is 0 the real voxels are copied, so outside
   the grown region the result is the real image, voxel for voxel, in its own pixel type.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from scipy import ndimage

from MedLSDMLib.errors import InputError
from MedLSDMLib.generation.crop import CONTEXT, latent_box
from MedLSDMLib.generation.edit_options import DEFAULT_MARGIN, check_edit_options
from MedLSDMLib.generation.primitives import (
    decoded_to_array,
    encode_image,
    out_of_memory_as_error,
    read_real,
    real_on_grid,
)
from MedLSDMLib.io.geometry import resample, same_grid, working_geometry
from MedLSDMLib.io.labels import LabelSource, class_image
from MedLSDMLib.io.volumes import MAX_EXTENT, array_to_image, image_to_array, read_image
from MedLSDMLib.models.autoencoder import latent_shape
from MedLSDMLib.runtime.progress import CancelFn, ProgressFn
from MedLSDMLib.sampling.loop import AfterStep
from MedLSDMLib.sampling.samplers import noise_scheduler

if TYPE_CHECKING:
    from monai.networks.schedulers.scheduler import Scheduler

    from MedLSDMLib.generation.runner import ModelRunner
    from MedLSDMLib.io.mapfile import MapFile

GRID_TOLERANCE = 1e-3  # mm (and direction cosines): what NIfTI's 32-bit header floats keep
Slices = Tuple[slice, slice, slice]


@dataclass
class Feather:
    """The blending weight: 1 on the region, smoothly down to 0 at the margin, 0 beyond. Only its
    box (z, y, x slices of the real image) is stored; the weight is 0 outside it."""

    box: Slices
    weight: np.ndarray  # float64, the box's shape

    @property
    def grown(self) -> np.ndarray:
        """The grown region inside the box: where the weight is above 0."""
        return self.weight > 0


def feather(region: np.ndarray, spacing: Sequence[float], margin: float) -> Feather:
    """The weight for ``region`` (a z, y, x mask on a grid of (x, y, z) ``spacing``): 1 on it, then the
    smoothstep of 1 − distance / ``margin`` (distances in mm), so that it reaches 0 with a zero slope."""
    spacing_zyx = np.asarray(spacing, dtype=float)[::-1]
    # a margin wider than any image (1e300 mm) reaches the whole image: the box, not the ramp, is bounded
    reach = np.minimum(np.ceil(min(margin, MAX_EXTENT) / spacing_zyx), region.shape).astype(int) + 1
    where = np.argwhere(region)
    low = np.maximum(where.min(axis=0) - reach, 0)
    high = np.minimum(where.max(axis=0) + 1 + reach, region.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
    distance = ndimage.distance_transform_edt(~region[box], sampling=spacing_zyx)
    ramp = np.clip(1 - distance / margin, 0.0, 1.0)
    return Feather(box, ramp * ramp * (3 - 2 * ramp))  # type: ignore[arg-type]


def mask_on_grid(mask: np.ndarray, image: sitk.Image, grid: sitk.Image) -> np.ndarray:
    """A z, y, x mask on ``image`` carried onto ``grid`` (z, y, x): the grid's voxels whose nearest voxel
    of ``image`` is in the mask, and those nearest to a voxel of the mask (so that neither a finer nor
    a coarser grid loses a thin part of it)."""
    source = sitk.GetImageFromArray(mask.astype(np.uint8))
    source.CopyInformation(image)
    nearest = sitk.GetArrayFromImage(resample(source, grid, sitk.sitkNearestNeighbor)) > 0
    index = np.argwhere(mask)[:, ::-1].astype(float)  # x, y, z
    direction = np.array(image.GetDirection()).reshape(3, 3)
    points = (index * np.array(image.GetSpacing())) @ direction.T + np.array(image.GetOrigin())
    grid_direction = np.array(grid.GetDirection()).reshape(3, 3)
    on_grid = np.rint((points - np.array(grid.GetOrigin())) @ grid_direction / np.array(grid.GetSpacing()))
    inside = np.all((on_grid >= 0) & (on_grid < np.array(grid.GetSize())), axis=1)
    x, y, z = on_grid[inside].astype(int).T
    nearest[z, y, x] = True
    return nearest


def read_region(region: Union[str, Path, sitk.Image], real: sitk.Image) -> np.ndarray:
    """The region mask (0 outside, 1 inside; any grid) as a z, y, x mask on the real image's grid."""
    name = "the region mask" if isinstance(region, sitk.Image) else f"region mask {Path(region).name}"
    mask = region if isinstance(region, sitk.Image) else read_image(region, "region mask")
    values = sitk.GetArrayFromImage(mask)
    binary = (values == 0) | (values == 1)
    if not binary.all():
        raise InputError(
            f"{name} has values other than 0 and 1 (e.g. {values[~binary].flat[0]:g}): give a binary "
            "mask, 1 where the image is to be regenerated"
        )
    if not values.any():
        raise InputError(f"{name} is empty: mark the region to regenerate with 1")
    on_real = values > 0 if same_grid(mask, real, GRID_TOLERANCE) else mask_on_grid(values > 0, mask, real)
    if not on_real.any():
        raise InputError(f"{name} lies outside the image: draw the region on the image you edit")
    return on_real


def check_on_grid(image: sitk.Image, real: sitk.Image, what: str) -> None:
    """``image`` lies on the real image's grid, or InputError naming the difference."""
    if not same_grid(image, real, GRID_TOLERANCE):

        def grid(i: sitk.Image) -> str:
            return (
                f"size {'x'.join(map(str, i.GetSize()))}, spacing {', '.join(f'{s:g}' for s in i.GetSpacing())}, "
                f"origin {', '.join(f'{o:g}' for o in i.GetOrigin())}"
            )

        raise InputError(
            f"{what} is on another grid ({grid(image)}) than the image ({grid(real)}): give it on the "
            "image's grid (in Slicer, export the segmentation with the image as reference)"
        )


def changed_region(labels: sitk.Image, original: sitk.Image) -> np.ndarray:
    """The voxels (z, y, x) whose model class the edit changed, or InputError when there are none."""
    changed = sitk.GetArrayViewFromImage(labels) != sitk.GetArrayViewFromImage(original)
    if not changed.any():
        raise InputError(
            "the edited and the original label maps give the same model class everywhere, so there "
            "is nothing to regenerate (an edit of labels the model does not know, or that map to one "
            "class, changes nothing): edit the map, or give --region MASK"
        )
    return changed


def keep_known(known: torch.Tensor, noise: torch.Tensor, inside: torch.Tensor, scheduler: "Scheduler") -> AfterStep:
    """The sampler's ``after_step``: outside ``inside``, the known latent noised to the next timestep
    (with ``noise``); at the clean end (t_next < 0), the known latent."""

    def after_step(x: torch.Tensor, t_next: int) -> torch.Tensor:
        if t_next < 0:
            outside = known
        else:
            outside = scheduler.add_noise(known, noise, torch.tensor([t_next], device=x.device))
        return torch.where(inside, x, outside)

    return after_step


def blend(real: sitk.Image, generated: sitk.Image, feathered: Feather) -> sitk.Image:
    """``generated`` resampled onto the real grid and blended into a copy of ``real`` with the feathered
    weight; voxels of weight 0 keep the real value and type exactly."""
    z, y, x = feathered.box
    values = sitk.GetArrayFromImage(real)
    part = values[feathered.box]
    on_real = sitk.GetArrayFromImage(resample(generated, real[x, y, z], sitk.sitkLinear, default=float("nan")))
    on_real = np.where(np.isnan(on_real), part, on_real)  # beyond the generated grid (at the image's edge): real
    weight = feathered.weight
    mixed = weight * on_real + (1 - weight) * part
    if np.issubdtype(part.dtype, np.integer):
        limits = np.iinfo(part.dtype)
        mixed = np.clip(np.rint(mixed), limits.min, limits.max)
    values[feathered.box] = np.where(feathered.grown, mixed.astype(part.dtype), part)
    result = sitk.GetImageFromArray(values)
    result.CopyInformation(real)
    return result


def edit(
    runner: "ModelRunner",
    image: Union[str, Path, sitk.Image],
    labels: LabelSource,
    *,
    region: Union[str, Path, sitk.Image, None] = None,
    original: Optional[LabelSource] = None,
    margin: float = DEFAULT_MARGIN,
    steps: Optional[int] = None,
    guidance: Optional[float] = None,
    seed: Optional[int] = None,
    sampler: Optional[str] = None,
    samples: int = 1,
    mapping: Optional[Mapping[str, str]] = None,
    map_file: Union["MapFile", str, Path, None] = None,
    device: Optional[str] = None,
    precision: Optional[str] = None,
    max_memory: Optional[float] = None,
    progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelFn] = None,
    log: Optional[Callable[[str], None]] = None,
    on_sample: Optional[Callable[[int, sitk.Image], None]] = None,
) -> List[sitk.Image]:
    """The real ``image`` with one region regenerated from the edited ``labels`` (module docstring).

    Args:
        runner: the loaded model (a ``Generator``).
        image: the real image.
        labels: the edited label map, on the image's grid.
        region: a binary mask of the region (any grid), or None with ``original``.
        original: the label map before the edit, on the image's grid: the region is where the model
            classes differ. Exactly one of ``region`` and ``original``.
        margin: mm over which the region fades into the real image.
        steps, guidance, seed, sampler, samples, mapping, map_file, device, precision, max_memory, progress,
        cancel, log, on_sample: as ``Generator.generate``; sample k uses seed ``seed + k``.

    Returns:
        The edited images (real voxels exactly outside the grown region, in the image's pixel type), or []
        with ``on_sample``.
    """
    card = runner.card
    run = runner.settle(sampler, steps, guidance, seed, samples, max_memory, device, precision)
    check_edit_options(region, original, margin)

    real = read_real(image)
    classes = class_image(labels, runner.table, mapping, map_file, log=log)
    check_on_grid(classes, real, "the edited label map")
    if original is not None:
        before = class_image(original, runner.table, mapping, map_file)
        check_on_grid(before, real, "the original label map")
        edited = changed_region(classes, before)
    else:
        before, edited = classes, read_region(region, real)  # type: ignore[arg-type]
    feathered = feather(edited, real.GetSpacing(), margin)

    # the working grid around the whole image (the intensity range is the whole image's, as in training),
    # then cut to the latent region's box with its context
    grid = working_geometry(real, card.spacing, card.orientation, card.size_multiple, 2 * card.size_multiple).image()
    raw, _, low, high = real_on_grid(real, before, grid, card.intensity)
    grown = np.zeros(sitk.GetArrayViewFromImage(real).shape, dtype=bool)
    grown[feathered.box] = feathered.grown
    factor = card.autoencoder.downsample_factor
    touched = torch.from_numpy(mask_on_grid(grown, real, grid).transpose(2, 1, 0).astype(np.float32))[None, None]
    inside = F.max_pool3d(F.max_pool3d(touched, factor), 3, stride=1, padding=1)[0, 0] > 0
    box = latent_box(inside.numpy(), card.size_multiple // factor, 2 * card.size_multiple // factor, CONTEXT)
    image_box = tuple(slice(s.start * factor, s.stop * factor) for s in box)
    crop = grid[image_box]
    latent_size = [s.stop - s.start for s in box]

    held = (1 if on_sample is not None else samples) + 1  # results, and the copy a checked write reads back
    real_bytes = int(np.prod(real.GetSize(), dtype=np.float64)) * max(4, real.GetSizeOfPixelComponent())
    plan = runner.plan(run, latent_size, max_memory, held * real_bytes)
    runner.log_run(
        run,
        f"edit of {int(edited.sum())} voxels grown by {margin:g} mm; latent region {int(inside[box].sum())} of "
        f"{int(np.prod(latent_size))} latent voxels on a {'x'.join(map(str, crop.GetSize()))} grid at "
        f"{'x'.join(f'{s:g}' for s in card.spacing)} mm{'; tiled decoding' if plan.tile else ''}",
        log,
    )

    runner.to(run.device)
    autoencoder = runner.bundle.autoencoder
    classes_on_crop = image_to_array(resample(classes, crop, sitk.sitkNearestNeighbor)).astype(np.int64)
    crop_classes = torch.from_numpy(classes_on_crop)[None].to(run.device)
    scheduler = noise_scheduler(card.scheduler)
    shape = latent_shape(autoencoder, classes_on_crop.shape)
    inside_crop = inside[box].to(run.device)[None, None]
    what = "the image around the region"
    with out_of_memory_as_error(what), torch.no_grad():
        known = encode_image(autoencoder, raw[image_box], low, high, run.device, run.autocast) * card.latent_scale
        if progress is not None:
            progress("encode", 1, 1)

    def inpaint(k: int) -> AfterStep:
        """Sample k's after_step: the known part noised with the starting noise sample_latent draws from
        the same seed."""
        noise = torch.randn(
            shape,
            generator=torch.Generator(device=run.device).manual_seed(run.seed + k),
            device=run.device,
            dtype=torch.float32,
        )
        return keep_known(known, noise, inside_crop, scheduler)

    note = f"{int(edited.sum())} voxels grown by {margin:g} mm"

    def finish(decoded: torch.Tensor, k: int) -> sitk.Image:
        result = blend(real, array_to_image(decoded_to_array(decoded, low, high), crop), feathered)
        result.SetMetaData("medlsdm_edit", note)
        if progress is not None:
            progress("decode", k + 1, samples)
        return result

    return runner.each_sample(
        run,
        crop_classes,
        finish,
        samples=samples,
        tile=plan.tile,
        what=what,
        progress=progress,
        cancel=cancel,
        on_sample=on_sample,
        after_step=inpaint,
    )
