"""The model bundle: model.json (the model card) + safetensors weights, SHA-256 checked, never unpickled."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from MedLSDMLib.card import CARD_FILE, ModelCard, from_dict, to_dict
from MedLSDMLib.errors import ModelError
from MedLSDMLib.models.autoencoder import LatentAutoencoder
from MedLSDMLib.models.networks import VQGAN, build_unet
from MedLSDMLib.runtime.interrupt import staged_file

AUTOENCODER_FILE = "autoencoder.safetensors"
DIFFUSION_FILE = "diffusion.safetensors"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_card(folder: Union[str, Path]) -> ModelCard:
    """The model card of a bundle folder, or ModelError saying what is wrong with it."""
    folder = Path(folder)
    card_path = folder / CARD_FILE
    if not folder.is_dir():
        raise ModelError(f"model {folder} is not a folder: give a bundle folder holding {CARD_FILE}")
    if not card_path.is_file():
        raise ModelError(f"model {folder} has no {CARD_FILE}: it is not a MedLSDM bundle")
    try:
        data = json.loads(card_path.read_text(encoding="utf-8"))
        return from_dict(ModelCard, data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{card_path} is not valid JSON ({exc}): the bundle is damaged, download it again") from None
    except ValueError as exc:
        raise ModelError(f"{card_path} does not describe a model this version can load ({exc})") from None


def verify_weights(
    folder: Union[str, Path], card: ModelCard, names: Sequence[str] = (AUTOENCODER_FILE, DIFFUSION_FILE)
) -> None:
    """Each weight file in ``names`` exists and has the SHA-256 the card records, or ModelError."""
    folder = Path(folder)
    for name in names:
        if name not in card.weights:
            raise ModelError(f"{folder / CARD_FILE} records no SHA-256 for {name}: the bundle is incomplete")
        path = folder / name
        if not path.is_file():
            raise ModelError(f"model {folder} is missing {name}: the bundle is incomplete, download it again")
        if sha256(path) != card.weights[name]:
            raise ModelError(
                f"{path} does not match the SHA-256 in {CARD_FILE}: the file is damaged or was "
                "changed; download the model again"
            )


def read_state(path: Path) -> Dict[str, torch.Tensor]:
    """The tensors of a safetensors file, or ModelError for a malformed file or non-finite weights."""
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for a malformed file
        reason = " ".join(str(exc).split())[:200]
        raise ModelError(f"{path} is not a valid safetensors file ({reason})") from None
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ModelError(
                f"{path.name} holds NaN or infinite weights ({key}): the model is broken; "
                "retrain it, or use an earlier bundle"
            )
    return state


def load_weights(module: nn.Module, path: Path) -> None:
    state = read_state(path)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ModelError(f"{path.name} does not fit the network described in {CARD_FILE} ({first})") from None


def save_weights(module: nn.Module, path: Path, dtype: Optional[torch.dtype] = None) -> str:
    """Write a module's state as safetensors (atomically); returns the file's SHA-256."""
    state = {}
    for key, value in module.state_dict().items():
        value = value.detach().cpu().contiguous()
        state[key] = value.to(dtype) if dtype is not None and value.is_floating_point() else value
    with staged_file(path) as temporary:
        save_file(state, str(temporary))
    return sha256(path)


@dataclass
class ModelBundle:
    """A model card with its two networks. Generation reaches the autoencoder only through
    ``LatentAutoencoder``; the bundles on disk hold a ``networks.VQGAN``."""

    card: ModelCard
    autoencoder: LatentAutoencoder
    unet: nn.Module
    path: Optional[Path] = None

    def weight_bytes(self) -> int:
        """Bytes of both networks' parameters (the memory plan counts them)."""
        parameters = [*self.autoencoder.parameters(), *self.unet.parameters()]
        return sum(p.numel() * p.element_size() for p in parameters)

    @classmethod
    def create(cls, card: ModelCard) -> "ModelBundle":
        """New networks, randomly initialised, as the card describes (training starts here)."""
        autoencoder = VQGAN(card.autoencoder, len(card.labels))
        unet = build_unet(card.unet, card.autoencoder.latent_channels, len(card.labels))
        return cls(card, autoencoder, unet)

    @classmethod
    def load(cls, folder: Union[str, Path]) -> "ModelBundle":
        """Load a bundle folder on the CPU after checking every hash."""
        folder = Path(folder)
        card = read_card(folder)
        verify_weights(folder, card)
        autoencoder = VQGAN(card.autoencoder, len(card.labels))
        unet = build_unet(card.unet, card.autoencoder.latent_channels, len(card.labels))
        load_weights(autoencoder, folder / AUTOENCODER_FILE)
        load_weights(unet, folder / DIFFUSION_FILE)
        return cls(card, autoencoder.eval(), unet.eval(), folder)

    def save(self, folder: Union[str, Path], dtype: Optional[torch.dtype] = None) -> Path:
        """Write the bundle (weights first, model.json with their hashes last); ``dtype=torch.float16``
        halves the size. Each file is replaced atomically."""
        if not isinstance(self.autoencoder, nn.Module):
            raise TypeError("only an autoencoder that is a torch module has weights to save")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        hashes: Dict[str, str] = {
            AUTOENCODER_FILE: save_weights(self.autoencoder, folder / AUTOENCODER_FILE, dtype),
            DIFFUSION_FILE: save_weights(self.unet, folder / DIFFUSION_FILE, dtype),
        }
        self.card.weights = hashes
        write_card(folder, self.card)
        self.path = folder
        return folder


def write_card(folder: Path, card: ModelCard) -> None:
    """Write model.json atomically (after the weights whose hashes it records)."""
    with staged_file(folder / CARD_FILE) as temporary:
        temporary.write_text(json.dumps(to_dict(card), indent=2) + "\n", encoding="utf-8")


def load_autoencoder(folder: Union[str, Path]) -> Tuple[ModelCard, VQGAN]:
    """The card and autoencoder of a bundle (the VQ-GAN stage's output is enough), hash checked."""
    card = read_card(folder)
    verify_weights(folder, card, (AUTOENCODER_FILE,))
    autoencoder = VQGAN(card.autoencoder, len(card.labels))
    load_weights(autoencoder, Path(folder) / AUTOENCODER_FILE)
    return card, autoencoder.eval()


def read_bundle_state(
    folder: Union[str, Path], names: Sequence[str]
) -> Tuple[ModelCard, List[Dict[str, torch.Tensor]]]:
    """The card of a bundle and the tensors of each of its weight files ``names``, hash checked (to start
    training from)."""
    card = read_card(folder)
    verify_weights(folder, card, names)
    return card, [read_state(Path(folder) / name) for name in names]
