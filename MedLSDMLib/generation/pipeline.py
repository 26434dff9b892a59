"""Generation: label map → model grid → guided latent sampling → decoding → the input's grid."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Union

import numpy as np
import SimpleITK as sitk
import torch

from MedLSDMLib.card import ModelCard
from MedLSDMLib.errors import InputError, OutOfMemory
from MedLSDMLib.generation.memory import plan_memory
from MedLSDMLib.io.geometry import check_overlap, resample, working_geometry
from MedLSDMLib.io.labels import LabelSource, LabelTable, class_image
from MedLSDMLib.io.mapfile import MapFile
from MedLSDMLib.io.volumes import array_to_image, image_to_array, read_image
from MedLSDMLib.models.bundle import ModelBundle
from MedLSDMLib.models.conditioning import condition_map
from MedLSDMLib.models.decoding import decode_latent
from MedLSDMLib.models.registry import resolve_model
from MedLSDMLib.runtime.devices import autocast_for, resolve_device, resolve_precision
from MedLSDMLib.runtime.hardware import describe_run
from MedLSDMLib.runtime.progress import CancelFn, ProgressFn
from MedLSDMLib.sampling.guidance import GuidedUNet
from MedLSDMLib.sampling.loop import sample_latent
from MedLSDMLib.sampling.samplers import SAMPLERS, default_sampler, resolve_steps

MAX_SEED = 2**63 - 1


def check_generation_options(
    guidance: Optional[float] = None, seed: Optional[int] = None, samples: int = 1, max_memory: Optional[float] = None
) -> None:
    """The generation options that need no model, checked before any work; InputError names the
    option, its value and what it must be."""
    if guidance is not None and not (isinstance(guidance, (int, float)) and math.isfinite(guidance) and guidance >= 0):
        raise InputError(
            f"--guidance {guidance}: the guidance scale must be a finite number, 0 or more "
            "(the model's default is usually 1 to 5)"
        )
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise InputError(f"--samples {samples}: the number of samples must be at least 1")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED - (samples - 1)
    ):
        raise InputError(
            f"--seed {seed}: the seed must be a whole number from 0 to {MAX_SEED - (samples - 1)} "
            "(sample k uses seed + k)"
        )
    if max_memory is not None and not (
        isinstance(max_memory, (int, float)) and math.isfinite(max_memory) and max_memory > 0
    ):
        raise InputError(
            f"--max-memory {max_memory}: give the memory to stay within in GiB, a positive number "
            "such as 8 (or leave it out to use what is free)"
        )


def parse_max_memory(text: Union[str, float, None]) -> Optional[float]:
    """``--max-memory``'s value in GiB: a finite positive number, or InputError."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise InputError(
            f"--max-memory {text}: give the memory to stay within in GiB, a positive number "
            "such as 8 (or leave it out to use what is free)"
        )
    return value


class Generator:
    """A loaded model that turns label maps into synthetic images on the label map's grid.

    >>> generator = Generator.load("path/to/bundle")
    >>> image, = generator.generate("labels.nii.gz", seed=1)
    """

    def __init__(self, bundle: ModelBundle, device: str = "auto", precision: str = "auto") -> None:
        self.bundle = bundle
        self.table = LabelTable(bundle.card.labels)
        self.device_name, self.precision_name = device, precision
        self._device = torch.device("cpu")

    @classmethod
    def load(
        cls,
        model: Union[str, Path, None] = None,
        device: str = "auto",
        precision: str = "auto",
        progress: Optional[ProgressFn] = None,
    ) -> "Generator":
        """Load a bundle folder, or a model named in Resources/Models.json (None: the default one)."""
        resolve_precision(precision, resolve_device(device))  # fail early on bad options
        return cls(ModelBundle.load(resolve_model(None if model is None else str(model), progress)), device, precision)

    @property
    def card(self) -> ModelCard:
        return self.bundle.card

    def _to(self, device: torch.device) -> None:
        if device != self._device:
            self.bundle.autoencoder.to(device)
            self.bundle.unet.to(device)
            self._device = device

    @torch.no_grad()
    def generate(
        self,
        labels: LabelSource,
        reference: Union[str, Path, sitk.Image, None] = None,
        *,
        steps: Optional[int] = None,
        guidance: Optional[float] = None,
        seed: Optional[int] = None,
        sampler: Optional[str] = None,
        samples: int = 1,
        mapping: Optional[Mapping[str, str]] = None,
        map_file: Union[MapFile, str, Path, None] = None,
        device: Optional[str] = None,
        precision: Optional[str] = None,
        max_memory: Optional[float] = None,
        progress: Optional[ProgressFn] = None,
        cancel: Optional[CancelFn] = None,
        log: Optional[Callable[[str], None]] = None,
        on_sample: Optional[Callable[[int, sitk.Image], None]] = None,
    ) -> List[sitk.Image]:
        """Synthetic images for a label map (a path, a Slicer .seg.nrrd or a SimpleITK image).

        Each result lies exactly on the grid of ``reference`` when given, else of the label map.
        Sample k uses seed ``seed + k``; the same seed gives the same image. ``mapping`` maps input
        label values or segment names to model classes (names or values); ``map_file`` (mapfile.read_map_file)
        maps those it lists, under ``mapping``. With ``on_sample``, each image is handed to it as soon
        as it is done (``on_sample(k, image)``, e.g. to write it) and not kept: the list returned is
        empty, and the memory plan counts one image instead of ``samples``."""
        card = self.card
        sampler = sampler or default_sampler(card.scheduler)
        steps = resolve_steps(sampler, steps, card.scheduler)
        check_generation_options(guidance=guidance, seed=seed, samples=samples, max_memory=max_memory)
        guidance = card.default_guidance if guidance is None else float(guidance)
        seed = random.randrange(2**31) if seed is None else int(seed)
        torch_device = resolve_device(device or self.device_name)
        chosen = resolve_precision(precision or self.precision_name, torch_device)
        autocast = autocast_for(torch_device, chosen)

        classes = class_image(labels, self.table, mapping, map_file, log=log)
        if reference is None:
            target = classes
        else:
            target = reference if isinstance(reference, sitk.Image) else read_image(reference, "reference image")
            check_overlap(classes, target)
        # at least two voxels per axis at the UNet's deepest level (its normalisation needs more than one)
        spec = working_geometry(classes, card.spacing, card.orientation, card.size_multiple, 2 * card.size_multiple)
        factor = card.autoencoder.downsample_factor
        latent_size = [s // factor for s in spec.size]
        batched = SAMPLERS[sampler].batched and guidance not in (0.0, 1.0)
        # output images held at once (float32 on the target grid, and the copy a checked write reads back)
        held = (1 if on_sample is not None else samples) + 1
        output_bytes = held * 4 * int(np.prod(target.GetSize(), dtype=np.float64)) + 4 * int(
            np.prod(spec.size, dtype=np.float64)
        )
        plan = plan_memory(
            card,
            latent_size,
            2 if batched else 1,
            torch_device,
            max_memory,
            self.bundle.weight_bytes(),
            resident=output_bytes if torch_device.type == "cpu" else 0,
        )
        grid = spec.image()
        on_grid = image_to_array(resample(classes, grid, sitk.sitkNearestNeighbor))
        if log is not None:
            run = describe_run(torch_device.type, chosen, torch.get_num_threads())
            log(
                f"model {card.name} {card.version}: {run}; "
                f"sampler {sampler}, {steps} steps, guidance {guidance:g}, seed {seed}; grid "
                f"{'x'.join(map(str, on_grid.shape))} at {'x'.join(f'{s:g}' for s in card.spacing)} mm"
                f"{'; tiled decoding' if plan.tile else ''}"
            )
            if chosen.warning:
                log(f"warning: {chosen.warning}")

        self._to(torch_device)
        tensor = torch.from_numpy(on_grid.astype(np.int64))[None].to(torch_device)
        condition = condition_map(tensor, len(self.table), factor)
        model = GuidedUNet(self.bundle.unet, condition, guidance, SAMPLERS[sampler].batched, autocast)
        low, high = card.intensity.low, card.intensity.high
        results = []
        for k in range(samples):

            def sample_progress(stage: str, step: int, total: int, k: int = k) -> None:
                if progress is not None:
                    progress(stage, k * total + step, samples * total)

            generator = torch.Generator(device=torch_device).manual_seed(seed + k)
            try:
                latent = sample_latent(
                    model,
                    card.scheduler,
                    (1, card.autoencoder.latent_channels, *latent_size),
                    sampler=sampler,
                    steps=steps,
                    generator=generator,
                    progress=sample_progress,
                    cancel=cancel,
                    bounds=self.bundle.autoencoder.codebook_bounds(card.latent_scale),
                )
                decoded = decode_latent(
                    self.bundle.autoencoder, latent / card.latent_scale, tensor, plan.tile, autocast, progress, cancel
                )
            except torch.cuda.OutOfMemoryError:
                raise OutOfMemory("the GPU ran out of memory: crop the label map, or use --device cpu") from None
            except RuntimeError as exc:
                if "out of memory" in str(exc) or "can't allocate memory" in str(exc):
                    raise OutOfMemory(
                        "ran out of memory: crop the label map, or use a machine with more memory"
                    ) from None
                raise
            array = decoded[0, 0].clamp(-1, 1).cpu().numpy().astype(np.float32)
            array = (array + 1) / 2 * (high - low) + low
            image = resample(array_to_image(array, grid), target, sitk.sitkLinear, default=low)
            for key, value in (
                ("medlsdm_model", f"{card.name} {card.version}"),
                ("medlsdm_seed", str(seed + k)),
                ("medlsdm_sampler", f"{sampler} {steps} steps, guidance {guidance:g}"),
            ):
                image.SetMetaData(key, value)
            if on_sample is not None:
                on_sample(k, image)
            else:
                results.append(image)
            del image, array, decoded, latent
        return results

    def reconstruct(self, image: Union[str, Path, sitk.Image], labels: LabelSource, **options) -> sitk.Image:
        """``image`` round-tripped through the autoencoder (normalise, encode, quantise, decode, de-normalise)
        on its own grid: the ceiling of any sample. Options as reconstruct.reconstruct."""
        from MedLSDMLib.generation.reconstruct import reconstruct

        return reconstruct(self, image, labels, **options)

    def edit(self, image: Union[str, Path, sitk.Image], labels: LabelSource, **options) -> List[sitk.Image]:
        """The real ``image`` with one region regenerated from the edited ``labels`` (``region=MASK`` or
        ``original=MAP``, ``margin`` mm); outside the grown region the real voxels exactly. Options as edit.edit."""
        from MedLSDMLib.generation.edit import edit

        return edit(self, image, labels, **options)
