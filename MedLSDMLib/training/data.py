"""Training data: finding image/label pairs, preprocessing them like generation does, random patches."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from monai.transforms import (
    Compose,
    MapTransform,
    Rand3DElasticd,
    RandAffined,
    RandCropByLabelClassesd,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

from MedLSDMLib.card import IntensityConfig, LabelEntry
from MedLSDMLib.errors import InputError
from MedLSDMLib.io.geometry import same_grid
from MedLSDMLib.io.preprocess import Case, preprocess_images
from MedLSDMLib.io.volumes import IMAGE_SUFFIXES, read_image, suffix_of
from MedLSDMLib.training.config import AugmentConfig


@dataclass
class Pair:
    name: str
    image: Path
    label: Path


def find_pairs(source: str) -> List[Pair]:
    """Pairs from a folder (``NAME_image.ext`` with ``NAME_label.ext``) or a CSV/JSON list with
    ``image`` and ``label`` columns/keys (paths relative to the list file)."""
    path = Path(source)
    if path.is_dir():
        pairs = []
        for image in sorted(path.iterdir()):
            suffix = suffix_of(image)
            stem = image.name[: len(image.name) - len(suffix)]
            if suffix in IMAGE_SUFFIXES and stem.endswith("_image"):
                name = stem[: -len("_image")]
                labels = [path / f"{name}_label{s}" for s in IMAGE_SUFFIXES if (path / f"{name}_label{s}").exists()]
                if not labels:
                    raise InputError(f"{image.name} has no matching {name}_label file in {path}")
                pairs.append(Pair(name, image, labels[0]))
    elif path.is_file() and path.suffix.lower() in (".csv", ".json"):
        try:
            if path.suffix.lower() == ".csv":
                with open(path, newline="", encoding="utf-8") as stream:
                    rows = list(csv.DictReader(stream))
            else:
                rows = json.loads(path.read_text(encoding="utf-8"))
            pairs = [
                Pair(Path(r["image"]).name.split(".")[0], path.parent / r["image"], path.parent / r["label"])
                for r in rows
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{path} must list pairs with 'image' and 'label' entries ({exc})") from None
    else:
        raise InputError(f"data.pairs {path} is neither a folder nor a .csv/.json list of pairs")
    if not pairs:
        raise InputError(f"no image/label pairs found in {path}: name them NAME_image.nii.gz and NAME_label.nii.gz")
    return pairs


def split_pairs(pairs: List[Pair], fraction: float, seed: int) -> Tuple[List[Pair], List[Pair]]:
    """A reproducible training/validation split; with a single pair it serves both."""
    order = np.random.default_rng(seed).permutation(len(pairs))
    count = min(int(math.ceil(len(pairs) * fraction)), len(pairs) - 1) if fraction > 0 else 0
    validation = [pairs[i] for i in sorted(order[:count])]
    training = [pairs[i] for i in sorted(order[count:])]
    return training, validation or training[:1]


def preprocess(
    pair: Pair, labels: Sequence[LabelEntry], spacing: Sequence[float], orientation: str, intensity: IntensityConfig
) -> Tuple[Case, Tuple[float, float]]:
    """Read, check and resample a pair onto the model grid (as generation does); normalise the image."""
    image = read_image(pair.image, "image")
    label = read_image(pair.label, "label map")
    if not same_grid(image, label, tolerance=1e-3):
        raise InputError(
            f"{pair.image.name} and {pair.label.name} are on different grids (size, spacing, origin "
            "or direction differ): resample the label map onto its image"
        )
    return preprocess_images(pair.name, image, label, labels, spacing, orientation, intensity, pair.label.name)


def pad_to(case: Case, size: Sequence[int]) -> Case:
    """Pad a case evenly to at least ``size`` with background (image −1, class 0)."""
    pads = [(max(s - d, 0) // 2, max(s - d, 0) - max(s - d, 0) // 2) for s, d in zip(size, case.image.shape)]
    return Case(case.name, np.pad(case.image, pads, constant_values=-1.0), np.pad(case.classes, pads))


def patch_transforms(patch_size: Sequence[int], num_classes: int, augment: AugmentConfig) -> Compose:
    """Label-aware random patches and joint augmentation, as MONAI dictionary transforms."""
    keys = ["image", "label"]
    p = augment.probability
    transforms: List[MapTransform] = [
        RandCropByLabelClassesd(
            keys, "label", spatial_size=list(patch_size), num_classes=num_classes, num_samples=1, warn=False
        )
    ]
    if p > 0:
        angle = math.radians(augment.rotate_degrees)
        transforms.append(
            RandAffined(
                keys,
                prob=p,
                rotate_range=(angle,) * 3,
                scale_range=(augment.scale,) * 3,
                mode=("bilinear", "nearest"),
                padding_mode="border",
            )
        )
        if augment.elastic:
            transforms.append(
                Rand3DElasticd(
                    keys,
                    sigma_range=augment.elastic_sigma,
                    magnitude_range=augment.elastic_magnitude,
                    prob=p,
                    mode=("bilinear", "nearest"),
                    padding_mode="border",
                )
            )
        transforms += [RandFlipd(keys, prob=p, spatial_axis=axis) for axis in augment.flip_axes]
        if augment.intensity > 0:
            transforms += [
                RandScaleIntensityd("image", factors=augment.intensity, prob=p),
                RandShiftIntensityd("image", offsets=augment.intensity, prob=p),
            ]
    return Compose(transforms)


class PatchDataset(torch.utils.data.Dataset):
    """Random augmented patches of the cases; ``length`` draws make an epoch."""

    def __init__(
        self,
        cases: List[Case],
        patch_size: Sequence[int],
        num_classes: int,
        augment: AugmentConfig,
        length: int,
        seed: int,
    ) -> None:
        self.cases = [pad_to(c, patch_size) for c in cases]
        self.transforms = patch_transforms(patch_size, num_classes, augment)
        self.transforms.set_random_state(seed)
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        case = self.cases[index % len(self.cases)]
        item = {
            "image": torch.from_numpy(case.image[None]),
            "label": torch.from_numpy(case.classes[None].astype(np.int64)),
        }
        out = self.transforms(item)
        out = out[0] if isinstance(out, list) else out
        image = torch.as_tensor(out["image"]).float()
        label = torch.as_tensor(out["label"]).round().long()
        return {"image": image, "label": label[0]}


def centre_patch(case: Case, patch_size: Sequence[int]) -> Dict[str, torch.Tensor]:
    """The patch around the foreground's centre, for validation."""
    case = pad_to(case, patch_size)
    centre = (
        np.round(np.argwhere(case.classes > 0).mean(axis=0)).astype(int)
        if case.classes.any()
        else np.array(case.classes.shape) // 2
    )
    start = [int(np.clip(c - s // 2, 0, d - s)) for c, s, d in zip(centre, patch_size, case.classes.shape)]
    window = tuple(slice(b, b + s) for b, s in zip(start, patch_size))
    return {
        "image": torch.from_numpy(case.image[window][None].copy()),
        "label": torch.from_numpy(case.classes[window].astype(np.int64)),
    }


def load_cases(
    pairs: List[Pair],
    labels: Sequence[LabelEntry],
    spacing: Sequence[float],
    orientation: str,
    intensity: IntensityConfig,
) -> Tuple[List[Case], List[Tuple[float, float]]]:
    cases, ranges = [], []
    for pair in pairs:
        case, window = preprocess(pair, labels, spacing, orientation, intensity)
        cases.append(case)
        ranges.append(window)
    return cases, ranges


def summary(pairs: List[Pair], cases: List[Case]) -> List[Dict[str, object]]:
    """What the model card records about each training case."""
    return [{"name": c.name, "image": p.image.name, "shape": list(c.image.shape)} for p, c in zip(pairs, cases)]


def median_range(ranges: List[Tuple[float, float]]) -> Tuple[float, float]:
    lows, highs = zip(*ranges)
    return float(np.median(lows)), float(np.median(highs))
