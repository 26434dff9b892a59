"""Generation: label map → model grid → guided latent sampling → decoding → the input's grid."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import SimpleITK as sitk
import torch

from MedLSDMLib.card import ModelCard
from MedLSDMLib.errors import InputError
from MedLSDMLib.generation import crop
from MedLSDMLib.generation.memory import MemoryPlan, plan_memory
from MedLSDMLib.generation.reconstruct import decoded_to_array, out_of_memory_as_error
from MedLSDMLib.io.geometry import check_overlap, resample, working_geometry
from MedLSDMLib.io.labels import LabelSource, LabelTable, class_image
from MedLSDMLib.io.mapfile import MapFile
from MedLSDMLib.io.volumes import array_to_image, image_to_array, read_image
from MedLSDMLib.models.bundle import ModelBundle
from MedLSDMLib.models.conditioning import condition_map
from MedLSDMLib.models.decoding import decode_latent
from MedLSDMLib.models.registry import resolve_model
from MedLSDMLib.runtime.devices import autocast_for, resolve_device, resolve_precision
from MedLSDMLib.runtime.hardware import Precision, describe_run
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


@dataclass
class RunOptions:
    """One generate call's options, checked and with the defaults filled in."""

    sampler: str
    steps: int
    guidance: float
    seed: int
    device: torch.device
    precision: Precision
    autocast: Callable[[], ContextManager[Any]]
    batched: bool  # the sampler's guidance runs both branches in one UNet pass

    def metadata(self, card: ModelCard, k: int) -> Dict[str, str]:
        """What sample k's image says of itself: the model, its seed (seed + k) and the sampling."""
        return {
            "medlsdm_model": f"{card.name} {card.version}",
            "medlsdm_seed": str(self.seed + k),
            "medlsdm_sampler": f"{self.sampler} {self.steps} steps, guidance {self.guidance:g}",
        }


@dataclass
class _WorkingGrid:
    """The model's grid for one label map, cut to the box sampled (crop.py): the grid, the classes on it, the
    latent size, the memory plan; the latent box within the whole latent grid (None: all of it) and its size."""

    grid: sitk.Image
    classes: np.ndarray
    factor: int
    latent_size: List[int]
    plan: MemoryPlan
    box: Optional[crop.Slices]
    whole_latent: List[int]


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
        run = self.settle(sampler, steps, guidance, seed, samples, max_memory, device, precision)
        classes, target = self._map_labels(labels, reference, mapping, map_file, log)
        work = self._working_grid(classes, target, run, samples, on_sample is not None, max_memory)
        self._log_run(run, work, log)
        self._to(run.device)
        tensor = torch.from_numpy(work.classes.astype(np.int64))[None].to(run.device)
        model = GuidedUNet(
            self.bundle.unet,
            condition_map(tensor, len(self.table), work.factor),
            run.guidance,
            run.batched,
            run.autocast,
        )
        results = []
        for k in range(samples):
            with out_of_memory_as_error("the label map"):
                latent = self._sample(model, run, work, k, samples, progress, cancel)
                decoded = decode_latent(
                    self.bundle.autoencoder,
                    latent / self.card.latent_scale,
                    tensor,
                    work.plan.tile,
                    run.autocast,
                    progress,
                    cancel,
                )
            del latent
            image = self._on_input_grid(decoded, work, target, run, k)
            del decoded
            if on_sample is not None:
                on_sample(k, image)
            else:
                results.append(image)
            del image
        return results

    # -- the steps of generate ------------------------------------------------------------
    def settle(
        self,
        sampler: Optional[str],
        steps: Optional[int],
        guidance: Optional[float],
        seed: Optional[int],
        samples: int,
        max_memory: Optional[float],
        device: Optional[str],
        precision: Optional[str],
    ) -> RunOptions:
        """Check the options and fill in the defaults: the sampler and its steps, the guidance, a seed,
        the device and the precision (generate's first step, and edit's)."""
        card = self.card
        sampler = sampler or default_sampler(card.scheduler)
        steps = resolve_steps(sampler, steps, card.scheduler)
        check_generation_options(guidance=guidance, seed=seed, samples=samples, max_memory=max_memory)
        scale = card.default_guidance if guidance is None else float(guidance)
        torch_device = resolve_device(device or self.device_name)
        chosen = resolve_precision(precision or self.precision_name, torch_device)
        return RunOptions(
            sampler=sampler,
            steps=steps,
            guidance=scale,
            seed=random.randrange(2**31) if seed is None else int(seed),
            device=torch_device,
            precision=chosen,
            autocast=autocast_for(torch_device, chosen),
            batched=SAMPLERS[sampler].batched,
        )

    def _map_labels(
        self,
        labels: LabelSource,
        reference: Union[str, Path, sitk.Image, None],
        mapping: Optional[Mapping[str, str]],
        map_file: Union[MapFile, str, Path, None],
        log: Optional[Callable[[str], None]],
    ) -> Tuple[sitk.Image, sitk.Image]:
        """The label map as model classes, and the grid the results go on (the reference's, which must
        overlap the map, or the map's own)."""
        classes = class_image(labels, self.table, mapping, map_file, log=log)
        if reference is None:
            return classes, classes
        target = reference if isinstance(reference, sitk.Image) else read_image(reference, "reference image")
        check_overlap(classes, target)
        return classes, target

    def _working_grid(
        self,
        classes: sitk.Image,
        target: sitk.Image,
        run: RunOptions,
        samples: int,
        streamed: bool,
        max_memory: Optional[float],
    ) -> _WorkingGrid:
        """The model's grid around the map (its spacing and orientation, padded to what the networks
        take), the classes on it, and the memory plan (whole or tiled decoding) for the run."""
        card = self.card
        # at least two voxels per axis at the UNet's deepest level (its normalisation needs more than one)
        spec = working_geometry(classes, card.spacing, card.orientation, card.size_multiple, 2 * card.size_multiple)
        factor = card.autoencoder.downsample_factor
        grid = spec.image()
        on_grid = image_to_array(resample(classes, grid, sitk.sitkNearestNeighbor))
        whole_latent = [s // factor for s in spec.size]
        box = crop.foreground_box(on_grid, factor, card.size_multiple // factor, 2 * card.size_multiple // factor)
        if box is not None:
            image_box = crop.scaled(box, factor)
            grid, on_grid = grid[image_box], on_grid[image_box]
        latent_size = [s // factor for s in on_grid.shape]
        # output images held at once (float32 on the target grid, and the copy a checked write reads back)
        held = (1 if streamed else samples) + 1
        output_bytes = held * 4 * int(np.prod(target.GetSize(), dtype=np.float64)) + 4 * int(
            np.prod(on_grid.shape, dtype=np.float64)
        )
        plan = plan_memory(
            card,
            latent_size,
            2 if run.batched and run.guidance not in (0.0, 1.0) else 1,
            run.device,
            max_memory,
            self.bundle.weight_bytes(),
            resident=output_bytes if run.device.type == "cpu" else 0,
        )
        return _WorkingGrid(grid, on_grid, factor, latent_size, plan, box, whole_latent)

    def _log_run(self, run: RunOptions, work: _WorkingGrid, log: Optional[Callable[[str], None]]) -> None:
        if log is None:
            return
        card = self.card
        hardware = describe_run(run.device.type, run.precision, torch.get_num_threads())
        log(
            f"model {card.name} {card.version}: {hardware}; "
            f"sampler {run.sampler}, {run.steps} steps, guidance {run.guidance:g}, seed {run.seed}; grid "
            f"{'x'.join(map(str, work.classes.shape))} at {'x'.join(f'{s:g}' for s in card.spacing)} mm"
            f"{'' if work.box is None else '; sampling the labels box, ' + crop.box_text(work.box, work.whole_latent)}"
            f"{'; tiled decoding' if work.plan.tile else ''}"
        )
        if run.precision.warning:
            log(f"warning: {run.precision.warning}")

    def _sample(
        self,
        model: GuidedUNet,
        run: RunOptions,
        work: _WorkingGrid,
        k: int,
        samples: int,
        progress: Optional[ProgressFn],
        cancel: Optional[CancelFn],
    ) -> torch.Tensor:
        """Sample k's latent (seed + k), its progress counted within all ``samples``."""
        card = self.card

        def sample_progress(stage: str, step: int, total: int) -> None:
            if progress is not None:
                progress(stage, k * total + step, samples * total)

        generator = torch.Generator(device=run.device).manual_seed(run.seed + k)
        shape = (1, card.autoencoder.latent_channels, *work.latent_size)
        noise = None
        if work.box is not None:  # the box of the whole grid's noise: the box is sampled as the whole would be
            whole = (1, card.autoencoder.latent_channels, *work.whole_latent)
            noise = torch.randn(whole, generator=generator, device=run.device, dtype=torch.float32)
            noise = noise[(slice(None), slice(None)) + work.box].contiguous()
        return sample_latent(
            model,
            card.scheduler,
            shape,
            sampler=run.sampler,
            steps=run.steps,
            generator=generator,
            noise=noise,
            progress=sample_progress,
            cancel=cancel,
            bounds=self.bundle.autoencoder.codebook_bounds(card.latent_scale),
        )

    def _on_input_grid(
        self, decoded: torch.Tensor, work: _WorkingGrid, target: sitk.Image, run: RunOptions, k: int
    ) -> sitk.Image:
        """A decoded volume in the image's units, resampled from the working grid onto the input's grid (beyond
        the box sampled: the model's background level there), with the model, seed and sampler in its metadata."""
        card = self.card
        low, high = card.intensity.low, card.intensity.high
        array = decoded_to_array(decoded, low, high)
        fill = low
        if work.box is not None:
            array, fill = crop.into_background(array, work.classes, work.box, work.whole_latent, work.factor, low)
        image = resample(array_to_image(array, work.grid), target, sitk.sitkLinear, default=fill)
        for key, value in run.metadata(card, k).items():
            image.SetMetaData(key, value)
        return image

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
