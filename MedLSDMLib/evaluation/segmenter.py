"""The trained segmenter of the Dice protocol: a MONAI 3D UNet (softmax over the classes) stored as a
folder with ``segmenter.json`` (its card) and ``segmenter.safetensors`` (SHA-256 checked, never unpickled),
applied with sliding-window inference after the training data's preprocessing, and its prediction mapped
back onto the image's grid."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import SimpleITK as sitk
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet
from safetensors.torch import load_file

from MedLSDMLib.card import IntensityConfig, LabelEntry, fields_of, from_dict, to_dict
from MedLSDMLib.errors import InputError, ModelError
from MedLSDMLib.io.geometry import resample, working_grid
from MedLSDMLib.io.preprocess import preprocess_images
from MedLSDMLib.io.volumes import array_to_image, image_to_array
from MedLSDMLib.models.bundle import save_weights, sha256
from MedLSDMLib.runtime.interrupt import staged_file

CARD_FILE = "segmenter.json"
WEIGHTS_FILE = "segmenter.safetensors"
OVERLAP = 0.25


@dataclass
class SegmenterNetwork:
    """MONAI ``UNet`` (the fields are its keyword arguments): one entry of ``strides`` per downsampling
    between levels of ``channels``."""

    channels: Tuple[int, ...] = (16, 32, 64, 128)
    strides: Tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 2
    norm: str = "instance"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if len(self.strides) != len(self.channels) - 1:
            raise ValueError("network: strides needs one entry fewer than channels")

    @property
    def downsample_factor(self) -> int:
        return int(np.prod(self.strides))


@dataclass
class SegmenterModel:
    """What the segmenter's card says about its data and network (the ``model`` of its training config)."""

    name: str
    labels: List[LabelEntry]
    spacing: Tuple[float, ...] = (1.0, 1.0, 1.0)
    orientation: str = "RAS"
    intensity: IntensityConfig = field(default_factory=IntensityConfig)
    network: SegmenterNetwork = field(default_factory=SegmenterNetwork)


@dataclass
class SegmenterCard(SegmenterModel):
    """Everything segmenter.json says: classes, the data preprocessing, the network and its weights."""

    patch_size: Tuple[int, ...] = (64, 64, 64)
    training: Dict[str, Any] = field(default_factory=dict)
    metrics: Dict[str, Any] = field(default_factory=dict)
    weights: Dict[str, str] = field(default_factory=dict)
    format_version: int = 1


def build_network(network: SegmenterNetwork, num_classes: int) -> UNet:
    """The 3D UNet: 1 input channel, one output channel (logit) per class."""
    return UNet(spatial_dims=3, in_channels=1, out_channels=num_classes, **fields_of(network))


def predict_classes(
    net: torch.nn.Module, image: np.ndarray, patch_size: Tuple[int, ...], device: Optional[torch.device] = None
) -> np.ndarray:
    """Class indices (argmax of the softmax) of a preprocessed (x, y, z) image in [-1, 1], by sliding
    windows of ``patch_size`` (the image padded with -1, the background, where smaller)."""
    array = np.ascontiguousarray(image, dtype=np.float32)
    tensor = torch.from_numpy(array)[None, None].to(device or torch.device("cpu"))
    with torch.no_grad():
        logits = sliding_window_inference(tensor, list(patch_size), 1, net, overlap=OVERLAP, mode="gaussian", cval=-1.0)
    assert isinstance(logits, torch.Tensor), "a network with one output gives one tensor"
    return logits.argmax(dim=1)[0].cpu().numpy().astype(np.uint8)


def save_segmenter(folder: Path, card: SegmenterCard, net: torch.nn.Module) -> Path:
    """Write the weights, then the card recording their SHA-256 (each file replaced atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    card.weights = {WEIGHTS_FILE: save_weights(net, folder / WEIGHTS_FILE)}
    with staged_file(folder / CARD_FILE) as temporary:
        temporary.write_text(json.dumps(to_dict(card), indent=2) + "\n", encoding="utf-8")
    return folder


def read_segmenter_card(folder: Path) -> SegmenterCard:
    path = folder / CARD_FILE
    if not folder.is_dir() or not path.is_file():
        raise ModelError(
            f"segmenter {folder} is not a folder with {CARD_FILE}: give the 'segmenter' folder "
            "that `medlsdm train segmenter` wrote, or use --segmenter mixture"
        )
    try:
        return from_dict(SegmenterCard, json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path} is not valid JSON ({exc}): the segmenter is damaged") from None
    except ValueError as exc:
        raise ModelError(f"{path} does not describe a segmenter this version can load ({exc})") from None


class UNetSegmenter:
    """A trained segmenter loaded from its folder (hash checked) for the Dice protocol."""

    name = "unet"

    def __init__(self, card: SegmenterCard, net: torch.nn.Module, path: Path) -> None:
        self.card, self.net, self.path = card, net.eval(), path

    @classmethod
    def load(cls, folder: Union[str, Path]) -> "UNetSegmenter":
        folder = Path(folder)
        card = read_segmenter_card(folder)
        weights = folder / WEIGHTS_FILE
        if not weights.is_file() or card.weights.get(WEIGHTS_FILE) is None:
            raise ModelError(f"segmenter {folder} is missing {WEIGHTS_FILE} or its SHA-256: it is incomplete")
        if sha256(weights) != card.weights[WEIGHTS_FILE]:
            raise ModelError(f"{weights} does not match the SHA-256 in {CARD_FILE}: the file is damaged or was changed")
        net = build_network(card.network, len(card.labels))
        try:
            net.load_state_dict(load_file(str(weights)), strict=True)
        except Exception as exc:  # safetensors' own errors, or a state that does not fit
            raise ModelError(
                f"{weights} does not fit the network in {CARD_FILE} ({str(exc).splitlines()[0]})"
            ) from None
        return cls(card, net, folder)

    def describe(self) -> Dict[str, Any]:
        return {
            "kind": "unet",
            "path": str(self.path),
            "name": self.card.name,
            "sha256": self.card.weights.get(WEIGHTS_FILE),
            "spacing": list(self.card.spacing),
            "classes": {e.value: e.name for e in self.card.labels},
            "validation": self.card.metrics,
        }

    def class_values(self) -> List[int]:
        return [e.value for e in self.card.labels]

    def segment(self, image: sitk.Image, labels: sitk.Image) -> np.ndarray:
        """(x, y, z) class values on the image's grid. ``labels`` (on the same grid) gives the foreground
        the percentile normalisation uses, exactly as in training."""
        card = self.card
        known = set(self.class_values())
        present = {int(v) for v in np.unique(sitk.GetArrayViewFromImage(labels))}
        if not present <= known:
            raise InputError(
                f"the label map has value(s) {sorted(present - known)} that the segmenter does not "
                f"know (its classes: {', '.join(f'{e.value}={e.name}' for e in card.labels)})"
            )
        case, _ = preprocess_images("image", image, labels, card.labels, card.spacing, card.orientation, card.intensity)
        indices = predict_classes(self.net, case.image, card.patch_size)
        grid = working_grid(labels, card.spacing, card.orientation, 1)
        on_image = image_to_array(resample(array_to_image(indices, grid), labels, sitk.sitkNearestNeighbor))
        return np.asarray(self.class_values(), dtype=np.int64)[on_image]

    def segment_pair(
        self, real: sitk.Image, synthetic: sitk.Image, labels: sitk.Image
    ) -> Tuple[np.ndarray, np.ndarray]:
        return self.segment(real, labels), self.segment(synthetic, labels)
