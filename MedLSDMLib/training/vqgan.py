"""Stage 1: the VQ-GAN autoencoder — L1 + codebook loss, 3D patch adversarial loss with feature
matching after a delay, an optional perceptual loss from weights the user provides."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch
import torch.nn.functional as F
from monai.losses import PatchAdversarialLoss
from monai.networks.nets import PatchDiscriminator

from MedLSDMLib.card import IntensityConfig, ModelCard, fields_of, to_dict
from MedLSDMLib.errors import InputError
from MedLSDMLib.io.figures import compare_figure
from MedLSDMLib.models.bundle import AUTOENCODER_FILE, save_weights, write_card
from MedLSDMLib.models.networks import VQGAN
from MedLSDMLib.training.config import VQGANRun, VQGANTraining
from MedLSDMLib.training.data import centre_patch, median_range
from MedLSDMLib.training.trainer import Trainer, read_init_from


def perceptual_loss(weights: str) -> torch.nn.Module:
    """MONAI's 2.5D perceptual loss on a torchvision ResNet-50 whose weights file the user gives."""
    if not Path(weights).is_file():
        raise InputError(
            f"training.perceptual_weights {weights} does not exist: give a ResNet-50 weights file "
            "or remove the key (the perceptual loss is optional)"
        )
    try:
        from monai.losses import PerceptualLoss

        return PerceptualLoss(
            spatial_dims=3, network_type="resnet50", is_fake_3d=True, pretrained=True, pretrained_path=weights
        )
    except (ImportError, RuntimeError, OSError) as exc:
        raise InputError(
            f"the perceptual loss cannot be built from {weights} ({exc}): it needs torchvision "
            "and a torchvision ResNet-50 state dict"
        ) from None


ENCODER_KEYS = ("vqvae.encoder.", "vqvae.quantizer.")


def gradient_l1(reconstruction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """L1 between the finite-difference gradients (along x, y and z) of two (B, C, X, Y, Z) batches: it
    rewards edges as sharp as the real ones, which plain L1 lets the decoder blur."""
    return sum(
        (F.l1_loss(torch.diff(reconstruction, dim=axis), torch.diff(images, dim=axis)) for axis in (2, 3, 4)),
        torch.zeros((), device=images.device),
    )


def frequency_l1(reconstruction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """L1 between the amplitudes of the 3D Fourier transforms (orthonormal) of two batches, in fp32:
    high frequencies, which are weak, count as much as their error."""
    with torch.autocast(device_type=images.device.type, enabled=False):
        fake = torch.fft.rfftn(reconstruction.float(), dim=(2, 3, 4), norm="ortho").abs()
        real = torch.fft.rfftn(images.float(), dim=(2, 3, 4), norm="ortho").abs()
    return F.l1_loss(fake, real)


def start_from(model: VQGAN, folder: str, card: ModelCard) -> Dict[str, Any]:
    """Load the autoencoder weights of bundle ``folder`` into ``model`` where they fit: the encoder and the
    codebook always (their shapes must agree), the decoder when it is the same network (kind, widths,
    upsampling). Returns what the model card records about it; InputError when the bundle's labels,
    spacing or encoder differ."""
    source, (state,) = read_init_from(folder, AUTOENCODER_FILE)
    if [e.value for e in source.labels] != [e.value for e in card.labels] or tuple(source.spacing) != tuple(
        card.spacing
    ):
        raise InputError(
            f"init_from {folder}: its labels or spacing differ from model.labels / model.spacing: "
            "start from a bundle of the same label table and spacing"
        )
    mine = model.state_dict()
    encoder = {k: v for k, v in state.items() if k.startswith(ENCODER_KEYS)}
    if any(k not in mine or mine[k].shape != v.shape for k, v in encoder.items()) or any(
        k.startswith(ENCODER_KEYS) and k not in encoder for k in mine
    ):
        raise InputError(
            f"init_from {folder}: its encoder differs from model.autoencoder (channels, num_res_layers, "
            "num_res_channels, latent_channels, num_embeddings must match)"
        )
    decoder = {k: v for k, v in state.items() if not k.startswith(ENCODER_KEYS)}
    mine_decoder = {k: v for k, v in mine.items() if not k.startswith(ENCODER_KEYS)}
    same_decoder = source.autoencoder.decoder == card.autoencoder.decoder and decoder.keys() == mine_decoder.keys()
    same_decoder = same_decoder and all(v.shape == mine_decoder[k].shape for k, v in decoder.items())
    chosen = {k: v for k, v in state.items() if same_decoder or k.startswith(ENCODER_KEYS)}
    model.load_state_dict({**mine, **{k: v.float() for k, v in chosen.items()}})
    return {"bundle": f"{source.name} {source.version}", "decoder": "loaded" if same_decoder else "new"}


class VQGANTrainer(Trainer[VQGANTraining]):
    stage = "vqgan"
    config: VQGANRun

    def __init__(self, config: VQGANRun, resume: bool = False, device: str = "auto") -> None:
        super().__init__(config, resume, device)
        m, s = config.model, config.training
        ranges = self.load_data(m.labels, m.spacing, m.orientation, m.intensity)
        low, high = median_range(ranges)
        intensity = IntensityConfig(**{**to_dict(m.intensity), "low": low, "high": high})
        self.card = ModelCard(**{**fields_of(m), "intensity": intensity})
        if any(p % m.autoencoder.downsample_factor for p in s.patch_size):
            raise InputError(
                f"training.patch_size {list(s.patch_size)} must be a multiple of the autoencoder's "
                f"downsampling factor {m.autoencoder.downsample_factor}"
            )

        self.model = VQGAN(m.autoencoder, len(m.labels))
        if config.init_from is not None:
            self.card.training = {"autoencoder_initialised_from": start_from(self.model, config.init_from, self.card)}
        if s.freeze_encoder:
            self.model.freeze_encoder()
        self.model.to(self.device)
        self.discriminator = PatchDiscriminator(
            spatial_dims=3,
            channels=s.discriminator_channels,
            in_channels=1,
            num_layers_d=s.discriminator_layers,
            norm="INSTANCE",
        ).to(self.device)
        self.adversarial = PatchAdversarialLoss(criterion="least_squares")
        self.perceptual = perceptual_loss(s.perceptual_weights).to(self.device) if s.perceptual_weights else None
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(trainable, lr=s.learning_rate, betas=(0.5, 0.9))
        self.d_optimizer = torch.optim.Adam(
            self.discriminator.parameters(), lr=s.discriminator_learning_rate, betas=(0.5, 0.9)
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.name == "fp16")
        self.d_scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.name == "fp16")
        self._check_discriminator_fits(s.patch_size)
        self.ready(len(m.labels))
        self.train_model = self.parallel(self.model)
        self.train_discriminator = self.parallel(self.discriminator)

    def _check_discriminator_fits(self, patch_size: Tuple[int, int, int]) -> None:
        try:
            with torch.no_grad():
                self.discriminator(torch.zeros(1, 1, *patch_size, device=self.device))
        except (ValueError, RuntimeError):
            raise InputError(
                f"training.patch_size {list(patch_size)} is too small for a discriminator of "
                f"{self.settings.discriminator_layers} layers: use larger patches or fewer "
                "discriminator_layers"
            ) from None

    def _discriminate(self, images: torch.Tensor, module: torch.nn.Module) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Logits and intermediate features, always in fp32: the discriminator is small, and under
        bf16 autocast on the CPU its logits were seen to turn non-finite now and then."""
        with torch.autocast(device_type=self.device.type, enabled=False):
            outputs = module(images.float().contiguous())
        return outputs[-1], outputs[:-1]

    def train_step(self, batches: List[Dict[str, torch.Tensor]]) -> Dict[str, float]:
        s = self.settings
        adversarial_on = self.step >= s.adversarial_start and s.adversarial_weight > 0
        totals: Dict[str, float] = {}
        self.optimizer.zero_grad(set_to_none=True)
        self.d_optimizer.zero_grad(set_to_none=True)
        fakes = []
        for batch in batches:
            images = batch["image"]
            with self.autocast():
                reconstruction, vq_loss = self.train_model(images, batch["label"])
                reconstruction = reconstruction.float()
                losses = {"l1": F.l1_loss(reconstruction, images), "vq": vq_loss.float()}
                if s.gradient_weight > 0:
                    losses["gradient"] = s.gradient_weight * gradient_l1(reconstruction, images)
                if s.frequency_weight > 0:
                    losses["frequency"] = s.frequency_weight * frequency_l1(reconstruction, images)
                if self.perceptual is not None:
                    losses["perceptual"] = s.perceptual_weight * self.perceptual(reconstruction, images)
                if adversarial_on:
                    # the plain module: generator steps need no gradient sync of the discriminator
                    fake_logits, fake_features = self._discriminate(reconstruction, self.discriminator)
                    _, real_features = self._discriminate(images, self.discriminator)
                    losses["adversarial"] = s.adversarial_weight * self.adversarial(
                        fake_logits, target_is_real=True, for_discriminator=False
                    )
                    losses["feature_matching"] = s.feature_matching_weight * sum(
                        F.l1_loss(f.float(), r.detach().float()) for f, r in zip(fake_features, real_features)
                    )
            loss = sum(losses.values()) / len(batches)
            self.check_finite(losses)
            self.scaler.scale(loss).backward()
            fakes.append((images, reconstruction.detach()))
            for key, value in losses.items():
                totals[key] = totals.get(key, 0.0) + float(value.detach()) / len(batches)
        self.apply_gradients(self.optimizer, self.scaler)
        self.discriminator.zero_grad(set_to_none=True)
        if adversarial_on:
            for images, reconstruction in fakes:
                fake_logits = self._discriminate(reconstruction, self.train_discriminator)[0]
                real_logits = self._discriminate(images, self.train_discriminator)[0]
                d_loss = 0.5 * (
                    self.adversarial(fake_logits, target_is_real=False, for_discriminator=True)
                    + self.adversarial(real_logits, target_is_real=True, for_discriminator=True)
                )
                self.check_finite({"discriminator": d_loss})
                self.d_scaler.scale(d_loss / len(fakes)).backward()
                totals["discriminator"] = totals.get("discriminator", 0.0) + float(d_loss.detach()) / len(fakes)
            self.apply_gradients(self.d_optimizer, self.d_scaler)
        return totals

    @torch.no_grad()
    def validate(self) -> Dict[str, float]:
        """Reconstruction L1 and PSNR on the validation cases' central patches; a figure of the first."""
        self.model.eval()
        l1, psnr = [], []
        for index, case in enumerate(self.val_cases):
            patch = centre_patch(case, self.settings.patch_size)
            images = patch["image"][None].to(self.device)
            with self.autocast():
                reconstruction = self.model(images, patch["label"][None].to(self.device))[0].float().clamp(-1, 1)
            l1.append(float(F.l1_loss(reconstruction, images)))
            mse = float(F.mse_loss(reconstruction, images))
            psnr.append(10 * torch.log10(torch.tensor(4.0 / max(mse, 1e-12))).item())  # data range 2
            if index == 0 and self.dist.is_main:
                compare_figure(
                    self.output / "figures" / f"step_{self.step:06d}.png",
                    ("real", images[0, 0].cpu().numpy()),
                    ("reconstruction", reconstruction[0, 0].cpu().numpy()),
                    patch["label"].numpy(),
                    self.card.spacing,
                    title=f"VQ-GAN step {self.step}: {case.name}",
                )
        self.model.train()
        return {"val_l1": sum(l1) / len(l1), "val_psnr": sum(psnr) / len(psnr)}

    def stateful(self) -> Dict[str, Any]:
        return {
            "model": self.model,
            "discriminator": self.discriminator,
            "optimizer": self.optimizer,
            "d_optimizer": self.d_optimizer,
            "scaler": self.scaler,
            "d_scaler": self.d_scaler,
        }

    def write_bundle(self) -> Path:
        """The autoencoder half of a bundle: model.json + autoencoder.safetensors."""
        folder = self.output / "bundle"
        folder.mkdir(exist_ok=True)
        self.card.weights = {AUTOENCODER_FILE: save_weights(self.model, folder / AUTOENCODER_FILE)}
        self.card.training = {**self.card.training, "autoencoder": self.record()}
        write_card(folder, self.card)
        return folder
