"""Stage 2: the SPADE latent diffusion UNet on a frozen VQ-GAN — ε/v-prediction (or rectified flow),
label dropout to the sampler's null map so that guidance is trained, EMA weights for sampling."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.schedulers import RFlowScheduler
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from MedLSDMLib.errors import InputError
from MedLSDMLib.io.figures import planes_figure
from MedLSDMLib.models.bundle import (
    AUTOENCODER_FILE,
    DIFFUSION_FILE,
    load_autoencoder,
    save_weights,
    sha256,
    write_card,
)
from MedLSDMLib.models.conditioning import condition_map, null_map
from MedLSDMLib.models.decoding import decode_latent
from MedLSDMLib.models.networks import build_unet
from MedLSDMLib.sampling.guidance import GuidedUNet
from MedLSDMLib.sampling.loop import sample_latent
from MedLSDMLib.sampling.samplers import default_sampler, noise_scheduler, resolve_steps
from MedLSDMLib.training.config import DiffusionRun, DiffusionTraining
from MedLSDMLib.training.data import centre_patch, pad_to
from MedLSDMLib.training.trainer import Trainer, read_init_from
from MedLSDMLib.training.vqgan import ENCODER_KEYS


class DiffusionTrainer(Trainer[DiffusionTraining]):
    stage = "diffusion"
    config: DiffusionRun

    def __init__(self, config: DiffusionRun, resume: bool = False, device: str = "auto") -> None:
        super().__init__(config, resume, device)
        m, s = config.model, config.training
        card, self.autoencoder = load_autoencoder(config.autoencoder)
        self.autoencoder.to(self.device).requires_grad_(False)
        self.card = dataclasses.replace(
            card,
            name=m.name or card.name,
            version=m.version or card.version,
            description=m.description or card.description,
            unet=m.unet,
            scheduler=m.scheduler,
            default_guidance=m.default_guidance,
            weights={},
        )
        if any(p % self.card.size_multiple for p in s.patch_size):
            raise InputError(
                f"training.patch_size {list(s.patch_size)} must be a multiple of "
                f"{self.card.size_multiple} (autoencoder and UNet downsampling)"
            )
        c = self.card
        self.load_data(c.labels, c.spacing, c.orientation, c.intensity)
        self.num_classes = len(c.labels)
        self.factor = c.autoencoder.downsample_factor

        self.unet = build_unet(m.unet, c.autoencoder.latent_channels, self.num_classes)
        if config.init_from is not None:
            self.card.training = {**self.card.training, "diffusion_initialised_from": self.start_from(config.init_from)}
        self.unet.to(self.device)
        self.ema = AveragedModel(self.unet, multi_avg_fn=get_ema_multi_avg_fn(s.ema_decay), use_buffers=True)
        self.scheduler = noise_scheduler(m.scheduler)
        self.optimizer = torch.optim.AdamW(self.unet.parameters(), lr=s.learning_rate, weight_decay=1e-4)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.name == "fp16")
        if not resume and config.init_from is None:
            self.card.latent_scale = self.measure_latent_scale()
        self.ready(self.num_classes)
        self.train_unet = self.parallel(self.unet)

    def start_from(self, folder: str) -> Dict[str, Any]:
        """Fine-tuning: the UNet weights and latent scale of bundle ``folder``, whose UNet must be the one
        model.unet describes and whose latent space the autoencoder's (the same encoder and codebook)."""
        source, (state, autoencoder_state) = read_init_from(folder, DIFFUSION_FILE, AUTOENCODER_FILE)
        mine = self.autoencoder.state_dict()
        if any(
            k not in mine or not torch.equal(mine[k].float().cpu(), v.float().cpu())
            for k, v in autoencoder_state.items()
            if k.startswith(ENCODER_KEYS)
        ):
            raise InputError(
                f"init_from {folder}: its encoder or codebook differs from {self.config.autoencoder}'s, "
                "so its UNet learned another latent space: train the autoencoder with init_from this "
                "bundle and training.freeze_encoder: true"
            )
        try:
            self.unet.load_state_dict({k: v.float() for k, v in state.items()})
        except RuntimeError:
            raise InputError(
                f"init_from {folder}: its UNet differs from model.unet: copy the bundle's unet settings into the config"
            ) from None
        self.card.latent_scale = source.latent_scale
        return {"bundle": f"{source.name} {source.version}", "unet": "loaded"}

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.autoencoder.encode(images).float()

    @torch.no_grad()
    def measure_latent_scale(self) -> float:
        """1 / the standard deviation of the training volumes' latents (the same on every process)."""
        latents = []
        for case in self.cases:
            size = [int(np.ceil(d / self.factor) * self.factor) for d in case.image.shape]
            padded = pad_to(case, size).image
            latents.append(self.encode(torch.from_numpy(padded[None, None]).to(self.device)).flatten())
        return float(1.0 / torch.cat(latents).std().clamp_min(1e-6))

    def _targets(self, latent: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if isinstance(self.scheduler, RFlowScheduler):  # scheduler.kind rflow
            return latent - noise
        if self.card.scheduler.prediction_type == "v_prediction":
            return self.scheduler.get_velocity(latent, noise, timesteps)
        return noise

    def _timesteps(self, latent: torch.Tensor) -> torch.Tensor:
        if isinstance(self.scheduler, RFlowScheduler):
            return self.scheduler.sample_timesteps(latent)
        return torch.randint(0, self.card.scheduler.num_train_timesteps, (latent.shape[0],), device=latent.device)

    def _loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = F.l1_loss if self.settings.loss == "l1" else F.mse_loss
        return loss(prediction.float(), target)

    def train_step(self, batches: List[Dict[str, torch.Tensor]]) -> Dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for batch in batches:
            latent = self.encode(batch["image"]) * self.card.latent_scale
            condition = condition_map(batch["label"], self.num_classes, self.factor)
            draws = self.settings.noise_draws  # each patch again with its own noise, level and dropout
            latent, condition = latent.repeat(draws, 1, 1, 1, 1), condition.repeat(draws, 1, 1, 1, 1)
            dropped = torch.rand(latent.shape[0], device=self.device) < self.settings.label_dropout
            condition = torch.where(dropped[:, None, None, None, None], null_map(condition), condition)
            noise = torch.randn_like(latent)
            timesteps = self._timesteps(latent)
            noisy = self.scheduler.add_noise(latent, noise, timesteps)
            with self.autocast():
                prediction = self.train_unet(noisy, timesteps=timesteps, seg=condition)
            loss = self._loss(prediction, self._targets(latent, noise, timesteps))
            self.check_finite({"loss": loss})
            self.scaler.scale(loss / len(batches)).backward()
            total += float(loss.detach()) / len(batches)
        if self.apply_gradients(self.optimizer, self.scaler):
            self.ema.update_parameters(self.unet)
        return {"loss": total}

    @torch.no_grad()
    def validate(self) -> Dict[str, float]:
        """Loss of the EMA UNet at fixed noise levels on the validation patches, and a figure of a
        guided sample (DDIM/rflow) for the first validation case."""
        model = self.ema.module.eval()
        generator = torch.Generator(self.device).manual_seed(1234)
        losses = []
        patches = [centre_patch(case, self.settings.patch_size) for case in self.val_cases]
        for patch in patches:
            latent = self.encode(patch["image"][None].to(self.device)) * self.card.latent_scale
            condition = condition_map(patch["label"][None].to(self.device), self.num_classes, self.factor)
            total = self.card.scheduler.num_train_timesteps
            for fraction in (0.1, 0.5, 0.9):
                noise = torch.randn(latent.shape, generator=generator, device=self.device)
                timesteps = torch.full((1,), int(fraction * (total - 1)), device=self.device)
                noisy = self.scheduler.add_noise(latent, noise, timesteps)
                with self.autocast():
                    prediction = model(noisy, timesteps=timesteps, seg=condition)
                losses.append(float(self._loss(prediction, self._targets(latent, noise, timesteps))))
        if self.dist.is_main and patches:
            self._sample_figure(model, patches[0], generator)
        return {"val_loss": sum(losses) / max(len(losses), 1)}

    def _sample_figure(
        self, model: torch.nn.Module, patch: Dict[str, torch.Tensor], generator: torch.Generator
    ) -> None:
        condition = condition_map(patch["label"][None].to(self.device), self.num_classes, self.factor)
        sampler = default_sampler(self.card.scheduler)
        steps = resolve_steps(
            sampler, min(self.settings.validation_steps, self.card.scheduler.num_train_timesteps), self.card.scheduler
        )
        guided = GuidedUNet(model, condition, self.card.default_guidance, batched=True, autocast=self.autocast)
        shape = (1, self.card.autoencoder.latent_channels, *condition.shape[2:])
        latent = sample_latent(
            guided,
            self.card.scheduler,
            shape,
            sampler=sampler,
            steps=steps,
            generator=generator,
            bounds=self.autoencoder.codebook_bounds(self.card.latent_scale),
        )
        image = decode_latent(
            self.autoencoder,
            latent / self.card.latent_scale,
            patch["label"][None].to(self.device),
            autocast=self.autocast,
        )
        planes_figure(
            self.output / "figures" / f"step_{self.step:06d}.png",
            [("real", patch["image"][0].numpy()), ("sample", image[0, 0].clamp(-1, 1).cpu().numpy())],
            patch["label"].numpy(),
            self.card.spacing,
            title=f"diffusion step {self.step}: {sampler} {steps} steps, guidance {self.card.default_guidance:g}",
        )

    def stateful(self) -> Dict[str, Any]:
        return {"unet": self.unet, "ema": self.ema, "optimizer": self.optimizer, "scaler": self.scaler}

    def state(self) -> Dict[str, Any]:
        return {**super().state(), "latent_scale": torch.tensor(self.card.latent_scale)}

    def load_state(self, state: Dict[str, Any]) -> None:
        super().load_state(state)
        self.card.latent_scale = float(state["latent_scale"])

    def write_bundle(self) -> Path:
        """The complete bundle: the VQ-GAN's autoencoder, the EMA UNet and the model card."""
        folder = self.output / "bundle"
        folder.mkdir(exist_ok=True)
        shutil.copyfile(Path(self.config.autoencoder) / AUTOENCODER_FILE, folder / AUTOENCODER_FILE)
        self.card.weights = {
            AUTOENCODER_FILE: sha256(folder / AUTOENCODER_FILE),
            DIFFUSION_FILE: save_weights(self.ema.module, folder / DIFFUSION_FILE),
        }
        self.card.training = {**self.card.training, "diffusion": self.record()}
        write_card(folder, self.card)
        return folder
