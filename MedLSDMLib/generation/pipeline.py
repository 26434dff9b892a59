"""Generation: label map → model grid → guided latent sampling → decoding → the input's grid.

``Generator`` is the engine's public entry: ``generate`` here, ``edit`` (edit.py) and ``reconstruct``
(reconstruct.py) composed from the same ``ModelRunner`` (runner.py) and primitives (primitives.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Tuple, Union

import numpy as np
import SimpleITK as sitk
import torch

from MedLSDMLib.generation import crop
from MedLSDMLib.generation import edit as editing
from MedLSDMLib.generation import reconstruct as reconstruction
from MedLSDMLib.generation.memory import MemoryPlan
from MedLSDMLib.generation.primitives import decoded_to_array
from MedLSDMLib.generation.runner import ModelRunner, RunOptions
from MedLSDMLib.io.geometry import check_overlap, resample, working_geometry
from MedLSDMLib.io.labels import LabelSource, class_image
from MedLSDMLib.io.mapfile import MapFile
from MedLSDMLib.io.volumes import array_to_image, image_to_array, read_image
from MedLSDMLib.runtime.progress import CancelFn, ProgressFn


@dataclass
class _WorkingGrid:
    """The model's grid for one label map, cut to the box sampled (crop.py): the grid, the classes on it, the
    latent size, the memory plan; the latent box within the whole latent grid (None: all of it) and its size."""

    grid: sitk.Image
    classes: np.ndarray
    latent_size: List[int]
    plan: MemoryPlan
    box: Optional[crop.Slices]
    whole_latent: List[int]


class Generator(ModelRunner):
    """A loaded model that turns label maps into synthetic images on the label map's grid.

    >>> generator = Generator.load("path/to/bundle")
    >>> image, = generator.generate("labels.nii.gz", seed=1)

    Args:
        bundle: the model (``ModelBundle.load``; ``Generator.load`` loads it by folder or name).
        device: ``auto``, ``cpu`` or ``cuda``, the default of each call.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``, the default of each call.
    """

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
        """Synthetic images for a label map.

        Each result lies exactly on the grid of ``reference`` when given, else of the label map. The same
        seed gives the same image.

        Args:
            labels: a label map or Slicer segmentation (.seg.nrrd), as a path or a SimpleITK image.
            reference: an image whose grid the results take (it must overlap the map), or None.
            steps: sampling steps (None: the sampler's default).
            guidance: the classifier-free guidance scale (None: the model's).
            seed: sample k uses ``seed + k`` (None: a random seed, logged).
            sampler: a name of ``sampling.samplers.SAMPLERS`` (None: the model's default).
            samples: the number of images.
            mapping: input label values or segment names -> model classes (names or values).
            map_file: a mapping file (``io.mapfile.read_map_file``), under ``mapping``.
            device: overrides the device given at load.
            precision: overrides the precision given at load.
            max_memory: GiB to stay within (None: what is free); decoding is tiled to fit.
            progress: ``progress(stage, step, total)`` of sampling and decoding.
            cancel: returns True to stop (``Cancelled`` is raised at the next step).
            log: receives the run's description (model, hardware, sampler, seed, grid).
            on_sample: ``on_sample(k, image)`` gets each image as soon as it is done (e.g. to write it); the
                images are then not kept, and the memory plan counts one image instead of ``samples``.

        Returns:
            The images, sample k at index k, with the model, seed and sampler in their metadata; [] with
            ``on_sample``.

        Raises:
            InputError: a bad option or input; ModelError: a bad model; OutOfMemory; Cancelled.
        """
        run = self.settle(sampler, steps, guidance, seed, samples, max_memory, device, precision)
        classes, target = self._map_labels(labels, reference, mapping, map_file, log)
        work = self._working_grid(classes, target, run, samples, on_sample is not None, max_memory)
        self._log_run(run, work, log)
        self.to(run.device)
        tensor = torch.from_numpy(work.classes.astype(np.int64))[None].to(run.device)
        return self.each_sample(
            run,
            tensor,
            lambda decoded, k: self._on_input_grid(decoded, work, target),
            samples=samples,
            noise_box=None if work.box is None else (work.whole_latent, work.box),
            tile=work.plan.tile,
            what="the label map",
            progress=progress,
            cancel=cancel,
            on_sample=on_sample,
        )

    def edit(self, image: Union[str, Path, sitk.Image], labels: LabelSource, **options) -> List[sitk.Image]:
        """The real ``image`` with one region regenerated from the edited ``labels``.

        Args:
            image: the real image (a path or a SimpleITK image).
            labels: the edited label map, on the image's grid.
            **options: as ``edit.edit``: ``region=MASK`` or ``original=MAP``, ``margin`` mm, and the
                sampling options of ``generate``.

        Returns:
            The edited images (outside the grown region the real voxels exactly), or [] with ``on_sample``.
        """
        return editing.edit(self, image, labels, **options)

    def reconstruct(self, image: Union[str, Path, sitk.Image], labels: LabelSource, **options) -> sitk.Image:
        """``image`` round-tripped through the autoencoder (normalise, encode, quantise, decode, de-normalise)
        on its own grid: the ceiling of any sample.

        Args:
            image: the real image (a path or a SimpleITK image).
            labels: its label map (its foreground sets the intensity normalisation).
            **options: as ``reconstruct.reconstruct`` (mapping, map_file, device, precision, progress, cancel,
                log).

        Returns:
            The round trip, float32 on the image's grid in its units.
        """
        return reconstruction.reconstruct(self, image, labels, **options)

    # -- the steps of generate ------------------------------------------------------------
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
        take) cut to the labels' latent box (crop.py), the classes on it, and the memory plan (whole or tiled
        decoding) for the run."""
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
        plan = self.plan(run, latent_size, max_memory, output_bytes)
        return _WorkingGrid(grid, on_grid, latent_size, plan, box, whole_latent)

    def _log_run(self, run: RunOptions, work: _WorkingGrid, log: Optional[Callable[[str], None]]) -> None:
        self.log_run(
            run,
            f"grid {'x'.join(map(str, work.classes.shape))} at {'x'.join(f'{s:g}' for s in self.card.spacing)} mm"
            f"{'' if work.box is None else '; sampling the labels box, ' + crop.box_text(work.box, work.whole_latent)}"
            f"{'; tiled decoding' if work.plan.tile else ''}",
            log,
        )

    def _on_input_grid(self, decoded: torch.Tensor, work: _WorkingGrid, target: sitk.Image) -> sitk.Image:
        """A decoded volume in the image's units, resampled from the working grid onto the input's grid (beyond
        the box sampled: the model's background level there, into which the box's faces fade)."""
        low, high = self.card.intensity.low, self.card.intensity.high
        array, fill = decoded_to_array(decoded, low, high), low
        if work.box is not None:
            factor = self.card.autoencoder.downsample_factor
            array, fill = crop.into_background(array, work.classes, work.box, work.whole_latent, factor, low)
        return resample(array_to_image(array, work.grid), target, sitk.sitkLinear, default=fill)
