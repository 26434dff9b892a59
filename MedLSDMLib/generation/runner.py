"""A loaded model ready to sample: its options settled (``RunOptions``), its networks moved to a device,
and the one per-sample loop generate and edit share (sample → decode → the image, with its metadata).

``pipeline.Generator`` builds on ``ModelRunner`` (generate, and edit and reconstruct through edit.py and
reconstruct.py, which take a ``ModelRunner`` and so never import the pipeline)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, List, Optional, Sequence, Tuple, Type, TypeVar, Union

import SimpleITK as sitk
import torch

from MedLSDMLib.card import ModelCard
from MedLSDMLib.generation.memory import MemoryPlan, plan_memory
from MedLSDMLib.generation.options import check_generation_options
from MedLSDMLib.generation.primitives import out_of_memory_as_error
from MedLSDMLib.io.labels import LabelTable
from MedLSDMLib.models.autoencoder import latent_shape
from MedLSDMLib.models.bundle import ModelBundle
from MedLSDMLib.models.conditioning import condition_map
from MedLSDMLib.models.decoding import decode_latent
from MedLSDMLib.models.registry import resolve_model
from MedLSDMLib.runtime.devices import autocast_for, resolve_device, resolve_precision
from MedLSDMLib.runtime.hardware import Precision, describe_run
from MedLSDMLib.runtime.progress import CancelFn, ProgressFn
from MedLSDMLib.sampling.guidance import GuidedUNet
from MedLSDMLib.sampling.loop import AfterStep, sample_latent
from MedLSDMLib.sampling.samplers import SAMPLERS, default_sampler, resolve_steps

# what the loop hands a finished decoded volume to: (decoded (1, 1, X, Y, Z) in [-1, 1], k) -> sample k's image
Finish = Callable[[torch.Tensor, int], sitk.Image]
OnSample = Callable[[int, sitk.Image], None]
R = TypeVar("R", bound="ModelRunner")


@dataclass
class RunOptions:
    """One run's options, checked and with the defaults filled in."""

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

    @property
    def passes(self) -> int:
        """Latents the UNet sees in one pass: 2 when a batched guidance runs both branches at once."""
        return 2 if self.batched and self.guidance not in (0.0, 1.0) else 1


class ModelRunner:
    """A loaded bundle, its label table, and the device its networks are on.

    Args:
        bundle: the model.
        device: ``auto``, ``cpu`` or ``cuda``, the default of each run.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``, the default of each run.
    """

    def __init__(self, bundle: ModelBundle, device: str = "auto", precision: str = "auto") -> None:
        self.bundle = bundle
        self.table = LabelTable(bundle.card.labels)
        self.device_name, self.precision_name = device, precision
        self.device = torch.device("cpu")

    @classmethod
    def load(
        cls: Type[R],
        model: Union[str, Path, None] = None,
        device: str = "auto",
        precision: str = "auto",
        progress: Optional[ProgressFn] = None,
    ) -> R:
        """Load a bundle folder, or a model named in Resources/Models.json.

        Args:
            model: the folder or the registered name; None: the first registered model.
            device: the default device of each run (checked now).
            precision: the default precision of each run (checked now).
            progress: the download's progress, if the model is downloaded.

        Returns:
            An instance of the class it is called on (``Generator.load`` gives a Generator).
        """
        resolve_precision(precision, resolve_device(device))  # fail early on bad options
        return cls(ModelBundle.load(resolve_model(None if model is None else str(model), progress)), device, precision)

    @property
    def card(self) -> ModelCard:
        return self.bundle.card

    def to(self, device: torch.device) -> None:
        """Move both networks to ``device`` (nothing to do when they are there)."""
        if device != self.device:
            self.bundle.autoencoder.to(device)
            self.bundle.unet.to(device)
            self.device = device

    def placement(self, device: Optional[str], precision: Optional[str]) -> Tuple[torch.device, Precision]:
        """The device and precision of a run: the arguments, or the defaults given at load."""
        torch_device = resolve_device(device or self.device_name)
        return torch_device, resolve_precision(precision or self.precision_name, torch_device)

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
        the device and the precision (the first step of generate and of edit)."""
        card = self.card
        sampler = sampler or default_sampler(card.scheduler)
        steps = resolve_steps(sampler, steps, card.scheduler)
        check_generation_options(guidance=guidance, seed=seed, samples=samples, max_memory=max_memory)
        torch_device, chosen = self.placement(device, precision)
        return RunOptions(
            sampler=sampler,
            steps=steps,
            guidance=card.default_guidance if guidance is None else float(guidance),
            seed=random.randrange(2**31) if seed is None else int(seed),
            device=torch_device,
            precision=chosen,
            autocast=autocast_for(torch_device, chosen),
            batched=SAMPLERS[sampler].batched,
        )

    def plan(
        self, run: RunOptions, latent_size: Sequence[int], max_memory: Optional[float], host_bytes: int
    ) -> MemoryPlan:
        """Whole or tiled decoding for a latent of ``latent_size`` (``plan_memory``); ``host_bytes``, the images
        held in memory while it runs, count only where the networks run on the CPU."""
        resident = host_bytes if run.device.type == "cpu" else 0
        weights = self.bundle.weight_bytes()
        return plan_memory(self.card, latent_size, run.passes, run.device, max_memory, weights, resident=resident)

    def log_run(self, run: RunOptions, what: str, log: Optional[Callable[[str], None]]) -> None:
        """The run's first log line (model, hardware, sampling, then ``what``) and the precision's warning."""
        if log is None:
            return
        hardware = describe_run(run.device.type, run.precision, torch.get_num_threads())
        log(
            f"model {self.card.name} {self.card.version}: {hardware}; sampler {run.sampler}, {run.steps} steps, "
            f"guidance {run.guidance:g}, seed {run.seed}; {what}"
        )
        if run.precision.warning:
            log(f"warning: {run.precision.warning}")

    @torch.no_grad()
    def each_sample(
        self,
        run: RunOptions,
        classes: torch.Tensor,
        finish: Finish,
        *,
        samples: int,
        tile: Optional[int],
        what: str,
        progress: Optional[ProgressFn] = None,
        cancel: Optional[CancelFn] = None,
        on_sample: Optional[OnSample] = None,
        after_step: Optional[Callable[[int], AfterStep]] = None,
        noise_box: Optional[Tuple[Sequence[int], Tuple[slice, ...]]] = None,
    ) -> List[sitk.Image]:
        """The per-sample loop: for k in 0..samples-1, sample a latent (seed + k) guided by ``classes``,
        decode it, ``finish`` it into an image and give it the run's metadata.

        Args:
            run: the settled options (``settle``); the networks must be on ``run.device`` (``to``).
            classes: class indices (1, X, Y, Z) of the working grid, on ``run.device``.
            finish: turns sample k's decoded volume into its image.
            samples: the number of samples.
            tile: the latent tile of tiled decoding (the memory plan's), or None for whole.
            what: the input named in an out-of-memory message ("the label map").
            progress: sampling counted within all samples, then decoding.
            cancel: the stop check between steps and tiles.
            on_sample: hand each image to it as soon as it is done (``on_sample(k, image)``) instead
                of keeping it.
            after_step: sample k's ``after_step`` for the sampler (e.g. edit's inpainting), by k.
            noise_box: (the whole latent grid's size, the box of it sampled): each sample starts from that box
                of the noise the whole grid would start from, so the box is sampled as the whole would be.

        Returns:
            The images, or [] with ``on_sample``.
        """
        card, autoencoder = self.card, self.bundle.autoencoder
        condition = condition_map(classes, len(self.table), autoencoder.config.downsample_factor)
        model = GuidedUNet(self.bundle.unet, condition, run.guidance, run.batched, run.autocast)
        shape = latent_shape(autoencoder, classes.shape[1:])
        results = []
        for k in range(samples):

            def sample_progress(stage: str, step: int, total: int, k: int = k) -> None:
                if progress is not None:
                    progress(stage, k * total + step, samples * total)

            generator = torch.Generator(device=run.device).manual_seed(run.seed + k)
            noise = None
            if noise_box is not None:
                whole, box = noise_box
                noise = torch.randn((*shape[:2], *whole), generator=generator, device=run.device)
                noise = noise[(slice(None), slice(None)) + tuple(box)].contiguous()
            with out_of_memory_as_error(what):
                latent = sample_latent(
                    model,
                    card.scheduler,
                    shape,
                    sampler=run.sampler,
                    steps=run.steps,
                    generator=generator,
                    noise=noise,
                    progress=sample_progress,
                    cancel=cancel,
                    bounds=autoencoder.codebook_bounds(card.latent_scale),
                    after_step=None if after_step is None else after_step(k),
                )
                decoded = decode_latent(
                    autoencoder, latent / card.latent_scale, classes, tile, run.autocast, progress, cancel
                )
            del latent
            image = finish(decoded, k)
            del decoded
            for key, value in run.metadata(card, k).items():
                image.SetMetaData(key, value)
            if on_sample is not None:
                on_sample(k, image)
            else:
                results.append(image)
            del image
        return results
