"""Training data and configs for the training tests: three small NAME_image / NAME_label pairs (nested
ellipsoids with a T1-like contrast) and tiny VQ-GAN and diffusion configs on them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

LABELS = [{"value": 0, "name": "background"}, {"value": 1, "name": "csf"},
          {"value": 2, "name": "gm"}, {"value": 3, "name": "wm"}]
TRAINING = {"batch_size": 2, "patch_size": [16, 16, 16], "learning_rate": 0.002, "precision": "fp32",
            "checkpoint_every": 5, "validate_every": 10, "log_every": 1}


def write_pair(folder: Path, name: str, seed: int, spacing=(1.5, 1.5, 1.5)) -> None:
    """An ellipsoid 'brain' with three nested tissue classes and a T1-like contrast."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:26, :30, :24]
    centre = np.array([13, 15, 12]) + rng.integers(-2, 3, 3)
    r = np.sqrt(((z - centre[0]) / 10) ** 2 + ((y - centre[1]) / 12) ** 2 + ((x - centre[2]) / 9) ** 2)
    label = np.zeros(r.shape, np.uint8)
    label[r < 1] = 1
    label[r < 0.75] = 2
    label[r < 0.45] = 3
    image = np.choose(label, [0.0, 30.0, 60.0, 90.0]).astype(np.float32) + rng.normal(0, 2, r.shape).astype(np.float32)
    for array, kind in ((image, "image"), (label, "label")):
        volume = sitk.GetImageFromArray(array)
        volume.SetSpacing(spacing)
        sitk.WriteImage(volume, str(folder / f"{name}_{kind}.nii.gz"))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pairs")
    for i in range(3):
        write_pair(folder, f"case{i}", i)
    return folder


def vqgan_config(folder: Path, pairs: Path, **training) -> Path:
    config = {"output": str(folder / "vqgan"), "data": {"pairs": str(pairs), "validation_fraction": 0.34},
              "model": {"name": "toy", "labels": LABELS, "spacing": [2.0, 2.0, 2.0],
                        "autoencoder": {"channels": [8, 16], "num_res_channels": [8, 16], "num_res_layers": 1,
                                        "latent_channels": 4, "num_embeddings": 32}},
              "training": {**TRAINING, "steps": 10, "adversarial_start": 5, "discriminator_layers": 2,
                           "discriminator_channels": 8, **training}}
    path = folder / "vqgan.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def diffusion_config(folder: Path, pairs: Path, autoencoder: Path, **training) -> Path:
    config = {"output": str(folder / "diffusion"), "autoencoder": str(autoencoder),
              "data": {"pairs": str(pairs), "validation_fraction": 0.34},
              "model": {"unet": {"channels": [16, 32], "attention_levels": [False, True], "num_res_blocks": 1,
                                 "norm_num_groups": 8, "num_head_channels": 16, "spade_intermediate_channels": 8},
                        "scheduler": {"num_train_timesteps": 50}},
              "training": {**TRAINING, "steps": 10, "validation_steps": 3, **training}}
    path = folder / "diffusion.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
